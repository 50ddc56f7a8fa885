"""The coordinator process: NATS wiring around the store, scheduler, writer and recovery."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout

from coordinator.active_lease import ActiveLease, LeaseLost
from coordinator.agents import AgentRegistry
from coordinator.api import Api
from coordinator.batch_runner import BatchRunner
from coordinator.batches_api import BatchesApi
from coordinator.bus_setup import pinging_within_lease, take_the_bus
from coordinator.children_api import ChildrenApi
from coordinator.experiments_api import DEFAULT_MAX_METRIC_POINTS, ExperimentsApi
from coordinator.flows import FlowCache
from coordinator.instances_api import InstancesApi
from coordinator.limits import Limits
from coordinator.limits_api import LimitsApi
from coordinator.metrics_export import CoordinatorCollector
from coordinator.publisher import Publisher
from coordinator.recovery import recover_runs, still_queued
from coordinator.release_window import GateSettings
from coordinator.schedule_clock import ScheduleClock
from coordinator.scheduler import Scheduler, SchedulerSettings
from coordinator.schedules_api import SchedulesApi
from coordinator.stats_api import StatsApi
from coordinator.store import Store
from coordinator.task_tracker import TaskTracker
from coordinator.writer import Batch, Reports, StopWriter, Triggers, Writer
from flowforge.auth import Identity
from flowforge.connection import ConnectOptions, connect
from flowforge.jetstream import (
    DEFAULT_LEASE_S,
    ensure_task_consumer,
)
from flowforge.puller import Puller
from flowforge.runtime import start_or_close
from protocol.children import DEFAULT_MAX_CHILDREN, DEFAULT_MAX_DEPTH
from protocol.errors import FlowForgeError
from protocol.messages import heartbeat_decoder
from protocol.subjects import API_QUEUE_GROUP
from protocol.untrusted import Malformed, decode

log = logging.getLogger("flowforge.coordinator")

FETCH_BATCH = 1000
"""Reports fetched at once while the backlog is applied at start."""
PULL_CAPACITY = 2000
"""Reports or triggers asked for ahead (the server sends them as soon as they are stored)."""
AGENT_SWEEP_S = 0.5
MAX_HEARTBEAT_BYTES = 1024 * 1024
API_GRACE_S = 10.0
"""How long shutdown waits for API requests being handled, before stopping the writer."""


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    connect: ConnectOptions
    db_path: Path
    lease_s: float = DEFAULT_LEASE_S
    agent_lost_after_s: float = 15.0
    active_lease_s: float = 15.0
    """The lease of the active coordinator of a namespace: a standby takes over this long
    after the active one stopped renewing it."""
    replicas: int | None = None
    """Copies of each stream on a NATS cluster (None: 3 on a cluster of three or more, else 1)."""
    max_children: int = DEFAULT_MAX_CHILDREN
    """Child tasks one run may have."""
    max_child_depth: int = DEFAULT_MAX_DEPTH
    """How deep child tasks may nest (a flow task's child is 1 deep)."""
    agent_identities: Mapping[str, Identity] = field(default_factory=dict)
    """Under authorization: each agent identity, with the queues and agent id it is bound to."""
    release_window: int = 256
    """Task messages of one queue out and not started at once (at the least); the rest wait
    in the coordinator, best first."""
    release_window_s: float = 0.5
    """... or as many as the queue's agents take in this long at their pace, if more."""
    priority_aging_s: float = 30.0
    """A waiting task or run gains one priority per this many seconds waited."""
    max_metric_points: int = DEFAULT_MAX_METRIC_POINTS  # points, results, artifacts per run


class Coordinator:
    """``async with Coordinator(config) as c: await c.run()``; ``shutdown()`` is idempotent."""

    def __init__(self, config: CoordinatorConfig, resuming: bool = False) -> None:
        self.config = config
        self.resuming = resuming
        """Started again after being cut off from NATS past its lease: waits for NATS as long
        as it takes, and stops if another coordinator took over meanwhile."""
        self.subjects = config.connect.subjects
        self.agents = AgentRegistry(lost_after_s=config.agent_lost_after_s)
        self._nc: NATS | None = None
        self._store: Store | None = None
        self._stop = asyncio.Event()
        self._closed = False
        self.writer: Writer | None = None
        self.schedules: ScheduleClock | None = None
        self.batches: BatchRunner | None = None
        self.scheduler: Scheduler
        """Built by ``start()``: its settings depend on the NATS server's max_payload."""
        self.limits: Limits
        """Built by ``start()``: the concurrency limits and priorities in the writer's path."""
        self.stats: StatsApi
        """Built by ``start()``: the figures of ``stats.get`` and ``--metrics``."""
        self.started = asyncio.Event()
        self.standby = asyncio.Event()
        """Set while this coordinator waits for the active one to stop."""
        self.lease: ActiveLease | None = None
        self._finished = asyncio.Event()
        self._running = False
        self.lost_nats = False
        """The NATS connection was closed under us (the process should exit with code 3)."""

    async def __aenter__(self) -> "Coordinator":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def start(self) -> None:
        """Open the store, connect, set up streams and restore active runs; whatever was
        opened is closed again when a step fails (the database threads would keep the
        process alive)."""
        await start_or_close(self._start, self.shutdown)

    async def _start(self) -> None:
        self._store = await Store.open(self.config.db_path)
        self._nc = await connect(pinging_within_lease(self.config), name="flowforge-coordinator",
                                 initial_attempts=10**9 if self.resuming else 20,
                                 on_closed=self._on_nats_closed)
        js = self._nc.jetstream()
        self.scheduler = Scheduler(SchedulerSettings(
            max_dispatch_bytes=max(64 * 1024, self._nc.max_payload - 64 * 1024),
            backstop_s=2 * self.config.lease_s + 5.0,
            max_children=self.config.max_children, max_child_depth=self.config.max_child_depth,
        ))
        self.lease = await take_the_bus(self._nc, self.subjects, self.config, self.standby,
                                        self.resuming)
        flows = FlowCache(self._store)
        publisher = Publisher(self._nc, js, self.subjects)
        await publisher.start()
        self.writer = Writer(self._store, self.scheduler, flows, publisher,
                             trigger_prefix=self.subjects.trigger_prefix,
                             report_prefix=self.subjects.report_prefix,
                             agent_identities=self.config.agent_identities)
        self._js, self._flows, self._publisher = js, flows, publisher
        self.limits = Limits(self.writer, self._store, GateSettings(
            release_window=self.config.release_window, aging_s=self.config.priority_aging_s,
            release_window_s=self.config.release_window_s))
        self.writer.before_commit.insert(0, self._sweep_children)  # first: the gate sees it
        await self.limits.load()
        self._api = Api(self._store, flows, self.writer, publisher, js, self.subjects,
                        self.config.lease_s, self.agents, max_reply_bytes=self._nc.max_payload)
        for summary in await self._store.list_flows():
            await flows.current(summary.name)
        for queue in flows.queues():
            await ensure_task_consumer(js, self.subjects, queue, self.config.lease_s, update=True)
        self.schedules = ScheduleClock(self.writer, self._store, self.agents.may_be_running)
        self.batches = BatchRunner(self.writer, self._store)
        self.stats = self._track(self.schedules)
        await self.schedules.load()  # they follow the commits of the reports that piled up
        await self._restore()
        await self.schedules.start()
        await self.batches.start()
        self._route(flows, self.schedules, self.batches, self._nc.max_payload)
        lease = self.lease
        assert lease is not None
        self.writer.before_commit.insert(0, lambda now, batch: lease.check())  # fencing

    def _route(self, flows: FlowCache, schedules: ScheduleClock, batches: BatchRunner,
               max_reply_bytes: int) -> None:
        """The API requests of schedules, mapped instances, batches, limits and children."""
        assert self._store is not None and self.writer is not None
        schedules_api = SchedulesApi(schedules, flows)
        self._api.route(schedules_api.handlers())
        self._api.schedules = schedules_api
        self._api.route(InstancesApi(self._store, flows, max_reply_bytes=max_reply_bytes).handlers())
        self._api.route(BatchesApi(batches, flows, schedules,
                                   max_reply_bytes=max_reply_bytes).handlers())
        self._api.operations.reopen_checks += [batches.check_reopen, self.limits.runs.check_reopen]
        self._api.operations.reopen_claims.append(batches.claim_reopened)
        self._api.route(LimitsApi(self.limits).handlers())
        self._api.route(ChildrenApi(self.writer, self._store,
                                    max_reply_bytes=max_reply_bytes).handlers())
        self._api.route(ExperimentsApi(self._store, self.writer, self.config, max_reply_bytes).handlers())

    def _track(self, schedules: ScheduleClock) -> StatsApi:
        """The figures of ``stats.get`` and ``--metrics``: the tracker goes last before each
        commit (it counts what the other hooks decided too)."""
        assert self.writer is not None
        tracker = TaskTracker(self.scheduler)
        tracker.schedule_flow = lambda name: (
            state.spec.flow if (state := schedules.states.get(name)) else None)
        self.writer.before_commit.append(tracker.follow)
        stats = StatsApi(tracker, self.scheduler, self.agents, self._flows, self.limits.runs,
                         schedules)
        self._api.route(stats.handlers())
        return stats

    def metrics_collector(self) -> CoordinatorCollector:
        """What ``--metrics`` serves of this coordinator (after ``start()``)."""
        return CoordinatorCollector(self.stats)

    def _sweep_children(self, now: float, batch: Batch) -> None:
        """Children of tasks that ended in the batch, and of runs that ended, are cancelled."""
        self.scheduler.children.sweep(now, batch.changes, self.scheduler.is_active)

    async def _restore(self) -> None:
        """Rebuild active runs from SQLite, apply the reports that piled up, re-publish the rest.

        Reports first: a task that finished while the coordinator was down is not sent again.
        """
        assert self._store is not None and self.writer is not None
        recovered = await recover_runs(self._store, self._flows, self.scheduler, time.time(),
                                       self.limits)
        self.stats.tracker.prime()  # their attempts so far are not this process's to count
        backlog = await self._apply_report_backlog()
        again = still_queued(self.scheduler, recovered.dispatches)
        await self._publisher.dispatch(again)
        self.writer.arm_timers(recovered.timers)
        if recovered.runs:
            log.info("resumed %d active runs: applied %d waiting reports, re-published %d "
                     "queued tasks", recovered.runs, backlog, len(again))

    async def _apply_report_backlog(self) -> int:
        assert self.writer is not None
        sub = await self._js.pull_subscribe_bind(self.subjects.reports_consumer,
                                                 self.subjects.reports_stream)
        applied = 0
        try:
            while True:  # ask how many wait first: a fetch from an empty consumer waits it out
                info = await self._js.consumer_info(self.subjects.reports_stream,
                                                    self.subjects.reports_consumer)
                if not info.num_pending:
                    return applied
                try:
                    msgs = await sub.fetch(min(FETCH_BATCH, info.num_pending), timeout=2.0)
                except (TimeoutError, NatsTimeout):
                    return applied
                applied += len(msgs)
                await self.writer.process([Reports(msgs)])
        finally:
            await sub.unsubscribe()

    async def run(self) -> None:
        """Serve until ``shutdown()``; a crash of any loop stops the coordinator loudly."""
        assert self._nc is not None and self.writer is not None
        self._running = True
        try:
            await self._serve()
        finally:
            self._finished.set()

    async def _serve(self) -> None:
        assert self._nc is not None and self.writer is not None
        nc, s = self._nc, self.subjects
        subs = [
            await nc.subscribe(s.wildcard("api"), queue=API_QUEUE_GROUP, cb=self._api.on_message),
            await nc.subscribe(s.heartbeat("*"), cb=self._on_heartbeat),
        ]
        await nc.flush()  # the server has our subscriptions: "started" means answering
        self.started.set()
        try:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self.writer.run())
                feeders = [  # unacked pulled messages are redelivered after a restart
                    tg.create_task(self._pull(s.reports_stream, s.reports_consumer, Reports)),
                    tg.create_task(self._pull(s.triggers_stream, s.triggers_consumer, Triggers)),
                    tg.create_task(self._publisher.retry_loop()),
                    tg.create_task(self._sweep_agents()),
                    tg.create_task(self._hold_lease()),
                ]
                await self._stop.wait()
                for sub in subs:  # stop taking work
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                await self._api.wait_idle(API_GRACE_S)  # answer requests in hand
                for feeder in feeders:
                    feeder.cancel()
                await self.writer.inbox.put(StopWriter())
                await writer
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _hold_lease(self) -> None:
        """Renew the lease; once it is lost, stop loudly (the writer refuses to commit)."""
        assert self.lease is not None
        keeper = asyncio.create_task(self.lease.keep())
        try:
            await self.lease.lost.wait()
        finally:
            keeper.cancel()
        raise LeaseLost("this coordinator lost its lease to another: stopping")

    async def _pull(self, stream: str, consumer: str, kind: type) -> None:
        """Hand what the consumer sends to the writer, as it comes, in batches of what arrived
        while the writer was busy (its bounded inbox holds the rest back)."""
        assert self._nc is not None and self.writer is not None
        buffer: list[Msg] = []
        arrived = asyncio.Event()

        def on_msg(msg: Msg) -> None:
            buffer.append(msg)
            arrived.set()

        puller = Puller(self._nc, stream, consumer, on_msg,
                        capacity=lambda: PULL_CAPACITY - len(buffer),
                        min_request=PULL_CAPACITY // 4)
        await puller.start()
        try:
            while True:
                await arrived.wait()
                arrived.clear()
                msgs = buffer.copy()
                buffer.clear()
                await self.writer.inbox.put(kind(msgs))
                await puller.top_up()
        finally:
            await puller.stop()

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = decode(heartbeat_decoder, msg.data, "heartbeat", max_bytes=MAX_HEARTBEAT_BYTES)
            if msg.subject != self.subjects.heartbeat(beat.agent_id):
                raise Malformed(f"a heartbeat of agent {beat.agent_id!r} on another agent's "
                                "subject")
        except FlowForgeError as exc:
            log.debug("bad heartbeat on %s: %s", msg.subject[:200], exc.message)
            return
        info = self.agents.beat(beat, time.time())
        if info is not None:
            await self._publisher.agent_event(info)

    async def _sweep_agents(self) -> None:
        assert self.writer is not None
        started, sweeps = time.time(), 0
        while True:
            await asyncio.sleep(AGENT_SWEEP_S)
            now = time.time()
            for info in self.agents.sweep(now):
                log.warning("agent %s on %s is lost (no heartbeat for %.0f s)",
                            info.agent_id, info.host, now - info.last_seen)
                await self._publisher.agent_event(info)
            sweeps += 1
            if now - started > self.agents.lost_after_s and sweeps % 4 == 0:
                await self.writer.submit(self._flag_waiting)  # agents had time to say hello

    async def _flag_waiting(self, now: float, batch: Batch) -> int:
        return self.scheduler.flag_waiting(self.agents.why_waiting, batch.changes)

    def request_stop(self) -> None:
        self._stop.set()

    async def _on_nats_closed(self) -> None:
        """NATS closed the connection for good (not by our shutdown): a process that stays up
        without it is alive and deaf, so stop and let the supervisor start it again."""
        if not self._closed:
            log.error("the connection to NATS was closed for good (%s); stopping",
                      self._nc.last_error if self._nc else "unknown")
            self.lost_nats = True
            self._stop.set()

    async def shutdown(self) -> None:
        """Stop taking work, finish the batch in hand, drain NATS, close the database last."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self.schedules is not None:
            self.schedules.stop()
        if self.batches is not None:
            self.batches.stop()
        if self._running:
            await self._finished.wait()
        if self.writer is not None:
            self.writer.cancel_timers()
            if not (self.lease and self.lease.lost.is_set()):  # cut off: no ack is coming
                await self._publisher.wait_idle()
            await self._publisher.stop()
        if self.lease is not None and self._running:
            await self.lease.release()
        if self._nc is not None:
            with contextlib.suppress(Exception):  # cut off: nothing to drain to
                await (self._nc.close() if self.lease and self.lease.lost.is_set()
                       else self._nc.drain())
        if self._store is not None:
            await self._store.close()
        log.info("coordinator stopped")
