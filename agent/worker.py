"""Agent: the agent process — pull tasks for its queues within free slots, run them, report, ack.

Each task message is a TaskInHand (agent/inhand.py) that moves through its states: the
SlotLedger (agent/slots.py) gives it a slot, the TaskRunner (agent/runner.py) runs it, the
Finisher (agent/finisher.py) stores its report and acks it; meanwhile its lease is extended
(agent/leases.py) and its progress and log go out best-effort (agent/updates.py).
"""

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from agent import logcapture
from agent.child_waits import ChildWaits
from agent.config import AgentConfig, agent_id_for, prefetch_of
from agent.consumers import queue_lease
from agent.finisher import Finisher
from agent.heartbeat import Heartbeat
from agent.inhand import TaskInHand, TaskState
from agent.leases import keep_leases
from agent.metrics import AgentMetrics
from agent.procpool import ProcessPool
from agent.results import ResultSender, result_message_limit
from agent.runner import TaskRunner
from agent.slots import SlotLedger
from agent.taskmsg import settle
from agent.threads import TaskThreads
from agent.updates import Updates
from flowforge.client import Client
from flowforge.connection import connect
from flowforge.jspub import JsPublisher
from flowforge.puller import Puller
from flowforge.runtime import start_or_close
from protocol.errors import FlowForgeError
from protocol.limits import MAX_ID_CHARS
from protocol.messages import TaskFailed, TaskSucceeded
from protocol.untrusted import decode

log = logging.getLogger("flowforge.agent")

REPORT_ACK_TIMEOUT_S = 5.0
_names = msgspec.json.Decoder(list[Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)]])


class Agent:
    """``async with Agent(config) as a: await a.run()``; ``shutdown()`` is idempotent."""

    def __init__(self, config: AgentConfig) -> None:
        if config.concurrency < len(config.queues):
            raise ValueError(
                f"--concurrency {config.concurrency} is less than the number of queues "
                f"({len(config.queues)}); each queue needs at least one slot"
            )
        self.config = config
        self.agent_id = agent_id_for(config)
        self.subjects = config.connect.subjects
        self._stop = asyncio.Event()
        self._slots = SlotLedger(config.queues, config.concurrency, start=self._start_task,
                                 top_up=self._top_up, spawn=self._spawn,
                                 stopping=self._stop.is_set,
                                 prefetch=functools.partial(prefetch_of, config))
        self.metrics = AgentMetrics(self.agent_id, self._slots.usage)
        """What ``--metrics`` serves of this agent."""
        self._pullers: dict[str, Puller] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool = TaskThreads(config.concurrency)
        self._procs = ProcessPool(config.imports) if config.pool == "process" else None
        self._nc: NATS | None = None
        self._jspub: JsPublisher | None = None
        self._results: ResultSender | None = None
        self._finisher: Finisher | None = None
        self._closed = False
        self.lost_nats = False
        """The NATS connection was closed under us (the process should exit with code 3)."""
        self._heartbeat = Heartbeat(lambda: self._nc, self.subjects, self.agent_id, config,
                                    busy=lambda: sum(not item.lent for item in
                                                     self._slots.in_state(TaskState.RUNNING)))
        self._waits = ChildWaits(lambda: self._client)
        self._updates = Updates(lambda: self._nc, self.subjects, self.agent_id, self._spawn)
        self._runner = TaskRunner(self.agent_id, config.functions, self._pool, self._procs,
                                  self._updates, stopping=self._stop.is_set,
                                  client=lambda: self._client,
                                  store_report=self._store_report, waits=self._waits,
                                  lend=self._lend, max_metric_points=config.max_metric_points)
        self._client: Client | None = None
        """API requests of the tasks it runs (``ctx.mapped_outputs``), on its connection."""
        self.lease_s = config.lease_s
        self.ready = asyncio.Event()

    @property
    def completed(self) -> int:
        """Tasks finished: their report stored and their message acked."""
        return self._finisher.completed if self._finisher is not None else 0

    async def __aenter__(self) -> "Agent":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def start(self) -> None:
        """Connect and find the queues' consumers; what was opened is closed again when a
        step fails (a refused queue, a lost connection)."""
        await start_or_close(self._start, self.shutdown)

    async def _start(self) -> None:
        logcapture.install()
        self._nc = await connect(self.config.connect, name=f"flowforge-agent {self.agent_id}",
                                 initial_attempts=20, on_closed=self._on_nats_closed)
        self._jspub = JsPublisher(self._nc, ack_timeout_s=REPORT_ACK_TIMEOUT_S)
        self._client = Client.over(self._nc, self.config.connect)
        await self._jspub.start()
        self._results = ResultSender(self._jspub, self.subjects,
                                     result_message_limit(self._nc.max_payload))
        self._finisher = Finisher(self._results)
        await self._nc.subscribe(self.subjects.cancel("*"), cb=self._on_cancel)
        await self._nc.subscribe(self.subjects.wake(self.agent_id), cb=self._waits.on_wake)
        leases = [await queue_lease(self._nc, self.subjects, queue, self.config.lease_s)
                  for queue in self.config.queues]
        self.lease_s = min(leases)  # the consumer's, which the coordinator sets

    async def _store_report(self, run_id: str, data: bytes) -> None:
        """A report that must arrive (a generator's items): published, and stored by the
        stream before this returns."""
        assert self._jspub is not None
        await (await self._jspub.publish(self.subjects.report(run_id), data))

    async def run(self) -> None:
        """Serve until ``request_stop()``; then hand back what did not start and finish the rest."""
        assert self._nc is not None
        for queue in self.config.queues:
            puller = Puller(
                self._nc, self.subjects.tasks_stream, self.subjects.task_consumer(queue),
                functools.partial(self._on_task_msg, queue),
                capacity=functools.partial(self._slots.capacity, queue),
                min_request=max(1, self._slots.share[queue] // 4),
            )
            self._pullers[queue] = puller
        async with asyncio.TaskGroup() as tg:
            helpers = [tg.create_task(keep_leases(lambda: self.lease_s, self._slots)),
                       tg.create_task(self._heartbeat.run()),
                       tg.create_task(self._updates.flush_logs(self._slots))]
            for puller in self._pullers.values():
                await puller.start()
            self.ready.set()
            await self._stop.wait()
            for puller in self._pullers.values():  # no more tasks; late arrivals go back
                await puller.stop()
            await self._finish_in_flight()
            for helper in helpers:
                helper.cancel()
        await self._heartbeat.send(stopping=True)

    # -- pulling within free slots ------------------------------------------------------

    def _on_task_msg(self, queue: str, msg: Msg) -> None:
        if self._stop.is_set():  # stopping: straight back for another agent
            self._spawn(settle(msg.nak))
            return
        self._slots.admit(TaskInHand.of(msg, queue))

    def _start_task(self, item: TaskInHand) -> None:
        """The ledger gave the message a slot: run it (and report it) in its own asyncio task."""
        item.task = asyncio.create_task(self._handle(item))
        self._tasks.add(item.task)
        item.task.add_done_callback(self._tasks.discard)

    async def _top_up(self, queue: str) -> None:
        await self._pullers[queue].top_up()

    # -- one task -----------------------------------------------------------------------

    async def _handle(self, item: TaskInHand) -> None:
        """Run the task in a slot; free the slot; then store the result and ack the task."""
        report: TaskSucceeded | TaskFailed | None = None
        try:
            try:
                report = await self._runner.run(item)
                if report is not None:
                    self.metrics.record(item.queue, item.dispatch, report)
            finally:
                item.capture = None
                if report is not None:
                    item.move(TaskState.REPORTING)
                await self._slots.release(item)
            if report is not None:
                assert self._finisher is not None
                await self._finisher.finish(item, report)
        finally:
            await self._slots.let_go(item)

    async def _on_cancel(self, msg: Msg) -> None:
        """A run was cancelled — or, when the message names them, some of its tasks (children
        of a parent that ended): stop them running here; none of them starts here any more."""
        run_id = msg.subject.rsplit(".", 1)[-1]
        names: set[str] | None = None
        if msg.data:
            try:
                names = set(decode(_names, msg.data, "a cancel message", max_bytes=256 * 1024))
            except FlowForgeError as exc:
                log.warning("dropped a cancel message for run %s: %s", run_id, exc.message)
                return
        self._runner.note_cancelled(run_id, names)
        for item in self._slots.in_state(TaskState.RUNNING):
            if item.ctx is not None and item.ctx.run_id == run_id and (
                    names is None or item.ctx.task in names):
                item.cancel()

    @contextlib.asynccontextmanager
    async def _lend(self, item: TaskInHand) -> AsyncIterator[None]:
        """A task waits for its children: its slot is lent, and one more thread may start."""
        with self._pool.widened():
            async with self._slots.lent(item):
                yield

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- shutdown ---------------------------------------------------------------------------

    async def _finish_in_flight(self) -> None:
        await self._hand_back(self._slots.take_waiting())
        if not self._tasks:
            return
        log.info("waiting up to %gs for %d running tasks", self.config.grace_s, len(self._tasks))
        _, pending = await asyncio.wait(set(self._tasks), timeout=self.config.grace_s)
        unsettled = self._slots.in_state(TaskState.RUNNING, TaskState.REPORTING)
        for item in unsettled:
            if item.state is TaskState.RUNNING and item.ctx is not None:
                item.ctx._cancel()
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
            await self._hand_back([item for item in unsettled if item.state is not TaskState.DONE])

    async def _hand_back(self, items: list[TaskInHand]) -> None:
        """Nak unfinished task messages so that another agent runs them."""
        for item in items:
            with contextlib.suppress(Exception):
                await item.msg.nak()
            item.move(TaskState.HANDED_BACK)
        if items:
            log.warning("handed back %d unfinished tasks for redelivery", len(items))

    def request_stop(self) -> None:
        self._stop.set()

    async def _on_nats_closed(self) -> None:
        """NATS closed the connection for good (not our shutdown): stop rather than stay up
        alive and deaf; the supervisor starts the agent again."""
        if not self._closed:
            log.error("the connection to NATS was closed for good (%s); stopping",
                      self._nc.last_error if self._nc else "unknown")
            self.lost_nats = True
            self._stop.set()

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
        if self._jspub is not None:
            await self._jspub.stop()
        self._pool.shutdown()
        if self._procs is not None:
            await self._procs.close()
        log.info("agent %s stopped after %d tasks", self.agent_id, self.completed)
