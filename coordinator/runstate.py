"""One run's state in memory, and the batch of changes the scheduler hands to the service."""

from collections.abc import Iterable
from dataclasses import dataclass, field

from coordinator.graph import CompiledFlow
from protocol.messages import TaskDispatch
from protocol.records import Attempt, RunRecord, TaskRecord
from protocol.states import TASK_DONE_OK, TASK_FINAL, TaskStatus


@dataclass(slots=True)
class Changes:
    """What one batch of events changed: persisted in one transaction, then published."""

    tasks: dict[tuple[str, str], TaskRecord] = field(default_factory=dict)
    runs: dict[str, RunRecord] = field(default_factory=dict)
    new_runs: list[str] = field(default_factory=list)
    dispatches: list[tuple[str, TaskDispatch]] = field(default_factory=list)
    timers: list[tuple[float, str, str]] = field(default_factory=list)
    withdrawn: list[TaskRecord] = field(default_factory=list)
    """Queued tasks whose messages should be taken back from the stream."""
    cancelled_runs: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tasks or self.runs)


@dataclass(slots=True)
class RunState:
    """One active run in memory: its tasks and how many dependencies each still waits for."""

    run: RunRecord
    flow: CompiledFlow
    tasks: dict[str, TaskRecord]
    waiting: dict[str, int]
    open_count: int = 0
    failed_count: int = 0

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

    @staticmethod
    def close_attempt(rec: TaskRecord, outcome: str, at: float) -> None:
        """Keep the attempt that just ended in the task's history."""
        rec.history.append(Attempt(
            attempt=rec.attempt, agent_id=rec.agent_id, queued_at=rec.queued_at,
            started_at=rec.started_at, finished_at=at, outcome=outcome,
            error_type=rec.error_type, error_message=rec.error_message,
        ))
        rec.deadline_at = None

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
        )

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
