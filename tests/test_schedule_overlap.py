"""Overlap policies on the real stack: cancel_other cancels the schedule's running run and
starts the new one only once the old run's tasks have stopped, as Temporal's CancelOther does."""

import asyncio
import time

from flowforge import TaskContext, register_task_pipeline
from flowforge.client import Client
from protocol.flows import FlowSpec
from protocol.records import RunRecord
from protocol.schedules import FireOutcome, Overlap, ScheduleSpec
from protocol.states import RunStatus
from tests import inputflows
from tests.helpers import wait_for

CLEANUP_S = 0.5
STOPPED: dict[str, float] = {}
"""When each run's task had finished cleaning up after its cancel (run id -> time)."""


async def holds_on(ctx: TaskContext) -> str:
    """Runs until cancelled, then takes CLEANUP_S to clean up, as a task that writes
    somewhere must before another run may write there."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await asyncio.sleep(CLEANUP_S)  # the cleanup the next run must wait for
        STOPPED[ctx.run_id] = time.time()
        raise
    return "never"


def _flow() -> FlowSpec:
    return register_task_pipeline(flow_name="holds_on", clear_existing_flow_in_db=True, pipeline={
        "hold": {"function": holds_on, "depends_on": []}})


async def _runs(client: Client) -> list[RunRecord]:
    return sorted((r for r in await client.runs(flow="holds_on", limit=100) if r.schedule == "swap"),
                  key=lambda r: r.scheduled_for or 0)


async def test_cancel_other_starts_the_new_run_only_after_the_cancelled_one_stopped(
    coordinator, start_agent, client: Client
) -> None:
    STOPPED.clear()
    flow = _flow()
    await start_agent()
    await client.register([flow])
    await client.put_schedule(ScheduleSpec(name="swap", flow="holds_on", every_s=2.0,
                                           overlap=Overlap.CANCEL_OTHER))

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
