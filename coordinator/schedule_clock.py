"""ScheduleClock: fires schedules on time, each nominal time once, inside the writer's batches.

The next fire of every schedule waits in a heap with one timer for the earliest, so a tick
costs nothing per idle schedule. A due schedule is dealt with in a writer batch: the catch-up
policy picks the nominal times to run, the overlap policy what each does, and the runs (keyed
``schedule:<name>:<nominal>``), the records of the times and the schedule's new cursor are
committed together. After a kill -9 either all of it happened or none of it did; a restart
starts again from the cursor, so no nominal time runs twice and none is lost.
"""

import asyncio
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable

from coordinator import schedule_store
from coordinator.cancel_drain import CancelDrains
from coordinator.firing import MAX_BUFFERED, Action, may_start_buffered, on_fire
from coordinator.store import Store
from coordinator.writer import Batch, Writer
from flowforge.firetimes import MAX_RECORDED, catch_up, due_span, fire_at, next_fires
from protocol.api import StartRun
from protocol.errors import FlowForgeError
from protocol.messages import AttemptReport
from protocol.records import RunRecord
from protocol.schedules import FireOutcome, FireRecord, Overlap, ScheduleState
from protocol.states import RUN_FINAL, RunStatus

log = logging.getLogger("flowforge.coordinator.schedules")

MISSED_REASON = "outside the catch-up window"
RESTORED_WAIT_S = 15.0
"""After a restart, a cancel_other fire that was waiting waits at most this long for the
cancelled tasks' reports (they may have come before the restart, and will not again)."""
MAX_FIRES_PER_BATCH = 256
"""Schedules dealt with in one writer batch; more due at once go in the batches after."""


def run_key(name: str, nominal: float) -> str:
    """The idempotency key of a schedule's run for one nominal time."""
    return f"schedule:{name}:{nominal!r}"


class ScheduleClock:
    """``await start()`` after the coordinator restored its runs; ``stop()`` at shutdown."""

    def __init__(self, writer: Writer, store: Store, agent_alive: Callable[[str], bool]) -> None:
        self.writer = writer
        self.store = store
        self.drains = CancelDrains(agent_alive)
        """Runs cancelled by ``cancel_other`` whose tasks agents may still be running."""
        self._watching: asyncio.Task[None] | None = None
        self.states: dict[str, ScheduleState] = {}
        self.running: dict[str, set[str]] = {}
        """Active runs of each schedule."""
        self.buffered: dict[str, deque[float]] = {}
        """Nominal times waiting for the schedule's runs (overlap buffer_one / buffer_all)."""
        self._heap: list[tuple[float, str, int]] = []
        self._generation: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._firing: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False
        writer.run_listeners.append(self._runs_changed)
        writer.late_reports.append(self._late_report)
        writer.before_commit.append(self._pause_on_failures)

    async def load(self) -> None:
        """The schedules, before the reports that piled up are applied (a failure among them
        pauses a schedule with pause_on_failure)."""
        db = self.store.database
        for state in await schedule_store.all_states(db):
            name = state.spec.name
            self.states[name] = state
            waiting = await schedule_store.waiting_fires(db, name, MAX_BUFFERED)
            if waiting:
                self.buffered[name] = deque(waiting)
            if waiting and state.spec.overlap is Overlap.CANCEL_OTHER:  # what it waited for
                for run_id, task, attempt, agent in await schedule_store.stopping_tasks(db, name):
                    self.drains.hold_task(name, run_id, task, attempt, agent, math.inf)

    async def start(self) -> None:
        """After the runs were rebuilt: the schedules' active runs, and the timer."""
        for name in self.states:
            self.plan(name)
        for run in await self.store.active_runs():
            if run.schedule is not None and run.batch is None:
                self.running.setdefault(run.schedule, set()).add(run.run_id)
        for name in list(self.buffered):
            if not self.running.get(name):
                self._later(self._start_buffered(name))
        if self.drains:  # restored: their reports may have come before, and will not again
            self.drains.restored_until(time.time() + RESTORED_WAIT_S)
            self._watching = asyncio.ensure_future(self._watch_drains())
        for run_id in self.drains.runs():  # a cancel's news is lost if it crashed right after
            self._later(self.writer.publisher.cancel(run_id))
        self._arm()

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        for task in (self._firing, self._watching, *self._tasks):
            if task is not None:
                task.cancel()

    # -- when ---------------------------------------------------------------------------------

    def plan(self, name: str) -> None:
        """Put the schedule's next fire in the heap (replacing any it had there)."""
        self._generation[name] = generation = self._generation.get(name, 0) + 1
        state = self.states.get(name)
        if state is None or state.paused:
            return
        upcoming = next_fires(state.spec, state.cursor, 1)
        if upcoming:
            heapq.heappush(self._heap, (fire_at(state.spec, upcoming[0]), name, generation))
            self._arm()

    def _arm(self) -> None:
        while self._heap and self._heap[0][2] != self._generation.get(self._heap[0][1]):
            heapq.heappop(self._heap)  # replaced or deleted since
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._heap and not self._stopped and (self._firing is None or self._firing.done()):
            delay = max(0.0, self._heap[0][0] - time.time())
            self._timer = asyncio.get_running_loop().call_later(delay, self._due)

    def _due(self) -> None:
        self._timer = None
        self._firing = asyncio.ensure_future(self._fire_due())

    async def _fire_due(self) -> None:
        try:
            await self.writer.submit(self._fire_in_batch)
        except Exception:
            log.exception("firing schedules failed; trying again in a second")
            await asyncio.sleep(1.0)
        finally:
            self._firing = None
            self._arm()

    async def _fire_in_batch(self, now: float, batch: Batch) -> None:
        """The schedules due by now, at most MAX_FIRES_PER_BATCH (the rest in the next batch,
        at once): a batch of thousands would hold up reports and requests for seconds."""
        due: list[str] = []
        while self._heap and self._heap[0][0] <= now and len(due) < MAX_FIRES_PER_BATCH:
            _, name, generation = heapq.heappop(self._heap)
            if generation == self._generation.get(name):
                due.append(name)
        for name in due:
            try:
                await self.fire(name, now, batch)
            except Exception as exc:  # noqa: BLE001 - one schedule must not stop the others
                self._pause_broken(name, exc, now, batch)
            finally:
                self.plan(name)

    def _pause_broken(self, name: str, exc: Exception, now: float, batch: Batch) -> None:
        """A fire that cannot start its run (the flow changed under it, say) pauses its
        schedule with the reason, instead of failing the same way at every tick."""
        log.warning("schedule %s paused: its fire failed: %s", name, exc)
        state = self.states.get(name)
        if state is not None:
            reason = exc.message if isinstance(exc, FlowForgeError) else f"{type(exc).__name__}: {exc}"
            state.paused, state.note, state.updated_at = True, f"a fire failed: {reason}"[:500], now
            batch.schedules.states[name] = state

    # -- what ---------------------------------------------------------------------------------

    async def fire(self, name: str, now: float, batch: Batch) -> None:
        """The times of ``name`` due by ``now``: run, buffer or record each as skipped."""
        state = self.states[name]
        result = catch_up(state.spec, state.cursor, now)
        for gap in result.skipped:
            outcome = FireOutcome.MISSED if gap.reason == MISSED_REASON else FireOutcome.SKIPPED
            self._record(batch, name, gap.first, outcome, gap.reason, now, gap.last, gap.count)
        times = result.run
        if state.spec.overlap is Overlap.CANCEL_OTHER and len(times) > 1:  # each would cancel
            for older in times[:-1]:                                       # the one before it
                self._record(batch, name, older, FireOutcome.SKIPPED,
                             "overlap cancel_other: a newer time of the same catch-up ran", now)
            times = times[-1:]
        for nominal in times:
            await self._one_time(name, nominal, now, batch)
        state.cursor = max(state.cursor, result.cursor)
        state.updated_at = now
        batch.schedules.states[name] = state

    async def _one_time(self, name: str, nominal: float, now: float, batch: Batch) -> None:
        state = self.states[name]
        if state.spec.overlap is Overlap.CANCEL_OTHER:
            await self._supersede(name, nominal, now, batch)
            return
        await self.start_waiting(name, now, batch)  # a waiting fire goes before this one
        running = self.running.get(name, set())
        decision = on_fire(state.spec.overlap, len(running), len(self.buffered.get(name, ())))
        if decision.action is Action.SKIP:
            self._record(batch, name, nominal, FireOutcome.SKIPPED, decision.reason, now)
        elif decision.action is Action.BUFFER:
            self.buffered.setdefault(name, deque()).append(nominal)
            self._record(batch, name, nominal, FireOutcome.BUFFERED, decision.reason, now)
        else:
            await self.start_run(name, nominal, now, batch, decision.reason)

    async def _supersede(self, name: str, nominal: float, now: float, batch: Batch) -> None:
        """cancel_other: this time replaces a fire still waiting, the schedule's running runs
        are cancelled, and it starts once agents have stopped their tasks (as Temporal starts
        the new run after the old one finished cancelling)."""
        for older in self.buffered.pop(name, ()):
            self._record(batch, name, older, FireOutcome.SKIPPED,
                         "overlap cancel_other: a newer fire replaced it", now)
        running = self.running.get(name, set())
        decision = on_fire(Overlap.CANCEL_OTHER, len(running), 0)
        scheduler = self.writer.scheduler
        for run_id in sorted(running):
            state = scheduler.run_state(run_id)
            if state is not None:  # read before the cancel changes them
                self.drains.hold(name, run_id, scheduler.records_of(state), now)
            scheduler.cancel(run_id, now, batch.changes)
        if not self.drains.draining(name):
            await self.start_run(name, nominal, now, batch, decision.reason)
            return
        self.buffered[name] = deque([nominal])
        why = decision.reason or "overlap cancel_other: cancelled runs are still stopping"
        self._record(batch, name, nominal, FireOutcome.BUFFERED,
                     f"{why}; starts once their tasks have stopped", now)
        if self._watching is None or self._watching.done():
            self._watching = asyncio.ensure_future(self._watch_drains())

    def _late_report(self, msg: AttemptReport) -> None:
        """A report on a task of a run no longer active: perhaps the last a schedule waited for."""
        if self.drains and (name := self.drains.report(msg)) is not None:
            self._later(self._start_buffered(name))

    async def _watch_drains(self) -> None:
        """Every second while tasks of cancelled runs are waited for: those whose agent is lost
        or that stayed queued past the grace are waited for no more."""
        while self.drains:
            await asyncio.sleep(1.0)
            for name in self.drains.sweep(time.time()):
                self._later(self._start_buffered(name))

    async def start_waiting(self, name: str, now: float, batch: Batch) -> None:
        """The oldest buffered fire starts when none of the schedule's runs is going (also
        after a restart that came between a run's end and that start)."""
        waiting = self.buffered.get(name)
        state = self.states.get(name)
        if (waiting and state is not None and not state.paused and not self.running.get(name)
                and not self.drains.draining(name)):
            await self.start_run(name, waiting.popleft(), now, batch,
                                 "buffered until the schedule's runs ended")

    async def start_run(self, name: str, nominal: float, now: float, batch: Batch,
                        reason: str = "", key: str | None = None) -> RunRecord:
        spec = self.states[name].spec
        request = StartRun(flow=spec.flow, params=spec.params, source="schedule",
                           idempotency_key=key or run_key(name, nominal))
        run = await self.writer.start_from(request, now, batch, schedule=name,
                                           scheduled_for=nominal)
        if run.schedule != name or run.batch is not None:  # a run the schedule did not start
            by = f"backfill batch {run.batch}" if run.batch else "another run"
            self._record(batch, name, nominal, FireOutcome.SKIPPED,
                         f"already run by {by}: run {run.run_id}", now)
            return run
        if run.status not in RUN_FINAL:
            self.running.setdefault(name, set()).add(run.run_id)
        self._record(batch, name, nominal, FireOutcome.STARTED, reason, now, run_id=run.run_id)
        return run

    @staticmethod
    def _record(batch: Batch, name: str, nominal: float, outcome: FireOutcome, reason: str,
                now: float, last: float | None = None, count: int = 1,
                run_id: str | None = None) -> None:
        batch.schedules.fires.append(FireRecord(
            schedule=name, nominal=nominal, last_nominal=nominal if last is None else last,
            count=count, outcome=outcome, reason=reason, run_id=run_id, recorded_at=now))

    def forget(self, name: str, batch: Batch) -> None:
        """A deleted schedule: nothing of it stays to be inherited by a new one of its name."""
        self.states.pop(name, None)
        self.running.pop(name, None)
        self.buffered.pop(name, None)
        self.drains.forget(name)
        batch.schedules.deleted.add(name)
        self.plan(name)

    def skip_paused(self, state: ScheduleState, now: float, batch: Batch) -> None:
        """Resuming: the times that came due while paused are recorded as skipped and the
        cursor moves to now (a pause is not downtime: nothing is caught up)."""
        name = state.spec.name
        times, last, count = due_span(state.spec, state.cursor, now)
        if len(times) > MAX_RECORDED:  # one range: its first, its last and how many
            self._record(batch, name, times[0], FireOutcome.SKIPPED, "paused", now, last, count)
        for t in times if len(times) <= MAX_RECORDED else []:
            self._record(batch, name, t, FireOutcome.SKIPPED, "paused", now)
        state.cursor = max(state.cursor, now)

    # -- runs ending --------------------------------------------------------------------------

    def _runs_changed(self, runs: Iterable[RunRecord]) -> None:
        """After a commit: runs of schedules that ended free their schedule; a failure pauses
        a schedule that asks for it; a buffered time starts when nothing is going."""
        if self._stopped:
            return
        for run in runs:
            if run.schedule is None:
                continue
            if run.status not in RUN_FINAL:  # started, or retried after it had ended
                if run.batch is None:  # a backfill's runs have their own limit
                    self.running.setdefault(run.schedule, set()).add(run.run_id)
                continue
            self.running.get(run.schedule, set()).discard(run.run_id)
            state = self.states.get(run.schedule)
            if state is None:
                continue
            if may_start_buffered(len(self.running.get(run.schedule, ())),
                                  len(self.buffered.get(run.schedule, ()))):
                self._later(self._start_buffered(run.schedule))

    def _later(self, coro: "asyncio.Future[None] | object") -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pause_on_failures(self, now: float, batch: Batch) -> None:
        """Before a batch commits: a schedule with pause_on_failure whose run failed in it is
        paused in the same transaction (a crash cannot leave it unpaused)."""
        for run in batch.changes.runs.values():
            state = self.states.get(run.schedule or "") if run.batch is None else None
            if (run.status is RunStatus.FAILED and state is not None
                    and state.spec.pause_on_failure and not state.paused):
                state.paused, state.updated_at = True, now
                state.note = f"run {run.run_id} failed (pause_on_failure)"
                batch.schedules.states[state.spec.name] = state
                self.plan(state.spec.name)

    async def _start_buffered(self, name: str) -> None:
        async def act(now: float, batch: Batch) -> None:
            waiting = list(self.buffered.get(name, ()))
            try:
                await self.start_waiting(name, now, batch)
            except Exception as exc:  # noqa: BLE001 - the flow changed under it, say
                self.buffered[name] = deque(waiting)  # it still waits, for a resume
                self._pause_broken(name, exc, now, batch)

        try:
            await self.writer.submit(act)
        except Exception:
            log.exception("starting a waiting fire of schedule %s failed", name)
