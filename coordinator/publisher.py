"""Outgoing messages: ready tasks to JetStream (pipelined, deduplicated) and status events."""

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from coordinator.changes import Dispatch
from coordinator.schedule_store import ScheduleWrites
from flowforge.jspub import JsPublisher
from protocol.batches import BatchRecord
from protocol.children import CHILD_SEP, Wake
from protocol.dag import INSTANCE_SEP
from protocol.messages import ErrorEvent, TaskLog, encoder
from protocol.records import AgentInfo, FlowSummary, RunRecord, TaskRecord
from protocol.schedules import FireRecord, ScheduleEvent
from protocol.states import TaskStatus
from protocol.subjects import Subjects, task_msg_id

log = logging.getLogger("flowforge.coordinator.publisher")

RETRY_EVERY_S = 1.0
ACK_TIMEOUT_S = 5.0
MAX_TRACKED = 200_000
STOP_NAMES_AT_ONCE = 500
"""Task names per message that has agents stop tasks (each name is at most 128 bytes)."""
EVENT_CHUNK_BYTES = 128 * 1024
"""Task events of one run go out in messages of about this size (a task record larger than
the server's max_payload is dropped like any event NATS refuses)."""


class Publisher:
    """Publishes after commit. Failed task publishes are retried until they are stored."""

    def __init__(self, nc: NATS, js: JetStreamContext, subjects: Subjects,
                 ack_timeout_s: float = ACK_TIMEOUT_S) -> None:
        self._nc = nc
        self._js = js
        self._jspub = JsPublisher(nc, ack_timeout_s=ack_timeout_s)
        self._s = subjects
        self._retry: dict[str, Dispatch] = {}
        self._seqs: dict[str, int] = {}
        """Stream sequence of each queued task's message, to take it back on cancel."""
        self.published = 0
        self.dropped_events = 0

    async def start(self) -> None:
        await self._jspub.start()

    async def stop(self) -> None:
        await self._jspub.stop()

    async def dispatch(self, items: Iterable[Dispatch]) -> None:
        """Send tasks without awaiting each ack; each ack (or its absence after ACK_TIMEOUT_S:
        one lost with a dropped connection never comes) is handled when it comes."""
        for item in items:
            msg = item.message
            msg_id = task_msg_id(msg.run_id, msg.task, msg.attempt)
            try:
                fut = await self._jspub.publish(
                    self._s.task(item.queue), encoder.encode(msg), headers={"Nats-Msg-Id": msg_id},
                )
            except Exception as exc:  # noqa: BLE001 - any failure means: retry later
                log.warning("publish of %s failed (%s); will retry", msg_id, exc)
                self._retry[msg_id] = item
                continue
            fut.add_done_callback(functools.partial(self._stored, msg_id, item))

    def _stored(self, msg_id: str, item: Dispatch, fut: "asyncio.Future[int]") -> None:
        # not stored: send again later with the same Nats-Msg-Id, so a message that was
        # stored after all is not duplicated
        error = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if error is not None:
            log.warning("task %s not stored by JetStream (%r); will retry", msg_id, error)
            self._retry[msg_id] = item
            return
        self.published += 1
        self._seqs[msg_id] = fut.result()
        if len(self._seqs) > MAX_TRACKED:
            del self._seqs[next(iter(self._seqs))]

    def forget(self, records: Iterable[TaskRecord]) -> None:
        """Tasks that left ``queued`` no longer need their message sequence."""
        for rec in records:
            if rec.status is not TaskStatus.QUEUED:
                self._seqs.pop(task_msg_id(rec.run_id, rec.task, rec.dispatch), None)

    async def withdraw(self, records: Iterable[TaskRecord]) -> None:
        """Delete queued task messages of a cancelled run, so no agent starts them."""
        for rec in records:
            msg_id = task_msg_id(rec.run_id, rec.task, rec.dispatch)
            self._retry.pop(msg_id, None)
            seq = self._seqs.pop(msg_id, None)
            if seq is not None:
                with contextlib.suppress(Exception):
                    await self._js.delete_msg(self._s.tasks_stream, seq)

    async def cancel(self, run_id: str) -> None:
        """Tell agents to stop the run's running tasks."""
        await self._event(self._s.cancel(run_id), b"")

    async def children_news(self, wakes: Iterable[tuple[str, str, str]],
                            stop: dict[str, list[str]]) -> None:
        """Wake the agents of parents whose wait may be over; have agents stop the running
        children of parents that ended (a cancel that names tasks stops only those)."""
        for agent_id, run_id, parent in wakes:
            await self._event(self._s.wake(agent_id), encoder.encode(Wake(run_id=run_id,
                                                                          parent=parent)))
        for run_id, names in stop.items():
            for i in range(0, len(names), STOP_NAMES_AT_ONCE):
                await self._event(self._s.cancel(run_id),
                                  encoder.encode(names[i:i + STOP_NAMES_AT_ONCE]))

    async def retry_loop(self) -> None:
        """Re-send tasks whose publish failed (e.g. while NATS restarted); same message id."""
        while True:
            await asyncio.sleep(RETRY_EVERY_S)
            if self._retry:
                pending, self._retry = self._retry, {}
                await self.dispatch(pending.values())

    async def ack(self, msgs: Iterable[Msg]) -> None:
        """Ack pulled messages after their batch is committed (an empty message to the reply
        subject, what ``Msg.ack`` sends, without its bookkeeping). A lost ack means a
        redelivery, which the writer recognises."""
        for msg in msgs:
            try:
                await self._nc.publish(msg.reply, b"")
            except Exception as exc:  # noqa: BLE001 - NATS away: the message comes back later
                log.debug("ack of %s failed: %r", msg.subject, exc)

    async def wait_idle(self, timeout_s: float = 5.0) -> None:
        """Until every task sent has its ack (or ``timeout_s``)."""
        await self._jspub.wait_idle(timeout_s)

    # -- events: core publish, full new state of what changed -------------------------

    async def _event(self, subject: str, data: bytes) -> None:
        """Events are best effort: while NATS is away they are dropped, never fatal."""
        try:
            await self._nc.publish(subject, data)
        except Exception as exc:  # noqa: BLE001 - e.g. the reconnect buffer is full
            self.dropped_events += 1
            log.debug("event on %s dropped: %r", subject, exc)

    async def task_events(self, records: Iterable[TaskRecord]) -> None:
        """One message per run per batch (``TaskEvents``), split where it would grow past
        EVENT_CHUNK_BYTES: a 20,000-task fan-out is ~40 messages, not 60,000."""
        by_run: dict[str, list[bytes]] = {}
        for rec in records:
            # a mapped task's own record says how its instances do; children go as themselves
            if INSTANCE_SEP not in rec.task or CHILD_SEP in rec.task:
                by_run.setdefault(rec.run_id, []).append(encoder.encode(rec))
        for run_id, encoded in by_run.items():
            subject = self._s.task_events(run_id)
            head = b'{"run_id":%s,"tasks":[' % encoder.encode(run_id)
            chunk: list[bytes] = []
            size = 0
            for data in encoded:
                if chunk and size + len(data) > EVENT_CHUNK_BYTES:
                    await self._event(subject, head + b",".join(chunk) + b"]}")
                    chunk, size = [], 0
                chunk.append(data)
                size += len(data) + 1
            await self._event(subject, head + b",".join(chunk) + b"]}")

    async def run_events(self, runs: Iterable[RunRecord]) -> None:
        for run in runs:
            await self._event(self._s.run_event(run.flow, run.run_id), encoder.encode(run))

    async def log_events(self, logs: Iterable[TaskLog]) -> None:
        for entry in logs:
            await self._event(self._s.log_event(entry.run_id, entry.task), encoder.encode(entry))

    async def schedule_events(self, writes: ScheduleWrites) -> None:
        """One event per schedule a commit changed: its state (None once deleted) and the
        nominal times it dealt with."""
        fires: dict[str, list[FireRecord]] = {}
        for fire in writes.fires:
            fires.setdefault(fire.schedule, []).append(fire)
        for name in {*writes.states, *fires, *writes.deleted}:
            state = None if name in writes.deleted else writes.states.get(name)
            event = ScheduleEvent(name=name, state=state, fires=fires.get(name, []))
            await self._event(self._s.schedule_event(name), encoder.encode(event))

    async def batch_event(self, record: BatchRecord) -> None:
        """A batch as it is now, with its items counted by status."""
        await self._event(self._s.batch_event(record.batch_id), encoder.encode(record))

    async def flow_event(self, flow: FlowSummary) -> None:
        await self._event(self._s.flow_event(flow.name), encoder.encode(flow))

    async def agent_event(self, info: AgentInfo) -> None:
        await self._event(self._s.agent_event(info.agent_id), encoder.encode(info))

    async def error_event(
        self, kind: str, subject: str, code: str, reason: str, rejected_id: int | None = None
    ) -> None:
        event = ErrorEvent(kind=kind, subject=subject, code=code, reason=reason, at=time.time(),
                           rejected_id=rejected_id)
        await self._event(self._s.error_event(kind), encoder.encode(event))
