"""Fuzzing every subject the coordinator and agents consume, against the real processes.

Hypothesis makes hostile JSON (deep, long, huge numbers, control characters, wrong types) and
msgspec-valid-but-absurd variants of real messages. After each case: the processes are alive,
the message was settled (acked or terminated, never left to come back), the API answers with
a result or a coded error (never an internal one), and a good trigger still runs. At the end
a restart must skip everything refused before, and a good trigger runs again.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from agent.worker import Agent
from coordinator.service import Coordinator
from flowforge.client import Client, decode_events
from protocol.batch_api import CreateBatch
from protocol.batches import BatchRecord, BatchSpec
from protocol.messages import encoder
from protocol.records import RunRecord
from protocol.states import RunStatus
from tests import inputflows
from tests.helpers import wait_for

FUZZ = settings(max_examples=40, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

RUN_ID = "0190000000000000001"
REPORT = {"run_id": RUN_ID, "task": "noop", "attempt": 1, "agent_id": "a1", "delivery": 1,
          "at": 1.0}
TEMPLATES: dict[str, list[dict[str, Any]]] = {
    "trigger": [{"params": {}, "idempotency_key": "k1"}],
    "report": [
        {"kind": "started.v1", **REPORT},
        {"kind": "succeeded.v1", **REPORT, "started_at": 1.0, "output": {"rows": [1, 2]}},
        {"kind": "failed.v1", **REPORT, "error_type": "ValueError", "message": "m",
         "traceback": "tb"},
        {"kind": "progress.v1", **REPORT, "fraction": 0.5, "message": "half"},
        {"kind": "log.v1", **REPORT, "text": "a line\n"},
        {"kind": "results.v1", "results": [
            {"kind": "succeeded.v1", **REPORT, "started_at": 1.0, "output": 1}]},
    ],
    "heartbeat": [{"kind": "heartbeat.v1", "agent_id": "a1", "host": "h", "pid": 1,
                   "queues": ["default"], "functions": ["tests.inputflows:noop"],
                   "slots_total": 1, "slots_busy": 0, "started_at": 1.0, "at": 1.0}],
    "task": [{"kind": "task.v1", "run_id": RUN_ID, "flow": "noop", "version": "v",
              "task": "noop", "function": "tests.inputflows:noop", "attempt": 1,
              "params": {}, "inputs": {}, "timeout_s": 5.0, "queued_at": 1.0}],
}
API = {  # verb: a valid body
    "runs.start": {"flow": "noop", "params": {}, "idempotency_key": "k2"},
    "runs.get": {"run_id": RUN_ID, "task_offset": 0},
    "runs.list": {"flow": "noop", "limit": 10},
    "runs.cancel": {"run_id": RUN_ID},
    "runs.retry": {"run_id": RUN_ID},
    "tasks.mark": {"run_id": RUN_ID, "task": "noop", "status": "succeeded", "output": 1},
    "tasks.log": {"run_id": RUN_ID, "task": "noop"},
    "flows.get": {"name": "noop"},
    "flows.list": {},
    "rejected.list": {"limit": 5},
    "agents.list": {"include_gone": True},
    "flows.register": {"flows": [json.loads(encoder.encode(inputflows.register_noop()))],
                       "replace": True},
    "schedules.put": {"spec": {"name": "fz", "flow": "noop", "every_s": 3600.0}},
    "schedules.get": {"name": "fz", "fires": 5},
    "schedules.list": {"after": "a", "limit": 5},
    "schedules.pause": {"name": "fz", "note": "x"},
    "schedules.resume": {"name": "fz"},
    "schedules.trigger": {"name": "fz"},
    "schedules.delete": {"name": "fz"},
    "batches.create": {"spec": {"flow": "noop", "name": "fz", "max_active": 2}},
    "batches.add": {"batch_id": RUN_ID, "first_seq": 0, "items": [{}, {}]},
    "batches.plan": {"flow": "noop", "reprocess": "failed", "items": [{}]},
    "batches.start": {"batch_id": RUN_ID},
    "batches.list": {"limit": 5, "flow": "noop"},
    "batches.get": {"batch": "fz", "items": 5, "after_seq": 3, "status": "waiting"},
    "batches.pause": {"batch": "fz", "note": "x"},
    "batches.resume": {"batch": "fz"},
    "batches.cancel": {"batch": "fz"},
    "batches.backfill": {"schedule": "fz", "start": 0.0, "end": 7200.0, "dry_run": True},
    "limits.set": {"name": "queue:fz", "limit": 2},
    "limits.list": {"holders": 5},
    "limits.delete": {"name": "queue:fz"},
}

# -- hostile values --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                      children, max_size=4),
    max_leaves=12,
)
absurd = st.sampled_from([
    2**70, -(2**70), 2**63, -1, 0, 10**18, 1e308, -1e308, "", "x" * 5000, "r" * 4100,
    "\x1b]0;owned\x07\x1b[2J", "a.b.*.>", "\x00", None, [], {}, True, "k" * 300,
])


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """A value nested far deeper than any limit, as raw JSON text."""
    depth = draw(st.integers(min_value=60, max_value=20_000))
    return _Raw(draw(st.sampled_from(["[", '{"a":'])), depth)


@dataclass(frozen=True)
class _Raw:
    opener: str
    depth: int

    def text(self) -> str:
        closer = "]" if self.opener == "[" else "}"
        inner = "1" if self.opener != "[" else ""
        return self.opener * self.depth + inner + closer * self.depth


def _dumps(value: Any) -> bytes:
    """JSON with deep placeholders spliced in as text (building them as objects would itself
    exhaust the stack)."""
    raws: list[_Raw] = []

    def swap(v: Any) -> Any:
        if isinstance(v, _Raw):
            raws.append(v)
            return f"@@RAW{len(raws) - 1}@@"
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    text = json.dumps(swap(value))
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@RAW{i}@@"', raw.text())
    return text.encode()


@st.composite
def mutated(draw: st.DrawFn, templates: list[dict[str, Any]]) -> bytes:
    """A real message with one field set to something absurd, removed, or an unknown field."""
    message = json.loads(json.dumps(draw(st.sampled_from(templates))))
    target = message
    if "results" in message and draw(st.booleans()):
        target = message["results"][0]
    if not target:
        target["extra"] = draw(deep() | json_values | absurd)
        return _dumps(message)
    key = draw(st.sampled_from(sorted(target)))
    how = draw(st.sampled_from(["absurd", "json", "deep", "drop", "unknown"]))
    if how == "drop":
        del target[key]
    elif how == "unknown":
        target[draw(st.text(min_size=1, max_size=10))] = draw(deep() | json_values)
    else:
        target[key] = draw({"absurd": absurd, "json": json_values, "deep": deep()}[how])
    return _dumps(message)


def hostile(templates: list[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=64),
        json_values.map(lambda v: json.dumps(v).encode()),
        deep().map(_dumps),
        mutated(templates),
    )


# -- the stack under test ----------------------------------------------------------------------


@dataclass
class Stack:
    coordinator: Coordinator
    agent: Agent
    client: Client
    nc: NATS
    js: JetStreamContext
    good: int = 0
    batch_id: str | None = None

    async def alive(self) -> None:
        """Both processes serve: neither service loop has ended, the API answers, and a good
        trigger still runs."""
        assert not self.coordinator._finished.is_set(), "the coordinator stopped"
        assert not self.coordinator.lost_nats and not self.agent.lost_nats
        await self.client.runs(limit=1)
        await self.good_trigger_runs()

    async def settled(self, stream: str, consumer: str) -> None:
        async def done() -> bool:
            info = await self.js.consumer_info(stream, consumer)
            return info.num_pending == 0 and info.num_ack_pending == 0
        await wait_for(done, timeout_s=20)

    async def good_trigger_runs(self) -> None:
        """A trigger with a key of its own starts a run that succeeds (followed by its run
        event, not by polling)."""
        await self.client.register([inputflows.register_noop()])  # a fuzzed register may have changed it
        self.good += 1
        key = f"good-{self.good}"
        succeeded = asyncio.Event()

        async def on_run(msg: Msg) -> None:
            for run in decode_events(msg.subject, msg.data, "flowforge"):
                if (isinstance(run, RunRecord) and run.idempotency_key == key
                        and run.status is RunStatus.SUCCEEDED):
                    succeeded.set()

        sub = await self.nc.subscribe("flowforge.events.run.noop.*", cb=on_run)
        try:
            await self.js.publish("flowforge.trigger.noop", json.dumps(
                {"params": {}, "idempotency_key": key}).encode())
            await asyncio.wait_for(succeeded.wait(), 30)
        finally:
            await sub.unsubscribe()


@pytest.fixture
async def stack(start_coordinator: Callable[..., Awaitable[Coordinator]],
                start_agent: Callable[..., Awaitable[Agent]], client: Client,
                nc: NATS) -> AsyncIterator[Stack]:
    coordinator = await start_coordinator()
    await client.register([inputflows.register_noop()])
    agent = await start_agent(concurrency=2, agent_id="fuzz-agent")
    yield Stack(coordinator, agent, client, nc, nc.jetstream())


async def _restart_skips_refused(stack: Stack,
                                 start: Callable[..., Awaitable[Coordinator]]) -> None:
    refused = len(await stack.client.rejected(limit=1000))
    await stack.coordinator.shutdown()
    stack.coordinator = await start()
    await stack.good_trigger_runs()
    assert len(await stack.client.rejected(limit=1000)) == refused


# -- one test per consumer ----------------------------------------------------------------------


@FUZZ
@given(payload=hostile(TEMPLATES["trigger"]))
async def test_hostile_triggers(stack: Stack, payload: bytes) -> None:
    await stack.js.publish("flowforge.trigger.noop", payload)
    await stack.settled("FLOWFORGE_TRIGGERS", "coordinator_triggers")
    await stack.alive()


@FUZZ
@given(payload=hostile(TEMPLATES["report"]))
async def test_hostile_reports(stack: Stack, payload: bytes) -> None:
    await stack.js.publish(f"flowforge.report.{RUN_ID}", payload)
    await stack.settled("FLOWFORGE_REPORTS", "coordinator_reports")
    await stack.alive()


@FUZZ
@given(payload=hostile(TEMPLATES["heartbeat"]))
async def test_hostile_heartbeats(stack: Stack, payload: bytes) -> None:
    await stack.nc.publish("flowforge.agent.heartbeat.a1", payload)
    await stack.alive()


@FUZZ
@given(payload=hostile(TEMPLATES["task"]))
async def test_hostile_task_messages(stack: Stack, payload: bytes) -> None:
    await stack.js.publish("flowforge.task.default", payload)
    await stack.settled("FLOWFORGE_TASKS", "tasks_default")
    await stack.alive()


@settings(FUZZ, max_examples=120)
@given(verb=st.sampled_from(sorted(API)), data=st.data())
async def test_hostile_api_requests(stack: Stack, verb: str, data: st.DataObject) -> None:
    body = data.draw(hostile([API[verb]]))
    msg = await stack.nc.request(f"flowforge.api.{verb}", body, timeout=10)
    reply = json.loads(msg.data)
    if not reply["ok"]:
        assert reply["error"]["code"] not in ("internal",), reply
    await stack.alive()


@FUZZ
@given(items=st.lists(json_values | absurd, max_size=6), first=st.integers(-5, 1_000_005))
async def test_hostile_items_of_a_loading_batch(stack: Stack, items: list[Any], first: int) -> None:
    if stack.batch_id is None:
        created = await stack.client.request(CreateBatch(spec=BatchSpec(flow="noop")), BatchRecord)
        stack.batch_id = created.batch_id
    body = json.dumps({"batch_id": stack.batch_id, "first_seq": first, "items": items})
    msg = await stack.nc.request("flowforge.api.batches.add", body.encode(), timeout=10)
    reply = json.loads(msg.data)
    if not reply["ok"]:
        assert reply["error"]["code"] not in ("internal",), reply
    await stack.alive()


async def test_after_the_fuzz_a_good_trigger_runs_and_a_restart_skips_what_was_refused(
    stack: Stack, start_coordinator: Callable[..., Awaitable[Coordinator]]
) -> None:
    for payload in (b'{"params": {"x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}}",
                    b"\x00\xff", b'{"params": 5}'):
        await stack.js.publish("flowforge.trigger.noop", payload)
    await stack.js.publish(f"flowforge.report.{RUN_ID}", b"[" * 20_000)
    await stack.settled("FLOWFORGE_TRIGGERS", "coordinator_triggers")
    await stack.settled("FLOWFORGE_REPORTS", "coordinator_reports")
    await stack.good_trigger_runs()

    await _restart_skips_refused(stack, start_coordinator)
