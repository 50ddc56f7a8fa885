"""Triggers published by anyone with plain nats-py: good ones start runs, bad ones are refused.

A refused trigger is terminated (never redelivered), kept with its raw bytes and reason,
announced as an error event, and does not stop the next good trigger.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from agent.worker import Agent
from coordinator.service import Coordinator, CoordinatorConfig
from flowforge.client import Client
from flowforge.connection import ConnectOptions
from flowforge.embedded import EmbeddedNats
from flowforge.registry import REGISTRY
from protocol.errors import BadRequest, NotConnected, TooLarge
from protocol.limits import MAX_REJECTED_RAW_BYTES
from protocol.records import RunRecord
from protocol.states import RunStatus
from tests import inputflows
from tests.helpers import TEARDOWN_GRACE_S, wait_for

TRIGGERS_STREAM = "FLOWFORGE_TRIGGERS"
TRIGGERS_CONSUMER = "coordinator_triggers"
GOOD_TRIGGER = b'{"params": {"n_rows": 10}}'


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    """A plain nats-py connection, as any other program would have."""
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.drain()


async def _register_flows(client: Client) -> None:
    inputflows.load_seed_pipelines()
    inputflows.register_greeting()
    await client.register([REGISTRY.flows["pipeline_simple"], REGISTRY.flows["greeting"]])


@pytest.fixture
async def stack(coordinator: Coordinator, start_agent: Callable[..., Awaitable[Agent]],
                client: Client) -> Client:
    """Coordinator and one agent serving pipeline_simple and greeting; returns the client."""
    await _register_flows(client)
    await start_agent()
    return client


async def _triggers_settled(js: JetStreamContext, delivered: int) -> bool:
    """The coordinator has been handed ``delivered`` triggers and acked or terminated each."""
    info = await js.consumer_info(TRIGGERS_STREAM, TRIGGERS_CONSUMER)
    return (info.delivered.stream_seq >= delivered and info.num_pending == 0
            and info.num_ack_pending == 0)


async def _assert_nothing_left_to_redeliver(js: JetStreamContext) -> None:
    info = await js.consumer_info(TRIGGERS_STREAM, TRIGGERS_CONSUMER)
    assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)
    assert (await js.stream_info(TRIGGERS_STREAM)).state.messages == 0


async def _only_run(client: Client, flow: str) -> RunRecord:
    await wait_for(lambda: _has_runs(client, flow))
    runs = await client.runs(flow=flow)
    assert len(runs) == 1, runs
    return runs[0]


async def _has_runs(client: Client, flow: str) -> bool:
    return bool(await client.runs(flow=flow))


async def _succeeds(client: Client, run: RunRecord) -> None:
    detail = await client.wait(run.run_id, timeout_s=20)
    assert detail.run.status is RunStatus.SUCCEEDED, detail


async def test_a_trigger_from_plain_nats_starts_a_run_that_succeeds(
    stack: Client, nc: NATS
) -> None:
    js = nc.jetstream()
    await js.publish("flowforge.trigger.pipeline_simple", GOOD_TRIGGER)

    run = await _only_run(stack, "pipeline_simple")

    assert run.source == "trigger"
    assert run.params == {"n_rows": 10}
    await _succeeds(stack, run)
    await wait_for(lambda: _triggers_settled(js, 1))
    await _assert_nothing_left_to_redeliver(js)
    assert await stack.rejected() == []


BAD_TRIGGERS = {
    "malformed-json": ("pipeline_simple", b'{"params": {"n_rows": ', "bad_request",
                       "not valid JSON"),
    "binary-garbage": ("pipeline_simple", b"\x00\xff\xfe garbage", "bad_request",
                       "not valid JSON"),
    "not-an-object": ("pipeline_simple", b"[1, 2, 3]", "bad_request", "Expected `object`"),
    "unknown-flow": ("no_such_flow", b'{"params": {}}', "unknown_flow", "'no_such_flow'"),
    "params-a-list": ("pipeline_simple", b'{"params": [1, 2]}', "bad_request", "$.params"),
    "params-a-string": ("pipeline_simple", b'{"params": "n_rows=5"}', "bad_request",
                        "$.params"),
    "param-of-wrong-type": ("pipeline_simple", b'{"params": {"n_rows": "many"}}',
                            "invalid_params", "parameter 'n_rows' must be int, got str"),
    "missing-required-param": ("greeting", b'{"params": {"times": 2}}', "invalid_params",
                               "missing required parameter 'name'"),
    "idempotency-key-not-a-string": ("pipeline_simple", b'{"idempotency_key": 5}',
                                     "bad_request", "$.idempotency_key"),
    "over-the-size-limit": ("pipeline_simple",
                            b'{"params": {"blob": "' + b"x" * 300_000 + b'"}}',
                            "too_large", "the limit is"),
}


@pytest.mark.parametrize("case", list(BAD_TRIGGERS))
async def test_a_bad_trigger_is_terminated_recorded_announced_and_the_next_one_still_runs(
    case: str, stack: Client, nc: NATS
) -> None:
    flow, payload, code, reason = BAD_TRIGGERS[case]
    subject = f"flowforge.trigger.{flow}"
    js = nc.jetstream()
    errors = await nc.subscribe("flowforge.events.error.>")

    await js.publish(subject, payload)

    event = json.loads((await errors.next_msg(timeout=10)).data)
    assert (event["kind"], event["subject"], event["code"]) == ("trigger", subject, code)
    assert reason in event["reason"], event["reason"]
    [rejected] = await stack.rejected()
    assert (rejected.subject, rejected.code) == (subject, code)
    if len(payload) <= MAX_REJECTED_RAW_BYTES:
        assert rejected.raw == payload
    else:  # the start is kept, with how much was cut
        assert rejected.raw == payload[:MAX_REJECTED_RAW_BYTES] + f"…({len(payload):,} bytes, cut)".encode()
    assert rejected.reason == event["reason"]
    assert rejected.id == event["rejected_id"]
    await wait_for(lambda: _triggers_settled(js, 1))
    await _assert_nothing_left_to_redeliver(js)
    assert await stack.runs() == []

    await js.publish("flowforge.trigger.pipeline_simple", GOOD_TRIGGER)
    await _succeeds(stack, await _only_run(stack, "pipeline_simple"))
    await wait_for(lambda: _triggers_settled(js, 2))
    await _assert_nothing_left_to_redeliver(js)
    assert len(await stack.rejected()) == 1


async def test_two_triggers_with_the_same_idempotency_key_create_one_run(
    stack: Client, nc: NATS
) -> None:
    js = nc.jetstream()
    same = b'{"params": {"n_rows": 5}, "idempotency_key": "nightly-2024-01-01"}'

    await js.publish("flowforge.trigger.pipeline_simple", same)
    await js.publish("flowforge.trigger.pipeline_simple", same)
    await wait_for(lambda: _triggers_settled(js, 2))

    run = await _only_run(stack, "pipeline_simple")
    assert run.idempotency_key == "nightly-2024-01-01"
    await _succeeds(stack, run)
    await js.publish("flowforge.trigger.pipeline_simple",
                     b'{"params": {"n_rows": 5}, "idempotency_key": "nightly-2024-01-02"}')
    await wait_for(lambda: _triggers_settled(js, 3))
    keys = sorted(r.idempotency_key or "" for r in await stack.runs(flow="pipeline_simple"))
    assert keys == ["nightly-2024-01-01", "nightly-2024-01-02"]
    assert await stack.rejected() == []


async def test_a_trigger_published_while_no_coordinator_runs_starts_a_run_once_one_starts(
    start_coordinator: Callable[..., Awaitable[Coordinator]],
    start_agent: Callable[..., Awaitable[Agent]], client: Client, nc: NATS, tmp_path: Path,
) -> None:
    db_path = tmp_path / "durable.db"
    first = await start_coordinator(db_path=db_path)  # creates the streams
    await _register_flows(client)
    await start_agent()
    await first.shutdown()
    js = nc.jetstream()

    await js.publish("flowforge.trigger.pipeline_simple", GOOD_TRIGGER)
    assert (await js.stream_info(TRIGGERS_STREAM)).state.messages == 1
    await start_coordinator(db_path=db_path)

    run = await _only_run(client, "pipeline_simple")
    assert run.source == "trigger"
    await _succeeds(client, run)
    await wait_for(lambda: _triggers_settled(js, 1))
    await _assert_nothing_left_to_redeliver(js)


async def test_triggers_still_start_runs_after_the_nats_store_was_lost_and_the_database_kept(
    start_coordinator: Callable[..., Awaitable[Coordinator]], client: Client, nc: NATS,
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "kept.db"
    first = await start_coordinator(db_path=db_path)
    await _register_flows(client)
    await nc.jetstream().publish("flowforge.trigger.pipeline_simple", GOOD_TRIGGER)
    await _only_run(client, "pipeline_simple")
    await first.shutdown()
    fresh = EmbeddedNats(tmp_path / "fresh-nats", port=-1)  # stream sequences start again at 1
    await fresh.start()
    try:
        async with Coordinator(CoordinatorConfig(connect=ConnectOptions(url=fresh.url),
                                                 db_path=db_path)) as coordinator:
            serving = asyncio.create_task(coordinator.run())
            await asyncio.wait_for(coordinator.started.wait(), 10)
            async with Client(ConnectOptions(url=fresh.url)) as fresh_client:
                other = await nats.connect(fresh.url)
                await other.jetstream().publish("flowforge.trigger.pipeline_simple",
                                                GOOD_TRIGGER)
                await other.drain()

                await wait_for(lambda: _run_count(fresh_client, 2))
            await coordinator.shutdown()
            await asyncio.wait_for(serving, 10)
    finally:
        await fresh.stop(grace_s=TEARDOWN_GRACE_S)


async def _run_count(client: Client, n: int) -> bool:
    return len(await client.runs(flow="pipeline_simple")) == n


async def test_the_same_idempotency_key_on_two_flows_starts_one_run_of_each(
    coordinator: Coordinator, client: Client
) -> None:
    inputflows.load_seed_pipelines()
    await client.register([REGISTRY.flows["pipeline_simple"], REGISTRY.flows["parallel_pipelines"]])
    first = await client.start("pipeline_simple", idempotency_key="nightly-2026-11-30")
    other = await client.start("parallel_pipelines", idempotency_key="nightly-2026-11-30")
    again = await client.start("pipeline_simple", idempotency_key="nightly-2026-11-30")

    assert other.run_id != first.run_id
    assert other.flow == "parallel_pipelines"
    assert again.run_id == first.run_id


async def test_a_trigger_redelivered_after_its_run_was_committed_starts_no_second_run(
    start_coordinator: Callable[..., Awaitable[Coordinator]],
    start_agent: Callable[..., Awaitable[Agent]], client: Client, nc: NATS,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The coordinator commits the run, then "crashes" before acking the trigger: JetStream
    delivers it again (after the inbox ack wait) and the stored run is found, not doubled."""
    from coordinator.publisher import Publisher

    await start_coordinator(lease_s=1.0)  # the inbox ack wait: redelivery after 1 s, not 5
    await _register_flows(client)
    await start_agent()

    real_ack = Publisher.ack
    dropped: list[object] = []

    async def lose_the_first_trigger_ack(self: Publisher, msgs: list[Msg]) -> None:
        kept = []
        for msg in msgs:
            if not dropped and ".trigger." in f".{msg.subject}":
                dropped.append(msg)  # as if the coordinator died between commit and ack
            else:
                kept.append(msg)
        await real_ack(self, kept)

    monkeypatch.setattr(Publisher, "ack", lose_the_first_trigger_ack)
    js = nc.jetstream()
    await js.publish("flowforge.trigger.greeting", json.dumps({"params": {"name": "once"}}).encode())
    await wait_for(lambda: dropped, timeout_s=10)
    [first] = await client.runs(flow="greeting")  # committed before the ack was lost
    await wait_for(lambda: _triggers_settled(js, 1), timeout_s=20)  # redelivered, then acked
    info = await js.consumer_info(TRIGGERS_STREAM, TRIGGERS_CONSUMER)
    assert info.delivered.consumer_seq == 2  # it was delivered twice
    runs = await client.runs(flow="greeting")
    assert [r.run_id for r in runs] == [first.run_id]  # the same run, not a new one
    assert (await client.wait(first.run_id, timeout_s=20)).run.status is RunStatus.SUCCEEDED


async def test_the_sdk_sends_triggers_that_start_runs_and_keys_dedupe_them(stack: Client) -> None:
    seq = await stack.trigger("pipeline_simple", {"n_rows": 7}, idempotency_key="once")
    sent = [await stack.send_trigger("greeting", {"name": f"n{i}"}) for i in range(20)]
    again = await stack.trigger("pipeline_simple", {"n_rows": 7}, idempotency_key="once")
    seqs = await asyncio.gather(*sent)
    assert seq >= 1 and len({seq, again, *seqs}) == 22  # each message stored

    run = await _only_run(stack, "pipeline_simple")  # the second keyed trigger: no new run
    assert (run.source, run.params, run.idempotency_key) == ("trigger", {"n_rows": 7}, "once")
    await _succeeds(stack, run)
    await wait_for(lambda: _count_runs(stack, "greeting", 20))
    names = {r.params["name"] for r in await stack.runs(flow="greeting")}
    assert names == {f"n{i}" for i in range(20)}


async def _count_runs(client: Client, flow: str, n: int) -> bool:
    return len(await client.runs(flow=flow)) >= n


@pytest.mark.parametrize(("flow", "params", "error", "match"), [
    ("no such flow", {}, BadRequest, "not a valid flow name"),
    ("pipeline_simple", {"when": object()}, BadRequest, "not JSON-serialisable"),
    ("pipeline_simple", {"blob": "x" * 300_000}, TooLarge, "pass a reference"),
])
async def test_the_sdk_refuses_a_trigger_it_cannot_send_before_sending(
    client: Client, flow: str, params: dict, error: type[Exception], match: str,
) -> None:
    with pytest.raises(error, match=match):
        await client.trigger(flow, params)


async def test_an_sdk_trigger_with_no_stream_to_store_it_fails_clearly(client: Client) -> None:
    with pytest.raises(NotConnected, match=r"no JetStream stream stores flowforge\.trigger\.f"):
        await client.trigger("f")
