"""Restart recovery: active runs rebuilt from the store, and which of their tasks to send again.

The service applies the reports that piled up while the coordinator was down between the two
steps, so a task that finished meanwhile is not sent again.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coordinator import child_store, instance_store
from coordinator.changes import Changes, Dispatch, Timer
from coordinator.flows import FlowCache
from coordinator.scheduler import Scheduler
from coordinator.store import Store
from coordinator.task_rows import TASK_COLS, task_from_row
from protocol.records import TaskRecord
from protocol.states import RunStatus, TaskStatus

if TYPE_CHECKING:
    from coordinator.limits import Limits


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a restart rebuilt."""

    runs: int
    """Active runs back in the scheduler."""
    dispatches: list[Dispatch]
    """Task messages of the tasks that were queued: sent again if still queued (``still_queued``)."""
    timers: list[Timer]
    """Retry delays and deadlines to arm again."""


async def recover_runs(store: Store, flows: FlowCache, scheduler: Scheduler, now: float,
                       limits: "Limits | None" = None) -> Recovered:
    """Every active run of the store back into ``scheduler`` (and its tasks into the gate of
    ``limits``; runs waiting for their turn back in line). What the rebuild itself changed
    (counts rebuilt from the tasks, tasks missing from the store, pending tasks whose
    dependencies failed or succeeded, waiting runs that may start) is committed before this
    returns."""
    ch = Changes()
    running, waiting = [], []
    runs = await store.active_runs()
    for run in runs:
        flow = await flows.version(run.flow, run.version)
        if run.status is RunStatus.PENDING and limits is not None:  # waits for its turn
            waiting.append((run, flow, await limits.reused_outputs(run, flow)))
            continue
        mapped = any(t.map_over for t in flow.spec.tasks)
        instances = await store.instances_of(run.run_id) if mapped else []
        streams = await instance_store.items_of(store.database, run.run_id) if any(
            t.yields for t in flow.spec.tasks) else {}
        records = await store.tasks_of(run.run_id)
        if limits is not None:
            limits.remember([*records, *instances])
        scheduler.restore(run, flow, records, now, ch, instances, streams)
        opened = await restore_children(store, scheduler, run.run_id, now, ch)
        if limits is not None:
            limits.remember(opened)
        running.append((run, flow))
    if limits is not None:
        current = {r.flow: await flows.current(r.flow) for r, *_ in [*running, *waiting]}
        limits.restore_runs(running, waiting, current)
        limits.before_commit(now, ch)
    if ch:
        await store.commit(ch)
    return Recovered(runs=len(runs), dispatches=ch.dispatches, timers=ch.timers)


async def restore_children(store: Store, scheduler: Scheduler, run_id: str, now: float,
                           ch: Changes) -> list[TaskRecord]:
    """The run's child tasks back in memory (if it has any and is active); returns the
    records of the open ones (they may hold limits)."""
    state = scheduler.run_state(run_id)
    if state is None:
        return []
    opened, ended = await child_store.stored_children(store.database, run_id, TASK_COLS,
                                                      task_from_row)
    if opened or ended:
        scheduler.children.restore(state, opened, ended, now, ch)
    return [child.rec for child in opened]


def still_queued(scheduler: Scheduler, dispatches: Iterable[Dispatch]) -> list[Dispatch]:
    """The messages whose task is still queued with the same attempt: the ones to send again."""
    out = []
    for item in dispatches:
        msg = item.message
        rec = scheduler.task_record(msg.run_id, msg.task)
        if rec is not None and rec.status is TaskStatus.QUEUED and rec.attempt == msg.attempt:
            out.append(item)
    return out
