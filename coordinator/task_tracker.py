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

from coordinator.changes import Changes
from coordinator.runstate import RunState
from coordinator.scheduler import Scheduler
from coordinator.writer import Batch
from flowforge.metrics import OTHER, Buckets, Histograms, LabelCap, add, kind_of, root_task
from protocol.children import CHILD_SEP
from protocol.dag import INSTANCE_SEP
from protocol.records import Attempt, RunRecord, TaskRecord
from protocol.schedules import FireRecord
from protocol.states import RUN_FINAL, TASK_FINAL, TaskStatus

QUIET = frozenset({TaskStatus.PENDING, TaskStatus.QUEUED})
"""States with nothing to count or remember for a flow task that has no attempts yet."""
RETRIED = frozenset({"failed", "timed_out", "lost"})
"""Outcomes of an attempt that another attempt may follow."""
MAX_FLOW_VERSIONS = 1_000
MAX_LABEL_SETS = 100_000
"""Flow tasks' label sets kept ready (the cache starts over past this)."""
MAX_ENDED_RUNS = 10_000
"""Runs remembered after they ended, so one published again unchanged is not counted twice."""


@dataclass(slots=True)
class Seen:
    """What the tracker counted of one task instance."""

    labels: tuple[str, str, str, str]
    """flow, task (its flow task's name), queue, kind (task, instance, child)."""
    wait: Buckets | None
    duration: Buckets | None
    """Its series of the histograms; None when its attempts are not timed (a mapped task's
    own record only waits on its instances)."""
    counted: int = 0
    """Attempts in its history already counted."""
    waited: int = 0
    """The attempt whose wait (queued → started) was measured."""
    final: bool = False


@dataclass(slots=True)
class RunSeen:
    flow: str
    tasks: dict[str, Seen] = field(default_factory=dict)
    """The task instances with something remembered: flow tasks once they ran (or ended),
    instances and children from when they were queued until they end."""
    mapped: frozenset[str] = frozenset()
    stale: bool = False
    """Not active and not new: what its task instances did before was counted, or not here."""


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
        self._labels: dict[tuple[str, str, str], tuple[tuple[str, str, str, str], Buckets,
                                                       Buckets]] = {}
        """A flow task's labels and histogram series, by (flow, task, queue)."""
        self._mapped: dict[tuple[str, str], frozenset[str]] = {}
        """The mapped tasks of each flow version."""
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
            run_id, run = "", None
            for (rid, name), rec in ch.tasks.items():
                if rid != run_id or run is None:  # a batch's changes come run by run
                    run_id, run = rid, self._runs.get(rid) or self._run(rid, ch)
                seen = run.tasks.get(name)
                if seen is None:
                    if not rec.history and rec.status in QUIET and INSTANCE_SEP not in name \
                            and CHILD_SEP not in name:
                        continue  # a flow task with nothing to count or remember yet
                    seen = self._seen(run, rec)
                self._task(run, seen, rec)
        if ch.runs:
            self._runs_ended(ch.runs.values())
        if batch.schedules.fires:
            self._fired(batch.schedules.fires)

    def prime(self) -> None:
        """What the active runs hold now counts as seen (a restart restored them)."""
        for state in self.scheduler.active_runs():
            self._prime(self._run(state.run.run_id, None, prime=False), state)

    # -- task instances -------------------------------------------------------------------

    def _run(self, run_id: str, ch: Changes | None, prime: bool = True) -> RunSeen:
        """A run the tracker did not follow yet: new, or made active again by a retry or a
        mark (what it did before counts as seen), or no longer active (its task instances'
        attempts so far count as seen)."""
        state = self.scheduler.run_state(run_id)
        if state is None:
            record = ch.runs.get(run_id) if ch else None
            run = self._runs[run_id] = RunSeen(record.flow if record else "unknown",
                                               stale=run_id not in (ch.new_runs if ch else ()))
            return run
        version = (state.run.flow, state.flow.version)
        mapped = self._mapped.get(version)
        if mapped is None:
            mapped = frozenset(n for n, t in state.flow.tasks.items() if t.map_over)
            if len(self._mapped) >= MAX_FLOW_VERSIONS:
                self._mapped.clear()
            self._mapped[version] = mapped
        run = self._runs[run_id] = RunSeen(state.run.flow, mapped=mapped)
        if prime and ch is not None and run_id not in ch.new_runs:
            self._prime(run, state)
        return run

    def _prime(self, run: RunSeen, state: RunState) -> None:
        for rec in self.scheduler.records_of(state):
            if rec.history or rec.status not in QUIET:
                seen = self._seen(run, rec)
                seen.counted = len(rec.history)
                seen.waited = rec.attempt if rec.status is TaskStatus.RUNNING else 0
                seen.final = rec.status in TASK_FINAL

    def _seen(self, run: RunSeen, rec: TaskRecord) -> Seen:
        """A task instance seen for the first time with something to count. A flow task's
        attempts all count (its earlier states had nothing to count); an instance's or a
        child's were seen from when it was queued, so one that comes with attempts already
        is an item of a chunk (its chunk's first item is timed) or made again."""
        key = (run.flow, rec.task, rec.queue)
        found = self._labels.get(key)
        if found is None:
            flow, task = self.labels.pair(run.flow, root_task(rec.task))
            labels = (flow, task, self.labels.value(rec.queue), kind_of(rec.task))
            found = (labels, self.wait.series_of(labels), self.duration.series_of(labels))
            if labels[3] == "task" and labels[1] != OTHER:  # a flow's tasks under the cap
                if len(self._labels) >= MAX_LABEL_SETS:
                    self._labels.clear()
                self._labels[key] = found
        labels, wait, duration = found
        is_task = labels[3] == "task"
        timed = not is_task or rec.task not in run.mapped
        seen = run.tasks[rec.task] = Seen(
            labels, wait if timed else None, duration if timed else None,
            counted=0 if is_task and not run.stale else len(rec.history))
        return seen

    def _task(self, run: RunSeen, seen: Seen, rec: TaskRecord) -> None:
        history = rec.history
        if len(history) > seen.counted:
            last = len(history) - 1
            for i in range(seen.counted, len(history)):
                self._attempt(seen, history[i], i < last or rec.status not in TASK_FINAL)
            seen.counted = len(history)
        status = rec.status
        if status is TaskStatus.RUNNING and seen.waited != rec.attempt and seen.wait:
            seen.waited = rec.attempt
            if rec.started_at and rec.queued_at:
                seen.wait.add(rec.started_at - rec.queued_at)
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
        started_at = attempt.started_at
        if not started_at or seen.duration is None or seen.wait is None:
            return
        if attempt.finished_at:
            seen.duration.add(attempt.finished_at - started_at)
        if attempt.queued_at and seen.waited != attempt.attempt:
            seen.wait.add(started_at - attempt.queued_at)

    # -- runs and schedules -----------------------------------------------------------------

    def _runs_ended(self, runs: Iterable[RunRecord]) -> None:
        ended = self._ended
        for run in runs:
            if run.status not in RUN_FINAL:
                if ended:
                    ended.pop(run.run_id, None)  # made active again: its next end counts
                continue
            self._runs.pop(run.run_id, None)
            if ended.get(run.run_id) == run.status:
                continue  # published again unchanged
            ended[run.run_id] = run.status
            if len(ended) > MAX_ENDED_RUNS:
                del ended[next(iter(ended))]
            add(self.runs_finished, (self.labels.flow(run.flow), run.status.value))

    def _fired(self, fires: Iterable[FireRecord]) -> None:
        for fire in fires:
            flow = self.schedule_flow(fire.schedule)
            label = self.labels.flow(flow) if flow else OTHER
            add(self.fires, (label, fire.outcome.value), fire.count)
