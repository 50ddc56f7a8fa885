"""``flowforge auth init``: the nkeys, permissions and per-identity files for a secured bus."""

import argparse
import sys
from pathlib import Path

from flowforge import runtime
from flowforge.auth import default_identities, permissions, write_auth_dir
from flowforge.connection import env
from protocol.subjects import DEFAULT_NAMESPACE

EPILOG = """\
examples:
  flowforge auth init --dir ./auth
  flowforge-coordinator --auth ./auth                      # the embedded server enforces it
  env $(cat ./auth/agent.env) flowforge-agent --import my.flows
  env $(cat ./auth/operator.env) flowforge runs
  flowforge auth init --dir ./auth --force --agent gpu-1=gpu  # an agent bound to queue gpu
"""


def add_auth_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("auth", help="secure the bus: roles, keys and permissions",
                       description="secure the bus: roles, keys and permissions")
    verbs = p.add_subparsers(dest="auth_command", required=True, metavar="VERB")
    init = verbs.add_parser(
        "init", help="write an nkey per role, the server's permissions and a .env per role",
        description="Write an nkey user per role (coordinator, agent, operator, trigger, "
        "observer), their NATS permissions as a server config block (nats-auth.conf) and, "
        "per role, its seed (NAME.nk) and the variables to log in as it (NAME.env).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    init.add_argument("--dir", type=Path, default=Path("flowforge-auth"),
                      help="where to write (default: %(default)s)")
    init.add_argument("--namespace", default=env("NAMESPACE", DEFAULT_NAMESPACE),
                      help="the namespace the permissions are for [FLOWFORGE_NAMESPACE] "
                      "(default: %(default)s)")
    init.add_argument("--agent", action="append", default=[], metavar="NAME[=QUEUE,...]",
                      help="also an agent identity of its own, that may pull only these "
                      "queues and heartbeat only as NAME; repeatable")
    init.add_argument("--force", action="store_true", help="replace an existing directory's keys")


def auth_main(ns: argparse.Namespace) -> int:
    try:
        identities = default_identities(ns.agent)
        auth = write_auth_dir(ns.dir, ns.namespace, identities, overwrite=ns.force)
    except (ValueError, FileExistsError, OSError) as exc:
        print(f"flowforge auth init: {exc}", file=sys.stderr)
        return runtime.EXIT_USAGE
    print(f"wrote {auth.server_conf} (the server's users and permissions) and, per identity, "
          "NAME.nk (its seed) and NAME.env (how to log in as it):")
    for who in identities:
        perms = permissions(who, ns.namespace)
        print(f"  {who.name:12} {who.role:11} publish {len(perms.publish):2} subjects, "
              f"subscribe {len(perms.subscribe)}   {auth.env_file(who.name)}")
    print(f"next: flowforge-coordinator --auth {ns.dir}   (or include {auth.server_conf} in "
          f"your nats-server's config and run flowforge-coordinator --nats URL --auth {ns.dir})")
    return runtime.EXIT_OK
