"""Operator actions on active or finished runs (cancel, retry, mark by hand), as scheduler
steps: a mixin of the Scheduler, kept apart to keep each module short."""

from collections.abc import Callable, Iterable

import msgspec

from coordinator.changes import Changes
from coordinator.graph import CompiledFlow
from coordinator.mapper import Mapper
from coordinator.runstate import RunState
from protocol.records import RunRecord, TaskRecord
from protocol.states import TASK_NOT_OK, RunStatus, TaskStatus


class OperatorSteps:
    """Cancel, retry and mark: the scheduler's answers to an operator."""

    _runs: dict[str, RunState]
    mapper: Mapper
    cancel_waiting: Callable[[str, float, Changes], list[TaskRecord] | None]

    def _queue(self, state: RunState, name: str, now: float, ch: Changes) -> None:
        raise NotImplementedError

    def _maybe_finish(self, state: RunState, now: float, ch: Changes) -> None:
        raise NotImplementedError

    def cancel(self, run_id: str, now: float, ch: Changes) -> list[TaskRecord] | None:
        """Cancel an active run; returns the tasks that were queued or running (None: not active)."""
        state = self._runs.pop(run_id, None)
        if state is None:  # a run waiting for its turn is cancelled by coordinator.run_gate
            return self.cancel_waiting(run_id, now, ch)
        instances = self.mapper.cancel(state, now, ch)
        self.mapper.forget(run_id)
        ch.withdrawn += [r for r in instances if r.attempt and r.started_at is None]
        return state.cancel(now, ch) + instances

    def retry(
        self, run: RunRecord, flow: CompiledFlow, records: Iterable[TaskRecord], now: float,
        ch: Changes, instances: Iterable[TaskRecord] = (),
    ) -> list[str]:
        """Run again the failed, cancelled and upstream-failed tasks, reusing what succeeded
        (a mapped task's instances too, unless its items come again)."""
        state = self._runs.get(run.run_id) or self.mapper.rebuild(run, flow, records)
        again = [name for name, rec in state.tasks.items() if rec.status in TASK_NOT_OK]
        if not again:
            return []
        self._runs[run.run_id] = state
        for name in again:
            rec = state.tasks[name]
            rec.error_type = rec.error_message = rec.traceback = None
            rec.finished_at = rec.started_at = None
            rec.note = "retried"
            state.set(rec, TaskStatus.PENDING)
            ch.tasks[(run.run_id, name)] = rec
        self._reopen(state, ch)
        instances = list(instances)
        for name in again:
            if flow.tasks[name].map_over:
                self.mapper.remember(run.run_id, name, instances, state.waiting[name] == 0)
            if state.waiting[name] == 0:
                self._queue(state, name, now, ch)
        return again

    def mark(
        self, run: RunRecord, flow: CompiledFlow, records: Iterable[TaskRecord], task: str,
        status: TaskStatus, output: msgspec.Raw, now: float, ch: Changes,
    ) -> TaskRecord:
        """Set a task succeeded (with an output) or failed by hand; dependants follow."""
        state = self._runs.get(run.run_id) or self.mapper.rebuild(run, flow, records)
        rec = state.tasks[task]
        self._runs[run.run_id] = state
        self.mapper.marked(state, task, status is TaskStatus.SUCCEEDED, now, ch)
        rec.finished_at = now
        rec.started_at = None  # its outcome is by hand: no run of it took from then to now
        rec.deadline_at = rec.retry_at = None  # whatever was pending for it no longer is
        ch.tasks[(run.run_id, task)] = rec
        if status is TaskStatus.SUCCEEDED:
            rec.output, rec.note = output, "marked succeeded by hand"
            rec.error_type = rec.error_message = rec.traceback = None
            state.set(rec, TaskStatus.SUCCEEDED)
            state.unblock_downstream(task, ch)
            self._reopen(state, ch)
            for name, child in state.tasks.items():
                if child.status is TaskStatus.PENDING and state.waiting[name] == 0:
                    self._queue(state, name, now, ch)
        else:
            rec.note, rec.error_type = "marked failed by hand", rec.error_type or "MarkedFailed"
            rec.error_message = rec.error_message or "marked failed by an operator"
            state.set(rec, TaskStatus.FAILED)
            state.fail_downstream(state.flow.dependants.get(task, ()), now, ch, [task])
            ch.runs[run.run_id] = state.run
        self._maybe_finish(state, now, ch)
        return rec

    def _reopen(self, state: RunState, ch: Changes) -> None:
        state.waiting = state.compute_waiting()
        run = state.run
        run.status, run.finished_at = RunStatus.RUNNING, None
        ch.runs[run.run_id] = run
