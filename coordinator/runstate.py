"""One active run's state in memory, and the changes to it that the scheduler makes."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from coordinator.changes import Changes
from coordinator.graph import CompiledFlow
from protocol.messages import TaskDispatch, TaskFailed
from protocol.records import Attempt, RunRecord, TaskRecord
from protocol.states import TASK_DONE_OK, TASK_FINAL, TASK_NOT_OK, RunStatus, TaskStatus


@dataclass(slots=True)
class RunState:
    """One active run in memory: its tasks and how many dependencies each still waits for."""

    run: RunRecord
    flow: CompiledFlow
    tasks: dict[str, TaskRecord]
    waiting: dict[str, int]
    open_count: int = 0
    failed_count: int = 0
    maps: dict[str, Any] = field(default_factory=dict)
    """The running mapped tasks' ``MapState`` by task name (``coordinator.mapping``)."""
    streams: dict[str, list[msgspec.Raw]] = field(default_factory=dict)
    """The items generator tasks yielded so far, by task name."""

    def set(self, rec: TaskRecord, status: TaskStatus) -> None:
        """Change a task's status, keeping the run's counters right."""
        old = rec.status
        if old is status:
            return
        counts = self.run.counts
        was_final, is_final = old in TASK_FINAL, status in TASK_FINAL
        if not was_final and is_final:
            self.open_count -= 1
            counts.done += 1
        elif was_final and not is_final:
            self.open_count += 1
            counts.done -= 1
        failed = (TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED)
        self.failed_count += (status in failed) - (old in failed)
        counts.failed = self.failed_count
        counts.succeeded += (status is TaskStatus.SUCCEEDED) - (old is TaskStatus.SUCCEEDED)
        counts.running += (status is TaskStatus.RUNNING) - (old is TaskStatus.RUNNING)
        rec.status = status

    def skip_all_but(
        self, only: frozenset[str], reused: dict[str, tuple[msgspec.Raw, str]], now: float
    ) -> None:
        """Tasks not in ``only`` are skipped; ``reused`` gives a skipped task's output and the
        run it came from."""
        for name, rec in self.tasks.items():
            if name in only:
                continue
            if name in reused:
                rec.output, source = reused[name]
                rec.note = f"skipped: output reused from run {source}"
            else:
                rec.note = "skipped: not in --only"
            rec.finished_at = now
            self.set(rec, TaskStatus.SKIPPED)

    @staticmethod
    def close_attempt(rec: TaskRecord, outcome: str, at: float) -> None:
        """Keep the attempt that just ended in the task's history."""
        rec.history.append(Attempt(
            attempt=rec.attempt, agent_id=rec.agent_id, queued_at=rec.queued_at,
            started_at=rec.started_at, finished_at=at, outcome=outcome,
            error_type=rec.error_type, error_message=rec.error_message,
        ))
        rec.deadline_at = None

    @staticmethod
    def close_failed(rec: TaskRecord, msg: TaskFailed) -> None:
        """A failure report's attempt ends: its agent, times and error go on the record (the
        agent's own start stamp wins) and into its history."""
        rec.agent_id, rec.finished_at = msg.agent_id, msg.at
        rec.started_at = msg.started_at or rec.started_at
        rec.error_type, rec.error_message, rec.traceback = msg.error_type, msg.message, msg.traceback
        outcome = {"TaskTimeout": "timed_out", "AgentLost": "lost"}.get(msg.error_type, "failed")
        RunState.close_attempt(rec, outcome, msg.at)

    @staticmethod
    def lost_past_deadline(run_id: str, rec: TaskRecord, now: float,
                           backstop_s: float) -> TaskFailed:
        """The failure a running task gets when no report came by its deadline."""
        return TaskFailed(
            run_id=run_id, task=rec.task, attempt=rec.attempt, agent_id=rec.agent_id or "",
            delivery=rec.attempt - rec.dispatch + 1, at=now, error_type="AgentLost",
            message=f"no result {backstop_s:g} s past its timeout; agent {rec.agent_id} was "
            "probably lost")

    @staticmethod
    def close_lost_attempts(rec: TaskRecord, attempt: int, at: float) -> None:
        """The message came back as ``attempt``: each earlier delivery was lost."""
        while rec.attempt < attempt:
            if rec.status is not TaskStatus.RUNNING:
                rec.agent_id = rec.started_at = None
            rec.error_type, rec.error_message = "AgentLost", (
                f"agent {rec.agent_id or '(unknown)'} vanished; the task was redelivered"
            )
            RunState.close_attempt(rec, "lost", at)
            rec.error_type = rec.error_message = rec.agent_id = rec.started_at = None
            rec.attempt += 1

    def flag_waiting(self, why: Callable[[str, str], str | None], ch: Changes) -> int:
        """Note on each queued task why no agent can take it (or clear the note)."""
        changed = 0
        for rec in self.tasks.values():
            if rec.status is not TaskStatus.QUEUED or rec.held:  # a held one says its limit
                continue
            reason = why(rec.queue, self.flow.tasks[rec.task].function)
            old = rec.note if rec.note and rec.note.startswith("waiting:") else None
            if reason != old:
                rec.note = reason
                ch.tasks[(self.run.run_id, rec.task)] = rec
                changed += 1
        return changed

    def dispatch(self, rec: TaskRecord) -> TaskDispatch:
        """The task message for the current attempt, with its params and upstream outputs."""
        spec = self.flow.tasks[rec.task]
        params = self.run.params
        if not spec.accepts_all_params:
            params = {p.name: params[p.name] for p in spec.params if p.name in params}
        inputs = {name: self.tasks[name].output for name in spec.inputs}
        return TaskDispatch(
            run_id=self.run.run_id, flow=self.run.flow, version=self.flow.version,
            task=rec.task, function=spec.function, attempt=rec.dispatch, params=params,
            inputs=inputs, timeout_s=spec.timeout_s, queued_at=rec.queued_at or 0.0,
            scheduled_for=self.run.scheduled_for,
        )

    def unblock_downstream(self, task: str, ch: Changes) -> None:
        """Upstream-failed tasks below ``task`` go back to pending, unless another of their
        dependencies still did not succeed."""
        blocked = [n for n in self.downstream(task)
                   if self.tasks[n].status is TaskStatus.UPSTREAM_FAILED]
        changed = True
        while changed:  # in dependency order: a task frees only after its parents did
            changed = False
            for name in blocked:
                child = self.tasks[name]
                deps = self.flow.tasks[name].depends_on
                if child.status is TaskStatus.UPSTREAM_FAILED and not any(
                    self.tasks[d].status in TASK_NOT_OK for d in deps
                ):
                    child.note, child.finished_at = None, None
                    self.set(child, TaskStatus.PENDING)
                    ch.tasks[(self.run.run_id, name)] = child
                    changed = True

    def cancel(self, now: float, ch: Changes) -> list[TaskRecord]:
        """Every task not finished is cancelled, and the run; returns those queued or running."""
        run_id = self.run.run_id
        in_flight = []
        for rec in self.tasks.values():
            if rec.status in TASK_FINAL:
                continue
            if rec.status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
                in_flight.append(rec)
            if rec.status is TaskStatus.RUNNING:
                RunState.close_attempt(rec, "cancelled", now)
            rec.finished_at = now
            rec.note = "cancelled"
            self.set(rec, TaskStatus.CANCELLED)
            ch.tasks[(run_id, rec.task)] = rec
        self.run.status = RunStatus.CANCELLED
        self.run.finished_at = now
        ch.runs[run_id] = self.run
        ch.cancelled_runs.append(run_id)
        ch.withdrawn += [r for r in in_flight if r.attempt and r.started_at is None]
        return in_flight

    def fail_downstream(
        self, children: Iterable[str], now: float, ch: Changes, cause: list[str]
    ) -> None:
        """Pending tasks below a failure become upstream_failed, transitively."""
        stack = list(children)
        while stack:
            name = stack.pop()
            rec = self.tasks[name]
            if rec.status not in (TaskStatus.PENDING, TaskStatus.RETRY_WAIT):
                continue  # queued or running ones already have their inputs
            rec.note = f"upstream {cause[0]!r} did not succeed"
            rec.finished_at = now
            self.set(rec, TaskStatus.UPSTREAM_FAILED)
            ch.tasks[(self.run.run_id, name)] = rec
            stack.extend(self.flow.dependants.get(name, ()))

    @classmethod
    def from_records(
        cls, run: RunRecord, flow: CompiledFlow, tasks: dict[str, TaskRecord]
    ) -> "RunState":
        """Counters and waiting counts rebuilt from stored task records."""
        state = cls(run=run, flow=flow, tasks=tasks, waiting={})
        state.waiting = state.compute_waiting()
        statuses = [r.status for r in tasks.values()]
        state.open_count = sum(s not in TASK_FINAL for s in statuses)
        state.failed_count = sum(s in (TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED) for s in statuses)
        counts = run.counts  # derived from the tasks, whatever the stored run row said
        counts.total = len(statuses)
        counts.done = len(statuses) - state.open_count
        counts.failed = state.failed_count
        counts.succeeded = statuses.count(TaskStatus.SUCCEEDED)
        counts.running = statuses.count(TaskStatus.RUNNING)
        return state

    def compute_waiting(self) -> dict[str, int]:
        """How many dependencies of each task have not succeeded (or been skipped)."""
        return {
            name: sum(self.tasks[d].status not in TASK_DONE_OK for d in spec.depends_on)
            for name, spec in self.flow.tasks.items()
        }

    def downstream(self, task: str) -> list[str]:
        """Every task below ``task``, transitively."""
        seen: dict[str, None] = {}
        stack = list(self.flow.dependants.get(task, ()))
        while stack:
            name = stack.pop()
            if name not in seen:
                seen[name] = None
                stack.extend(self.flow.dependants.get(name, ()))
        return list(seen)
