"""Restart recovery against a real SQLite store: active runs rebuilt, and only the tasks still
queued once the waiting reports are applied sent again."""

from pathlib import Path

import msgspec

from coordinator.changes import Changes
from coordinator.flows import FlowCache
from coordinator.recovery import recover_runs, still_queued
from coordinator.scheduler import Scheduler
from coordinator.store import Store
from protocol.flows import FlowSpec, TaskSpec
from protocol.messages import TaskStarted, TaskSucceeded
from protocol.records import RunRecord
from protocol.states import RunStatus, TaskStatus

T0 = 1_000.0
SPEC = FlowSpec(name="f", tasks=(
    TaskSpec(name="a", function="m:a"),
    TaskSpec(name="b", function="m:b", queue="gpu"),
    TaskSpec(name="c", function="m:c", depends_on=("a", "b")),
))


async def _stored_run(store: Store) -> FlowCache:
    """A run of SPEC started and committed by a coordinator that then went away."""
    await store.register_flow(SPEC, replace=False)
    flows = FlowCache(store)
    ch = Changes()
    run = RunRecord(run_id="r1", flow="f", version=SPEC.version(), created_at=T0)
    Scheduler().start_run(run, await flows.current("f"), T0, ch)
    await store.commit(ch)
    done = RunRecord(run_id="r0", flow="f", version=SPEC.version(), created_at=T0,
                     status=RunStatus.SUCCEEDED)
    ch = Changes(runs={"r0": done}, new_runs=["r0"])
    await store.commit(ch)
    return FlowCache(store)


async def test_active_runs_come_back_with_their_queued_tasks_to_send_again(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "ff.db")
    try:
        flows = await _stored_run(store)
        scheduler = Scheduler()
        recovered = await recover_runs(store, flows, scheduler, T0 + 5)
        assert recovered.runs == 1 and recovered.timers == []
        assert scheduler.is_active("r1") and not scheduler.is_active("r0")
        sent = [(d.queue, d.message.task, d.message.attempt) for d in recovered.dispatches]
        assert sorted(sent) == [("default", "a", 1), ("gpu", "b", 1)]
        assert still_queued(scheduler, recovered.dispatches) == recovered.dispatches
    finally:
        await store.close()


async def test_a_task_the_waiting_reports_moved_on_is_not_sent_again(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "ff.db")
    try:
        flows = await _stored_run(store)
        scheduler = Scheduler()
        recovered = await recover_runs(store, flows, scheduler, T0 + 5)
        ch = Changes()  # the backlog: a finished while the coordinator was down, b started
        scheduler.on_report(TaskSucceeded(run_id="r1", task="a", attempt=1, agent_id="x",
                                          at=T0 + 2, started_at=T0 + 1, output=msgspec.Raw(b"1")),
                            T0 + 6, ch)
        scheduler.on_report(TaskStarted(run_id="r1", task="b", attempt=1, agent_id="x",
                                        at=T0 + 3), T0 + 6, ch)
        assert still_queued(scheduler, recovered.dispatches) == []
        rec = scheduler.task_record("r1", "c")
        assert rec is not None and rec.status is TaskStatus.PENDING
    finally:
        await store.close()


async def test_what_the_rebuild_changed_is_committed_before_anything_is_sent(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "ff.db")
    try:
        flows = await _stored_run(store)
        tasks = {t.task: t for t in await store.tasks_of("r1")}
        tasks["a"].status = TaskStatus.FAILED  # stored by an older coordinator, c left pending
        await store.commit(Changes(tasks={("r1", "a"): tasks["a"]}))
        recovered = await recover_runs(store, flows, Scheduler(), T0 + 5)
        assert [d.message.task for d in recovered.dispatches] == ["b"]
        detail = await store.get_run("r1")
        assert detail is not None
        assert {t.task: t.status for t in detail.tasks} == {
            "a": TaskStatus.FAILED, "b": TaskStatus.QUEUED, "c": TaskStatus.UPSTREAM_FAILED}
        assert detail.run.counts.failed == 2
    finally:
        await store.close()
