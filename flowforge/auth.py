"""Roles on the bus: the NATS permissions of each, and ``flowforge auth init`` that writes them.

NATS does authentication and subject permissions; FlowForge defines what each role may
publish and subscribe (the table in docs/security.md). ``write_auth_dir`` makes one nkey
user per identity, a server config block with their permissions (``nats-auth.conf``, used by
the embedded server with ``--auth DIR`` or included by any nats-server), and for each
identity its seed file (``NAME.nk``, readable by its owner only) and an environment file
(``NAME.env``) that sets what a FlowForge process needs to log in as it.
"""

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nkeys

from protocol.subjects import IDENTITY_RE, Subjects, agent_id_fits

AUTH_CONF = "nats-auth.conf"
IDENTITIES = "identities.json"
"""Who is who (not secret): the coordinator reads which queues each agent may report on."""
ROLES = ("coordinator", "agent", "operator", "trigger", "observer")
READ_VERBS = (("runs", "get"), ("runs", "list"), ("runs", "instances"), ("flows", "list"),
              ("flows", "get"), ("tasks", "log"), ("agents", "list"), ("rejected", "list"),
              ("schedules", "list"), ("schedules", "get"), ("limits", "list"), ("stats", "get"),
              ("stats", "flow"), ("experiments", "list"), ("experiments", "compare"))
"""The API requests that change nothing: all an observer may send."""
TASK_VERBS = (("runs", "instances"), ("children", "spawn"), ("children", "wait"),
              ("children", "results"))
"""The API requests a running task makes through its agent (``ctx.mapped_outputs``,
``ctx.map``)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """One login: a role, a name, and for an agent the queues it may pull (None: all) and
    the agent id its heartbeats must carry (None: any)."""

    name: str
    role: str
    queues: tuple[str, ...] | None = None
    agent_id: str | None = None


@dataclass(frozen=True, slots=True)
class Permissions:
    publish: list[str]
    subscribe: list[str]
    allow_responses: bool = False

    def as_conf(self) -> dict[str, object]:
        out: dict[str, object] = {"publish": {"allow": self.publish},
                                  "subscribe": {"allow": self.subscribe}}
        if self.allow_responses:
            out["allow_responses"] = True
        return out


def permissions(who: Identity, namespace: str) -> Permissions:
    """What ``who`` may publish and subscribe to in ``namespace``; nothing else."""
    s = Subjects(namespace, who.name)
    inbox = f"{s.inbox_prefix}.>"
    match who.role:
        case "coordinator":
            return Permissions(publish=[f"{namespace}.>", *_jetstream_admin(s)],
                               subscribe=[f"{namespace}.>", inbox], allow_responses=True)
        case "agent":
            consumers = ([s.task_consumer(q) for q in who.queues] if who.queues is not None
                         else ["*"])
            tasks = s.tasks_stream
            return Permissions(
                publish=[s.report(">"), s.heartbeat(who.agent_id or "*"),
                         *(f"$JS.API.CONSUMER.MSG.NEXT.{tasks}.{c}" for c in consumers),
                         *(f"$JS.API.CONSUMER.INFO.{tasks}.{c}" for c in consumers),
                         *(f"$JS.ACK.{tasks}.{c}.>" for c in consumers),
                         *(s.api(noun, verb) for noun, verb in TASK_VERBS)],
                subscribe=[inbox, s.cancel("*"), s.wake(who.agent_id or "*")])
        case "operator":
            return Permissions(
                publish=[f"{namespace}.api.*.*.{who.name}", f"{namespace}.trigger.*.{who.name}"],
                subscribe=[s.wildcard("events"), inbox])
        case "trigger":
            return Permissions(publish=[f"{namespace}.trigger.*.{who.name}"], subscribe=[inbox])
        case "observer":
            return Permissions(publish=[s.api(noun, verb) for noun, verb in READ_VERBS],
                               subscribe=[s.wildcard("events"), inbox])
    raise ValueError(f"unknown role {who.role!r}; the roles are {', '.join(ROLES)}")


def _jetstream_admin(s: Subjects) -> list[str]:
    """The JetStream API of this namespace's three streams and their consumers only."""
    out = ["$JS.API.INFO"]
    for stream in (s.tasks_stream, s.reports_stream, s.triggers_stream):
        out += [f"$JS.API.STREAM.*.{stream}", f"$JS.API.STREAM.*.*.{stream}",
                f"$JS.API.CONSUMER.*.{stream}", f"$JS.API.CONSUMER.*.{stream}.>",
                f"$JS.API.CONSUMER.*.*.{stream}.>", f"$JS.ACK.{stream}.>"]
    kv = f"KV_{s.lease_bucket}"  # the active coordinator's lease
    out += [f"$JS.API.*.*.{kv}", f"$JS.API.*.*.{kv}.>", f"$JS.API.DIRECT.GET.{kv}.>",
            f"$KV.{s.lease_bucket}.>"]
    return out


@dataclass
class AuthDir:
    """What ``write_auth_dir`` wrote: the server's config block and each identity's files."""

    path: Path
    namespace: str
    identities: list[Identity] = field(default_factory=list)

    @property
    def server_conf(self) -> Path:
        return self.path / AUTH_CONF

    def seed_file(self, name: str) -> Path:
        return self.path / f"{name}.nk"

    def env_file(self, name: str) -> Path:
        return self.path / f"{name}.env"


def default_identities(agents: Sequence[str] = ()) -> list[Identity]:
    """One identity per role, plus one agent per ``NAME[=queue,queue]`` in ``agents``: such an
    agent may pull only those queues and must run with ``--agent-id NAME``."""
    out = [Identity(name=role, role=role) for role in ROLES]
    for spec in agents:
        name, _, queues = spec.partition("=")
        if not IDENTITY_RE.match(name) or name in ROLES:
            raise ValueError(f"agent name {name!r} is not valid: letters, digits, '_' or '-', "
                             f"and none of {', '.join(ROLES)}")
        clash = next((o.name for o in out if agent_id_fits(o.name, name)
                      or agent_id_fits(name, o.name)), None)
        if clash is not None:  # agents are named <identity>-…: one must not pass for another
            raise ValueError(f"agent name {name!r} and identity {clash!r}: neither may be the "
                             "other followed by '-'")
        out.append(Identity(name=name, role="agent", agent_id=name,
                            queues=tuple(q for q in queues.split(",") if q) or None))
    return out


def write_auth_dir(path: Path, namespace: str, identities: Sequence[Identity],
                   overwrite: bool = False) -> AuthDir:
    """Write the nkeys, the server's permissions and each identity's files under ``path``."""
    auth = AuthDir(Path(path).resolve(), namespace, list(identities))
    if auth.server_conf.exists() and not overwrite:
        raise FileExistsError(f"{auth.server_conf} exists; pass --force to make new keys "
                              "(every process then needs its new files)")
    auth.path.mkdir(parents=True, exist_ok=True)
    users = []
    for who in identities:
        seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
        public = nkeys.from_seed(bytearray(seed)).public_key.decode()
        _write_private(auth.seed_file(who.name), seed.decode() + "\n")
        _write_private(auth.env_file(who.name), _env_text(auth, who))
        users.append({"nkey": public, "permissions": permissions(who, namespace).as_conf()})
    _write_private(auth.path / IDENTITIES, json.dumps(
        [dataclasses.asdict(who) for who in identities], indent=2) + "\n")
    block = json.dumps({"users": users}, indent=2)
    _write_private(auth.server_conf, f"# FlowForge roles for namespace {namespace!r}; written by "
                   f"`flowforge auth init`\nauthorization {block}\n")
    return auth


def _env_text(auth: AuthDir, who: Identity) -> str:
    lines = [f"FLOWFORGE_NKEY={auth.seed_file(who.name)}", f"FLOWFORGE_IDENTITY={who.name}",
             f"FLOWFORGE_NAMESPACE={auth.namespace}"]
    if who.agent_id:
        lines.append(f"FLOWFORGE_AGENT_ID={who.agent_id}")
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def read_auth_dir(path: Path) -> AuthDir:
    """An auth directory written before: its server block must be there; its identities
    (which queues and agent id each agent may report for) are read when present."""
    auth = AuthDir(Path(path).resolve(), "")
    if not auth.server_conf.is_file():
        raise FileNotFoundError(f"{auth.server_conf} not found: make it with "
                                f"`flowforge auth init --dir {path}`")
    listed = auth.path / IDENTITIES
    if listed.is_file():
        for item in json.loads(listed.read_text()):
            queues = item.get("queues")
            auth.identities.append(Identity(
                name=item["name"], role=item["role"], agent_id=item.get("agent_id"),
                queues=tuple(queues) if queues is not None else None))
    return auth
