"""MemorySource: a DataSource over records held in memory — for tests, snapshots and bench.tui_measure.

Actions are recorded in ``calls`` and answered with plausible records; ``push`` sends an
event to every subscriber; ``go_down`` / ``come_back`` play a lost deployment.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import msgspec

from coordinator.instances_api import total_from_note
from protocol.api import FlowDetail, MapInstances, ScheduleDetail
from protocol.batch_api import BatchDetail
from protocol.batches import BatchItem, BatchRecord, BatchState, ItemStatus
from protocol.children import CHILD_SEP, ChildInfo, ChildList, child_name
from protocol.concurrency import LimitInfo
from protocol.errors import NotConnected, RemoteError, UnknownBatch, UnknownFlow, UnknownRun
from protocol.experiments import Comparison, ExperimentsPage
from protocol.flows import FlowSpec
from protocol.limits import MAX_LOG_KEPT_CHARS
from protocol.messages import TaskLog
from protocol.records import (
    AgentInfo,
    FlowSummary,
    RejectedMessage,
    RunDetail,
    RunRecord,
    TaskRecord,
)
from protocol.schedules import ScheduleEvent, ScheduleState
from protocol.states import RunStatus, TaskStatus
from protocol.stats import DayRuns, FlowStats
from tests.experiment_memory import ExperimentMemory
from tui.child_rows import info_of
from tui.source import LinkDown, LinkUp, SourceEvent


def summary_of(detail: FlowDetail, last: RunRecord | None = None) -> FlowSummary:
    spec = detail.spec
    return FlowSummary(name=spec.name, version=detail.version, display_name=spec.display_name,
                       tasks=len(spec.tasks), queues=sorted(spec.queues()),
                       registered_at=detail.registered_at,
                       last_run_id=last.run_id if last else None,
                       last_run_status=last.status if last else None)


def flow_detail(spec: FlowSpec, registered_at: float = 0.0) -> FlowDetail:
    return FlowDetail(spec=spec, version=spec.version(), registered_at=registered_at)


class MemorySource:
    description = "memory"

    def __init__(self, flows: Iterable[FlowDetail] = (), runs: Iterable[RunDetail] = (),
                 agents: Iterable[AgentInfo] = (), rejected: Iterable[RejectedMessage] = (),
                 logs: dict[tuple[str, str], str] | None = None,
                 clock: Callable[[], float] = lambda: 0.0,
                 schedules: Iterable[ScheduleState] = (),
                 batches: Iterable[tuple[BatchRecord, list[BatchItem]]] = (),
                 instances: Iterable[TaskRecord] = (),
                 children: Iterable[tuple[str, ChildInfo]] = ()) -> None:
        self.flow_details = {f.spec.name: f for f in flows}
        self.details = {d.run.run_id: d for d in runs}
        self.agent_list = list(agents)
        self.rejected_list = list(rejected)
        self.schedule_states = {s.spec.name: s for s in schedules}
        self.batch_records = {b.batch_id: b for b, _ in batches}
        self.batch_items = {b.batch_id: list(items) for b, items in batches}
        """Items by batch, in sequence order; counts are taken from them when asked."""
        self.limit_list: list[LimitInfo] = []
        """What ``limits`` answers (a test sets it)."""
        self.stats_answers: dict[str | None, FlowStats] = {}
        """What ``flow_stats`` answers, by flow (None: every flow; a test sets it)."""
        self.experiment_data = ExperimentMemory()
        """What ``experiments`` and ``compare`` answer from (a test fills it)."""
        self.batch_queries: list[tuple[str, int, int, str | None]] = []
        """Every ``batch`` call: (ref, items, after_seq, status)."""
        self.map_instances: dict[tuple[str, str], dict[int, TaskRecord]] = {}
        """Mapped tasks' instances by (run, task), by index; ``push`` of one changes it (no
        event: the coordinator publishes none for instances)."""
        for rec in instances:
            self._keep_instance(rec)
        self.instance_queries: list[tuple[str, str, str | None, int, int, bool]] = []
        """Every ``instances`` call: (run, task, status, after_index, limit, counts)."""
        self.child_infos: dict[tuple[str, str], ChildInfo] = {}
        """Child tasks by (run, name); ``push`` of a child's record changes it (and is an event,
        as the coordinator publishes one — but not for a mapped instance's children)."""
        for run_id, child in children:
            self.child_infos[(run_id, child_name(child.parent, child.seq))] = child
        self.child_queries: list[tuple[str, str | None, str, int, str | None]] = []
        """Every ``children`` call: (run, parent, after, limit, status)."""
        self.logs = dict(logs or {})
        """Stored logs by (run, task); a pushed TaskLog adds to them."""
        self.clock = clock
        self.calls: list[tuple[Any, ...]] = []
        self.down: str | None = None
        self.api_calls = 0
        self.run_queries: list[tuple[str | None, str | None, int]] = []
        """Every ``runs`` call: (flow, status, limit)."""
        self._queues: list[asyncio.Queue[SourceEvent]] = []
        self._next_run = 1

    # -- playing a deployment ------------------------------------------------------------

    def _keep_instance(self, rec: TaskRecord) -> None:
        task, _, index = rec.task.rpartition("~")
        self.map_instances.setdefault((rec.run_id, task), {})[int(index)] = rec

    def push(self, event: SourceEvent) -> None:
        """Send an event to every subscriber (and keep the records current for later calls);
        an instance of a mapped task is only kept."""
        if isinstance(event, TaskRecord) and CHILD_SEP in event.task:
            self._keep_child(event)
            if "~" in event.task:
                return
        elif isinstance(event, TaskRecord) and "~" in event.task:
            self._keep_instance(event)
            return
        match event:
            case RunRecord():
                old = self.details.get(event.run_id)
                self.details[event.run_id] = RunDetail(run=event, tasks=old.tasks if old else [])
            case TaskRecord() if event.run_id in self.details:
                d = self.details[event.run_id]
                tasks = [t for t in d.tasks if t.task != event.task] + [event]
                self.details[event.run_id] = RunDetail(run=d.run, tasks=tasks)
            case BatchRecord():
                self.batch_records[event.batch_id] = event
                self.batch_items.setdefault(event.batch_id, [])
            case TaskLog():
                key = (event.run_id, event.task)
                self.logs[key] = (self.logs.get(key, "") + event.text)[-MAX_LOG_KEPT_CHARS:]
        for q in self._queues:
            q.put_nowait(event)

    def _keep_child(self, rec: TaskRecord) -> None:
        old = self.child_infos.get((rec.run_id, rec.task))
        self.child_infos[(rec.run_id, rec.task)] = info_of(rec, old.function if old else "")

    def go_down(self, reason: str = "lost NATS at memory; reconnecting") -> None:
        self.down = reason
        for q in self._queues:
            q.put_nowait(LinkDown(reason))

    def come_back(self) -> None:
        self.down = None
        for q in self._queues:
            q.put_nowait(LinkUp())

    def _check(self) -> None:
        self.api_calls += 1
        if self.down is not None:
            raise NotConnected(self.down)

    # -- DataSource ------------------------------------------------------------------------

    async def open(self) -> None:
        self._check()

    async def close(self) -> None:
        self._queues.clear()

    async def subscribe(self) -> AsyncIterator[SourceEvent]:
        self._check()
        queue: asyncio.Queue[SourceEvent] = asyncio.Queue()
        self._queues.append(queue)

        async def stream() -> AsyncIterator[SourceEvent]:
            while True:
                yield await queue.get()

        return stream()

    async def flows(self) -> list[FlowSummary]:
        self._check()
        out = []
        for name, detail in sorted(self.flow_details.items()):
            runs = [d.run for d in self.details.values() if d.run.flow == name]
            last = max(runs, key=lambda r: (r.created_at, r.run_id), default=None)
            out.append(summary_of(detail, last))
        return out

    async def flow(self, name: str, version: str | None = None) -> FlowDetail:
        self._check()
        detail = self.flow_details.get(name)
        if detail is None or (version is not None and version != detail.version):
            raise RemoteError("unknown_flow", str(UnknownFlow(name)))
        return detail

    async def runs(self, flow: str | None = None, status: str | None = None,
                   limit: int = 50) -> list[RunRecord]:
        self._check()
        self.run_queries.append((flow, status, limit))
        rows = [d.run for d in self.details.values()
                if (flow is None or d.run.flow == flow) and (status is None or d.run.status == status)]
        return sorted(rows, key=lambda r: (r.created_at, r.run_id), reverse=True)[:limit]

    async def get(self, run_id: str) -> RunDetail:
        self._check()
        if run_id not in self.details:
            raise RemoteError("unknown_run", str(UnknownRun(run_id)))
        return self.details[run_id]

    async def agents(self) -> list[AgentInfo]:
        self._check()
        return list(self.agent_list)

    async def rejected(self, limit: int = 50) -> list[RejectedMessage]:
        self._check()
        return self.rejected_list[:limit]

    async def task_log(self, run_id: str, task: str) -> str:
        self._check()
        return self.logs.get((run_id, task), "")

    async def instances(self, run_id: str, task: str, *, status: str | None = None,
                        after_index: int = -1, limit: int = 100,
                        counts: bool = True) -> MapInstances:
        detail = await self.get(run_id)
        self.instance_queries.append((run_id, task, status, after_index, limit, counts))
        spec = self.flow_details[detail.run.flow].spec
        if not any(t.name == task and t.map_over for t in spec.tasks):
            raise RemoteError("bad_request", f"task {task!r} of run {run_id} is not mapped")
        rec = next((t for t in detail.tasks if t.task == task), None)
        made = sorted(self.map_instances.get((run_id, task), {}).items())
        counted: dict[str, int] = {}
        for _, i in made if counts else []:
            counted[i.status.value] = counted.get(i.status.value, 0) + 1
        page = [i for n, i in made if n > after_index and (status is None or i.status == status)]
        return MapInstances(run_id=run_id, task=task,
                            status=rec.status if rec else TaskStatus.PENDING,
                            total=total_from_note(rec.note if rec else None), counts=counted,
                            instances=page[:limit],
                            next_after=int(page[limit - 1].task.rpartition("~")[2])
                            if limit and len(page) > limit else None)

    async def children(self, run_id: str, parent: str | None = None, after: str = "",
                       limit: int = 100, *, status: str | None = None) -> ChildList:
        await self.get(run_id)
        self.child_queries.append((run_id, parent, after, limit, status))
        kids = sorted((k for (run, _), k in self.child_infos.items()
                       if run == run_id and (parent is None or k.parent == parent)),
                      key=lambda k: (k.parent, k.seq))
        counts: dict[str, dict[str, int]] = {}
        for k in kids:
            own = counts.setdefault(k.parent, {})
            own[k.status.value] = own.get(k.status.value, 0) + 1
        after_parent, _, after_seq = after.rpartition(CHILD_SEP)
        page = [k for k in kids if (status is None or k.status == status)
                and (not after or (k.parent, k.seq) > (after_parent, int(after_seq)))]
        return ChildList(children=page[:limit], counts=counts, more=len(page) > limit)

    async def start(self, flow: str, params: dict[str, Any]) -> RunRecord:
        self._check()
        detail = await self.flow(flow)
        self.calls.append(("start", flow, params))
        run_id = f"run-{self._next_run:04d}"
        self._next_run += 1
        now = self.clock()
        run = RunRecord(run_id=run_id, flow=flow, version=detail.version, params=params,
                        created_at=now, source="dashboard")
        run.counts.total = len(detail.spec.tasks)
        self.details[run_id] = RunDetail(run=run, tasks=[
            TaskRecord(run_id=run_id, task=t.name, queue=t.queue) for t in detail.spec.tasks])
        self.push(run)
        return run

    async def cancel(self, run_id: str) -> RunRecord:
        run = (await self.get(run_id)).run
        self.calls.append(("cancel", run_id))
        return msgspec.structs.replace(run, status=RunStatus.CANCELLED)

    async def retry(self, run_id: str) -> RunRecord:
        run = (await self.get(run_id)).run
        self.calls.append(("retry", run_id))
        return run

    async def mark(self, run_id: str, task: str, status: str, output: Any = None) -> TaskRecord:
        detail = await self.get(run_id)
        self.calls.append(("mark", run_id, task, status, output))
        rec = next(t for t in detail.tasks if t.task == task)
        return msgspec.structs.replace(rec, status=TaskStatus(status))

    async def schedules(self) -> list[ScheduleDetail]:
        self._check()
        return [ScheduleDetail(state=s, next_fires=[]) for _, s in sorted(self.schedule_states.items())]

    def _schedule(self, name: str) -> ScheduleState:
        if name not in self.schedule_states:
            raise RemoteError("unknown_schedule", f"no schedule named {name!r}")
        return self.schedule_states[name]

    async def pause_schedule(self, name: str, note: str | None = None) -> ScheduleDetail:
        self._check()
        state = msgspec.structs.replace(self._schedule(name), paused=True, note=note)
        self.calls.append(("pause_schedule", name, note))
        self.schedule_states[name] = state
        self.push(ScheduleEvent(name=name, state=state))
        return ScheduleDetail(state=state, next_fires=[])

    async def resume_schedule(self, name: str) -> ScheduleDetail:
        self._check()
        state = msgspec.structs.replace(self._schedule(name), paused=False, note=None)
        self.calls.append(("resume_schedule", name))
        self.schedule_states[name] = state
        self.push(ScheduleEvent(name=name, state=state))
        return ScheduleDetail(state=state, next_fires=[])

    async def trigger_schedule(self, name: str) -> RunRecord:
        self._check()
        spec = self._schedule(name).spec
        run = await self.start(spec.flow, dict(spec.params))
        self.calls[-1] = ("trigger_schedule", name)
        return run

    def counted(self, batch_id: str) -> BatchRecord:
        """The batch with its items counted by status, as the coordinator shows it."""
        counts: dict[str, int] = {}
        for item in self.batch_items[batch_id]:
            counts[item.status.value] = counts.get(item.status.value, 0) + 1
        return msgspec.structs.replace(self.batch_records[batch_id], counts=counts)

    def announce(self, batch_id: str) -> None:
        """Publish the batch's event with its counts (after its items changed)."""
        self.push(self.counted(batch_id))

    async def batches(self, limit: int = 50) -> list[BatchRecord]:
        self._check()
        newest = sorted(self.batch_records.values(), key=lambda b: (b.created_at, b.batch_id),
                        reverse=True)
        return [self.counted(b.batch_id) for b in newest[:limit]]

    def _batch(self, ref: str) -> str:
        if ref in self.batch_records:
            return ref
        named = [b for b in self.batch_records.values() if b.spec.name == ref]
        if not named:
            raise RemoteError("unknown_batch", str(UnknownBatch(ref)))
        return max(named, key=lambda b: b.created_at).batch_id

    async def batch(self, ref: str, items: int = 0, after_seq: int = -1,
                    status: str | None = None) -> BatchDetail:
        self._check()
        self.batch_queries.append((ref, items, after_seq, status))
        if not 0 <= items <= 1_000:
            raise RemoteError("bad_request", f"items: {items} is not between 0 and 1000")
        batch_id = self._batch(ref)
        page = [i for i in self.batch_items[batch_id]
                if i.seq > after_seq and (status is None or i.status == status)][:items]
        return BatchDetail(batch=self.counted(batch_id), items=page)

    def _set_state(self, ref: str, state: BatchState, note: str | None = None) -> BatchRecord:
        batch_id = self._batch(ref)
        record = msgspec.structs.replace(self.batch_records[batch_id], state=state, note=note)
        self.batch_records[batch_id] = record
        if state is BatchState.CANCELLED:
            self.batch_items[batch_id] = [
                msgspec.structs.replace(i, status=ItemStatus.CANCELLED)
                if i.status is ItemStatus.WAITING else i for i in self.batch_items[batch_id]]
        self.announce(batch_id)
        return self.counted(batch_id)

    async def pause_batch(self, ref: str, note: str | None = None) -> BatchRecord:
        self._check()
        self.calls.append(("pause_batch", ref, note))
        return self._set_state(ref, BatchState.PAUSED, note)

    async def resume_batch(self, ref: str) -> BatchRecord:
        self._check()
        self.calls.append(("resume_batch", ref))
        return self._set_state(ref, BatchState.ACTIVE)

    async def cancel_batch(self, ref: str) -> BatchRecord:
        self._check()
        self.calls.append(("cancel_batch", ref))
        return self._set_state(ref, BatchState.CANCELLED)

    async def limits(self, holders: int = 20) -> list[LimitInfo]:
        self._check()
        self.calls.append(("limits", holders))
        return list(self.limit_list)

    async def flow_stats(self, flow: str | None = None, days: int = 14,
                         until: float | None = None) -> FlowStats:
        """What ``stats_answers`` holds for the flow (None: every flow); an unknown flow is
        refused as the coordinator would."""
        self._check()
        self.calls.append(("flow_stats", flow, days, until))
        if flow is not None and flow not in self.flow_details:
            raise UnknownFlow(flow)
        found = self.stats_answers.get(flow)
        if found is None:
            return FlowStats(flow=flow, days=days, since=0.0, until=days * 86400.0,
                             runs_per_day=[DayRuns(day=f"1970-01-{i + 1:02d}", start=i * 86400.0,
                                                   counts={}) for i in range(days)],
                             sample_runs=0)
        return found

    async def experiments(self, flow: str, *, where: str | None = None,
                          limit: int = 100) -> ExperimentsPage:
        self._check()
        self.calls.append(("experiments", flow, where, limit))
        if flow not in self.flow_details:
            raise UnknownFlow(flow)
        return self.experiment_data.page(flow, where, limit)

    async def compare(self, run_ids: list[str]) -> Comparison:
        self._check()
        self.calls.append(("compare", tuple(run_ids)))
        return self.experiment_data.compare(run_ids)
