"""Batches on the real stack (NATS, SQLite, an in-process coordinator and agent): one run per
parameter set, each set run once however often it is submitted, never more than max_active
runs of a batch at once; pause, resume, cancel; a bad item refused with its line."""

import asyncio
import itertools
import time
from datetime import UTC, datetime

import msgspec
import pytest

from coordinator.batches_api import MAX_LOADING
from flowforge import render
from flowforge.client import Client
from protocol.api import RetryRun
from protocol.batch_api import AddItems, CreateBatch, ItemsAdded, StartBatch
from protocol.batches import BatchRecord, BatchSpec, BatchState, ItemStatus, Reprocess
from protocol.errors import InvalidState, RemoteError
from protocol.records import RunRecord
from protocol.schedules import FireOutcome, FireRecord, Overlap, ScheduleSpec
from protocol.states import RunStatus
from tests import batchflows, inputflows
from tests.helpers import wait_for

ITEMS = [{"x": 1}, {"x": 2}, {"x": 3.0}, {"x": 4, "fail": True}, {"x": 3}, {"x": 5}]
"""Item 4 repeats item 2 (3.0 and 3 are one JSON value); item 3 fails."""


async def _runs_of(client: Client, batch_id: str) -> list[RunRecord]:
    return [r for r in await client.runs(limit=1000) if r.batch == batch_id]


async def test_each_parameter_set_runs_once_and_a_second_submit_runs_nothing_new(
    coordinator, start_agent, client: Client
) -> None:
    flow = batchflows.register_square()
    await start_agent()
    await client.register([flow])
    first = await client.submit_batch("square", ITEMS, name="squares")
    assert (first.total, first.to_run, first.skipped) == (6, 5, {4: "same parameters as item 2"})
    assert first.batch is not None and first.batch.spec.name == "squares"
    done = await client.wait_batch(first.batch.batch_id, timeout_s=30)
    assert done.state is BatchState.DONE
    shown = await client.batch("squares", items=10)
    assert shown.batch.counts == {"succeeded": 4, "failed": 1, "skipped": 1}
    assert [i.status for i in shown.items] == [
        ItemStatus.SUCCEEDED, ItemStatus.SUCCEEDED, ItemStatus.SUCCEEDED, ItemStatus.FAILED,
        ItemStatus.SKIPPED, ItemStatus.SUCCEEDED]
    runs = await _runs_of(client, first.batch.batch_id)
    assert sorted(r.params["x"] for r in runs) == [1, 2, 3, 4, 5]
    assert all(r.source == "batch" for r in runs)

    again = await client.submit_batch("square", ITEMS)
    assert again.to_run == 0
    assert "succeeded in batch" in again.skipped[0]
    assert again.skipped[3].startswith("failed in batch") and "--reprocess failed" in again.skipped[3]
    assert again.batch is not None
    assert (await client.wait_batch(again.batch.batch_id, timeout_s=10)).state is BatchState.DONE
    assert await _runs_of(client, again.batch.batch_id) == []

    failed = await client.submit_batch("square", ITEMS, reprocess="failed")
    assert failed.to_run == 1 and 3 not in failed.skipped
    assert failed.batch is not None
    await client.wait_batch(failed.batch.batch_id, timeout_s=30)
    [rerun] = await _runs_of(client, failed.batch.batch_id)
    assert rerun.params == {"x": 4, "fail": True} and rerun.status is RunStatus.FAILED


async def test_a_dry_run_says_what_would_run_and_stores_nothing(
    coordinator, client: Client
) -> None:
    await client.register([batchflows.register_square()])
    plan = await client.submit_batch("square", [*ITEMS, {"x": 1}], dry_run=True)
    assert plan.batch is None and plan.to_run == 5
    assert plan.skipped == {4: "same parameters as item 2", 6: "same parameters as item 0"}
    assert await client.batches() == []


async def test_a_dry_run_counts_every_item_that_would_be_skipped_past_a_thousand(
    coordinator, start_agent, client: Client
) -> None:
    """The coordinator names at most 1,000 skipped items per answer; a dry run still says
    that a second submit of 1,200 items that all ran would run none of them."""
    await client.register([batchflows.register_square()])
    await start_agent(concurrency=16)
    items = [{"x": i} for i in range(1200)]
    first = await client.submit_batch("square", items, max_active=200)
    assert first.batch is not None
    await client.wait_batch(first.batch.batch_id, timeout_s=60)

    plan = await client.submit_batch("square", items, dry_run=True)
    assert (plan.to_run, len(plan.skipped)) == (0, 1200)
    assert (await client.submit_batch("square", items)).to_run == 0


@pytest.mark.parametrize(("items", "said"), [
    ([{"x": 1}, {"y": 2}], "item 1 (line 2): flow 'square': missing required parameter 'x'"),
    ([{"x": "one"}], "item 0 (line 1): flow 'square': parameter 'x' must be int"),
])
async def test_a_bad_item_is_refused_with_its_line_and_nothing_runs(
    coordinator, client: Client, items: list[dict], said: str
) -> None:
    await client.register([batchflows.register_square()])
    with pytest.raises(RemoteError, match=said.replace("(", r"\(").replace(")", r"\)")):
        await client.submit_batch("square", items)
    [batch] = await client.batches()
    assert batch.state is BatchState.CANCELLED
    assert await client.runs() == []


async def test_max_active_holds_and_pause_resume_cancel_work(
    coordinator, start_agent, client: Client
) -> None:
    flow = batchflows.register_slow_square()
    await start_agent(concurrency=8)
    await client.register([flow])
    sub = await client.submit_batch("slow_square", [{"x": i} for i in range(12)], max_active=2)
    assert sub.batch is not None
    batch_id = sub.batch.batch_id

    async def succeeded(n: int) -> bool:
        return (await client.batch(batch_id)).batch.counts.get("succeeded", 0) >= n

    await wait_for(lambda: succeeded(2), timeout_s=30)
    paused = await client.pause_batch(batch_id, note="the source is slow today")
    assert paused.state is BatchState.PAUSED and paused.note == "the source is slow today"

    async def quiet() -> bool:
        counts = (await client.batch(batch_id)).batch.counts
        return counts.get("pending", 0) + counts.get("running", 0) == 0

    await wait_for(quiet, timeout_s=30)
    held = (await client.batch(batch_id)).batch.counts
    assert held.get("waiting", 0) > 0
    assert (await client.resume_batch(batch_id)).state is BatchState.ACTIVE
    await wait_for(lambda: succeeded(held["succeeded"] + 2), timeout_s=30)
    cancelled = await client.cancel_batch(batch_id)
    assert cancelled.state is BatchState.CANCELLED
    shown = (await client.batch(batch_id)).batch
    assert shown.counts.get("waiting", 0) == 0 and shown.counts.get("cancelled", 0) > 0

    runs = await _runs_of(client, batch_id)
    events = sorted([(r.created_at, 1) for r in runs]
                    + [(r.finished_at, -1) for r in runs if r.finished_at is not None])
    at_once = most = 0
    for _, step in events:
        at_once += step
        most = max(most, at_once)
    assert most <= 2
    with pytest.raises(RemoteError, match="already cancelled"):
        await client.resume_batch(batch_id)


async def test_a_backfill_runs_each_missing_nominal_time_once_and_knows_it(
    coordinator, start_agent, client: Client
) -> None:
    flow = inputflows.register_which_hour()
    await start_agent()
    await client.register([flow])
    await client.put_schedule(ScheduleSpec(name="hourly", flow="which_hour", every_s=3600.0))
    now = time.time()
    start, end = now - 5 * 3600, now
    plan = await client.backfill("hourly", start, end, dry_run=True)
    assert plan.batch is None and plan.times == 5 and plan.skipped == {}
    assert await client.batches() == []

    done = await client.backfill("hourly", start, end, max_active=1)
    assert done.batch is not None and done.batch.spec.schedule == "hourly"
    assert done.batch.spec.name == "backfill hourly"
    finished = await client.wait_batch(done.batch.batch_id, timeout_s=30)
    assert finished.state is BatchState.DONE
    runs = await _runs_of(client, done.batch.batch_id)
    nominal = sorted(r.scheduled_for for r in runs if r.scheduled_for is not None)
    assert len(nominal) == 5 and all(start <= t <= end for t in nominal)
    assert all(b - a == 3600.0 for a, b in itertools.pairwise(nominal))
    for run in runs:
        assert run.status is RunStatus.SUCCEEDED and run.schedule == "hourly"
        assert run.idempotency_key == f"schedule:hourly:{run.scheduled_for!r}"
        detail = await client.get(run.run_id)
        assert msgspec.json.decode(detail.tasks[0].output) == datetime.fromtimestamp(
            run.scheduled_for, UTC).isoformat()  # type: ignore[arg-type]
        when = datetime.fromtimestamp(run.scheduled_for, UTC).strftime(  # type: ignore[arg-type]
            "%Y-%m-%dT%H:%M:%SZ")
        assert f"schedule hourly  for {when}  batch {run.batch}" in render.show_run(detail, None)
    ordered = sorted(runs, key=lambda r: r.created_at)
    assert all(a.finished_at is not None and a.finished_at <= b.created_at
               for a, b in itertools.pairwise(ordered)), "max_active=1 overlapped"

    again = await client.backfill("hourly", start - 3600, end)
    assert again.times == 6 and len(again.skipped) == 5
    assert all(why.startswith("already run: run ") for why in again.skipped.values())
    assert again.batch is not None
    await client.wait_batch(again.batch.batch_id, timeout_s=30)
    assert len(await _runs_of(client, again.batch.batch_id)) == 1


async def test_a_backfill_of_an_unknown_schedule_or_a_reversed_range_is_refused(
    coordinator, client: Client
) -> None:
    await client.register([inputflows.register_noop()])
    with pytest.raises(RemoteError, match="no schedule named 'nope'"):
        await client.backfill("nope", 0, 3600)
    await client.put_schedule(ScheduleSpec(name="tick", flow="noop", every_s=60.0))
    with pytest.raises(RemoteError, match="end is before its start"):
        await client.backfill("tick", 7200, 3600)
    with pytest.raises(RemoteError, match="more than 100,000 nominal times"):
        await client.backfill("tick", 0, time.time())


async def test_a_batch_goes_on_where_it_was_after_a_coordinator_restart(
    start_coordinator, start_agent, client: Client
) -> None:
    coordinator = await start_coordinator()
    flow = batchflows.register_slow_square()
    await start_agent(concurrency=8)
    await client.register([flow])
    sub = await client.submit_batch("slow_square", [{"x": i} for i in range(10)], max_active=2)
    assert sub.batch is not None
    batch_id = sub.batch.batch_id

    async def succeeded(n: int) -> bool:
        return (await client.batch(batch_id)).batch.counts.get("succeeded", 0) >= n

    await wait_for(lambda: succeeded(2), timeout_s=30)
    await coordinator.shutdown()
    await start_coordinator()
    assert (await client.wait_batch(batch_id, timeout_s=60)).state is BatchState.DONE
    runs = await _runs_of(client, batch_id)
    assert sorted(r.params["x"] for r in runs) == list(range(10)), "an item ran twice or never"
    assert all(r.status is RunStatus.SUCCEEDED for r in runs)


async def test_an_empty_batch_is_done_and_items_come_only_while_it_loads(
    coordinator, client: Client
) -> None:
    await client.register([batchflows.register_square()])
    empty = await client.submit_batch("square", [])
    assert empty.batch is not None and empty.total == 0
    assert (await client.wait_batch(empty.batch.batch_id, timeout_s=10)).state is BatchState.DONE
    with pytest.raises(RemoteError, match="items are added only before it starts") as late:
        await client.request(AddItems(batch_id=empty.batch.batch_id, first_seq=0,
                                      items=[{"x": 1}]), ItemsAdded)
    assert late.value.code == "invalid_state"
    with pytest.raises(RemoteError) as unknown:
        await client.batch("no-such-batch")
    assert unknown.value.code == "unknown_batch"
    assert "`flowforge batch list` shows them" in unknown.value.message


async def test_an_item_the_changed_flow_refuses_fails_with_the_reason_and_the_rest_go_on(
    coordinator, client: Client
) -> None:
    await client.register([batchflows.register_square()])  # no agent: nothing finishes
    sub = await client.submit_batch("square", [{"x": i} for i in range(5)], max_active=2)
    assert sub.batch is not None
    await client.pause_batch(sub.batch.batch_id)
    await client.register([batchflows.register_square_needing_y()], replace=True)
    for run in await _runs_of(client, sub.batch.batch_id):
        await client.cancel(run.run_id)
    await client.resume_batch(sub.batch.batch_id)
    done = await client.wait_batch(sub.batch.batch_id, timeout_s=30)
    assert done.state is BatchState.DONE
    shown = await client.batch(sub.batch.batch_id, items=10)
    assert shown.batch.counts == {"cancelled": 2, "failed": 3}
    refused = [i for i in shown.items if i.status is ItemStatus.FAILED]
    assert all(i.run_id is None and i.reason is not None
               and "could not start" in i.reason and "missing required parameter 'y'" in i.reason
               for i in refused)


@pytest.mark.parametrize("after_seq", [2**63, -(2**70), -2])
async def test_an_item_page_from_a_place_no_batch_has_is_a_bad_request(
    coordinator, client: Client, after_seq: int
) -> None:
    with pytest.raises(RemoteError) as refused:
        await client.batch("any", items=5, after_seq=after_seq)
    assert refused.value.code == "bad_request"


async def test_a_buffered_time_a_backfill_ran_is_skipped_and_the_schedule_goes_on(
    coordinator, client: Client
) -> None:
    await client.register([inputflows.register_noop("slow")])  # no agent: runs stay running
    await client.put_schedule(ScheduleSpec(name="s", flow="slow", every_s=2.0,
                                           overlap=Overlap.BUFFER_ONE))

    async def fires(outcome: FireOutcome) -> list[FireRecord]:
        return [f for f in (await client.schedule("s", fires=50)).fires if f.outcome is outcome]

    await wait_for(lambda: fires(FireOutcome.BUFFERED), timeout_s=20)
    nominal = (await fires(FireOutcome.BUFFERED))[0].nominal
    [first] = await client.runs(flow="slow")
    backfill = await client.backfill("s", nominal, nominal)
    assert backfill.batch is not None

    async def backfill_runs() -> list[RunRecord]:
        return await _runs_of(client, backfill.batch.batch_id)  # type: ignore[union-attr]

    await wait_for(backfill_runs, timeout_s=20)
    await client.cancel(first.run_id)  # the buffered time starts: the backfill has its run
    await wait_for(lambda: _skipped_as_backfilled(client, nominal), timeout_s=20)
    [backfilled] = await backfill_runs()
    await client.cancel(backfilled.run_id)

    async def a_later_run() -> bool:
        runs = await client.runs(flow="slow", limit=100)
        return any(r.batch is None and r.run_id != first.run_id for r in runs)

    await wait_for(a_later_run, timeout_s=20)  # the schedule was not left stuck


async def _skipped_as_backfilled(client: Client, nominal: float) -> bool:
    fires = (await client.schedule("s", fires=50)).fires
    return any(f.nominal == nominal and f.outcome is FireOutcome.SKIPPED
               and "already run by backfill batch" in f.reason for f in fires)


async def test_a_repeat_added_in_a_chunk_sent_at_the_same_time_still_runs_once(
    coordinator, start_agent, client: Client
) -> None:
    await client.register([batchflows.register_square()])
    await start_agent()
    record = await client.request(CreateBatch(spec=BatchSpec(flow="square", max_active=1)),
                                  BatchRecord)
    await asyncio.gather(*[client.request(AddItems(
        batch_id=record.batch_id, first_seq=i, items=[{"x": 7}]), ItemsAdded) for i in range(4)])
    await client.request(StartBatch(batch_id=record.batch_id), BatchRecord)
    await client.wait_batch(record.batch_id, timeout_s=30)
    assert len(await _runs_of(client, record.batch_id)) == 1
    shown = await client.batch(record.batch_id, items=10)
    assert shown.batch.counts == {"succeeded": 1, "skipped": 3}
    assert all((i.reason or "").startswith("same parameters as item")
               for i in shown.items if i.status is ItemStatus.SKIPPED)


async def test_retrying_a_run_of_a_full_batch_is_refused_and_max_active_holds(
    coordinator, client: Client
) -> None:
    await client.register([batchflows.register_square()])  # no agent: runs stay running
    sub = await client.submit_batch("square", [{"x": i} for i in range(5)], max_active=1)
    assert sub.batch is not None
    batch_id = sub.batch.batch_id

    async def active_runs() -> list[RunRecord]:
        return [r for r in await _runs_of(client, batch_id)
                if r.status in (RunStatus.PENDING, RunStatus.RUNNING)]

    await wait_for(active_runs, timeout_s=20)
    [first] = await active_runs()
    await client.cancel(first.run_id)  # the batch starts its next item in the freed place

    async def next_started() -> bool:
        return any(r.run_id != first.run_id for r in await active_runs())

    await wait_for(next_started, timeout_s=20)
    with pytest.raises(RemoteError, match="max_active") as refused:
        await client.retry(first.run_id)
    assert refused.value.code == "invalid_state"
    with pytest.raises(RemoteError, match="max_active"):
        await client.mark(first.run_id, "square", "succeeded", 1)
    assert len(await active_runs()) == 1
    await client.pause_batch(batch_id)
    [second] = await active_runs()
    await client.cancel(second.run_id)
    assert (await client.retry(first.run_id)).run_id == first.run_id  # room again: allowed
    assert [r.run_id for r in await active_runs()] == [first.run_id]


async def test_a_page_of_items_stops_before_the_answer_outgrows_one_message(
    coordinator, client: Client
) -> None:
    await client.register([batchflows.register_square_with_note()])
    note = "n" * 250_000  # 40 items are 10 MB of parameters: over one 8 MB NATS message
    sub = await client.submit_batch("square", [{"x": i, "note": note} for i in range(40)],
                                    max_active=1)
    assert sub.batch is not None
    first = await client.batch(sub.batch.batch_id, items=40)
    assert 1 <= len(first.items) < 40
    rest = await client.batch(sub.batch.batch_id, items=40, after_seq=first.items[-1].seq)
    seqs = [i.seq for i in first.items + rest.items]
    assert seqs == list(range(40))


async def test_batches_made_at_the_same_moment_are_all_paged_through(
    coordinator, client: Client
) -> None:
    await client.register([batchflows.register_square()])
    await asyncio.gather(*[client.request(CreateBatch(spec=BatchSpec(flow="square")),
                                          BatchRecord) for _ in range(5)])
    [newest] = await client.batches(limit=1)
    rest = await client.batches(limit=50, before=newest.batch_id)
    assert len(rest) == 4


async def test_batches_left_loading_are_bounded_and_cancelling_them_makes_room(
    coordinator, client: Client
) -> None:
    await client.register([batchflows.register_square()])
    made = [await client.request(CreateBatch(spec=BatchSpec(flow="square")), BatchRecord)
            for _ in range(MAX_LOADING)]
    with pytest.raises(RemoteError, match="100 batches are loading") as refused:
        await client.request(CreateBatch(spec=BatchSpec(flow="square")), BatchRecord)
    assert refused.value.code == "invalid_state"
    await client.cancel_batch(made[0].batch_id)
    assert (await client.submit_batch("square", [{"x": 1}])).batch is not None


async def test_a_retried_run_and_another_batch_never_start_one_item_in_the_same_moment(
    coordinator, start_agent, client: Client
) -> None:
    """Items are judged from committed rows, where a run retried in the same writer batch
    is still failed: the retry claims its parameters for that batch."""
    await client.register([batchflows.register_square()])
    await start_agent()
    item = {"x": 1, "fail": True}
    first = await client.submit_batch("square", [item])
    assert first.batch is not None
    await client.wait_batch(first.batch.batch_id, timeout_s=30)
    [failed] = await _runs_of(client, first.batch.batch_id)
    assert failed.status is RunStatus.FAILED
    runner, ops = coordinator.batches, coordinator._api.operations

    async def loaded() -> str:
        record = await client.request(CreateBatch(spec=BatchSpec(
            flow="square", reprocess=Reprocess.FAILED)), BatchRecord)
        await client.request(AddItems(batch_id=record.batch_id, first_seq=0, items=[item]),
                             ItemsAdded)
        return record.batch_id

    retry_first = await loaded()

    async def retried_then_started(now: float, batch) -> None:  # type: ignore[no-untyped-def]
        runner.begin(runner.records[retry_first], now, batch)
        await ops.retry_in(RetryRun(run_id=failed.run_id), now, batch)
        await runner.fill(retry_first, now, batch)

    await coordinator.writer.submit(retried_then_started)
    [skipped] = (await client.batch(retry_first, items=1)).items
    assert skipped.status is ItemStatus.SKIPPED and skipped.run_id is None
    assert "at the same moment" in (skipped.reason or "")
    await client.wait(failed.run_id, timeout_s=30)  # the retry ran (and failed again)

    start_first = await loaded()

    async def started_then_retried(now: float, batch) -> None:  # type: ignore[no-untyped-def]
        runner.begin(runner.records[start_first], now, batch)
        await runner.fill(start_first, now, batch)
        await ops.retry_in(RetryRun(run_id=failed.run_id), now, batch)

    with pytest.raises(InvalidState, match="at this moment"):
        await coordinator.writer.submit(started_then_retried)
