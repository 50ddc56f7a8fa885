"""The scheduler: a pure state machine from events (run started, report, timer) to changes."""

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import msgspec

from coordinator.changes import Changes, Dispatch, Timer
from coordinator.children import Children
from coordinator.graph import CompiledFlow
from coordinator.mapper import Mapper
from coordinator.mapping import inputs_problem, retry_delay_s, stale
from coordinator.operator_steps import OperatorSteps
from coordinator.runstate import RunState
from protocol.children import CHILD_SEP, DEFAULT_MAX_CHILDREN, DEFAULT_MAX_DEPTH
from protocol.dag import INSTANCE_SEP
from protocol.messages import TaskFailed, TaskItems, TaskProgress, TaskStarted, TaskSucceeded
from protocol.records import RunRecord, TaskRecord
from protocol.states import TASK_DONE_OK, TASK_NOT_OK, RunStatus, TaskStatus

MAX_RETRY_DELAY_S = 3600.0


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    max_dispatch_bytes: int = 1024 * 1024
    """Upstream outputs a task message may carry (the NATS server's max payload, less room)."""
    backstop_s: float = 60.0
    """Past a running task's timeout, how long to wait for its report before calling it lost."""
    max_child_depth: int = DEFAULT_MAX_DEPTH
    max_children: int = DEFAULT_MAX_CHILDREN
    """Child tasks: how deep they may nest, and how many one run may have."""


class Scheduler(OperatorSteps):
    """Decides what runs next. No I/O: every method records its effects in ``Changes``."""

    def __init__(
        self, settings: SchedulerSettings | None = None, *, rng: random.Random | None = None
    ) -> None:
        self.settings = settings or SchedulerSettings()
        self._runs: dict[str, RunState] = {}
        self._rng = rng or random.Random()
        self.mapper = Mapper(self._ended, self.retry_delay_s, self.settings.max_dispatch_bytes,
                             self.settings.backstop_s)
        self.children = Children(self.retry_delay_s, self.settings.backstop_s,
                                 self.settings.max_child_depth, self.settings.max_children)
        self.cancel_waiting: Callable[[str, float, Changes], list[TaskRecord] | None] = lambda *_: None

    # -- run lifecycle -----------------------------------------------------------------

    def start_run(
        self, run: RunRecord, flow: CompiledFlow, now: float, ch: Changes,
        reused: dict[str, tuple[msgspec.Raw, str]] | None = None,
    ) -> None:
        """A new run: every task pending, the roots queued.

        With ``run.only`` set, the other tasks are skipped; ``reused`` gives a skipped
        task's output and the run it came from, so tasks that take it still get a value.
        """
        tasks = {
            name: TaskRecord(run_id=run.run_id, task=name, queue=spec.queue)
            for name, spec in flow.tasks.items()
        }
        state = RunState(run=run, flow=flow, tasks=tasks, waiting={}, open_count=len(tasks))
        run.status = RunStatus.RUNNING
        run.started_at = now
        run.counts.total = len(tasks)
        self._runs[run.run_id] = state
        ch.new_runs.append(run.run_id)
        ch.runs[run.run_id] = run
        if run.only is not None:
            state.skip_all_but(frozenset(run.only), reused or {}, now)
        state.waiting = state.compute_waiting()
        for rec in tasks.values():
            ch.tasks[(run.run_id, rec.task)] = rec
        for name, rec in tasks.items():
            if rec.status is TaskStatus.PENDING and state.waiting[name] == 0:
                self._queue(state, name, now, ch)
        self._maybe_finish(state, now, ch)

    def restore(
        self, run: RunRecord, flow: CompiledFlow, records: Iterable[TaskRecord], now: float,
        ch: Changes, instances: Iterable[TaskRecord] = (),
        streams: dict[str, list[msgspec.Raw]] | None = None,
    ) -> None:
        """Rebuild an active run after a restart (with its mapped tasks' stored instances and
        its generator tasks' items); re-publish what was queued."""
        tasks = {r.task: r for r in records}
        for name, spec in flow.tasks.items():  # tasks missing from the store start pending
            if name not in tasks:
                tasks[name] = TaskRecord(run_id=run.run_id, task=name, queue=spec.queue)
                ch.tasks[(run.run_id, name)] = tasks[name]
        stored_counts = msgspec.structs.replace(run.counts)
        state = RunState.from_records(run, flow, tasks)
        state.streams = dict(streams or {})
        self._runs[run.run_id] = state
        self.mapper.remember_waiting(state, instances)
        if run.counts != stored_counts:  # rebuilt from the tasks: store the right ones
            ch.runs[run.run_id] = run
        for rec in tasks.values():
            if flow.tasks[rec.task].map_over and rec.status is TaskStatus.RUNNING:
                mine = [i for i in instances if i.task.startswith(rec.task + INSTANCE_SEP)]
                self.mapper.restore(state, rec.task, mine, now, ch)
            elif rec.status is TaskStatus.QUEUED:
                ch.dispatches.append(Dispatch(rec.queue, state.dispatch(rec)))
            elif rec.status is TaskStatus.RETRY_WAIT:
                ch.timers.append(Timer(rec.retry_at or now, run.run_id, rec.task))
            elif rec.status is TaskStatus.RUNNING and rec.deadline_at:
                ch.timers.append(Timer(rec.deadline_at, run.run_id, rec.task))
            elif rec.status is TaskStatus.PENDING:
                self._settle_pending(state, rec.task, now, ch)
        self._maybe_finish(state, now, ch)

    def _settle_pending(self, state: RunState, name: str, now: float, ch: Changes) -> None:
        deps = state.flow.tasks[name].depends_on
        failed = [d for d in deps if state.tasks[d].status in TASK_NOT_OK]
        if failed:
            state.fail_downstream((name,), now, ch, failed)
            ch.runs[state.run.run_id] = state.run
        elif state.waiting[name] == 0:
            self._queue(state, name, now, ch)

    # -- reports -----------------------------------------------------------------------

    def on_report(
        self, msg: TaskStarted | TaskSucceeded | TaskFailed | TaskProgress | TaskItems,
        now: float, ch: Changes,
    ) -> bool:
        """Apply an agent's report; False when it is stale, duplicate or for an unknown run."""
        state = self._runs.get(msg.run_id)
        rec = state.tasks.get(msg.task) if state else None
        if state is not None and rec is None and CHILD_SEP in msg.task:
            return self.children.on_report(state, msg, now, ch)
        if state is not None and rec is None and state.maps:
            return self.mapper.on_report(state, msg, now, ch)
        if state is None or rec is None or stale(rec, msg):
            return False  # from another (older) message or delivery, or a duplicate
        ch.tasks[(msg.run_id, msg.task)] = rec  # first, so events keep cause before effect
        RunState.close_lost_attempts(rec, msg.attempt, msg.at)
        if rec.note and rec.note.startswith("waiting:"):
            rec.note = None  # an agent has it
        match msg:
            case TaskStarted():
                self._mark_running(state, rec, msg.agent_id, msg.at, ch)
            case TaskProgress():
                self._mark_running(state, rec, msg.agent_id, rec.started_at or msg.at, ch)
                if msg.fraction is not None:
                    rec.progress = msg.fraction
                if msg.message is not None:
                    rec.checkpoint, rec.checkpoint_at = msg.message, msg.at
            case TaskItems():
                self._mark_running(state, rec, msg.agent_id, rec.started_at or msg.at, ch)
                self.mapper.take_items(state, msg, now, ch)
            case TaskSucceeded():
                self._succeed(state, rec, msg, now, ch)
            case TaskFailed():
                self._fail(state, rec, msg, now, ch)
        ch.runs[msg.run_id] = state.run
        return True

    def is_active(self, run_id: str) -> bool:
        """Whether the run is in memory: started or restored, and not finished."""
        return run_id in self._runs

    def active_runs(self) -> list[RunState]:
        """The runs in memory (for figures read now and then, not for the hot path)."""
        return list(self._runs.values())

    def records_of(self, state: RunState) -> Iterator[TaskRecord]:
        """Every task instance of an active run held in memory: its tasks, its mapped tasks'
        instances in flight (a chunk's first stands for the chunk) and its open children."""
        yield from state.tasks.values()
        for ms in state.maps.values():
            yield from ms.active.values()
        found = self.children.of(state.run.run_id)
        if found is not None:
            yield from (child.rec for child in found.open.values())

    def run_state(self, run_id: str) -> RunState | None:
        """An active run's state (None when the run is not active)."""
        return self._runs.get(run_id)

    def task_record(self, run_id: str, task: str) -> TaskRecord | None:
        """The state of a task of an active run (None when the coordinator has no such task)."""
        state = self._runs.get(run_id)
        if state is None:
            return None
        if CHILD_SEP in task:
            return self.children.record(run_id, task)
        found = state.tasks.get(task) or self.mapper.instance(state, task)
        return found[2] if isinstance(found, tuple) else found

    def _mark_running(
        self, state: RunState, rec: TaskRecord, agent_id: str, at: float, ch: Changes
    ) -> None:
        if rec.status is not TaskStatus.RUNNING:
            state.set(rec, TaskStatus.RUNNING)
        timeout_s = state.flow.tasks[rec.task].timeout_s
        if timeout_s is not None and rec.deadline_at is None:
            rec.deadline_at = at + timeout_s + self.settings.backstop_s
            ch.timers.append(Timer(rec.deadline_at, state.run.run_id, rec.task))
        rec.agent_id = agent_id
        rec.started_at = at

    def _succeed(
        self, state: RunState, rec: TaskRecord, msg: TaskSucceeded, now: float, ch: Changes
    ) -> None:
        failed = self.mapper.items_missing(state, msg)  # a generator task's items
        if failed is not None:
            self._fail(state, rec, failed, now, ch)
            return
        rec.agent_id = msg.agent_id
        rec.started_at = msg.started_at or rec.started_at  # the agent's own stamp wins
        rec.finished_at = msg.at
        rec.output = msg.output
        rec.progress = 1.0 if rec.progress is not None else None
        rec.error_type = rec.error_message = rec.traceback = None
        RunState.close_attempt(rec, "succeeded", msg.at)
        self._ended(state, rec, True, now, ch)

    def _ended(self, state: RunState, rec: TaskRecord, ok: bool, now: float, ch: Changes) -> None:
        """A task ended for good (its attempt closed): its dependants follow."""
        self.mapper.source_ended(state, rec.task, ok, now, ch)  # a generator mapped over early
        if not ok:
            state.set(rec, TaskStatus.FAILED)
            state.fail_downstream(state.flow.dependants.get(rec.task, ()), now, ch, [rec.task])
            self._maybe_finish(state, now, ch)
            return
        state.set(rec, TaskStatus.SUCCEEDED)
        for child in state.flow.dependants.get(rec.task, ()):
            state.waiting[child] -= 1
            if state.waiting[child] == 0 and state.tasks[child].status is TaskStatus.PENDING:
                self._queue(state, child, now, ch)
        self._maybe_finish(state, now, ch)

    def _fail(
        self, state: RunState, rec: TaskRecord, msg: TaskFailed, now: float, ch: Changes
    ) -> None:
        RunState.close_failed(rec, msg)
        spec = state.flow.tasks[rec.task]
        if rec.attempt <= spec.retries:
            delay = self.retry_delay_s(spec.retry_delay_s, rec.attempt)
            rec.retry_at = now + delay
            state.set(rec, TaskStatus.RETRY_WAIT)
            ch.timers.append(Timer(rec.retry_at, state.run.run_id, rec.task))
            return
        self._ended(state, rec, False, now, ch)

    def retry_delay_s(self, base_s: float, attempt: int) -> float:
        """Exponential backoff from ``base_s`` with up to 10% jitter, never over the cap."""
        return retry_delay_s(base_s, attempt, self._rng)

    def on_timer(self, run_id: str, task: str, now: float, ch: Changes) -> bool:
        """A retry delay ran out (queue the next attempt) or a running task's deadline passed."""
        state = self._runs.get(run_id)
        rec = state.tasks.get(task) if state else None
        if state is not None and rec is None and CHILD_SEP in task:
            return self.children.on_timer(state, task, now, ch)
        if state is not None and rec is None:
            return self.mapper.on_timer(state, task, now, ch)
        if state is None or rec is None:
            return False
        if rec.status is TaskStatus.RETRY_WAIT:
            self._queue(state, task, now, ch)
            return True
        if rec.status is TaskStatus.RUNNING and rec.deadline_at and now >= rec.deadline_at - 0.001:
            ch.tasks[(run_id, task)] = rec
            ch.runs[run_id] = state.run
            self._fail(state, rec, RunState.lost_past_deadline(
                run_id, rec, now, self.settings.backstop_s), now, ch)
            return True
        return False

    def flag_waiting(self, why: Callable[[str, str], str | None], ch: Changes) -> int:
        """Note on each queued task why no agent can take it (or clear the note); returns changes."""
        return (sum(state.flag_waiting(why, ch) for state in self._runs.values())
                + self.children.flag_waiting(why, ch))

    # -- shared steps ----------------------------------------------------------------

    def _queue(self, state: RunState, name: str, now: float, ch: Changes) -> None:
        rec = state.tasks[name]
        blocked = [d for d in state.flow.tasks[name].depends_on
                   if state.tasks[d].status not in TASK_DONE_OK]
        if blocked and not any(state.tasks[d].status in TASK_NOT_OK for d in blocked):
            # a retry due while a dependency runs again (an operator retried it): wait for it;
            # its success queues this task like any other
            rec.note = f"waiting for {blocked[0]!r} to run again"
            rec.retry_at = None
            state.waiting[name] = len(blocked)
            state.set(rec, TaskStatus.PENDING)
            ch.tasks[(state.run.run_id, name)] = rec
            ch.runs[state.run.run_id] = state.run
            return
        if blocked:  # e.g. a retry due after an operator marked a dependency failed
            rec.note = f"upstream {blocked[0]!r} did not succeed"
            rec.finished_at = now
            state.set(rec, TaskStatus.UPSTREAM_FAILED)
            ch.tasks[(state.run.run_id, name)] = rec
            ch.runs[state.run.run_id] = state.run
            state.fail_downstream(state.flow.dependants.get(name, ()), now, ch, [name])
            self._maybe_finish(state, now, ch)
            return
        if state.flow.tasks[name].map_over:
            self.mapper.expand(state, name, now, ch)
            return
        if state.flow.tasks[name].yields:
            self.mapper.reset_items(state, name, ch)
        rec.attempt += 1
        rec.dispatch = rec.attempt
        rec.queued_at = now
        rec.retry_at = None
        rec.started_at = rec.finished_at = None
        ch.tasks[(state.run.run_id, name)] = rec
        ch.runs[state.run.run_id] = state.run
        dispatch = state.dispatch(rec)
        problem = inputs_problem(dispatch, self.settings.max_dispatch_bytes)
        if problem is not None:
            rec.finished_at = now
            rec.error_type, rec.error_message = "InputsTooLarge", problem
            self._ended(state, rec, False, now, ch)
            return
        state.set(rec, TaskStatus.QUEUED)
        ch.dispatches.append(Dispatch(rec.queue, dispatch))

    def _maybe_finish(self, state: RunState, now: float, ch: Changes) -> None:
        if state.open_count > 0:
            if state.run.run_id not in self._runs:
                self._runs[state.run.run_id] = state
            return
        run = state.run
        if state.failed_count:
            run.status = RunStatus.FAILED
        elif any(t.status is TaskStatus.CANCELLED for t in state.tasks.values()):
            run.status = RunStatus.CANCELLED
        else:
            run.status = RunStatus.SUCCEEDED
        run.finished_at = now
        ch.runs[run.run_id] = run
        self._runs.pop(run.run_id, None)
        self.mapper.forget(run.run_id)
