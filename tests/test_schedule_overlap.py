"""Overlap policies on the real stack: cancel_other cancels the schedule's running run and
starts the new one only once the old run's tasks have stopped, as Temporal's CancelOther does."""

import asyncio
import itertools
import time

from flowforge import TaskContext, register_task_pipeline
from flowforge.client import Client
from protocol.flows import FlowSpec
from protocol.records import RunRecord
from protocol.schedules import Catchup, FireOutcome, Overlap, ScheduleSpec
from protocol.states import RunStatus
from tests import inputflows
from tests.helpers import wait_for

CLEANUP_S = 0.5
STOPPED: dict[str, float] = {}
"""When each run's task had finished cleaning up after its cancel (run id -> time)."""
STARTED: set[str] = set()
"""Runs whose task started (one cancelled while queued never runs, nor stops)."""


async def holds_on(ctx: TaskContext, cleanup_s: float = CLEANUP_S) -> str:
    """Runs until cancelled, then takes ``cleanup_s`` to clean up, as a task that writes
    somewhere must before another run may write there."""
    STARTED.add(ctx.run_id)
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await asyncio.sleep(cleanup_s)  # the cleanup the next run must wait for
        STOPPED[ctx.run_id] = time.time()
        raise
    return "never"


def _flow() -> FlowSpec:
    return register_task_pipeline(flow_name="holds_on", clear_existing_flow_in_db=True, pipeline={
        "hold": {"function": holds_on, "depends_on": []}})


async def _runs(client: Client) -> list[RunRecord]:
    return sorted((r for r in await client.runs(flow="holds_on", limit=100) if r.schedule == "swap"),
                  key=lambda r: r.scheduled_for or 0)


async def _swap_every(client: Client, start_agent, every_s: float,  # type: ignore[no-untyped-def]
                      **params: float) -> None:
    """An agent, the holds_on flow and a cancel_other schedule 'swap' of it."""
    STOPPED.clear()
    STARTED.clear()
    flow = _flow()
    await start_agent(grace_s=0.5)  # at teardown, the holding task need not be waited for
    await client.register([flow])
    await client.put_schedule(ScheduleSpec(name="swap", flow="holds_on", every_s=every_s,
                                           params=params, overlap=Overlap.CANCEL_OTHER))


async def test_cancel_other_starts_the_new_run_only_after_the_cancelled_one_stopped(
    coordinator, start_agent, client: Client
) -> None:
    await _swap_every(client, start_agent, 2.0)

    async def second_started() -> bool:
        runs = await _runs(client)
        return len(runs) >= 2 and runs[0].status is RunStatus.CANCELLED

    await wait_for(second_started, timeout_s=30)
    first, second = (await _runs(client))[:2]
    stopped = STOPPED.get(first.run_id)
    assert stopped is not None, "the first run's task was not stopped"
    assert second.created_at >= stopped, (
        f"the new run started {stopped - second.created_at:.2f} s before the old one stopped")
    fires = {f.nominal: f for f in (await client.schedule("swap", fires=20)).fires}
    assert fires[second.scheduled_for].outcome is FireOutcome.STARTED  # type: ignore[index]
    assert fires[second.scheduled_for].run_id == second.run_id  # type: ignore[index]


async def test_buffer_one_keeps_one_fire_waiting_and_skips_the_rest(
    coordinator, client: Client
) -> None:
    await client.register([inputflows.register_noop()])  # no agent: the first run stays queued
    await client.put_schedule(ScheduleSpec(name="one", flow="noop", every_s=1.0,
                                           overlap=Overlap.BUFFER_ONE))

    async def outcomes() -> list[FireOutcome]:
        return [f.outcome for f in (await client.schedule("one", fires=50)).fires]

    async def skipped_twice() -> bool:
        return (await outcomes()).count(FireOutcome.SKIPPED) >= 2

    await wait_for(skipped_twice, timeout_s=20)
    fires = sorted((await client.schedule("one", fires=50)).fires, key=lambda f: f.nominal)
    assert [f.outcome for f in fires[:2]] == [FireOutcome.STARTED, FireOutcome.BUFFERED]
    assert {f.outcome for f in fires[2:]} == {FireOutcome.SKIPPED}
    assert all("already waiting" in f.reason for f in fires[2:])


async def test_with_cancel_other_a_newer_fire_replaces_one_waiting_and_runs_never_overlap(
    coordinator, start_agent, client: Client
) -> None:
    await _swap_every(client, start_agent, 1.0, cleanup_s=2.5)  # cleanup outlasts a period

    async def replaced_and_started_after() -> bool:
        fires = (await client.schedule("swap", fires=50)).fires
        replaced = [f.nominal for f in fires if "replaced" in f.reason]
        return bool(replaced) and any(f.outcome is FireOutcome.STARTED and f.nominal > replaced[0]
                                      for f in fires)

    await wait_for(replaced_and_started_after, timeout_s=30)
    await client.pause_schedule("swap")
    runs = await _runs(client)
    for older, newer in itertools.pairwise(runs):
        if older.run_id in STARTED:  # a run cancelled while still queued never ran
            stopped = STOPPED.get(older.run_id)
            assert stopped is not None and newer.created_at >= stopped, "two runs overlapped"
    fires = (await client.schedule("swap", fires=50)).fires
    assert all(f.outcome is not FireOutcome.SKIPPED or "replaced by" in f.reason or
               "newer fire" in f.reason for f in fires)


async def test_a_fire_that_waited_while_paused_starts_when_the_schedule_resumes(
    coordinator, client: Client
) -> None:
    await client.register([inputflows.register_noop()])  # no agent: runs stay queued
    await client.put_schedule(ScheduleSpec(name="later", flow="noop", every_s=1.0,
                                           overlap=Overlap.BUFFER_ONE))

    async def fires() -> dict[FireOutcome, list[float]]:
        found: dict[FireOutcome, list[float]] = {}
        for f in (await client.schedule("later", fires=50)).fires:
            found.setdefault(f.outcome, []).append(f.nominal)
        return found

    async def one_waits() -> bool:
        return FireOutcome.BUFFERED in await fires()

    await wait_for(one_waits, timeout_s=20)
    await client.pause_schedule("later")
    [waiting] = (await fires())[FireOutcome.BUFFERED]
    [first] = [r for r in await client.runs(flow="noop", limit=10) if r.schedule == "later"]
    await client.cancel(first.run_id)  # its run ended while paused: nothing starts yet
    assert (await fires())[FireOutcome.BUFFERED] == [waiting]
    await client.resume_schedule("later")
    assert waiting in (await fires())[FireOutcome.STARTED]  # in the resume's own commit


async def test_a_fire_waiting_for_cancelled_tasks_still_waits_after_a_coordinator_restart(
    start_coordinator, start_agent, client: Client
) -> None:
    coordinator = await start_coordinator()
    await _swap_every(client, start_agent, 2.0, cleanup_s=4.0)

    async def waits() -> bool:
        return any(f.outcome is FireOutcome.BUFFERED
                   for f in (await client.schedule("swap", fires=10)).fires)

    await wait_for(waits, timeout_s=30)
    await coordinator.shutdown()  # what it waited for is no longer in memory
    await start_coordinator()

    async def next_started() -> bool:
        runs = await _runs(client)
        return len(runs) >= 2 and runs[0].status is RunStatus.CANCELLED

    await wait_for(next_started, timeout_s=30)
    first, second = (await _runs(client))[:2]
    stopped = STOPPED.get(first.run_id)
    assert stopped is not None and second.created_at >= stopped, (
        "after the restart the new run started before the cancelled one had stopped")


async def test_a_cancel_other_catch_up_runs_only_its_newest_time(
    start_coordinator, start_agent, client: Client
) -> None:
    """Each caught-up time would cancel the one before it in the same commit: only the newest
    runs, the others are recorded skipped."""
    coordinator = await start_coordinator()
    flow = inputflows.register_noop()
    await start_agent()
    await client.register([flow])
    await client.put_schedule(ScheduleSpec(name="latest", flow="noop", every_s=1.0,
                                           catchup=Catchup.ALL, overlap=Overlap.CANCEL_OTHER))

    async def ran(n: int) -> bool:
        runs = [r for r in await client.runs(flow="noop", limit=100) if r.schedule == "latest"]
        return sum(r.status is RunStatus.SUCCEEDED for r in runs) >= n

    await wait_for(lambda: ran(1), timeout_s=20)
    cursor = (await client.schedule("latest")).state.cursor
    await coordinator.shutdown()
    await wait_for(lambda: time.time() >= cursor + 3.5, timeout_s=10)  # 3 times due while down
    await start_coordinator()

    async def caught_up() -> bool:
        fires = (await client.schedule("latest", fires=50)).fires
        return any("newer time of the same catch-up" in f.reason for f in fires)

    await wait_for(caught_up, timeout_s=20)
    runs = [r for r in await client.runs(flow="noop", limit=100) if r.schedule == "latest"]
    assert all(r.status is not RunStatus.CANCELLED for r in runs), "a caught-up time was cancelled"
