"""Roles on a secured bus, against a real nats-server enforcing `flowforge auth init`'s config.

Each role can do its work; each thing the probe did on the open bus is refused by the server
for every role that should not do it.
"""

import asyncio
import contextlib
import dataclasses
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS

from agent.worker import Agent, AgentConfig
from coordinator.service import Coordinator, CoordinatorConfig
from flowforge.auth import AuthDir, default_identities, read_auth_dir, write_auth_dir
from flowforge.client import Client
from flowforge.connection import ConnectOptions, connect, denied
from flowforge.embedded import EmbeddedNats
from flowforge.registry import REGISTRY
from protocol.errors import NotAuthorized
from protocol.flows import FlowSpec
from protocol.messages import TaskSucceeded, encoder
from protocol.states import RunStatus
from tests import inputflows
from tests.helpers import REPO, TEARDOWN_GRACE_S, Proc, run_cli, wait_for


@dataclasses.dataclass
class Secured:
    server: EmbeddedNats
    auth: AuthDir

    def opts(self, identity: str) -> ConnectOptions:
        return ConnectOptions(url=self.server.url, identity=identity,
                              nkey_seed_file=str(self.auth.seed_file(identity)))


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    auth = write_auth_dir(tmp_path / "auth", "flowforge", default_identities(["gpu-1=gpu"]))
    server = EmbeddedNats(tmp_path / "nats", port=-1, auth_conf=auth.server_conf)
    await server.start()
    try:
        yield Secured(server, auth)
    finally:
        await server.stop(grace_s=TEARDOWN_GRACE_S)


@pytest.fixture
async def services(secured: Secured, tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    """Factory: an in-process coordinator or agent logged in as ``identity``."""
    running: list[tuple[Coordinator | Agent, asyncio.Task[None]]] = []

    async def coordinator() -> Coordinator:
        agents = {i.name: i for i in read_auth_dir(secured.auth.path).identities
                  if i.role == "agent"}
        c = Coordinator(CoordinatorConfig(connect=secured.opts("coordinator"),
                                          db_path=tmp_path / "ff.db", agent_identities=agents))
        await c.start()
        running.append((c, asyncio.create_task(c.run())))
        await asyncio.wait_for(c.started.wait(), 10)
        return c

    async def agent(identity: str = "agent", queues: tuple[str, ...] = ("default",),
                    agent_id: str = "") -> Agent:
        a = Agent(AgentConfig(connect=secured.opts(identity), queues=queues,
                              functions=dict(REGISTRY.functions), agent_id=agent_id))
        await a.start()
        running.append((a, asyncio.create_task(a.run())))
        await asyncio.wait_for(a.ready.wait(), 10)
        return a

    yield_value = dataclasses.make_dataclass("Services", ["coordinator", "agent"])(
        coordinator, agent)
    yield yield_value
    for service, task in reversed(running):
        service.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
        await service.shutdown()


@contextlib.asynccontextmanager
async def raw(secured: Secured, identity: str) -> AsyncIterator[NATS]:
    nc = await connect(secured.opts(identity), name=f"test-{identity}")
    try:
        yield nc
    finally:
        await nc.close()


async def test_each_role_does_its_work_on_a_secured_bus(secured: Secured, services: object) -> None:
    await services.coordinator()  # type: ignore[attr-defined]
    async with Client(secured.opts("operator")) as operator:
        await operator.register([inputflows.register_noop()])
        await services.agent()  # type: ignore[attr-defined]
        run = await operator.start("noop")
        assert (await operator.wait(run.run_id, timeout_s=30)).run.status is RunStatus.SUCCEEDED

    async with Client(secured.opts("trigger")) as trigger:
        await trigger.trigger("noop", {})
    async with Client(secured.opts("observer")) as observer:
        async def two_succeeded() -> bool:
            runs = await observer.runs()
            return len(runs) == 2 and all(r.status is RunStatus.SUCCEEDED for r in runs)
        await wait_for(two_succeeded, timeout_s=30)
        with pytest.raises(NotAuthorized, match=r"runs\.start"):
            await observer.start("noop")


async def test_a_login_without_credentials_is_told_it_was_refused(secured: Secured) -> None:
    with pytest.raises(NotAuthorized, match="refused this login"):
        async with Client(ConnectOptions(url=secured.server.url)):
            pass


async def test_idempotency_keys_are_scoped_to_their_identity(
    secured: Secured, services: object
) -> None:
    await services.coordinator()  # type: ignore[attr-defined]
    async with Client(secured.opts("operator")) as operator, \
            Client(secured.opts("trigger")) as trigger:
        await operator.register([inputflows.register_noop()])
        await trigger.trigger("noop", {}, idempotency_key="nightly")  # claimed first elsewhere
        await wait_for(lambda: _runs(operator, 1))
        first = await operator.start("noop", idempotency_key="nightly")
        again = await operator.start("noop", idempotency_key="nightly")

        assert first.run_id == again.run_id
        keys = sorted(r.idempotency_key or "" for r in await operator.runs())
        assert keys == ["operator/nightly", "trigger/nightly"]


async def _runs(client: Client, n: int) -> bool:
    return len(await client.runs()) >= n


def _waiting_logged(caplog: pytest.LogCaptureFixture) -> bool:
    return any("waiting for the coordinator to create the consumer tasks_late" in r.getMessage()
               for r in caplog.records)


async def test_a_least_privileged_agent_waits_for_its_consumer_instead_of_crashing(
    secured: Secured, services: object, caplog: pytest.LogCaptureFixture
) -> None:
    await services.coordinator()  # type: ignore[attr-defined]
    late = _on_queue(inputflows.register_noop(), "late")  # no consumer of queue late yet
    starting = asyncio.ensure_future(services.agent(queues=("late",)))  # type: ignore[attr-defined]
    await wait_for(lambda: _waiting_logged(caplog))
    assert not starting.done()
    async with Client(secured.opts("operator")) as operator:
        await operator.register([late])
        agent = await asyncio.wait_for(starting, 30)
        run = await operator.start("late")
        assert (await operator.wait(run.run_id, timeout_s=30)).run.status is RunStatus.SUCCEEDED
    assert agent.completed == 1


def _on_queue(spec: FlowSpec, queue: str) -> FlowSpec:
    """The same one-task flow, named ``queue``, on that queue."""
    task = msgspec.structs.replace(spec.tasks[0], queue=queue)
    return msgspec.structs.replace(spec, name=queue, tasks=[task])


async def test_an_agent_bound_to_queues_cannot_serve_another(
    secured: Secured, services: object
) -> None:
    await services.coordinator()  # type: ignore[attr-defined]
    async with Client(secured.opts("operator")) as operator:
        await operator.register([inputflows.register_noop()])  # creates tasks_default
    with pytest.raises(NotAuthorized, match="queue 'default'"):
        await services.agent("gpu-1", queues=("default",), agent_id="gpu-1")  # type: ignore[attr-defined]


REFUSED = [  # (identity, "pub" or "sub", subject): what the probe did on the open bus
    # forge reports, or report as another agent identity
    *(("operator", "pub", "flowforge.report.r1"), ("trigger", "pub", "flowforge.report.r1"),
      ("observer", "pub", "flowforge.report.r1"), ("agent", "pub", "flowforge.report.r1"),
      ("gpu-1", "pub", "flowforge.report.agent.r1")),
    # send task messages that agents execute
    *(("operator", "pub", "flowforge.task.default"), ("agent", "pub", "flowforge.task.gpu"),
      ("gpu-1", "pub", "flowforge.task.default")),
    # invent agents, or heartbeat as another one
    *(("operator", "pub", "flowforge.agent.heartbeat.x"), ("trigger", "pub", "flowforge.agent.heartbeat.x"),
      ("gpu-1", "pub", "flowforge.agent.heartbeat.someone-else")),
    # cancel any run with a core publish
    *(("operator", "pub", "flowforge.cancel.r1"), ("agent", "pub", "flowforge.cancel.r1")),
    # the API: agents and trigger publishers none, observers only reading
    *(("agent", "pub", "flowforge.api.runs.list.agent"),
      ("trigger", "pub", "flowforge.api.runs.list.trigger"),
      ("observer", "pub", "flowforge.api.runs.cancel.observer"),
      ("observer", "pub", "flowforge.api.tasks.mark.observer"),
      ("observer", "pub", "flowforge.api.flows.register.observer"),
      ("operator", "pub", "flowforge.api.runs.list.trigger")),  # as another identity
    # triggers: not from agents or observers, and only under one's own identity (keys)
    *(("agent", "pub", "flowforge.trigger.noop"), ("observer", "pub", "flowforge.trigger.noop.observer"),
      ("trigger", "pub", "flowforge.trigger.noop"), ("trigger", "pub", "flowforge.trigger.noop.operator")),
    # the JetStream API of our streams
    *(("operator", "pub", "$JS.API.STREAM.PURGE.FLOWFORGE_TASKS"),
      ("agent", "pub", "$JS.API.STREAM.DELETE.FLOWFORGE_REPORTS"),
      ("agent", "pub", "$JS.API.CONSUMER.DELETE.FLOWFORGE_TASKS.tasks_default"),
      ("gpu-1", "pub", "$JS.API.CONSUMER.MSG.NEXT.FLOWFORGE_TASKS.tasks_default")),
    # reading what is not one's own: other clients' answers, reports, task messages
    *(("trigger", "sub", "_INBOX.>"), ("trigger", "sub", "_INBOX_operator.>"),
      ("observer", "sub", "flowforge.report.>"), ("agent", "sub", "flowforge.task.>"),
      ("agent", "sub", "flowforge.events.>")),
]


@pytest.mark.parametrize(("identity", "how", "subject"), REFUSED,
                         ids=[f"{i}-{h}-{s}" for i, h, s in REFUSED])
async def test_the_server_refuses_what_a_role_may_not_do(
    secured: Secured, identity: str, how: str, subject: str
) -> None:
    async with raw(secured, identity) as nc:
        await _attempt(nc, how, subject)

        await wait_for(lambda: denied(nc, subject) is not None, timeout_s=10)


async def _attempt(nc: NATS, how: str, subject: str) -> None:
    """Publish on, or subscribe to, ``subject``; the server answers a refusal asynchronously."""
    if how == "pub":
        await nc.publish(subject, b"{}")
    else:
        await nc.subscribe(subject)
    await nc.flush()


async def test_every_identity_file_logs_in_and_sets_what_a_process_needs(
    secured: Secured, services: object
) -> None:
    await services.coordinator()  # type: ignore[attr-defined]
    env = {**os.environ, "FLOWFORGE_NATS_URL": secured.server.url}
    for line in secured.auth.env_file("observer").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value

    done = await asyncio.to_thread(run_cli, ["flowforge", "runs"], env)

    assert done.returncode == 0, done.stderr
    assert "no runs" in done.stdout


ALLOWED = [
    ("operator", "pub", "flowforge.api.runs.list.operator"),
    ("operator", "pub", "flowforge.trigger.noop.operator"),
    ("trigger", "pub", "flowforge.trigger.noop.trigger"),
    ("observer", "pub", "flowforge.api.runs.list.observer"),
    ("agent", "pub", "flowforge.report.agent.r1"),
    ("gpu-1", "pub", "flowforge.report.gpu-1.several"),
    ("gpu-1", "pub", "flowforge.agent.heartbeat.gpu-1"),
    ("gpu-1", "pub", "$JS.API.CONSUMER.MSG.NEXT.FLOWFORGE_TASKS.tasks_gpu"),
    ("observer", "sub", "flowforge.events.>"),
    ("agent", "sub", "flowforge.cancel.*"),
    ("trigger", "sub", "_INBOX_trigger.>"),
]


@pytest.mark.parametrize(("identity", "how", "subject"), ALLOWED,
                         ids=[f"{i}-{h}-{s}" for i, h, s in ALLOWED])
async def test_the_server_lets_a_role_do_its_own_work(
    secured: Secured, identity: str, how: str, subject: str
) -> None:
    async with raw(secured, identity) as nc:
        await _attempt(nc, how, subject)
        await nc.flush()  # a refusal would have come before the second answer

        assert denied(nc) is None


@pytest.mark.e2e
async def test_the_embedded_server_takes_the_coordinators_token(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = Proc(["flowforge-coordinator", "--token", "s3cret", "--listen", "127.0.0.1:-1",
                 "--data-dir", str(tmp_path)], tmp_path / "coordinator.log", env, REPO)
    try:
        await wait_for(lambda: "coordinator ready" in proc.log(), timeout_s=30)
        url = _LISTENING.search(proc.log()).group(1)  # type: ignore[union-attr]
        async with Client(ConnectOptions(url=url, token="s3cret")) as client:
            assert await client.runs() == []
        with pytest.raises(NotAuthorized):
            async with Client(ConnectOptions(url=url, token="guess")):
                pass
    finally:
        assert proc.stop() == 0, proc.log()


_LISTENING = re.compile(r"embedded nats-server listening on (nats://\S+) ")


async def test_an_agent_reports_only_for_itself_and_its_queues(
    secured: Secured, services: object
) -> None:
    await services.coordinator()  # type: ignore[attr-defined]
    async with Client(secured.opts("operator")) as operator:
        await operator.register([inputflows.register_noop()])  # on queue default
        runs = [await operator.start("noop") for _ in range(4)]
        forged = {  # (identity that sends, agent id it claims): why it is refused
            ("gpu-1", "gpu-1"): "may not report on queue default",
            ("agent", "gpu-1"): "sent a report as agent gpu-1",
            ("gpu-1", "gpu-1-other"): "sent a report as agent gpu-1-other",  # bound to gpu-1
        }
        async with raw(secured, "gpu-1") as gpu, raw(secured, "agent") as shared:
            for (identity, agent_id), run in zip(forged, runs, strict=False):
                nc = gpu if identity == "gpu-1" else shared
                report = TaskSucceeded(run_id=run.run_id, task="noop", attempt=1,
                                       agent_id=agent_id, at=2.0, started_at=1.0,
                                       output=msgspec.Raw(b'"forged"'))
                await nc.jetstream().publish(f"flowforge.report.{identity}.{run.run_id}",
                                             encoder.encode(report))
            await wait_for(lambda: _rejected(operator, len(forged)))
            reasons = sorted(r.reason for r in await operator.rejected())
            for why in forged.values():
                assert any(why in reason for reason in reasons), reasons
            assert {r.status for r in await operator.runs()} == {RunStatus.RUNNING}

            honest = TaskSucceeded(run_id=runs[3].run_id, task="noop", attempt=1,
                                   agent_id="agent-host-1", at=2.0, started_at=1.0,
                                   output=msgspec.Raw(b'"fine"'))
            await shared.jetstream().publish(f"flowforge.report.agent.{runs[3].run_id}",
                                             encoder.encode(honest))
            detail = await operator.wait(runs[3].run_id, timeout_s=20)
            assert detail.run.status is RunStatus.SUCCEEDED


async def _rejected(client: Client, n: int) -> bool:
    return len(await client.rejected()) >= n


def test_identity_names_that_could_pass_for_each_other_are_refused() -> None:
    for agents in (["agent-gpu=gpu"], ["gpu=gpu", "gpu-1=gpu"], ["operator-x"]):
        with pytest.raises(ValueError, match="followed by '-'"):
            default_identities(agents)
    assert [i.name for i in default_identities(["gpu-1=gpu", "gpu_2"])][-2:] == ["gpu-1", "gpu_2"]


async def test_an_agent_whose_id_does_not_fit_its_identity_does_not_start(secured: Secured) -> None:
    with pytest.raises(ValueError, match="does not fit identity 'agent'"):
        Agent(AgentConfig(connect=secured.opts("agent"), queues=("default",), functions={},
                          agent_id="worker-1"))
    env = {**os.environ, "FLOWFORGE_NATS_URL": secured.server.url, "PYTHONPATH": str(REPO)}
    done = await asyncio.to_thread(run_cli, [
        "flowforge-agent", "--identity", "agent", "--agent-id", "worker-1",
        "--import", "tests.inputflows"], env)
    assert done.returncode == 2 and "does not fit --identity" in done.stderr, done.stderr


async def test_a_user_and_password_log_in_and_a_wrong_password_is_refused(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats", port=-1, login=("ops", "s3cret pass", None))
    await server.start()
    try:
        nc = await connect(ConnectOptions(url=server.url, user="ops", password="s3cret pass"),
                           name="test")
        await nc.close()
        with pytest.raises(NotAuthorized, match="refused this login"):
            await connect(ConnectOptions(url=server.url, user="ops", password="guess"),
                          name="test")
    finally:
        await server.stop(grace_s=TEARDOWN_GRACE_S)
