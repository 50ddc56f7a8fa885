"""Poison messages: each once stopped the coordinator or an agent (some for good, even after a
restart). Each is now refused on its own, kept, announced and never redelivered; the process
goes on, a good run still succeeds, and a restart skips what was refused."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS

from agent.worker import Agent
from coordinator.service import Coordinator
from flowforge.client import Client
from protocol.limits import MAX_AGENTS_KEPT, MAX_REJECTED_RAW_BYTES
from protocol.messages import AgentHeartbeat, TaskStarted, TaskSucceeded, encoder
from protocol.states import RunStatus, TaskStatus
from tests import inputflows
from tests.helpers import wait_for

StartCoordinator = Callable[..., Awaitable[Coordinator]]
StartAgent = Callable[..., Awaitable[Agent]]

DEEP = 10_000


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def succeeded_report(run_id: str, output: bytes, attempt: int = 1) -> bytes:
    report = TaskSucceeded(run_id=run_id, task="noop", attempt=attempt, agent_id="a1", at=2.0,
                           started_at=1.0, output=msgspec.Raw(b"null"))
    return encoder.encode(report).replace(b'"output":null', b'"output":' + output)


POISON = {  # name: (subject, payload)
    "trigger-params-10000-deep": (
        "flowforge.trigger.noop", b'{"params": {"x": ' + nested(DEEP) + b"}}"),
    "trigger-unknown-field-1000-deep": (
        "flowforge.trigger.noop", b'{"whatever": ' + nested(1000) + b"}"),
    "report-output-10000-deep": (
        "flowforge.report.0190000000000000001",
        succeeded_report("0190000000000000001", nested(DEEP))),
    "log-with-5000-char-run-id": (
        "flowforge.report.x",
        json.dumps({"kind": "log.v1", "run_id": "r" * 5000, "task": "noop", "attempt": 1,
                    "agent_id": "a1", "at": 1.0, "text": "hi"}).encode()),
    "log-with-a-run-id-no-subject-can-hold": (
        "flowforge.report.x",
        json.dumps({"kind": "log.v1", "run_id": "a b\r\nPUB x", "task": "noop", "attempt": 1,
                    "agent_id": "a1", "at": 1.0, "text": "hi"}).encode()),
    "trigger-on-a-subject-of-too-many-tokens": ("flowforge.trigger.noop.me.and.you",
                                                b'{"params": {}}'),
    "trigger-with-empty-msg-id": ("flowforge.trigger.noop", b'{"params": {}}'),
    "trigger-with-empty-key": ("flowforge.trigger.noop", b'{"idempotency_key": ""}'),
    "started-with-attempt-1000000": (
        "flowforge.report.x",
        encoder.encode(TaskStarted(run_id="0190000000000000001", task="noop", attempt=999,
                                   agent_id="a1", delivery=999, at=1.0))
        .replace(b'"attempt":999', b'"attempt":1000000')
        .replace(b'"delivery":999', b'"delivery":1000000')),
}


async def _good_run_succeeds(client: Client) -> None:
    run = await client.start("noop")
    detail = await client.wait(run.run_id, timeout_s=30)
    assert detail.run.status is RunStatus.SUCCEEDED


async def _settled(js: object, stream: str, consumer: str) -> bool:
    info = await js.consumer_info(stream, consumer)  # type: ignore[attr-defined]
    return info.num_pending == 0 and info.num_ack_pending == 0


@pytest.mark.parametrize("case", list(POISON))
async def test_a_poison_message_is_refused_and_a_restarted_coordinator_skips_it(
    case: str, start_coordinator: StartCoordinator, start_agent: StartAgent, client: Client,
    nc: NATS, tmp_path: Path,
) -> None:
    subject, payload = POISON[case]
    coordinator = await start_coordinator()
    await client.register([inputflows.register_noop()])
    await start_agent(concurrency=1)
    js = nc.jetstream()
    errors = await nc.subscribe("flowforge.events.error.>")
    headers = {"Nats-Msg-Id": ""} if case == "trigger-with-empty-msg-id" else None

    await js.publish(subject, payload, headers=headers)

    event = json.loads((await errors.next_msg(timeout=10)).data)
    assert event["code"] == "bad_request", event
    [kept] = await client.rejected()
    assert kept.raw == payload[:MAX_REJECTED_RAW_BYTES] or len(payload) > MAX_REJECTED_RAW_BYTES
    stream, consumer = (("FLOWFORGE_TRIGGERS", "coordinator_triggers") if ".trigger." in subject
                        else ("FLOWFORGE_REPORTS", "coordinator_reports"))
    await wait_for(lambda: _settled(js, stream, consumer))
    await _good_run_succeeds(client)
    assert [r.run_id for r in await client.runs()]  # nothing was deleted or lost

    await coordinator.shutdown()  # restart on the same database and streams
    await start_coordinator()
    await _good_run_succeeds(client)
    assert len(await client.rejected()) == 1  # refused once, not again after the restart
    assert len(await client.runs()) == 2


async def test_a_forged_report_cannot_make_the_writer_close_a_million_attempts(
    coordinator: Coordinator, client: Client, nc: NATS
) -> None:
    await client.register([inputflows.register_noop()])
    run = await client.start("noop")  # no agent: the task stays queued at attempt 1
    forged = encoder.encode(TaskStarted(run_id=run.run_id, task="noop", attempt=999,
                                        agent_id="a1", delivery=999, at=1.0))
    js = nc.jetstream()

    await js.publish(f"flowforge.report.{run.run_id}",
                     forged.replace(b"999", b"1000000"))

    await wait_for(lambda: _has_rejected(client, 1))
    [task] = (await client.get(run.run_id)).tasks
    assert (task.status, task.attempt, task.history) == (TaskStatus.QUEUED, 1, [])


async def _has_rejected(client: Client, n: int) -> bool:
    return len(await client.rejected()) >= n


async def test_an_empty_idempotency_key_is_refused_and_never_deletes_a_run(
    coordinator: Coordinator, client: Client, nc: NATS
) -> None:
    await client.register([inputflows.register_noop()])
    first = await client.start("noop")
    body = json.dumps({"flow": "noop", "idempotency_key": ""}).encode()

    replies = [json.loads((await nc.request("flowforge.api.runs.start", body, timeout=10)).data)
               for _ in range(2)]

    for reply in replies:
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
        assert "idempotency_key" in reply["error"]["message"]
    assert [r.run_id for r in await client.runs()] == [first.run_id]


async def test_api_bodies_nested_10000_deep_get_a_bad_request_reply(
    coordinator: Coordinator, client: Client, nc: NATS
) -> None:
    for verb in ("runs.start", "runs.list", "tasks.mark", "flows.register"):
        body = b'{"x": ' + nested(DEEP) + b"}"
        reply = json.loads((await nc.request(f"flowforge.api.{verb}", body, timeout=10)).data)
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
        assert "levels deep" in reply["error"]["message"]
    assert await client.runs() == []


async def test_a_huge_refused_trigger_is_kept_cut_and_listing_refused_messages_still_works(
    coordinator: Coordinator, client: Client, nc: NATS
) -> None:
    await client.register([inputflows.register_noop()])
    js = nc.jetstream()
    huge = b'{"params": {"blob": "' + b"x" * (nc.max_payload - 100) + b'"}}'
    for _ in range(3):
        await js.publish("flowforge.trigger.noop", huge)

    await wait_for(lambda: _has_rejected(client, 3))
    rejected = await client.rejected(limit=1000)
    assert len(rejected) == 3
    for row in rejected:
        assert row.code == "too_large"
        assert row.raw.startswith(huge[:MAX_REJECTED_RAW_BYTES])
        assert row.raw.endswith(f"({len(huge):,} bytes, cut)".encode())


async def test_invented_agents_are_bounded_and_a_forged_heartbeat_subject_is_ignored(
    coordinator: Coordinator, client: Client, nc: NATS
) -> None:
    def beat(agent_id: str) -> bytes:
        return encoder.encode(AgentHeartbeat(
            agent_id=agent_id, host="h", pid=1, queues=("default",), functions=(),
            slots_total=1, slots_busy=0, started_at=1.0, at=1.0))

    await nc.publish("flowforge.agent.heartbeat.victim", beat("someone-else"))
    await nc.publish("flowforge.agent.heartbeat.long",
                     beat("a").replace(b'"agent_id":"a"', b'"agent_id":"' + b"a" * 5000 + b'"'))
    for i in range(MAX_AGENTS_KEPT + 500):
        await nc.publish(f"flowforge.agent.heartbeat.fake{i}", beat(f"fake{i}"))
    await nc.flush()

    await wait_for(lambda: _agents_seen(client, MAX_AGENTS_KEPT))
    agents = await client.agents()
    assert len(agents) == MAX_AGENTS_KEPT
    assert all(a.agent_id.startswith("fake") for a in agents)


async def _agents_seen(client: Client, n: int) -> bool:
    return len(await client.agents()) >= n


async def test_a_flood_of_unread_requests_is_answered_busy_and_a_real_request_still_is(
    coordinator: Coordinator, client: Client, nc: NATS
) -> None:
    inbox = nc.new_inbox()  # nobody reads it
    for _ in range(2000):
        await nc.publish("flowforge.api.runs.list", b'{"limit": 1000}', reply=inbox)
    await nc.flush()

    assert await client.runs() == []
    await wait_for(lambda: _api_idle(coordinator))
    assert coordinator._api.refused_busy > 0


async def _api_idle(coordinator: Coordinator) -> bool:
    return not coordinator._api._inflight


GARBAGE_TASKS = {
    "run-id-no-subject-can-hold": json.dumps({
        "kind": "task.v1", "run_id": "a b\r\nPUB x 1", "flow": "noop", "version": "v",
        "task": "noop", "function": "tests.inputflows:noop", "attempt": 1}).encode(),
    "10000-deep": b'{"kind": "task.v1", "params": {"x": ' + nested(DEEP) + b"}}",
    "5000-char-run-id": json.dumps({
        "kind": "task.v1", "run_id": "r" * 5000, "flow": "noop", "version": "v", "task": "noop",
        "function": "tests.inputflows:noop", "attempt": 1}).encode(),
}


@pytest.mark.parametrize("case", list(GARBAGE_TASKS))
async def test_a_poison_task_message_is_terminated_at_once_and_the_agent_goes_on(
    case: str, coordinator: Coordinator, start_agent: StartAgent, client: Client, nc: NATS
) -> None:
    await client.register([inputflows.register_noop()])
    await start_agent(concurrency=1)
    js = nc.jetstream()

    await js.publish("flowforge.task.default", GARBAGE_TASKS[case])

    await wait_for(lambda: _settled(js, "FLOWFORGE_TASKS", "tasks_default"))
    info = await js.consumer_info("FLOWFORGE_TASKS", "tasks_default")
    assert info.num_redelivered == 0
    await _good_run_succeeds(client)


async def test_a_coordinator_whose_connection_the_server_closes_stops_instead_of_going_deaf(
    start_coordinator: StartCoordinator,
) -> None:
    coordinator = await start_coordinator()
    assert coordinator._nc is not None
    running = asyncio.ensure_future(coordinator._finished.wait())

    # a subject over the server's 4,096-byte control line: the server closes the connection
    await coordinator._nc.publish("x" * 5000, b"")

    await asyncio.wait_for(running, 20)
    assert coordinator.lost_nats


async def test_a_report_from_an_agent_that_does_not_hold_the_attempt_is_refused(
    coordinator: Coordinator, client: Client, nc: NATS
) -> None:
    await client.register([inputflows.register_noop()])
    run = await client.start("noop")  # no agent: the task stays queued until a1 says it has it
    js = nc.jetstream()
    subject = f"flowforge.report.{run.run_id}"
    await js.publish(subject, encoder.encode(TaskStarted(
        run_id=run.run_id, task="noop", attempt=1, agent_id="a1", at=1.0)))

    await js.publish(subject, succeeded_report(run.run_id, b'"forged"').replace(b'"a1"', b'"a2"'))

    await wait_for(lambda: _has_rejected(client, 1))
    [kept] = await client.rejected()
    assert kept.code == "invalid_state" and "agent a1 holds it" in kept.reason
    [task] = (await client.get(run.run_id)).tasks
    assert (task.status, task.agent_id) == (TaskStatus.RUNNING, "a1")
    await js.publish(subject, succeeded_report(run.run_id, b'"real"'))
    detail = await client.wait(run.run_id, timeout_s=20)
    assert msgspec.json.decode(detail.tasks[0].output) == "real"


async def test_one_refused_result_in_a_message_of_several_does_not_lose_the_others(
    coordinator: Coordinator, client: Client, nc: NATS
) -> None:
    await client.register([inputflows.register_noop()])
    held, other = await client.start("noop"), await client.start("noop")
    js = nc.jetstream()
    await js.publish(f"flowforge.report.{held.run_id}", encoder.encode(TaskStarted(
        run_id=held.run_id, task="noop", attempt=1, agent_id="a1", at=1.0)))
    results = [msgspec.json.decode(succeeded_report(run_id, b'"out"').replace(b'"a1"', b'"a2"'))
               for run_id in (held.run_id, other.run_id)]  # a2 does not hold the first

    await js.publish("flowforge.report.several",
                     json.dumps({"kind": "results.v1", "results": results}).encode())

    detail = await client.wait(other.run_id, timeout_s=20)
    assert detail.run.status is RunStatus.SUCCEEDED
    [kept] = await client.rejected()
    assert kept.code == "invalid_state" and held.run_id in kept.reason
    [task] = (await client.get(held.run_id)).tasks
    assert (task.status, task.agent_id) == (TaskStatus.RUNNING, "a1")
