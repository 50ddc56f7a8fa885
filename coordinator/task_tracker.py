"""TaskTracker: counts what each batch of the writer changed — task instances and runs that
ended, retries, each attempt's wait and duration, schedule fires — as the writer's last hook
before the commit (docs/metrics.md).

A batch's ``ch.tasks`` holds the task instances it changed, as they are now. What changed is
told by what the tracker saw of each before: how many of its attempts it has counted
(``history``, which only grows while the run is active), whether it was final, which
attempt's wait it measured. Only dict look-ups and additions here: the Prometheus text and
``stats.get`` are built from these figures when asked for.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from coordinator.scheduler import Scheduler
from coordinator.writer import Batch
from flowforge.metrics import OTHER, Histograms, LabelCap, add, kind_of, root_task
from protocol.records import Attempt, RunRecord, TaskRecord
from protocol.schedules import FireRecord
from protocol.states import RUN_FINAL, TASK_FINAL, TaskStatus

RETRIED = frozenset({"failed", "timed_out", "lost"})
"""Outcomes of an attempt that another attempt may follow."""
MAX_ENDED_RUNS = 10_000
"""Runs remembered after they ended, so one published again unchanged is not counted twice."""


@dataclass(slots=True)
class Seen:
    """What the tracker counted of one task instance."""

    labels: tuple[str, str, str, str]
    """flow, task (its flow task's name), queue, kind (task, instance, child)."""
    counted: int = 0
    """Attempts in its history already counted."""
    waited: int = 0
    """The attempt whose wait (queued → started) was measured."""
    final: bool = False
    timed: bool = True
    """Its attempts are timed (not a mapped task's own record, which only waits on its
    instances)."""


@dataclass(slots=True)
class RunSeen:
    flow: str
    tasks: dict[str, Seen] = field(default_factory=dict)
    mapped: frozenset[str] = frozenset()


class TaskTracker:
    """``follow(now, batch)`` goes last in ``Writer.before_commit``; ``prime()`` after a
    restart, so the attempts of restored task instances are not counted again."""

    def __init__(self, scheduler: Scheduler, labels: LabelCap | None = None) -> None:
        self.scheduler = scheduler
        self.labels = labels or LabelCap()
        self.schedule_flow: Callable[[str], str | None] = lambda name: None
        """A schedule's flow by its name (the schedule clock's, once there is one)."""
        self._runs: dict[str, RunSeen] = {}
        self._ended: dict[str, str] = {}
        self.tasks_finished: dict[tuple[str, ...], int] = {}
        """(flow, task, queue, kind, status) → count."""
        self.retries: dict[tuple[str, ...], int] = {}
        """(flow, task, queue, kind, reason) → count."""
        self.runs_finished: dict[tuple[str, ...], int] = {}
        """(flow, status) → count."""
        self.fires: dict[tuple[str, ...], int] = {}
        """(flow, outcome) → nominal times."""
        self.wait = Histograms()
        self.duration = Histograms()

    def follow(self, now: float, batch: Batch) -> None:
        ch = batch.changes
        if ch.tasks:
            runs: dict[str, RunSeen] = {}
            for (run_id, _), rec in ch.tasks.items():
                run = runs.get(run_id) or self._run(run_id, ch.runs.get(run_id))
                runs[run_id] = run
                self._task(run, rec)
        if ch.runs:
            self._runs_ended(ch.runs.values())
        if batch.schedules.fires:
            self._fired(batch.schedules.fires)

    def prime(self) -> None:
        """What the active runs hold now counts as seen (a restart restored it)."""
        for state in self.scheduler.active_runs():
            run = self._run(state.run.run_id, state.run)
            for rec in self.scheduler.records_of(state):
                seen = self._seen(run, rec)
                seen.counted = len(rec.history)
                seen.waited = rec.attempt if rec.status is TaskStatus.RUNNING else 0
                seen.final = rec.status in TASK_FINAL

    # -- task instances -------------------------------------------------------------------

    def _run(self, run_id: str, record: RunRecord | None) -> RunSeen:
        run = self._runs.get(run_id)
        if run is not None:
            return run
        state = self.scheduler.run_state(run_id)
        flow = state.run.flow if state else record.flow if record else "unknown"
        mapped = frozenset(n for n, t in state.flow.tasks.items() if t.map_over) if state \
            else frozenset()
        run = self._runs[run_id] = RunSeen(flow, mapped=mapped)
        return run

    def _seen(self, run: RunSeen, rec: TaskRecord) -> Seen:
        seen = run.tasks.get(rec.task)
        if seen is None:
            root = root_task(rec.task)
            flow, task = self.labels.pair(run.flow, root)
            kind = kind_of(rec.task)
            seen = run.tasks[rec.task] = Seen(
                (flow, task, self.labels.value(rec.queue), kind),
                counted=len(rec.history), timed=kind != "task" or root not in run.mapped)
        return seen

    def _task(self, run: RunSeen, rec: TaskRecord) -> None:
        seen = self._seen(run, rec)
        history = rec.history
        if len(history) > seen.counted:
            last = len(history) - 1
            for i in range(seen.counted, len(history)):
                self._attempt(seen, history[i], i < last or rec.status not in TASK_FINAL)
            seen.counted = len(history)
        status = rec.status
        if status is TaskStatus.RUNNING and seen.waited != rec.attempt and seen.timed:
            seen.waited = rec.attempt
            if rec.started_at and rec.queued_at:
                self.wait.observe(seen.labels, rec.started_at - rec.queued_at)
        if status in TASK_FINAL:
            if not seen.final:
                seen.final = True
                add(self.tasks_finished, (*seen.labels, status.value))
            if seen.labels[3] != "task":  # instances and children are many: forget them as they end
                del run.tasks[rec.task]
        else:
            seen.final = False

    def _attempt(self, seen: Seen, attempt: Attempt, again: bool) -> None:
        """One attempt that ended (``again``: another follows)."""
        if again and attempt.outcome in RETRIED:
            add(self.retries, (*seen.labels, attempt.outcome))
        if not seen.timed:
            return
        started_at = attempt.started_at
        if started_at and attempt.finished_at:
            self.duration.observe(seen.labels, attempt.finished_at - started_at)
        if started_at and attempt.queued_at and seen.waited != attempt.attempt:
            self.wait.observe(seen.labels, started_at - attempt.queued_at)

    # -- runs and schedules -----------------------------------------------------------------

    def _runs_ended(self, runs: Iterable[RunRecord]) -> None:
        for run in runs:
            if run.status not in RUN_FINAL:
                continue
            self._runs.pop(run.run_id, None)
            if self._ended.get(run.run_id) == run.status:
                continue  # published again unchanged
            self._ended[run.run_id] = run.status
            if len(self._ended) > MAX_ENDED_RUNS:
                del self._ended[next(iter(self._ended))]
            add(self.runs_finished, (self.labels.flow(run.flow), run.status.value))

    def _fired(self, fires: Iterable[FireRecord]) -> None:
        for fire in fires:
            flow = self.schedule_flow(fire.schedule)
            label = self.labels.flow(flow) if flow else OTHER
            add(self.fires, (label, fire.outcome.value), fire.count)
