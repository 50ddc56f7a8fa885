"""The dashboard's state: a snapshot, then events applied in order (pure, no I/O, no Textual)."""

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from protocol.api import FlowDetail
from protocol.batches import BatchRecord
from protocol.children import CHILD_SEP
from protocol.flows import FlowSpec
from protocol.limits import MAX_LOG_KEPT_CHARS
from protocol.messages import ErrorEvent, TaskLog
from protocol.records import AgentInfo, FlowSummary, RejectedMessage, RunDetail, RunRecord, TaskRecord
from protocol.schedules import FireRecord, ScheduleEvent, ScheduleState
from protocol.states import RUN_FINAL, RunStatus
from tui.source import LinkDown, LinkUp, Snapshot, SourceEvent

MAX_RUNS = 500
MAX_ERRORS = 200
MAX_BATCHES = 200


@dataclass(slots=True)
class Dirty:
    """What changed: kinds of view ("flows", "runs", "agents", "problems", "link", "schedules",
    "batches", "log", "tick"), run ids, and child tasks' new records."""

    kinds: set[str] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)
    children: dict[tuple[str, str], TaskRecord] = field(default_factory=dict)
    """Child tasks' records that came, by (run, name), the newest of each: the model keeps none
    (a run may have a hundred thousand), the views that show a task's children take these."""

    def merge(self, other: "Dirty") -> None:
        self.kinds |= other.kinds
        self.runs |= other.runs
        self.children.update(other.children)

    def __bool__(self) -> bool:
        return bool(self.kinds or self.runs or self.children)


RECHECK_CHARS = 8 * 1024
"""After a fetch, log events found in this much of the end of the fetched text are not added."""


@dataclass(slots=True)
class LogBuffer:
    """The end of one task instance's log, as the run view shows it.

    It starts with what the coordinator kept (``fill``). The coordinator stores a batch of
    lines before it publishes them as an event, so events that arrive while, or just after,
    the stored log is fetched may already be in it: events that come before the fetch is
    answered wait in ``pending``; after it, each event found in order in the last
    ``RECHECK_CHARS`` of the fetched text is taken as already there, until one is not.
    (A batch identical to one at the end of the fetched text is dropped only in that window.)
    """

    text: str = ""
    loaded: bool = False
    pending: list[str] = field(default_factory=list)
    _cursor: int | None = None
    """Where in ``text`` the next event is looked for, while events may repeat the fetch."""
    _asked: int = 0
    _filled: int = 0

    def ask(self) -> int:
        """A ticket for a fetch of the stored log: an answer to an older fetch is ignored."""
        self._asked += 1
        return self._asked

    def add(self, text: str) -> None:
        if not self.loaded:
            self.pending.append(text)
            return
        if self._cursor is not None:
            at = self.text.find(text, self._cursor)
            if at >= 0:
                self._cursor = at + len(text)
                return
            self._cursor = None
        self.text = (self.text + text)[-MAX_LOG_KEPT_CHARS:]

    def fill(self, stored: str, ticket: int) -> bool:
        """Take the stored log (a first fetch or a refetch), then the events that came meanwhile;
        False if a later fetch was taken already."""
        if ticket < self._filled:
            return False
        self._filled = ticket
        self.text = stored
        self._cursor = max(0, len(stored) - RECHECK_CHARS)
        self.loaded = True
        pending, self.pending = self.pending, []
        for text in pending:
            self.add(text)
        return True


@dataclass(frozen=True, slots=True)
class Problem:
    """A rejected message or an error event, as one row of the Problems view."""

    at: float
    kind: str
    subject: str
    code: str
    reason: str
    raw: bytes | None = None


class Model:
    """Latest record of every flow, run, task instance and agent the dashboard knows of."""

    def __init__(self, max_runs: int = MAX_RUNS, max_errors: int = MAX_ERRORS,
                 max_batches: int = MAX_BATCHES) -> None:
        self.max_runs = max_runs
        self.max_batches = max_batches
        self.flows: dict[str, FlowSummary] = {}
        self.specs: dict[tuple[str, str], FlowDetail] = {}
        self.runs: dict[str, RunRecord] = {}
        self.tasks: dict[str, dict[str, TaskRecord]] = {}
        self.agents: dict[str, AgentInfo] = {}
        self.schedules: dict[str, ScheduleState] = {}
        self.last_fire: dict[str, FireRecord] = {}
        """The newest nominal time each schedule dealt with (from its events)."""
        self.batches: dict[str, BatchRecord] = {}
        """The newest batches (at most ``max_batches``), each with its items counted by status."""
        self.rejected: list[RejectedMessage] = []
        self.errors: deque[ErrorEvent] = deque(maxlen=max_errors)
        self.link_down: str | None = None
        """Why the deployment cannot be reached, or None while it can."""
        self.down_since: float | None = None
        self.synced_at: float | None = None
        self.pinned: set[str] = set()
        """Runs kept however old (the one open in the run view)."""
        self.listed: set[str] = set()
        """Runs kept however many there are (the runs view's last query asked for them)."""
        self.logs: dict[tuple[str, str], LogBuffer] = {}
        """Logs followed, by (run, task): only those the run view opened, only while it is open."""
        self.seq = 0
        """Events applied so far: take it before an API call and pass it with the answer."""
        self._touched: dict[tuple[str, ...], int] = {}
        """When (in ``seq``) an event last set each record."""

    def _newer(self, key: tuple[str, ...], since: int | None) -> bool:
        """Did an event set this record after an API call sent at ``since``?

        Such an event may be newer than the answer (the coordinator answers from its store
        while it commits and publishes), and applying events in order converges anyway.
        """
        return since is not None and self._touched.get(key, 0) > since

    def _touch(self, *key: str) -> None:
        self.seq += 1
        self._touched[key] = self.seq

    # -- input -------------------------------------------------------------------------

    def load(self, snap: Snapshot, now: float, since: int | None = None) -> Dirty:
        """Take what the API returned (asked for at ``since``); task records of known runs
        are kept, and records set by an event after ``since`` too."""
        self.flows = {f.name: f for f in snap.flows if not self._newer(("flow", f.name), since)} | {
            name: f for name, f in self.flows.items() if self._newer(("flow", name), since)}
        for run in snap.runs:
            if not self._newer(("run", run.run_id), since):
                self.runs[run.run_id] = run
        self.agents = {a.agent_id: a for a in snap.agents
                       if not self._newer(("agent", a.agent_id), since)} | {
            k: a for k, a in self.agents.items() if self._newer(("agent", k), since)}
        self.rejected = sorted(snap.rejected, key=lambda m: m.received_at, reverse=True)
        self.schedules = {d.state.spec.name: d.state for d in snap.schedules
                          if not self._newer(("schedule", d.state.spec.name), since)} | {
            k: s for k, s in self.schedules.items() if self._newer(("schedule", k), since)}
        self.batches = {b.batch_id: b for b in snap.batches
                        if not self._newer(("batch", b.batch_id), since)} | {
            k: b for k, b in self.batches.items() if self._newer(("batch", k), since)}
        self.synced_at = now
        self._prune()
        self._prune_batches()
        return Dirty({"flows", "runs", "agents", "problems", "link", "schedules", "batches"},
                     set(self.runs))

    def set_detail(self, detail: RunDetail, since: int | None = None) -> Dirty:
        """A run fetched (at ``since``) with all its task instances (the run view asks)."""
        run_id = detail.run.run_id
        if not self._newer(("run", run_id), since):
            self.runs[run_id] = detail.run
        tasks = self.tasks.setdefault(run_id, {})
        for t in detail.tasks:
            if not self._newer(("task", run_id, t.task), since):
                tasks[t.task] = t
        return Dirty({"runs"}, {run_id})

    def add_runs(self, runs: Iterable[RunRecord], since: int | None = None) -> Dirty:
        """Runs a query returned (asked for at ``since``); a record set by a later event stays."""
        dirty = Dirty({"runs"})
        for run in runs:
            if not self._newer(("run", run.run_id), since):
                self.runs[run.run_id] = run
                dirty.runs.add(run.run_id)
        self._prune()
        return dirty

    def follow_log(self, run_id: str, task: str) -> tuple[LogBuffer, bool]:
        """The log buffer of a task instance, and whether it is new (then fetch the stored log)."""
        key = (run_id, task)
        if key in self.logs:
            return self.logs[key], False
        buffer = self.logs[key] = LogBuffer()
        return buffer, True

    def set_log(self, run_id: str, task: str, stored: str, ticket: int) -> Dirty:
        """The stored log of a task instance the run view follows, fetched with ``ticket``."""
        buffer = self.logs.get((run_id, task))
        if buffer is None or not buffer.fill(stored, ticket):
            return Dirty()
        return Dirty({"log"}, {run_id})

    def unfollow_logs(self, run_id: str) -> None:
        for key in [k for k in self.logs if k[0] == run_id]:
            del self.logs[key]

    def set_flow(self, detail: FlowDetail) -> None:
        self.specs[(detail.spec.name, detail.version)] = detail

    def apply(self, event: SourceEvent, now: float) -> Dirty:
        """One event, in arrival order: each carries the full new state of what changed."""
        match event:
            case TaskRecord() if CHILD_SEP in event.task:  # not one of the run's own tasks
                return Dirty(children={(event.run_id, event.task): event})
            case TaskRecord():
                self._touch("task", event.run_id, event.task)
                self.tasks.setdefault(event.run_id, {})[event.task] = event
                return Dirty(set(), {event.run_id})
            case RunRecord():
                self._touch("run", event.run_id)
                return self._apply_run(event)
            case FlowSummary():
                self._touch("flow", event.name)
                self.flows[event.name] = event
                return Dirty({"flows"})
            case AgentInfo():
                self._touch("agent", event.agent_id)
                self.agents[event.agent_id] = event
                return Dirty({"agents"})
            case TaskLog():
                buffer = self.logs.get((event.run_id, event.task))
                if buffer is None:
                    return Dirty()
                buffer.add(event.text)
                return Dirty({"log"}, {event.run_id})
            case ErrorEvent():
                self.errors.appendleft(event)
                return Dirty({"problems"})
            case ScheduleEvent():
                return self._apply_schedule(event)
            case BatchRecord():
                return self._apply_batch(event)
            case LinkDown() | LinkUp():
                return self._apply_link(event, now)
        return Dirty()

    def _apply_link(self, event: LinkDown | LinkUp, now: float) -> Dirty:
        if isinstance(event, LinkUp):
            self.link_down, self.down_since = None, None
        else:
            if self.link_down is None:
                self.down_since = now
            self.link_down = event.reason
        return Dirty({"link"})

    def apply_all(self, events: Iterable[SourceEvent], now: float) -> Dirty:
        dirty = Dirty()
        for event in events:
            dirty.merge(self.apply(event, now))
        return dirty

    def _apply_schedule(self, event: ScheduleEvent) -> Dirty:
        self._touch("schedule", event.name)
        if event.state is None:
            self.schedules.pop(event.name, None)
            self.last_fire.pop(event.name, None)
        else:
            self.schedules[event.name] = event.state
        for fire in event.fires:
            last = self.last_fire.get(event.name)
            if last is None or fire.nominal >= last.nominal:
                self.last_fire[event.name] = fire
        return Dirty({"schedules"})

    def _apply_batch(self, batch: BatchRecord) -> Dirty:
        self._touch("batch", batch.batch_id)
        known = batch.batch_id in self.batches
        self.batches[batch.batch_id] = batch
        if not known:
            self._prune_batches()
        return Dirty({"batches"})

    def _apply_run(self, run: RunRecord) -> Dirty:
        known = run.run_id in self.runs
        self.runs[run.run_id] = run
        dirty = Dirty({"runs"}, {run.run_id})
        flow = self.flows.get(run.flow)
        if flow is not None and self._is_latest(run, flow.last_run_id):
            self.flows[run.flow] = msgspec.structs.replace(
                flow, last_run_id=run.run_id, last_run_status=run.status)
            dirty.kinds.add("flows")
        if not known:
            self._prune()
        return dirty

    def _is_latest(self, run: RunRecord, last_id: str | None) -> bool:
        if last_id is None or last_id == run.run_id:
            return True
        last = self.runs.get(last_id)
        return last is None or (run.created_at, run.run_id) >= (last.created_at, last.run_id)

    def _prune(self) -> None:
        """Forget the oldest finished runs beyond ``max_runs`` (and their tasks)."""
        extra = len(self.runs) - self.max_runs
        if extra <= 0:
            return
        old = sorted((r for r in self.runs.values()
                      if r.status in RUN_FINAL and r.run_id not in self.pinned
                      and r.run_id not in self.listed),
                     key=lambda r: (r.created_at, r.run_id))
        for run in old[:extra]:
            del self.runs[run.run_id]
            for task in self.tasks.pop(run.run_id, {}):
                self._touched.pop(("task", run.run_id, task), None)
            self._touched.pop(("run", run.run_id), None)

    def _prune_batches(self) -> None:
        """Forget the oldest batches beyond ``max_batches``."""
        for record in self.batches_view()[self.max_batches:]:
            del self.batches[record.batch_id]
            self._touched.pop(("batch", record.batch_id), None)

    # -- queries -----------------------------------------------------------------------

    def spec(self, flow: str, version: str | None = None) -> FlowSpec | None:
        """The definition of a flow at ``version`` (default: the registered one), if fetched."""
        if version is None:
            summary = self.flows.get(flow)
            version = summary.version if summary else None
        detail = self.specs.get((flow, version or ""))
        return detail.spec if detail else None

    def runs_view(self, flow: str | None = None,
                  status: RunStatus | str | None = None) -> list[RunRecord]:
        """Runs newest first, optionally of one flow and one status."""
        rows = [r for r in self.runs.values()
                if (flow is None or r.flow == flow) and (status is None or r.status == status)]
        rows.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return rows

    def batches_view(self) -> list[BatchRecord]:
        """Batches newest first."""
        return sorted(self.batches.values(), key=lambda b: (b.created_at, b.batch_id),
                      reverse=True)

    def flows_view(self) -> list[FlowSummary]:
        return sorted(self.flows.values(), key=lambda f: f.name)

    def agents_view(self) -> list[AgentInfo]:
        """Live agents first, then lost or stopped ones, each by id."""
        return sorted(self.agents.values(), key=lambda a: (a.status != "live", a.agent_id))

    def problems(self) -> list[Problem]:
        """Rejected messages and error events, newest first (an error event about a kept
        rejected message is shown once, with the message's raw bytes)."""
        kept = {m.id for m in self.rejected}
        rows = [Problem(m.received_at, "rejected", m.subject, m.code, m.reason, m.raw)
                for m in self.rejected]
        rows += [Problem(e.at, e.kind, e.subject, e.code, e.reason) for e in self.errors
                 if e.rejected_id is None or e.rejected_id not in kept]
        rows.sort(key=lambda p: p.at, reverse=True)
        return rows
