"""Fixtures: a real nats-server per test, in-process services, console scripts as subprocesses.

Cases that each make one quick request and touch only names of their own may share one
nats-server and coordinator per module (``shared_stack``); they run on the module's event loop,
so they are marked ``on_shared_stack`` and use ``shared_client``/``shared_nc``/``shared_cli_env``.
"""

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from agent.worker import Agent, AgentConfig
from coordinator.service import Coordinator, CoordinatorConfig
from flowforge.client import Client
from flowforge.connection import ConnectOptions, connect
from flowforge.embedded import EmbeddedNats
from flowforge.registry import REGISTRY
from tests.cluster import NatsCluster
from tests.helpers import SCENARIO_LINE, TEARDOWN_GRACE_S, Proc, SharedStack, env_for

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
    return env_for(nats_server.url)


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


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    """A real three-node NATS cluster with JetStream (``tests/cluster.py``)."""
    nodes = NatsCluster(tmp_path / "nats")
    await nodes.start()
    try:
        yield nodes
    finally:
        await nodes.stop()


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    """Each test registers its own flows; modules imported earlier register again on reload."""
    saved = (dict(REGISTRY.flows), dict(REGISTRY.replace), dict(REGISTRY.functions))
    yield
    REGISTRY.flows, REGISTRY.replace, REGISTRY.functions = (
        saved[0], saved[1], saved[2]
    )


# -- one stack shared by a module's quick cases --------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SharedStack]:
    """A nats-server and an in-process coordinator for all of a module's ``on_shared_stack`` tests.

    Only for cases that leave the services as they found them and use flow names, run ids and
    keys of their own; a test that stops, breaks or reconfigures a service takes its own stack.
    """
    root = tmp_path_factory.mktemp("shared")
    server = EmbeddedNats(root / "nats", port=-1)
    await server.start()
    coordinator = Coordinator(CoordinatorConfig(connect=ConnectOptions(url=server.url),
                                                db_path=root / "ff.db"))
    serving: asyncio.Task[None] | None = None
    try:
        await coordinator.start()
        serving = asyncio.create_task(coordinator.run())
        await asyncio.wait_for(coordinator.started.wait(), 10)
        yield SharedStack(server, coordinator)
    finally:
        await coordinator.shutdown()
        if serving is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, 10)
        await server.stop(grace_s=TEARDOWN_GRACE_S)


@pytest_asyncio.fixture(loop_scope="module")
async def shared_client(shared_stack: SharedStack,
                        request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """A client of the shared stack; the nats-server's log is printed if the test fails."""
    async with Client(shared_stack.opts) as c:
        yield c
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print("--- shared nats-server log ---\n" + "\n".join(shared_stack.server.log_tail))


@pytest_asyncio.fixture(loop_scope="module")
async def shared_nc(shared_stack: SharedStack) -> AsyncIterator[NATS]:
    """A plain connection to the shared stack's nats-server, as any other program would have."""
    conn = await connect(shared_stack.opts, name="test")
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
def shared_cli_env(shared_stack: SharedStack) -> dict[str, str]:
    return env_for(shared_stack.server.url)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What each fault scenario did and counted (lost, finalised twice, recovery)."""
    lines = [str(value) for kind in ("passed", "failed")
             for rep in terminalreporter.stats.get(kind, [])
             for key, value in getattr(rep, "user_properties", ()) if key == SCENARIO_LINE]
    if lines:
        terminalreporter.section("fault scenarios")
        for line in lines:
            terminalreporter.line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long fault and partition tests first: spread over the workers from the start
    instead of left to one worker at the end (the suite takes as long as its busiest worker)."""
    items.sort(key=lambda item: not (item.get_closest_marker("slow")
                                     or item.get_closest_marker("netns")))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """One worker more than the cores, at least 3 and at most 4: most of the suite waits on
    processes (leases, elections, restarts), so a third worker overlaps those waits (on 2 cores:
    5 min 27 s with 2 workers, 3 min 51 s with 3)."""
    return min(4, max(3, (os.cpu_count() or 1) + 1))
