"""The coordinator's publisher against real NATS: task events several to a message, split by
size; task messages whose store fails or is never acked sent again."""

import asyncio
from collections.abc import Iterable

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from bench.flows import fanout_flow
from coordinator.changes import Dispatch
from coordinator.publisher import EVENT_CHUNK_BYTES, Publisher
from coordinator.service import Coordinator
from flowforge import jspub
from flowforge.client import Client, decode_events
from flowforge.jetstream import ensure_streams
from protocol.messages import TaskDispatch, encoder
from protocol.records import NULL, TaskEvents, TaskRecord
from protocol.states import TaskStatus
from protocol.subjects import Subjects
from tests.helpers import wait_for

_events_dec = msgspec.json.Decoder(TaskEvents)
_record_dec = msgspec.json.Decoder(TaskRecord)


async def _collect(nc: NATS, subject: str) -> tuple[list[Msg], asyncio.Event, list[int]]:
    """Messages on ``subject``; ``want[0]`` records expected before ``done`` is set."""
    msgs: list[Msg] = []
    done, want = asyncio.Event(), [0]

    async def on_msg(msg: Msg) -> None:
        msgs.append(msg)
        if sum(len(_events_dec.decode(m.data).tasks) for m in msgs) >= want[0]:
            done.set()

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    return msgs, done, want


def _record(run_id: str, i: int, output: bytes = NULL) -> TaskRecord:
    return TaskRecord(run_id=run_id, task=f"t{i:05d}", status=TaskStatus.SUCCEEDED,
                      output=msgspec.Raw(output))


async def test_a_batch_goes_out_as_one_message_per_run_split_by_size(nc: NATS) -> None:
    subjects = Subjects()
    publisher = Publisher(nc, nc.jetstream(), subjects)
    msgs, done, want = await _collect(nc, subjects.task_events("*"))
    blob = b'"' + b"x" * 1000 + b'"'
    big = [_record("runbig", i, blob) for i in range(600)]  # ~0.6 MB: several messages
    small = [_record("runsmall", i) for i in range(3)]
    want[0] = len(big) + len(small)
    await publisher.task_events([*big[:300], *small, *big[300:]])
    await asyncio.wait_for(done.wait(), 10)

    by_run: dict[str, list[TaskRecord]] = {}
    for msg in msgs:
        event = _events_dec.decode(msg.data)
        assert msg.subject == subjects.task_events(event.run_id)
        assert len(msg.data) <= EVENT_CHUNK_BYTES + 2048  # one record may tip it over
        by_run.setdefault(event.run_id, []).extend(event.tasks)
    assert [m.subject for m in msgs].count(subjects.task_events("runsmall")) == 1
    assert 4 <= [m.subject for m in msgs].count(subjects.task_events("runbig")) <= 8
    assert by_run["runbig"] == big and by_run["runsmall"] == small  # all, in order


async def test_a_record_nats_refuses_is_dropped_and_counted_the_others_go_out(nc: NATS) -> None:
    subjects = Subjects()
    publisher = Publisher(nc, nc.jetstream(), subjects)
    msgs, done, want = await _collect(nc, subjects.task_events("*"))
    huge = _record("r1", 1, b'"' + b"y" * nc.max_payload + b'"')
    fine = [_record("r1", 0), _record("r1", 2)]
    want[0] = 2
    await publisher.task_events([fine[0], huge, fine[1]])
    await asyncio.wait_for(done.wait(), 10)
    assert [t for m in msgs for t in _events_dec.decode(m.data).tasks] == fine
    assert publisher.dropped_events == 1


async def test_a_fan_out_run_sends_one_message_per_batch_carrying_every_change_of_that_batch(
    coordinator: Coordinator, start_agent: object, client: Client, nc: NATS,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = fanout_flow(300)
    publisher = coordinator.writer.publisher  # type: ignore[union-attr]
    batches: list[list[TaskRecord]] = []  # what each committed batch changed, as handed over
    task_events = publisher.task_events

    async def recorded(records: Iterable[TaskRecord]) -> None:
        records = list(records)
        batches.append([_copy(r) for r in records])  # the scheduler changes them later
        await task_events(records)

    monkeypatch.setattr(publisher, "task_events", recorded)
    await start_agent(concurrency=16)  # type: ignore[operator]
    await client.register([spec])
    msgs, _, _ = await _collect(nc, client.subjects.task_events("*"))
    run = await client.start(spec.name)
    detail = await client.wait(run.run_id, timeout_s=60)
    assert detail.run.status == "succeeded"

    ours = [[r for r in batch if r.run_id == run.run_id] for batch in batches]
    ours = [batch for batch in ours if batch]
    sent = [rec for batch in ours for rec in batch]
    received: list[TaskRecord] = []

    def all_received() -> bool:
        received[:] = [rec for msg in msgs  # decoded as the SDK does
                       for rec in decode_events(msg.subject, msg.data, "flowforge")]
        return len(received) >= len(sent)

    await wait_for(all_received, timeout_s=10)
    assert all(isinstance(rec, TaskRecord) and rec.run_id == run.run_id for rec in received)
    assert [encoder.encode(r) for r in received] == [encoder.encode(r) for r in sent]
    # every change announced once, in commit order; no batch of this size is split by
    # EVENT_CHUNK_BYTES, so each goes out as exactly one message
    assert all(sum(len(encoder.encode(r)) + 1 for r in batch) < EVENT_CHUNK_BYTES for batch in ours)
    assert len(msgs) == len(ours)
    assert [len(_events_dec.decode(m.data).tasks) for m in msgs] == [len(b) for b in ours]
    assert all(len({r.task for r in batch}) == len(batch) for batch in ours)  # latest state only
    final = {rec.task: rec for rec in received}
    assert len(final) == 302 and {r.status for r in final.values()} == {TaskStatus.SUCCEEDED}
    assert len(msgs) < len(received)  # the run's first batch alone holds its 302 new tasks


def _copy(rec: TaskRecord) -> TaskRecord:
    return _record_dec.decode(encoder.encode(rec))


def _dispatch(task: str) -> TaskDispatch:
    return TaskDispatch(run_id="r1", flow="f", version="v", task=task, function="m:f",
                        attempt=1, queued_at=1.0)


async def test_a_task_whose_store_fails_or_is_never_acked_is_sent_again_and_then_stored(
    nc: NATS, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jspub, "SWEEP_EVERY_S", 0.05)  # late acks looked for every 1 s
    subjects = Subjects()
    publisher = Publisher(nc, nc.jetstream(), subjects, ack_timeout_s=0.2)
    await publisher.start()
    try:
        silent = await nc.subscribe(subjects.task("quiet"))  # takes the message, never acks
        await publisher.dispatch([Dispatch("q", _dispatch("no_stream")),
                                  Dispatch("quiet", _dispatch("no_ack"))])
        await wait_for(lambda: len(publisher._retry) == 2, timeout_s=10)
        assert publisher.published == 0

        await silent.unsubscribe()
        await ensure_streams(nc.jetstream(), subjects)  # the store is back
        await publisher.dispatch(list(publisher._retry.values()))  # what retry_loop does
        await wait_for(lambda: publisher.published == 2, timeout_s=10)
        stored = await nc.jetstream().stream_info(subjects.tasks_stream)
        assert stored.state.messages == 2
    finally:
        await publisher.stop()
