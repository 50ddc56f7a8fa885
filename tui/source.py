"""What the dashboard asks of a deployment: the DataSource interface, snapshots and link markers."""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from protocol.api import FlowDetail, MapInstances, ScheduleDetail
from protocol.batch_api import BatchDetail
from protocol.batches import BatchRecord
from protocol.children import ChildList
from protocol.concurrency import LimitInfo
from protocol.experiments import Comparison, ExperimentsPage
from protocol.messages import ErrorEvent, TaskLog
from protocol.records import (
    AgentInfo,
    FlowSummary,
    RejectedMessage,
    RunDetail,
    RunRecord,
    TaskRecord,
)
from protocol.schedules import ScheduleEvent
from protocol.stats import FlowStats

Event = (RunRecord | TaskRecord | FlowSummary | ErrorEvent | AgentInfo | TaskLog | ScheduleEvent
         | BatchRecord)
"""A status event, as ``flowforge.client.Client.events`` yields them, or lines of a task's log."""


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The deployment cannot be reached (NATS gone, or no coordinator answering)."""

    reason: str


@dataclass(frozen=True, slots=True)
class LinkUp:
    """Reachable again: what was missed must be fetched anew."""


SourceEvent = Event | LinkDown | LinkUp


@dataclass(slots=True)
class Snapshot:
    """Everything the dashboard shows at start, fetched through the API."""

    flows: list[FlowSummary] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    agents: list[AgentInfo] = field(default_factory=list)
    rejected: list[RejectedMessage] = field(default_factory=list)
    schedules: list[ScheduleDetail] = field(default_factory=list)
    batches: list[BatchRecord] = field(default_factory=list)
    """The newest batches, with their items counted by status."""


class DataSource(Protocol):
    """The calls of ``flowforge.client.Client`` the dashboard uses, plus a subscription.

    Methods raise ``protocol.errors.FlowForgeError`` subclasses: ``NotConnected`` when the
    deployment cannot be reached, ``RemoteError`` for an error reply.
    """

    description: str
    """Where the data comes from, for the header (e.g. the NATS URL)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def subscribe(self) -> AsyncIterator[SourceEvent]:
        """Start following events; the subscription is in place when this returns."""
        ...

    async def flows(self) -> list[FlowSummary]: ...

    async def flow(self, name: str, version: str | None = None) -> FlowDetail: ...

    async def runs(self, flow: str | None = None, status: str | None = None,
                   limit: int = 50) -> list[RunRecord]: ...

    async def get(self, run_id: str) -> RunDetail: ...

    async def agents(self) -> list[AgentInfo]: ...

    async def rejected(self, limit: int = 50) -> list[RejectedMessage]: ...

    async def task_log(self, run_id: str, task: str) -> str:
        """The end of a task instance's log as the coordinator kept it."""
        ...

    async def instances(self, run_id: str, task: str, *, status: str | None = None,
                        after_index: int = -1, limit: int = 100,
                        counts: bool = True) -> MapInstances:
        """A mapped task's instances counted by state (if ``counts``) and up to ``limit`` of
        them after ``after_index`` in index order, only those in ``status`` if given."""
        ...

    async def children(self, run_id: str, parent: str | None = None, after: str = "",
                       limit: int = 100, *, status: str | None = None) -> ChildList:
        """The child tasks of a run (of ``parent`` only, if given) counted by state per parent,
        and up to ``limit`` of them in name order after ``after`` (only those in ``status`` if
        given)."""
        ...

    async def start(self, flow: str, params: dict[str, Any]) -> RunRecord: ...

    async def cancel(self, run_id: str) -> RunRecord: ...

    async def retry(self, run_id: str) -> RunRecord: ...

    async def mark(self, run_id: str, task: str, status: str, output: Any = None) -> TaskRecord: ...

    async def schedules(self) -> list[ScheduleDetail]: ...

    async def pause_schedule(self, name: str, note: str | None = None) -> ScheduleDetail: ...

    async def resume_schedule(self, name: str) -> ScheduleDetail: ...

    async def trigger_schedule(self, name: str) -> RunRecord: ...

    async def batches(self, limit: int = 50) -> list[BatchRecord]:
        """The newest batches first, with their items counted by status."""
        ...

    async def batch(self, ref: str, items: int = 0, after_seq: int = -1,
                    status: str | None = None) -> BatchDetail:
        """A batch with up to ``items`` of its items after ``after_seq`` (only those in
        ``status`` if given), in sequence order."""
        ...

    async def pause_batch(self, ref: str, note: str | None = None) -> BatchRecord: ...

    async def resume_batch(self, ref: str) -> BatchRecord: ...

    async def cancel_batch(self, ref: str) -> BatchRecord: ...

    async def limits(self, holders: int = 20) -> list[LimitInfo]:
        """Every concurrency limit with the first ``holders`` of its holders and waiters."""
        ...

    async def flow_stats(self, flow: str | None = None, days: int = 14,
                         until: float | None = None) -> FlowStats:
        """The summary charts of a flow (None: every flow) over ``days`` UTC days, the last
        one the day of ``until`` (default now)."""
        ...

    async def experiments(self, flow: str, *, where: str | None = None,
                          limit: int = 100) -> ExperimentsPage:
        """One row per run of ``flow`` (the newest ``limit`` that match ``where``, newest
        first): its parameters and each metric's final value."""
        ...

    async def compare(self, run_ids: list[str]) -> Comparison:
        """The runs side by side, with each metric's series by step."""
        ...


async def load_snapshot(source: DataSource, runs_limit: int = 200,
                        batches_limit: int = 100) -> Snapshot:
    """The dashboard's starting state, one API call per kind."""
    return Snapshot(
        flows=await source.flows(),
        runs=await source.runs(limit=runs_limit),
        agents=await source.agents(),
        rejected=await source.rejected(),
        schedules=await source.schedules(),
        batches=await source.batches(limit=batches_limit),
    )
