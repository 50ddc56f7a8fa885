"""Fixtures: a real nats-server per test, in-process services, console scripts as subprocesses."""

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from agent.worker import Agent, AgentConfig
from coordinator.service import Coordinator, CoordinatorConfig
from flowforge.client import Client
from flowforge.connection import ConnectOptions, connect
from flowforge.embedded import EmbeddedNats
from flowforge.registry import REGISTRY
from tests.helpers import TEARDOWN_GRACE_S, Proc

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def nats_server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[EmbeddedNats]:
    """A real nats-server with JetStream on a free port; its log is printed if the test fails."""
    server = EmbeddedNats(tmp_path / "nats", port=-1)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_s=TEARDOWN_GRACE_S)
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print("--- nats-server log ---\n" + "\n".join(server.log_tail))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def nats_opts(nats_server: EmbeddedNats) -> ConnectOptions:
    return ConnectOptions(url=nats_server.url)


@pytest.fixture
async def start_coordinator(
    nats_opts: ConnectOptions, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Coordinator]]]:
    """Factory: an in-process coordinator on the test's NATS and a SQLite file in tmp_path."""
    running: list[tuple[Coordinator, asyncio.Task[None]]] = []

    async def start(db_path: Path | None = None, lease_s: float = 30.0,
                    agent_lost_after_s: float = 15.0) -> Coordinator:
        config = CoordinatorConfig(connect=nats_opts, db_path=db_path or tmp_path / "ff.db",
                                   lease_s=lease_s, agent_lost_after_s=agent_lost_after_s)
        coordinator = Coordinator(config)
        await coordinator.start()
        task = asyncio.create_task(coordinator.run())
        await asyncio.wait_for(coordinator.started.wait(), 10)
        running.append((coordinator, task))
        return coordinator

    yield start
    for coordinator, task in reversed(running):
        await coordinator.shutdown()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


@pytest.fixture
async def coordinator(start_coordinator: Callable[..., Awaitable[Coordinator]]) -> Coordinator:
    return await start_coordinator()


@pytest.fixture
async def start_agent(nats_opts: ConnectOptions) -> AsyncIterator[Callable[..., Awaitable[Agent]]]:
    """Factory: an in-process agent serving the functions registered in this process."""
    running: list[tuple[Agent, asyncio.Task[None]]] = []

    async def start(queues: tuple[str, ...] = ("default",), concurrency: int = 4,
                    agent_id: str = "", lease_s: float = 30.0, grace_s: float = 5.0,
                    heartbeat_s: float = 5.0) -> Agent:
        agent = Agent(AgentConfig(
            connect=nats_opts, queues=queues, functions=dict(REGISTRY.functions),
            concurrency=concurrency, agent_id=agent_id, lease_s=lease_s, grace_s=grace_s,
            heartbeat_s=heartbeat_s,
        ))
        await agent.start()
        task = asyncio.create_task(agent.run())
        await asyncio.wait_for(agent.ready.wait(), 10)
        running.append((agent, task))
        return agent

    yield start
    for agent, task in reversed(running):
        agent.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
        await agent.shutdown()


@pytest.fixture
async def nc(nats_opts: ConnectOptions) -> AsyncIterator[NATS]:
    """A plain connection to the test's nats-server (tests may define their own ``nc``)."""
    conn = await connect(nats_opts, name="test")
    yield conn
    await conn.close()


@pytest.fixture
async def client(nats_opts: ConnectOptions) -> AsyncIterator[Client]:
    async with Client(nats_opts) as c:
        yield c


@pytest.fixture
def cli_env(nats_server: EmbeddedNats) -> dict[str, str]:
    """Environment for console scripts: the test's NATS, the repo importable."""
    env = dict(os.environ)
    env["FLOWFORGE_NATS_URL"] = nats_server.url
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.pop("FLOWFORGE_NAMESPACE", None)
    return env


@pytest.fixture
def spawn(cli_env: dict[str, str], tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[Callable[..., Proc]]:
    """Factory: start a console script (``spawn("flowforge-agent", "--queue", "gpu")``)."""
    procs: list[Proc] = []

    def start(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> Proc:
        name = f"{len(procs)}-{Path(args[0]).name}.log"
        proc = Proc(list(args), tmp_path / name, {**cli_env, **(env or {})}, cwd)
        procs.append(proc)
        return proc

    yield start
    for proc in reversed(procs):
        proc.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for proc in procs:
            print(f"--- {' '.join(proc.args)} ---\n{proc.log()}")


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    """Each test registers its own flows; modules imported earlier register again on reload."""
    saved = (dict(REGISTRY.flows), dict(REGISTRY.replace), dict(REGISTRY.functions))
    yield
    REGISTRY.flows, REGISTRY.replace, REGISTRY.functions = (
        saved[0], saved[1], saved[2]
    )
