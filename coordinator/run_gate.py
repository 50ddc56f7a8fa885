"""Limits on whole runs, decided as a run starts and as runs end, inside the writer's batches:
a flow's ``max_active_runs`` and its ``concurrency`` key (queue, cancel_newest,
cancel_in_progress). A run that must wait is committed ``pending`` with a note and starts, in
order, in the batch where a run before it ends. Pure, like the scheduler."""

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import count, islice

import msgspec

from coordinator.changes import Changes
from coordinator.graph import CompiledFlow
from coordinator.scheduler import Scheduler
from protocol.concurrency import Strategy, render_key
from protocol.errors import InvalidState
from protocol.records import RunRecord, TaskRecord
from protocol.states import RUN_FINAL, RunStatus

Reused = dict[str, tuple[msgspec.Raw, str]]
EXAMINED_MAX = 1_000


@dataclass(slots=True)
class WaitingRun:
    run: RunRecord
    flow: CompiledFlow
    reused: Reused | None
    key: str | None
    rank: float


def run_key(run: RunRecord, flow: CompiledFlow) -> str | None:
    """The run's concurrency key (None when its flow has none)."""
    spec = flow.spec.concurrency
    return None if spec is None else render_key(spec.key, run.flow, run.params)


class RunGate:
    """Which runs are going (per flow, per concurrency key) and which wait, best first."""

    def __init__(self, scheduler: Scheduler, aging_s: float = 30.0) -> None:
        self.scheduler = scheduler
        self.aging_s = aging_s
        self.active: dict[str, dict[str, None]] = {}
        """Runs going, by flow, in the order they started."""
        self.keyed: dict[str, dict[str, None]] = {}
        """Runs going, by concurrency key."""
        self.owner: dict[str, tuple[str, str | None]] = {}
        """Each run going: its flow and key."""
        self.flow_limit: dict[str, int] = {}
        """Each flow's max_active_runs, as its newest run's version says."""
        self.key_limit: dict[str, int] = {}
        self.waiting: dict[str, WaitingRun] = {}
        self._by_flow: dict[str, list[tuple[float, int, str]]] = {}
        self._by_key: dict[str, list[tuple[float, int, str]]] = {}
        self._seq = count()
        self._touched: set[tuple[str, str]] = set()

    # -- a run starts --------------------------------------------------------------------

    def current(self, flow: CompiledFlow) -> None:
        """A flow's current version: its max_active_runs holds from now (raised, waiting runs
        start in the batch)."""
        limit = flow.spec.max_active_runs
        if self.flow_limit.get(flow.spec.name) != limit:
            if limit is None:
                del self.flow_limit[flow.spec.name]
            else:
                self.flow_limit[flow.spec.name] = limit
            self._touched.add(("flow", flow.spec.name))

    def admit(self, run: RunRecord, flow: CompiledFlow, now: float, ch: Changes,
              reused: Reused | None = None) -> bool:
        """A new run: started (True), or committed pending or cancelled with a note (False)."""
        self.current(flow)
        key = run_key(run, flow)
        spec = flow.spec.concurrency
        if key is not None and spec is not None:
            self.key_limit[key] = spec.limit
            going = self.keyed.get(key, {})
            if len(going) >= spec.limit and spec.strategy == Strategy.CANCEL_NEWEST:
                return self._refuse(run, key, now, ch)
            if len(going) >= spec.limit and spec.strategy == Strategy.CANCEL_IN_PROGRESS:
                self._cancel_oldest(run, key, spec.limit, now, ch)
        why = self._why_not(run.flow, key)
        if why is None:
            self._start(run, flow, key, now, ch, reused)
            return True
        run.note = why
        ch.new_runs.append(run.run_id)  # written whole (with its note)
        ch.runs[run.run_id] = run
        self._wait(WaitingRun(run, flow, reused, key, run.created_at - run.priority * self.aging_s))
        return False

    def _why_not(self, flow: str, key: str | None) -> str | None:
        """Why a run of ``flow`` with ``key`` cannot start now (None: it can)."""
        going = self.active.get(flow, {})
        limit = self.flow_limit.get(flow)
        if limit is not None and len(going) >= limit:
            return f"waiting: flow {flow} has {len(going)}/{limit} runs going (max_active_runs)" \
                + _named(going)
        if key is not None:
            holders = self.keyed.get(key, {})
            if len(holders) >= self.key_limit.get(key, 1):
                return (f"waiting: concurrency key {key!r} has {len(holders)}/"
                        f"{self.key_limit.get(key, 1)} runs going" + _named(holders))
        return None

    def _refuse(self, run: RunRecord, key: str, now: float, ch: Changes) -> bool:
        run.status, run.finished_at = RunStatus.CANCELLED, now
        run.note = (f"cancelled: concurrency key {key!r} has {len(self.keyed[key])}/"
                    f"{self.key_limit[key]} runs going (cancel_newest)" + _named(self.keyed[key]))
        ch.new_runs.append(run.run_id)
        ch.runs[run.run_id] = run
        return False

    def _cancel_oldest(self, run: RunRecord, key: str, limit: int, now: float,
                       ch: Changes) -> None:
        """cancel_in_progress: the oldest runs going with the key make room for ``run``."""
        going = self.keyed[key]
        for old in list(going)[:len(going) - limit + 1]:
            self.scheduler.cancel(old, now, ch)
            self._free(old)
            cancelled = ch.runs.get(old)
            if cancelled is not None:
                cancelled.note = (f"cancelled: run {run.run_id} started with concurrency key "
                                  f"{key!r} (cancel_in_progress)")
                ch.new_runs.append(old)  # written whole (with its note)

    def _start(self, run: RunRecord, flow: CompiledFlow, key: str | None, now: float,
               ch: Changes, reused: Reused | None) -> None:
        self._count(run.run_id, run.flow, key)
        run.note = None
        self.scheduler.start_run(run, flow, now, ch, reused)

    def _count(self, run_id: str, flow: str, key: str | None) -> None:
        self.owner[run_id] = (flow, key)
        self.active.setdefault(flow, {})[run_id] = None
        if key is not None:
            self.keyed.setdefault(key, {})[run_id] = None

    def _wait(self, waiting: WaitingRun) -> None:
        run_id = waiting.run.run_id
        self.waiting[run_id] = waiting
        entry = (waiting.rank, next(self._seq), run_id)
        heapq.heappush(self._by_flow.setdefault(waiting.run.flow, []), entry)
        if waiting.key is not None:
            heapq.heappush(self._by_key.setdefault(waiting.key, []), entry)

    def check_reopen(self, run: RunRecord) -> None:
        """A finished run made active again (retry, mark) must find room under its flow's
        max_active_runs, like a new run (it is not queued behind the waiting ones: refused)."""
        going, limit = self.active.get(run.flow, {}), self.flow_limit.get(run.flow)
        if limit is not None and len(going) >= limit:
            raise InvalidState(f"flow {run.flow} has {len(going)}/{limit} runs going "
                               f"(max_active_runs); retry run {run.run_id} when one ends")

    # -- runs end ------------------------------------------------------------------------

    def follow(self, now: float, ch: Changes) -> None:
        """The writer's hook before a batch commits: runs that ended free their places and the
        best waiting runs start, in the same batch; a run made active again (retry, mark)
        counts again."""
        for run in list(ch.runs.values()):
            run_id = run.run_id
            if run.status in RUN_FINAL:
                if run_id in self.owner:
                    self._free(run_id)
                elif run_id in self.waiting and run.status is RunStatus.CANCELLED:
                    del self.waiting[run_id]
            elif run.status is RunStatus.RUNNING and run_id not in self.owner:
                state = self.scheduler.run_state(run_id)
                if state is not None:
                    self._count(run_id, run.flow, run_key(run, state.flow))
        if self._touched:
            self.fill(now, ch)

    def _free(self, run_id: str) -> None:
        flow, key = self.owner.pop(run_id)
        self.active.get(flow, {}).pop(run_id, None)
        self._touched.add(("flow", flow))
        if key is not None:
            self.keyed.get(key, {}).pop(run_id, None)
            if not self.keyed.get(key):
                self.keyed.pop(key, None)
            self._touched.add(("key", key))

    def fill(self, now: float, ch: Changes) -> None:
        """Start the best waiting runs of the flows and keys that have room now."""
        touched, self._touched = sorted(self._touched), set()
        for kind, name in touched:
            heap = (self._by_flow if kind == "flow" else self._by_key).get(name, [])
            aside = []
            while heap and len(aside) < EXAMINED_MAX and self._room(kind, name):
                entry = heapq.heappop(heap)
                waiting = self.waiting.get(entry[2])
                if waiting is None:
                    continue  # started or cancelled since
                if self._why_not(waiting.run.flow, waiting.key) is not None:
                    aside.append(entry)  # its flow or its key is full
                    continue
                del self.waiting[entry[2]]
                self._start(waiting.run, waiting.flow, waiting.key, now, ch, waiting.reused)
            for entry in aside:
                heapq.heappush(heap, entry)

    def _room(self, kind: str, name: str) -> bool:
        if kind == "flow":
            limit = self.flow_limit.get(name)
            return limit is None or len(self.active.get(name, {})) < limit
        return len(self.keyed.get(name, {})) < self.key_limit.get(name, 1)

    def cancel_waiting(self, run_id: str, now: float, ch: Changes) -> list[TaskRecord] | None:
        """Cancel a run that waits for its turn: no task of it was queued or running (None:
        it does not wait). The scheduler's ``cancel`` asks this for a run it does not have,
        so a cancel from the API, a batch or a schedule reaches waiting runs too."""
        waiting = self.waiting.pop(run_id, None)
        if waiting is None:
            return None
        run = waiting.run
        run.status, run.finished_at, run.note = RunStatus.CANCELLED, now, "cancelled while waiting"
        ch.new_runs.append(run_id)
        ch.runs[run_id] = run
        return []

    # -- a restart -----------------------------------------------------------------------

    def restore(self, running: Iterable[tuple[RunRecord, CompiledFlow]],
                waiting: Iterable[tuple[RunRecord, CompiledFlow, Reused | None]],
                current: dict[str, CompiledFlow]) -> None:
        """The runs going and waiting as stored, each flow's limit from its current version;
        ``fill`` then starts what has room."""
        for run, flow in running:
            self._count(run.run_id, run.flow, run_key(run, flow))
        for run, flow, reused in waiting:
            key = run_key(run, flow)
            if key is not None and flow.spec.concurrency is not None:
                self.key_limit.setdefault(key, flow.spec.concurrency.limit)
            self._wait(WaitingRun(run, flow, reused, key,
                                  run.created_at - run.priority * self.aging_s))
            self._touched.add(("flow", run.flow))
        for flow in current.values():
            self.current(flow)


def _named(runs: dict[str, None], shown: int = 3) -> str:
    names = [f"run {r}" for r in islice(runs, shown)]
    more = len(runs) - len(names)
    return f": {', '.join(names)}" + (f" and {more} more" if more > 0 else "") if names else ""
