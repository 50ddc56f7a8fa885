"""Bad input to the coordinator API and to agents: clear error replies, nothing crashes.

API requests are sent as raw bytes over core request/reply, as any NATS client could; task
messages are published by hand on the tasks stream, bypassing the coordinator.
"""

import json
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from agent.worker import Agent
from coordinator.service import Coordinator
from flowforge.client import Client
from flowforge.embedded import EmbeddedNats
from protocol.api import Reply
from protocol.errors import ErrorCode
from protocol.flows import FlowSpec, TaskSpec
from protocol.limits import MAX_PARAMS_BYTES
from protocol.messages import TaskDispatch, TaskFailed, TaskSucceeded, encoder, report_decoder
from protocol.states import RunStatus, TaskStatus
from tests import inputflows
from tests.helpers import SharedStack, on_shared_stack, wait_for

TASKS_STREAM = "FLOWFORGE_TASKS"
MISSING_MODULE = "some_module_that_does_not_exist"


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    """A plain nats-py connection, as any other program would have."""
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.drain()


async def _ask(nc: NATS, subject: str, payload: bytes) -> dict[str, Any]:
    msg = await nc.request(subject, payload, timeout=10)
    return json.loads(msg.data)


def _error(reply: dict[str, Any], code: str, *fragments: str) -> None:
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] == code, reply
    for fragment in fragments:
        assert fragment in reply["error"]["message"], reply["error"]["message"]


async def _still_serves(client: Client, flow: str = "noop") -> None:
    """The coordinator registers and starts a flow of the case's own (``flow``) and reads it back."""
    await client.register([inputflows.register_noop(flow)])
    run = await client.start(flow)
    assert run.flow == flow
    assert (await client.get(run.run_id)).run.run_id == run.run_id


def _own_flow(case: str) -> str:
    """A flow name of the case's own, so cases on the shared stack cannot see each other's."""
    return "noop_" + re.sub(r"[^A-Za-z0-9_-]", "_", case)


# -- the coordinator API: the cases share one stack ---------------------------------------------

MALFORMED_REQUESTS = {
    "invalid-json": ("runs.get", b'{"run_id": ', "invalid runs.get request"),
    "binary-garbage": ("flows.register", b"\xff\xfe\x00\x01", "invalid flows.register request"),
    "empty-body-missing-field": ("runs.get", b"", "run_id"),
    "array-not-object": ("runs.list", b"[]", "Expected `object`"),
    "run-id-a-number": ("runs.get", b'{"run_id": 5}', "$.run_id"),
    "limit-a-string": ("runs.list", b'{"limit": "many"}', "$.limit"),
    "unknown-status": ("runs.list", b'{"status": "exploded"}', "$.status"),
    "params-a-list": ("runs.start", b'{"flow": "noop", "params": [1]}', "$.params"),
    "flows-a-string": ("flows.register", b'{"flows": "all of them"}', "$.flows"),
    "task-without-function": ("flows.register",
                              b'{"flows": [{"name": "f", "tasks": [{"name": "t"}]}]}',
                              "function"),
    "unknown-verb": ("runs.explode", b"{}", "unknown API subject", "runs.explode"),
    "unknown-noun": ("spaceships.list", b"{}", "unknown API subject", "spaceships.list"),
    "too-few-tokens": ("runs", b"{}", "unknown API subject"),
    "huge-garbage": ("runs.start", b"{" + b"x" * (4 * 1024 * 1024), "invalid runs.start request"),
}


@on_shared_stack
@pytest.mark.parametrize("case", list(MALFORMED_REQUESTS))
async def test_a_malformed_api_request_gets_a_bad_request_reply_and_the_coordinator_goes_on(
    case: str, shared_client: Client, shared_nc: NATS
) -> None:
    subject, payload, *fragments = MALFORMED_REQUESTS[case]

    reply = await _ask(shared_nc, f"flowforge.api.{subject}", payload)

    _error(reply, "bad_request", *fragments)
    await _still_serves(shared_client, _own_flow(case))


@on_shared_stack
async def test_run_parameters_over_the_size_limit_are_refused_with_advice(
    shared_client: Client, shared_nc: NATS
) -> None:
    flow = _own_flow("params-over-the-limit")
    await shared_client.register([inputflows.register_noop(flow)])
    huge = {"flow": flow, "params": {"blob": "x" * (2 * MAX_PARAMS_BYTES)}}

    reply = await _ask(shared_nc, "flowforge.api.runs.start", encoder.encode(huge))

    _error(reply, "too_large", f"over {MAX_PARAMS_BYTES} bytes", "reference")
    assert await shared_client.runs(flow=flow) == []
    await _still_serves(shared_client, flow)


@on_shared_stack
async def test_an_unknown_run_id_gets_unknown_run_naming_the_id(
    shared_client: Client, shared_nc: NATS
) -> None:
    reply = await _ask(shared_nc, "flowforge.api.runs.get", b'{"run_id": "no-such-run"}')

    _error(reply, "unknown_run", "'no-such-run'")
    await _still_serves(shared_client, _own_flow("unknown-run"))


@on_shared_stack
@pytest.mark.parametrize(("subject", "payload"), [
    ("runs.start", b'{"flow": "no_such_flow"}'),
    ("flows.get", b'{"name": "no_such_flow"}'),
])
async def test_an_unknown_flow_gets_unknown_flow_naming_the_flow(
    subject: str, payload: bytes, shared_client: Client, shared_nc: NATS
) -> None:
    reply = await _ask(shared_nc, f"flowforge.api.{subject}", payload)

    _error(reply, "unknown_flow", "'no_such_flow'")
    await _still_serves(shared_client, _own_flow(f"unknown-flow-{subject}"))


@on_shared_stack
async def test_a_request_without_a_reply_subject_is_handled_and_answered_to_no_one(
    shared_stack: SharedStack, shared_client: Client, shared_nc: NATS,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = shared_stack.coordinator._api
    handled: list[tuple[str, Reply]] = []
    handle = api.handle

    async def recorded(subject: str, data: bytes) -> Reply:
        reply = await handle(subject, data)
        handled.append((subject, reply))
        return reply

    monkeypatch.setattr(api, "handle", recorded)
    await shared_nc.publish("flowforge.api.runs.get", b"garbage")
    await shared_nc.publish("flowforge.api.runs.start", b'{"flow": "no_such_flow"}')
    await shared_nc.flush()

    await wait_for(lambda: len(handled) >= 2, timeout_s=10)  # both taken in and handled
    assert sorted((subject, reply.ok, reply.error and reply.error.code)
                  for subject, reply in handled[:2]) == [
        ("flowforge.api.runs.get", False, ErrorCode.BAD_REQUEST),
        ("flowforge.api.runs.start", False, ErrorCode.UNKNOWN_FLOW),
    ]
    await _still_serves(shared_client, _own_flow("no-reply-subject"))


# -- agents: only registered functions, never an import -----------------------------------------


async def test_a_task_naming_a_function_the_agent_did_not_register_fails_and_imports_nothing(
    coordinator: Coordinator, start_agent: Callable[..., Awaitable[Agent]], client: Client
) -> None:
    await start_agent()
    sneaky = FlowSpec(name="sneaky", tasks=(
        TaskSpec(name="shell", function="os:system"),
        TaskSpec(name="ghost", function=f"{MISSING_MODULE}:run"),
    ))
    await client.register([sneaky])

    detail = await client.wait((await client.start("sneaky")).run_id, timeout_s=20)

    assert detail.run.status is RunStatus.FAILED
    for task in detail.tasks:
        assert task.status is TaskStatus.FAILED
        assert task.error_type == "UnknownFunction"
        assert "runs only functions registered by the modules it imported" in (
            task.error_message or "")
    by_name = {t.task: t.error_message or "" for t in detail.tasks}
    assert "'os:system'" in by_name["shell"]
    assert f"'{MISSING_MODULE}:run'" in by_name["ghost"]
    assert MISSING_MODULE not in sys.modules
    await _still_serves(client)


async def test_a_hand_made_task_message_for_an_unregistered_function_is_reported_failed(
    coordinator: Coordinator, start_agent: Callable[..., Awaitable[Agent]], nc: NATS
) -> None:
    agent = await start_agent()
    reports = await nc.subscribe("flowforge.report.handmade01")
    dispatch = TaskDispatch(
        run_id="handmade01", flow="whatever", version="0", task="pwn", attempt=1,
        function=f"{MISSING_MODULE}:run", params={"cmd": "rm -rf /"}, queued_at=time.time(),
    )

    await nc.jetstream().publish("flowforge.task.default", encoder.encode(dispatch))

    report = report_decoder.decode((await reports.next_msg(timeout=10)).data)
    assert isinstance(report, TaskFailed)
    assert (report.run_id, report.task, report.attempt) == ("handmade01", "pwn", 1)
    assert report.agent_id == agent.agent_id
    assert report.error_type == "UnknownFunction"
    assert f"'{MISSING_MODULE}:run'" in report.message
    assert "nothing was imported" in report.message
    assert MISSING_MODULE not in sys.modules
    await wait_for(lambda: _tasks_settled(nc, 1))


async def _tasks_settled(nc: NATS, delivered: int) -> bool:
    info = await nc.jetstream().consumer_info(TASKS_STREAM, "tasks_default")
    return (info.delivered.stream_seq >= delivered and info.num_pending == 0
            and info.num_ack_pending == 0)


GARBAGE_TASKS = [
    b"\x00\xff not json at all",
    b"",
    b"[]",
    b'{"kind": "task.v1"}',
    b'{"kind": "task.v99", "run_id": "r"}',
    b'{"kind": "task.v1", "run_id": 5, "flow": "f", "version": "v", "task": "t", '
    b'"function": "m:f", "attempt": "first"}',
]


async def test_malformed_task_messages_do_not_crash_the_agent_and_it_serves_the_next_run(
    coordinator: Coordinator, start_agent: Callable[..., Awaitable[Agent]], client: Client,
    nc: NATS
) -> None:
    await client.register([inputflows.register_noop()])
    await start_agent(concurrency=1)
    js = nc.jetstream()

    for payload in GARBAGE_TASKS:
        await js.publish("flowforge.task.default", payload)
    await wait_for(lambda: _tasks_settled(nc, len(GARBAGE_TASKS)))

    info = await js.consumer_info(TASKS_STREAM, "tasks_default")
    assert info.num_redelivered == 0
    assert (await js.stream_info(TASKS_STREAM)).state.messages == 0
    detail = await client.wait((await client.start("noop")).run_id, timeout_s=20)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert msgspec.json.decode(detail.tasks[0].output) == "done"


GARBAGE_REPORTS = {
    "not-json": b"\x00\xff not json at all",
    "unknown-kind": b'{"kind": "exploded.v1", "run_id": "r"}',
    "results-not-a-list": b'{"kind": "results.v1", "results": "all good"}',
    "results-holding-a-task": b'{"kind": "results.v1", "results": [{"kind": "task.v1"}]}',
    "results-holding-a-log": (b'{"kind": "results.v1", "results": [{"kind": "log.v1", '
                              b'"run_id": "r", "task": "t", "attempt": 1, "agent_id": "a", '
                              b'"at": 1.0, "text": "hi"}]}'),
}


async def test_malformed_reports_are_refused_and_kept_and_the_next_run_still_succeeds(
    coordinator: Coordinator, start_agent: Callable[..., Awaitable[Agent]], client: Client,
    nc: NATS
) -> None:
    await client.register([inputflows.register_noop()])
    await start_agent()
    js = nc.jetstream()
    for payload in GARBAGE_REPORTS.values():
        await js.publish("flowforge.report.0000000000000badc0de", payload)

    await wait_for(lambda: _rejected_count(client, len(GARBAGE_REPORTS)))
    rejected = await client.rejected()
    assert sorted(r.raw for r in rejected) == sorted(GARBAGE_REPORTS.values())
    assert all(r.code == "bad_request" and "invalid report" in r.reason for r in rejected)
    info = await js.consumer_info("FLOWFORGE_REPORTS", "coordinator_reports")
    assert (info.num_ack_pending, info.num_redelivered) == (0, 0)  # terminated, not retried
    detail = await client.wait((await client.start("noop")).run_id, timeout_s=20)
    assert detail.run.status is RunStatus.SUCCEEDED


async def _rejected_count(client: Client, n: int) -> bool:
    return len(await client.rejected()) >= n


async def test_a_result_whose_output_nests_too_deep_fails_its_task_instead_of_leaving_it(
    coordinator: Coordinator, client: Client, nc: NATS
) -> None:
    await client.register([inputflows.register_noop()])  # no agent: the task stays queued
    run = await client.start("noop")
    deep = b"[" * 50 + b"]" * 50  # under a message's 64 levels, over an output's 48
    report = TaskSucceeded(run_id=run.run_id, task="noop", attempt=1, agent_id="a1", at=1.0,
                           started_at=1.0, output=msgspec.Raw(deep))
    await nc.jetstream().publish(f"flowforge.report.{run.run_id}", encoder.encode(report))
    detail = await client.wait(run.run_id, timeout_s=20)
    [task] = detail.tasks
    assert detail.run.status is RunStatus.FAILED and task.error_type == "OutputError"
    assert "more than 48 levels deep" in (task.error_message or "")
