"""ClientSource: the dashboard's DataSource over ``flowforge.client.Client`` and NATS events."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from flowforge.client import Client, decode_events, decode_log_event
from flowforge.connection import ConnectOptions
from protocol.api import FlowDetail, MapInstances, ScheduleDetail
from protocol.batch_api import BatchDetail
from protocol.batches import BatchRecord
from protocol.children import ChildList
from protocol.concurrency import LimitInfo
from protocol.errors import NotConnected
from protocol.experiments import Comparison, ExperimentsPage
from protocol.records import AgentInfo, FlowSummary, RejectedMessage, RunDetail, RunRecord, TaskRecord
from protocol.stats import FlowStats
from tui.source import LinkDown, LinkUp, SourceEvent

T = TypeVar("T")


class ClientSource:
    """Every call goes through one Client; events come from one subscription to ``<ns>.events.>``.

    nats-py reconnects by itself and keeps the subscription; the event stream says so with
    LinkDown / LinkUp, checked from the connection's own flag every ``link_check_s``.
    """

    def __init__(self, options: ConnectOptions, *, timeout_s: float = 5.0,
                 link_check_s: float = 0.5) -> None:
        self.options = options
        self.client = Client(options, timeout_s=timeout_s)
        self.link_check_s = link_check_s
        self.description = options.url

    async def open(self) -> None:
        await self.client.connect()

    async def close(self) -> None:
        await self.client.close()

    async def subscribe(self) -> AsyncIterator[SourceEvent]:
        queue: asyncio.Queue[SourceEvent] = asyncio.Queue()
        namespace = self.client.subjects.namespace
        log_prefix = f"{namespace}.events.log."

        async def on_msg(msg: Msg) -> None:
            events: list[SourceEvent]
            if msg.subject.startswith(log_prefix):  # anything invalid is skipped
                lines = decode_log_event(msg.data)
                events = [lines] if lines is not None else []
            else:
                events = list(decode_events(msg.subject, msg.data, namespace))
            for event in events:
                queue.put_nowait(event)

        nc = self.client.nc
        sub = await nc.subscribe(f"{namespace}.events.>", cb=on_msg)
        try:
            await nc.flush(timeout=self.client.timeout_s)
        except Exception as exc:  # noqa: BLE001 - nats-py raises several types for a lost link
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            raise NotConnected(f"cannot subscribe to events on {self.options.url}: {exc!r}") from None
        return self._stream(queue, sub)

    async def _stream(self, queue: asyncio.Queue[SourceEvent], sub: Any) -> AsyncIterator[SourceEvent]:
        up = True
        try:
            while True:
                try:
                    event: SourceEvent | None = await asyncio.wait_for(queue.get(), self.link_check_s)
                except TimeoutError:
                    event = None
                try:
                    nc = self.client.nc
                except NotConnected:
                    return  # closed: the stream ends
                if nc.is_closed:
                    return
                if nc.is_connected != up:
                    up = nc.is_connected
                    yield LinkUp() if up else LinkDown(
                        f"lost NATS at {self.options.url}; reconnecting")
                if event is not None:
                    yield event
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _guard(self, call: Awaitable[T]) -> T:
        """nats-py errors (a closed or reconnecting connection) become NotConnected."""
        try:
            return await call
        except NatsError as exc:
            raise NotConnected(f"NATS at {self.options.url}: {exc!r}") from None

    async def flows(self) -> list[FlowSummary]:
        return await self._guard(self.client.flows())

    async def flow(self, name: str, version: str | None = None) -> FlowDetail:
        return await self._guard(self.client.flow(name, version))

    async def runs(self, flow: str | None = None, status: str | None = None,
                   limit: int = 50) -> list[RunRecord]:
        return await self._guard(self.client.runs(flow, status, limit))

    async def get(self, run_id: str) -> RunDetail:
        return await self._guard(self.client.get(run_id))

    async def agents(self) -> list[AgentInfo]:
        return await self._guard(self.client.agents())

    async def rejected(self, limit: int = 50) -> list[RejectedMessage]:
        return await self._guard(self.client.rejected(limit))

    async def task_log(self, run_id: str, task: str) -> str:
        return await self._guard(self.client.task_log(run_id, task))

    async def instances(self, run_id: str, task: str, *, status: str | None = None,
                        after_index: int = -1, limit: int = 100,
                        counts: bool = True) -> MapInstances:
        return await self._guard(self.client.instances(
            run_id, task, status=status, after_index=after_index, limit=limit, counts=counts))

    async def children(self, run_id: str, parent: str | None = None, after: str = "",
                       limit: int = 100, *, status: str | None = None) -> ChildList:
        return await self._guard(self.client.children(run_id, parent, after, limit,
                                                      status=status))

    async def start(self, flow: str, params: dict[str, Any]) -> RunRecord:
        return await self._guard(self.client.start(flow, params, source="dashboard"))

    async def cancel(self, run_id: str) -> RunRecord:
        return await self._guard(self.client.cancel(run_id))

    async def retry(self, run_id: str) -> RunRecord:
        return await self._guard(self.client.retry(run_id))

    async def mark(self, run_id: str, task: str, status: str, output: Any = None) -> TaskRecord:
        return await self._guard(self.client.mark(run_id, task, status, output))

    async def schedules(self) -> list[ScheduleDetail]:
        return await self._guard(self.client.schedules())

    async def pause_schedule(self, name: str, note: str | None = None) -> ScheduleDetail:
        return await self._guard(self.client.pause_schedule(name, note))

    async def resume_schedule(self, name: str) -> ScheduleDetail:
        return await self._guard(self.client.resume_schedule(name))

    async def trigger_schedule(self, name: str) -> RunRecord:
        return await self._guard(self.client.trigger_schedule(name))

    async def batches(self, limit: int = 50) -> list[BatchRecord]:
        return await self._guard(self.client.batches(limit))

    async def batch(self, ref: str, items: int = 0, after_seq: int = -1,
                    status: str | None = None) -> BatchDetail:
        return await self._guard(self.client.batch(ref, items, after_seq, status))

    async def pause_batch(self, ref: str, note: str | None = None) -> BatchRecord:
        return await self._guard(self.client.pause_batch(ref, note))

    async def resume_batch(self, ref: str) -> BatchRecord:
        return await self._guard(self.client.resume_batch(ref))

    async def cancel_batch(self, ref: str) -> BatchRecord:
        return await self._guard(self.client.cancel_batch(ref))

    async def limits(self, holders: int = 20) -> list[LimitInfo]:
        return await self._guard(self.client.limits(holders))

    async def flow_stats(self, flow: str | None = None, days: int = 14,
                         until: float | None = None) -> FlowStats:
        return await self._guard(self.client.flow_stats(flow, days, until))

    async def experiments(self, flow: str, *, where: str | None = None,
                          limit: int = 100) -> ExperimentsPage:
        return await self._guard(self.client.experiments(flow, where=where, limit=limit))

    async def compare(self, run_ids: list[str]) -> Comparison:
        return await self._guard(self.client.compare(run_ids))
