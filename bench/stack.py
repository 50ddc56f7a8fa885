"""A real FlowForge deployment for one workload: NATS, a coordinator and agents as processes."""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from flowforge import Client, ConnectOptions
from flowforge.connection import connect
from flowforge.embedded import EmbeddedNats
from protocol.errors import NotConnected
from protocol.messages import heartbeat_decoder
from protocol.subjects import Subjects

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0
LOG_TAIL_LINES = 40


class StackError(RuntimeError):
    """A process of the stack did not start, or exited while it was needed."""


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def console_script(name: str, module: str) -> list[str]:
    """The installed console script next to this interpreter, else ``python -m module``."""
    script = Path(sysconfig.get_path("scripts")) / name
    return [str(script)] if script.is_file() else [sys.executable, "-m", module]


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` (now) and ``VmHWM`` (peak) of a live process, in KiB, from /proc."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss_kib" if key == "VmRSS" else "peak_rss_kib"] = int(value.split()[0])
    return out


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process so far (``utime + stime`` in /proc/<pid>/stat,
    its own threads only, not its children); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state is fields[0]
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14, 15


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc), e.g. the coordinator's nats-server."""
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


@dataclass(slots=True)
class Proc:
    """One child process in its own process group, its stderr and stdout in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
            return "\n".join(f"  [{self.name}] {line}" for line in text)
        return f"  [{self.name}] (no log)"

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise StackError(f"{self.name} exited with code {code}:\n{self.tail()}")

    async def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, wait ``grace_s``, then SIGKILL the process group; returns the exit code."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self.popen.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        if self.popen.poll() is None:
            print(f"bench: {self.name} (pid {self.popen.pid}) did not exit within {grace_s:g} s "
                  "of SIGTERM; killing it", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # the group: also orphans it left
        return self.popen.wait()

    def kill9(self, timeout_s: float = 10.0) -> int:
        """SIGKILL the whole process group at once (no grace), reap it; returns the exit code."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        return self.popen.wait(timeout_s)


def spawn(name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> Proc:
    """Start ``argv`` from the repository root in its own session (so ``Proc.stop`` can kill its
    group), stdout and stderr to ``log_path``; ``env`` replaces the environment when given."""
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    return Proc(name, popen, log_path)


async def stop_all(procs: list[Proc], grace_s: float = STOP_GRACE_S) -> tuple[float, list[int | None]]:
    """``Proc.stop`` of every process at once; how many seconds that took, and the exit codes."""
    started = time.monotonic()
    codes = await asyncio.gather(*(p.stop(grace_s) for p in procs))
    return time.monotonic() - started, list(codes)


def check_running(procs: list[Proc], deadline: float, what: str) -> None:
    """While waiting for ``what``: ``StackError`` (with the logs) when one of ``procs`` exited, or
    when ``time.monotonic()`` passed ``deadline``."""
    for proc in procs:
        proc.check_alive()
    if time.monotonic() > deadline:
        tails = "\n".join(p.tail() for p in procs)
        raise StackError(f"gave up after {READY_TIMEOUT_S:g} s waiting for {what}:\n{tails}")


class BaseStack:
    """The part both stacks share (this module's ``Stack`` and ``bench.celery_side.CeleryStack``):
    ``async with`` starts one and always stops it, also when starting failed; ``stop()``."""

    __slots__ = ()

    async def start(self) -> None:
        """Start the processes and wait until each is ready."""
        raise NotImplementedError

    async def _stop(self) -> None:
        """Stop whatever ``start`` got to, in order; safe to call again."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop every process started so far (``_stop``); idempotent.

        Runs to the end even when the caller is cancelled (e.g. by Ctrl-C), then re-raises:
        a half-done stop would leave processes running after the benchmark exits.
        """
        done = asyncio.ensure_future(self._stop())
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            await done
            raise


@dataclass(slots=True)
class Stack(BaseStack):
    """``async with Stack(workdir, agents=1, concurrency=16) as s: await s.client.start(...)``.

    By default the coordinator embeds the nats-server, which dies with it. With
    ``nats_in_process=True`` this process runs nats-server itself and the coordinator gets
    ``--nats URL --db PATH``, so the coordinator can be killed and restarted while NATS stays.
    Agent ``i`` is named ``agent<i>`` (its ``--agent-id``, process name and log file).
    """

    workdir: Path
    agents: int = 1
    concurrency: int | None = 16
    """Each agent's ``--concurrency``; None: the agent's default."""
    log_level: str = "INFO"
    lease_s: float | None = None
    """``--lease`` for the coordinator and the agents (default: theirs)."""
    imports: tuple[str, ...] = ("bench.flows",)
    """Modules the agents ``--import``."""
    nats_in_process: bool = False
    url: str = ""
    nats: EmbeddedNats | None = None
    coordinator: Proc | None = None
    coordinator_starts: int = 0
    agent_procs: list[Proc] = field(default_factory=list)
    nc: NATS | None = None
    client: Client | None = None
    subjects: Subjects = field(default_factory=Subjects)
    stopped: dict[str, Any] = field(default_factory=dict)
    """How long stopping took and the exit codes (filled by ``stop()``)."""
    _agent_ids: set[str] = field(default_factory=set)

    async def start(self) -> None:
        """Start NATS and the coordinator, wait until it answers, then start agents and await
        a heartbeat from each."""
        await self._start_nats()
        self.spawn_coordinator()
        deadline = time.monotonic() + READY_TIMEOUT_S
        self.nc = await self._connect_nats(deadline)
        self.client = await self._wait_for_api(deadline)
        await self.nc.subscribe(self.subjects.heartbeat("*"), cb=self._on_heartbeat)
        for i in range(self.agents):
            self.agent_procs.append(spawn(f"agent{i}", self._agent_argv(f"agent{i}"),
                                          self.workdir / f"agent{i}.log", self._agent_env()))
        while len(self._agent_ids) < self.agents:
            check_running(self.agent_procs, deadline, "agents to send a heartbeat")
            await asyncio.sleep(0.05)

    async def _start_nats(self) -> None:
        """Start the nats-server this process runs (``nats_in_process``), or pick the port of the
        one the coordinator embeds; sets ``url``."""
        if self.nats_in_process:
            self.nats = EmbeddedNats(self.workdir / "nats", port=-1)
            self.url = await self.nats.start()
        else:
            self.url = f"nats://127.0.0.1:{free_port()}"

    def _coordinator_nats_args(self) -> list[str]:
        if self.nats is not None:
            return ["--nats", self.url, "--db", str(self.workdir / "flowforge.db")]
        return ["--listen", self.url.removeprefix("nats://"),
                "--data-dir", str(self.workdir / "data")]

    def _agent_url(self, agent_id: str) -> str:
        return self.url

    def _agent_env(self) -> dict[str, str] | None:
        """The agents' environment (None: this process's)."""
        return None

    def spawn_coordinator(self) -> Proc:
        """Start a coordinator process (again, after a kill: same database, next log file)."""
        self.coordinator_starts += 1
        n = self.coordinator_starts
        argv = [*console_script("flowforge-coordinator", "coordinator.cli"),
                "--log-level", self.log_level, *self._lease_args(), *self._coordinator_nats_args()]
        name = "coordinator" if n == 1 else f"coordinator-{n}"
        self.coordinator = spawn(name, argv, self.workdir / f"{name}.log")
        return self.coordinator

    def _agent_argv(self, agent_id: str) -> list[str]:
        imports = [arg for module in self.imports for arg in ("--import", module)]
        return [*console_script("flowforge-agent", "agent.cli"),
                "--nats", self._agent_url(agent_id), "--queue", "default", *imports, "--agent-id", agent_id,
                *self._concurrency_args(), "--log-level", self.log_level,
                *self._lease_args()]

    def _concurrency_args(self) -> list[str]:
        return [] if self.concurrency is None else ["--concurrency", str(self.concurrency)]

    def _lease_args(self) -> list[str]:
        return [] if self.lease_s is None else ["--lease", f"{self.lease_s:g}"]

    async def _connect_nats(self, deadline: float) -> NATS:
        assert self.coordinator is not None
        while True:
            try:
                return await connect(ConnectOptions(url=self.url), name="flowforge-bench",
                                     reconnect=False, connect_timeout_s=1.0)
            except NotConnected:
                check_running([self.coordinator], deadline, "the embedded nats-server")
                await asyncio.sleep(0.1)

    async def _wait_for_api(self, deadline: float) -> Client:
        assert self.coordinator is not None
        client = await Client(ConnectOptions(url=self.url), timeout_s=30.0).connect()
        while True:
            try:
                await client.flows()
                return client
            except NotConnected:
                check_running([self.coordinator], deadline, "the coordinator API")
                await asyncio.sleep(0.1)

    async def _on_heartbeat(self, msg: Msg) -> None:
        with contextlib.suppress(Exception):
            self._agent_ids.add(heartbeat_decoder.decode(msg.data).agent_id)

    def pids(self) -> dict[str, int]:
        """The live processes by name: the coordinator, its nats-server, ``agent<i>``."""
        out: dict[str, int] = {}
        if self.coordinator is not None:
            out["coordinator"] = self.coordinator.popen.pid
            for pid in child_pids(self.coordinator.popen.pid):
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "nats-server":
                        out["nats-server"] = pid
        for proc in self.agent_procs:
            out[proc.name] = proc.popen.pid
        return out

    def memory(self) -> dict[str, dict[str, int]]:
        """Current and peak RSS of the coordinator, its nats-server and each agent."""
        return {name: memory_kib(pid) for name, pid in self.pids().items()}

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the coordinator, its nats-server and each agent."""
        out = {name: cpu_seconds(pid) for name, pid in self.pids().items()}
        return {name: s for name, s in out.items() if s is not None}

    def log_tails(self) -> str:
        procs = [p for p in (self.coordinator, *self.agent_procs) if p is not None]
        return "\n".join(p.tail() for p in procs)

    async def _stop(self) -> None:
        """Close the connections, stop the agents, the coordinator, then NATS."""
        client, self.client = self.client, None
        nc, self.nc = self.nc, None
        for closable in (client, nc):
            if closable is not None:
                with contextlib.suppress(Exception):
                    await closable.close()
        agents_s, codes = await stop_all(self.agent_procs)
        self.stopped = {"agents_s": agents_s, "agent_exit_codes": codes}
        if self.coordinator is not None:
            coordinator_s, [code] = await stop_all([self.coordinator])
            self.stopped |= {"coordinator_s": coordinator_s, "coordinator_exit_code": code}
        await self._stop_nats()

    async def _stop_nats(self) -> None:
        """Stop the nats-server this process runs, its log's end to ``nats.log``."""
        nats, self.nats = self.nats, None
        if nats is not None:
            await nats.stop()
            with contextlib.suppress(OSError):
                (self.workdir / "nats.log").write_text("\n".join(nats.log_tail) + "\n")


def cancel_on_signals() -> None:
    """SIGINT/SIGTERM cancel the current task once, so every stack is still stopped and cleaned up."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None

    def on_signal(signame: str) -> None:
        print(f"\nbench: {signame}: stopping the processes", file=sys.stderr)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: None)  # cleanup is bounded; let it finish
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
