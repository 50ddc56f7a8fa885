"""``flowforge-coordinator``: parse options, start (embedded NATS if no URL), serve until signalled."""

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from coordinator.lifetime import run_coordinator
from coordinator.service import CoordinatorConfig
from flowforge import runtime
from flowforge.auth import AuthDir, read_auth_dir
from flowforge.connection import ConnectOptions, add_connection_args, env, options_from_args
from flowforge.embedded import EmbeddedNats, EmbeddedNatsError, parse_listen, parse_sync_interval
from flowforge.jetstream import DEFAULT_LEASE_S
from flowforge.metrics_http import add_metrics_arg
from protocol.children import DEFAULT_MAX_CHILDREN, DEFAULT_MAX_DEPTH
from protocol.experiments import DEFAULT_MAX_METRIC_POINTS

log = logging.getLogger("flowforge.coordinator")

EPILOG = """examples:
  flowforge-coordinator                          # embedded nats-server on 127.0.0.1:4222
  flowforge-coordinator --listen 0.0.0.0:4222    # embedded, reachable from other hosts
  flowforge-coordinator --nats nats://nats:4222 --db /data/flowforge.db
  flowforge auth init --dir auth && flowforge-coordinator --auth auth   # roles enforced
  flowforge-coordinator --metrics 0.0.0.0:9464   # Prometheus scrapes :9464/metrics

exit codes: 0 stopped cleanly, 2 usage error, 3 cannot reach or start NATS
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowforge-coordinator",
        description="Store flows, runs and task states in SQLite; publish ready tasks on NATS.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_args(p, nats_default=None)
    p.add_argument("--listen", default=env("LISTEN", "127.0.0.1:4222"), metavar="HOST:PORT",
                   type=parse_listen,
                   help="where the embedded nats-server listens when --nats is not given "
                   "[FLOWFORGE_LISTEN] (default: %(default)s)")
    p.add_argument("--auth", default=env("AUTH_DIR"), type=Path, metavar="DIR",
                   help="what `flowforge auth init --dir DIR` wrote: the embedded nats-server "
                   "enforces its roles, and this coordinator logs in as DIR/coordinator.nk "
                   "[FLOWFORGE_AUTH_DIR]")
    p.add_argument("--listen-tls-cert", default=env("LISTEN_TLS_CERT"), type=Path, metavar="FILE",
                   help="the embedded nats-server serves TLS with this certificate "
                   "[FLOWFORGE_LISTEN_TLS_CERT]")
    p.add_argument("--listen-tls-key", default=env("LISTEN_TLS_KEY"), type=Path, metavar="FILE",
                   help="... and this key [FLOWFORGE_LISTEN_TLS_KEY]")
    p.add_argument("--sync-interval", default=env("SYNC_INTERVAL"), type=parse_sync_interval,
                   metavar="always|DURATION",
                   help="how often the embedded nats-server flushes JetStream to disk: 'always' "
                   "before acknowledging each message (slower, survives a power loss), or a "
                   "duration such as 10s (default: the server's 2m) [FLOWFORGE_SYNC_INTERVAL]")
    p.add_argument("--data-dir", default=env("DATA_DIR", ".flowforge"), type=Path,
                   help="where the database and embedded JetStream store live "
                   "[FLOWFORGE_DATA_DIR] (default: %(default)s)")
    p.add_argument("--db", default=env("DB"), type=Path, metavar="PATH",
                   help="SQLite file [FLOWFORGE_DB] (default: DATA_DIR/flowforge.db)")
    p.add_argument("--lease", type=float, default=env("LEASE", str(DEFAULT_LEASE_S)),
                   metavar="SECONDS", help="task lease before redelivery [FLOWFORGE_LEASE] "
                   "(default: %(default)s)")
    p.add_argument("--agent-lost-after", type=float, default=env("AGENT_LOST_AFTER", "15"),
                   metavar="SECONDS", help="an agent silent this long is reported lost "
                   "[FLOWFORGE_AGENT_LOST_AFTER] (default: %(default)s)")
    p.add_argument("--active-lease", type=float, default=env("ACTIVE_LEASE", "15"),
                   metavar="SECONDS", help="one coordinator is active per namespace: a standby "
                   "started on the same database takes over this long after the active one "
                   "stopped [FLOWFORGE_ACTIVE_LEASE] (default: %(default)s)")
    p.add_argument("--replicas", type=int, choices=range(1, 6), metavar="N",
                   default=env("REPLICAS"),
                   help="copies of each JetStream stream on a NATS cluster [FLOWFORGE_REPLICAS] "
                   "(default: 3 when the server is one of a cluster of three or more, else 1)")
    _add_run_limit_args(p)
    _add_gate_args(p)
    add_metrics_arg(p, "queue depths, task waits and durations, runs, retries and agents")
    p.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"),
                   help="[FLOWFORGE_LOG_LEVEL] (default: %(default)s)")
    return p


def _add_run_limit_args(p: argparse.ArgumentParser) -> None:
    """What one run may hold: child tasks, and what its tasks log."""
    p.add_argument("--max-children", type=int, metavar="N",
                   default=env("MAX_CHILDREN", str(DEFAULT_MAX_CHILDREN)),
                   help="child tasks one run may spawn [FLOWFORGE_MAX_CHILDREN] "
                   "(default: %(default)s)")
    p.add_argument("--max-child-depth", type=int, metavar="N",
                   default=env("MAX_CHILD_DEPTH", str(DEFAULT_MAX_DEPTH)),
                   help="how deep child tasks may nest [FLOWFORGE_MAX_CHILD_DEPTH] "
                   "(default: %(default)s)")
    p.add_argument("--max-metric-points", type=int, metavar="N",
                   default=env("MAX_METRIC_POINTS", str(DEFAULT_MAX_METRIC_POINTS)),
                   help="metric points, results and artifacts one run may store (ctx.log_metric "
                   "...); past it one line in the task's log says so and the rest are dropped "
                   "[FLOWFORGE_MAX_METRIC_POINTS] (default: %(default)s)")


def _add_gate_args(p: argparse.ArgumentParser) -> None:
    """How tasks wait in the coordinator: the release window and priority aging."""
    p.add_argument("--release-window", type=_positive(int), default=env("RELEASE_WINDOW", "256"),
                   metavar="N", help="task messages of one queue out and not started at once, "
                   "at the least; more wait in the coordinator and go by priority "
                   "[FLOWFORGE_RELEASE_WINDOW] (default: %(default)s)")
    p.add_argument("--release-window-s", type=_positive(float),
                   default=env("RELEASE_WINDOW_S", "0.5"), metavar="SECONDS",
                   help="... or as many as the queue's agents take in this long at their pace, "
                   "if more [FLOWFORGE_RELEASE_WINDOW_S] (default: %(default)s)")
    p.add_argument("--priority-aging", type=_positive(float), default=env("PRIORITY_AGING", "30"),
                   metavar="SECONDS", help="a waiting task or run gains one priority per this "
                   "long waited, so nothing starves [FLOWFORGE_PRIORITY_AGING] "
                   "(default: %(default)s)")


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type: a number above 0."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not above 0")
        return value

    return parse


def _as_coordinator(opts: ConnectOptions, auth: AuthDir | None) -> ConnectOptions:
    """With ``--auth``, log in as its coordinator unless other credentials were given."""
    if auth is None or opts.creds_file or opts.nkey_seed_file or opts.user or opts.token:
        return opts
    return replace(opts, nkey_seed_file=str(auth.seed_file("coordinator")),
                   identity=opts.identity or "coordinator")


async def serve(ns: argparse.Namespace) -> int:
    """Start NATS (embedded, unless ``--nats`` names one), then the coordinator until stopped."""
    try:
        auth = _read_auth(ns)
    except FileNotFoundError as exc:
        print(f"flowforge-coordinator: --auth: {exc}", file=sys.stderr)
        return runtime.EXIT_USAGE
    embedded, url = None, ns.nats
    if not url:
        embedded = _embedded_nats(ns, auth)
        try:
            url = await embedded.start()
        except EmbeddedNatsError as exc:
            print(f"flowforge-coordinator: {exc}", file=sys.stderr)
            return runtime.EXIT_NO_NATS
        log.info("embedded nats-server listening on %s (JetStream store in %s%s)",
                 url, embedded.store_dir, ", roles enforced" if auth else "")
    try:
        return await run_coordinator(_config(ns, url, auth), url, ns.metrics)
    finally:
        if embedded:
            await embedded.stop()


def _read_auth(ns: argparse.Namespace) -> AuthDir | None:
    """What ``--auth DIR`` holds (None without it); FileNotFoundError when DIR lacks it."""
    auth = read_auth_dir(ns.auth) if ns.auth else None
    if auth is not None and not auth.identities:
        log.warning("--auth %s has no identities.json (written by `flowforge auth init` since "
                    "reports carry identities): agents bound to queues are not held to them "
                    "until it is written again", ns.auth)
    return auth


def _embedded_nats(ns: argparse.Namespace, auth: AuthDir | None) -> EmbeddedNats:
    host, port = ns.listen
    embedded = EmbeddedNats(ns.data_dir / "nats", host=host, port=port,
                            auth_conf=auth.server_conf if auth else None,
                            tls_cert=ns.listen_tls_cert, tls_key=ns.listen_tls_key,
                            login=(ns.user, ns.password, ns.token),
                            sync_interval=ns.sync_interval)
    if (warning := embedded.exposure_warning()) is not None:
        log.warning("%s", warning)
    return embedded


def _config(ns: argparse.Namespace, url: str, auth: AuthDir | None) -> CoordinatorConfig:
    return CoordinatorConfig(
        connect=_as_coordinator(options_from_args(ns, url), auth),
        db_path=ns.db or ns.data_dir / "flowforge.db",
        lease_s=ns.lease,
        agent_lost_after_s=ns.agent_lost_after,
        replicas=None if ns.replicas is None else int(ns.replicas),
        active_lease_s=max(1.0, ns.active_lease),
        max_children=max(0, ns.max_children),
        max_child_depth=max(0, ns.max_child_depth),
        release_window=ns.release_window,
        release_window_s=ns.release_window_s,
        priority_aging_s=ns.priority_aging,
        max_metric_points=max(0, ns.max_metric_points),
        agent_identities={i.name: i for i in auth.identities if i.role == "agent"}
        if auth else {},
    )


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    runtime.setup_logging(ns.log_level)
    return runtime.run(serve(ns))


if __name__ == "__main__":
    sys.exit(main())
