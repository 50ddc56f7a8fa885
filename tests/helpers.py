"""Helpers for tests: console-script processes, waiting on conditions."""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sysconfig
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from coordinator.service import Coordinator
    from flowforge.connection import ConnectOptions
    from flowforge.embedded import EmbeddedNats

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = Path(sysconfig.get_path("scripts"))
OUR_SCRIPTS = ("flowforge", "flowforge-coordinator", "flowforge-agent", "flowforge-dashboard")
TEARDOWN_GRACE_S = 0.0
"""A test's nats-server is killed at teardown (``EmbeddedNats.stop(grace_s=TEARDOWN_GRACE_S)``)
without its graceful shutdown, about 75 ms of JetStream flushing on every test that uses one:
its store is thrown away with tmp_path."""

SCENARIO_LINE = "fault scenario"
"""A test's ``record_property`` key for what a fault scenario did and counted: the run's
summary lists them (``pytest_terminal_summary`` in conftest), workers' included."""

on_shared_stack = pytest.mark.asyncio(loop_scope="module")
"""Mark for tests that use the ``shared_stack`` fixture: they run on the module's event loop,
the one its services live on."""


@dataclass(frozen=True)
class SharedStack:
    """What the ``shared_stack`` fixture yields: a nats-server and a coordinator on it."""

    server: "EmbeddedNats"
    coordinator: "Coordinator"

    @property
    def opts(self) -> "ConnectOptions":
        from flowforge.connection import ConnectOptions

        return ConnectOptions(url=self.server.url)


def script(args: list[str]) -> list[str]:
    """Our console scripts from this interpreter's environment, whether or not it is on PATH."""
    if args and args[0] in OUR_SCRIPTS and (SCRIPTS / args[0]).is_file():
        return [str(SCRIPTS / args[0]), *args[1:]]
    return args


class Proc:
    """A console script started by a test; its output goes to a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(script(args), stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                      cwd=cwd, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._log.close()
        return self.popen.returncode


def env_for(url: str) -> dict[str, str]:
    """Environment for console scripts: the NATS at ``url``, the repo importable."""
    env = dict(os.environ)
    env["FLOWFORGE_NATS_URL"] = url
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.pop("FLOWFORGE_NAMESPACE", None)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free now, for a process that cannot be told to pick its own."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 60.0,
            cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a console script to completion and capture its output."""
    return subprocess.run(script(args), env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


async def flowforge_cli(env: dict[str, str], *args: str,
                        timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``flowforge ARGS...`` to completion, off the event loop, its output captured."""
    return await asyncio.to_thread(run_cli, ["flowforge", *args], env, timeout_s)


async def wait_for(predicate: Callable[[], Awaitable[bool] | bool], timeout_s: float = 20.0,
                   every_s: float = 0.05) -> None:
    """Wait until ``predicate()`` is true, polling; fail the test on timeout."""
    async with asyncio.timeout(timeout_s):
        while True:
            result = predicate()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return
            await asyncio.sleep(every_s)




async def coordinator_answers(url: str) -> bool:
    """True once a coordinator answers API requests on the NATS at ``url``."""
    from flowforge.client import Client
    from flowforge.connection import ConnectOptions
    from protocol.errors import FlowForgeError

    try:
        async with Client(ConnectOptions(url=url), timeout_s=1.0) as c:
            await c.flows()
        return True
    except FlowForgeError:
        return False
