"""The single writer: applies batches of inputs to the scheduler, commits once, then publishes."""

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg

from coordinator.batch_store import BatchWrites
from coordinator.changes import Changes, Timer
from coordinator.experiment_intake import ExperimentIntake, ExperimentWrites
from coordinator.flows import FlowCache
from coordinator.intake import (
    ReportChecks,
    check_only,
    check_run_params,
    checked_key,
    flow_and_scope,
    kind_of,
    redelivery_key,
    scoped_key,
)
from coordinator.publisher import Publisher
from coordinator.schedule_store import ScheduleWrites
from coordinator.scheduler import Scheduler
from coordinator.store import Store
from flowforge.auth import Identity
from protocol.api import StartRun
from protocol.dag import check_params, is_task_ref
from protocol.errors import ErrorCode, FlowForgeError
from protocol.flows import FlowSpec
from protocol.limits import (
    MAX_PARAMS_BYTES,
    is_token,
)
from protocol.messages import (
    AttemptReport,
    TaskLog,
    TaskMetrics,
    TaskResults,
    encoder,
    report_decoder,
    trigger_decoder,
)
from protocol.records import RunRecord
from protocol.untrusted import Malformed, decode

log = logging.getLogger("flowforge.coordinator.writer")

MAX_ITEMS_PER_BATCH = 64


_ids = random.Random(secrets.randbits(64))
"""Seeded from the OS once: run ids need to differ, not to be secret (``secrets`` reads the OS
on every call)."""


def new_run_id() -> str:
    """Time-ordered, 19 hex characters; valid as a NATS subject token."""
    return f"{int(time.time() * 1000):011x}{_ids.getrandbits(32):08x}"


@dataclass(slots=True)
class Reports:
    msgs: list[Msg]


@dataclass(slots=True)
class Triggers:
    msgs: list[Msg]


@dataclass(slots=True)
class Call:
    """An operation to run inside a batch: ``fn(now, batch)``; its result answers ``future``."""

    fn: Callable[[float, "Batch"], Awaitable[Any]]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class TimerFired:
    run_id: str
    task: str


@dataclass(slots=True)
class StopWriter:
    """Finish what is queued before this, then return from ``run()``."""


Input = Reports | Triggers | Call | TimerFired | StopWriter


@dataclass(slots=True)
class Rejected:
    """A message set aside: kept with its reason, announced, and terminated (never
    redelivered)."""

    subject: str
    code: str
    reason: str
    raw: bytes
    msg: Msg | None = None


@dataclass(slots=True)
class Batch:
    changes: Changes = field(default_factory=Changes)
    acks: list[Msg] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    replies: list[tuple[asyncio.Future[Any], Any]] = field(default_factory=list)
    keys: dict[tuple[str, str], RunRecord] = field(default_factory=dict)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    log_msgs: list[TaskLog] = field(default_factory=list)
    schedules: ScheduleWrites = field(default_factory=ScheduleWrites)
    batches: BatchWrites = field(default_factory=BatchWrites)
    experiments: ExperimentWrites = field(default_factory=ExperimentWrites)


class Writer:
    """Everything that changes runs goes through here, in order, one transaction per batch."""

    def __init__(
        self, store: Store, scheduler: Scheduler, flows: FlowCache, publisher: Publisher,
        trigger_prefix: str, report_prefix: str = "",
        agent_identities: Mapping[str, Identity] | None = None,
    ) -> None:
        self.store = store
        self.checks = ReportChecks(scheduler, report_prefix, dict(agent_identities or {}))
        self.experiments = ExperimentIntake(store.database, scheduler, self.checks)
        self.scheduler = scheduler
        self.flows = flows
        self.publisher = publisher
        self._trigger_prefix = trigger_prefix
        self.inbox: asyncio.Queue[Input] = asyncio.Queue(maxsize=256)
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.run_listeners: list[Callable[[Iterable[RunRecord]], None]] = []
        """Told of the runs each batch changed, once it is committed."""
        self.before_commit: list[Callable[[float, Batch], None]] = []
        """Called with each batch before it is committed: changes they add go in with it."""
        self.start_run: Callable[..., object] = scheduler.start_run
        """Starts a new run (``coordinator.limits`` puts its run limits in between)."""
        self.late_reports: list[Callable[[AttemptReport], None]] = []
        """Told of each report the scheduler did not take (a task of a run that ended, say)."""

    async def submit(self, fn: Callable[[float, "Batch"], Awaitable[Any]]) -> Any:
        """Run ``fn`` in the next batch; returns once its changes are committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.inbox.put(Call(fn, future))
        return await future

    async def submit_start(self, request: StartRun) -> RunRecord:
        return await self.submit(lambda now, batch: self._start(request, now, batch))

    async def register_flow(self, spec: FlowSpec, replace: bool) -> tuple[str, bool]:
        """Store a flow definition and make it the current one, between two batches (the
        store has this one writer); returns (version, changed). Raises FlowExists."""
        async def act(now: float, batch: Batch) -> tuple[str, bool]:
            stored = await self.store.register_flow(spec, replace)
            self.flows.put(spec)
            return stored

        return await self.submit(act)

    async def run(self) -> None:
        """Process batches until a StopWriter item; each batch is one transaction."""
        while True:
            items = [await self.inbox.get()]
            while len(items) < MAX_ITEMS_PER_BATCH and not self.inbox.empty():
                items.append(self.inbox.get_nowait())
            stop = any(isinstance(i, StopWriter) for i in items)
            await self.process([i for i in items if not isinstance(i, StopWriter)])
            if stop:
                return

    async def process(self, items: list[Input]) -> None:
        batch = Batch()
        now = time.time()
        for item in items:
            match item:
                case Reports(msgs):
                    for msg in msgs:
                        self._one(msg, self._report, now, batch)
                case Triggers(msgs):
                    for msg in msgs:
                        await self._one_async(msg, self._trigger, now, batch)
                case Call(fn, future):
                    try:
                        batch.replies.append((future, await fn(now, batch)))
                    except Exception as exc:  # noqa: BLE001 - the caller gets it, the batch goes on
                        batch.replies.append((future, exc))
                case TimerFired(run_id, task):
                    try:
                        self.scheduler.on_timer(run_id, task, now, batch.changes)
                    except Exception:  # a bug, but the batch and the process go on
                        log.exception("timer of %s/%s failed", run_id, task)
                case StopWriter():
                    pass
        await self._commit_and_publish(batch)

    async def _commit_and_publish(self, batch: Batch) -> None:
        ch = batch.changes
        ids: list[int] = []
        if batch.experiments.pending:
            await self.experiments.admit(batch.experiments, batch.logs, batch.log_msgs, time.time())
        for hook in self.before_commit:
            hook(time.time(), batch)
        side = (batch.schedules, batch.batches, batch.experiments)
        if ch or batch.rejected or batch.logs or any(side):
            ids = await self.store.commit(
                ch, [(r.subject, r.code, r.reason, r.raw) for r in batch.rejected], batch.logs, side)
        for future, result in batch.replies:  # committed: callers may know now
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        await self.publisher.dispatch(ch.dispatches)
        await self.publisher.withdraw(ch.withdrawn)
        self.publisher.forget(ch.tasks.values())
        for run_id in ch.cancelled_runs:
            await self.publisher.cancel(run_id)
        await self.publisher.children_news(ch.wakes, ch.stop_tasks)
        await self.publisher.task_events(ch.tasks.values())
        await self.publisher.run_events(ch.runs.values())
        await self.publisher.log_events(batch.log_msgs)
        if batch.schedules:
            await self.publisher.schedule_events(batch.schedules)
        for r, rid in zip(batch.rejected, ids, strict=True):
            await self.publisher.error_event(kind_of(r.subject), r.subject, r.code, r.reason, rid)
            if r.msg is not None:
                await _settle(r.msg.term)
        await self.publisher.ack(batch.acks)
        self.arm_timers(ch.timers)
        for listener in self.run_listeners:
            listener(ch.runs.values())

    def arm_timers(self, timers: list[Timer]) -> None:
        loop = asyncio.get_running_loop()
        for timer in timers:
            key = (timer.run_id, timer.task)
            old = self._timers.pop(key, None)
            if old is not None:
                old.cancel()
            delay = max(0.0, timer.at - time.time())
            self._timers[key] = loop.call_later(delay, self._fire, *key)

    def _fire(self, run_id: str, task: str) -> None:
        self._timers.pop((run_id, task), None)
        try:
            self.inbox.put_nowait(TimerFired(run_id, task))
        except asyncio.QueueFull:
            handle = asyncio.get_running_loop().call_later(0.05, self._fire, run_id, task)
            self._timers[(run_id, task)] = handle

    def cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    # -- inputs ------------------------------------------------------------------------

    def _one(self, msg: Msg, apply: Callable[[Msg, float, Batch], None], now: float,
             batch: Batch) -> None:
        """Apply one message; one that cannot be applied is set aside, the batch goes on."""
        try:
            apply(msg, now, batch)
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the others
            self._set_aside(msg, exc, batch)
        else:
            batch.acks.append(msg)

    async def _one_async(self, msg: Msg, apply: Callable[[Msg, float, Batch], Awaitable[None]],
                         now: float, batch: Batch) -> None:
        try:
            await apply(msg, now, batch)
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the others
            self._set_aside(msg, exc, batch)
        else:
            batch.acks.append(msg)

    @staticmethod
    def _set_aside(msg: Msg, exc: Exception, batch: Batch) -> None:
        if isinstance(exc, FlowForgeError):
            code, reason = exc.code, exc.message
        else:
            log.error("could not apply the message on %s", msg.subject[:200], exc_info=exc)
            code, reason = ErrorCode.INTERNAL, f"could not be applied: {type(exc).__name__}: {exc}"
        log.warning("rejected %s on %s: %s", kind_of(msg.subject), msg.subject[:200], reason[:500])
        batch.rejected.append(Rejected(msg.subject, code, reason, msg.data, msg))

    def _report(self, msg: Msg, now: float, batch: Batch) -> None:
        report = decode(report_decoder, msg.data, "report")
        sender = self.checks.sender(msg.subject)
        if isinstance(report, TaskResults):  # each result on its own: a refused one
            for result in report.results:    # must not lose the others
                try:
                    self.checks.check_sender(result, sender)
                    result = self.checks.check_result(result)
                except FlowForgeError as exc:
                    log.warning("refused a result on %s: %s", msg.subject[:200], exc.message)
                    batch.rejected.append(Rejected(msg.subject, exc.code, exc.message,
                                                   encoder.encode(result)))
                    continue
                self._apply_report(result, now, batch)
            return
        self.checks.check_sender(report, sender)
        if isinstance(report, TaskMetrics):
            self.experiments.take(report, batch.experiments, batch.logs, batch.log_msgs, now)
        elif isinstance(report, TaskLog):
            self.checks.check_holder(report)
            if not (is_token(report.run_id) and is_task_ref(report.task)):
                raise Malformed("invalid report: a log's run id and task name become a subject "
                                "and must be letters, digits, '_' or '-'")
            key = (report.run_id, report.task)
            batch.logs[key] = batch.logs.get(key, "") + report.text
            batch.log_msgs.append(report)
        else:
            self._apply_report(self.checks.check_result(report), now, batch)

    def _apply_report(self, report: AttemptReport, now: float, batch: Batch) -> None:
        """To the scheduler; one it does not take goes to ``late_reports``."""
        if not self.scheduler.on_report(report, now, batch.changes):  # type: ignore[arg-type]
            for late in self.late_reports:
                late(report)

    async def _trigger(self, msg: Msg, now: float, batch: Batch) -> None:
        flow, scope = flow_and_scope(msg.subject[len(self._trigger_prefix):])
        trigger = decode(trigger_decoder, msg.data, "trigger", max_bytes=MAX_PARAMS_BYTES + 1024)
        header_key = (msg.headers or {}).get("Nats-Msg-Id")
        if header_key is not None and trigger.idempotency_key is None:
            header_key = checked_key(header_key)
        key = scoped_key(scope, trigger.idempotency_key or header_key)
        first_of_key = False
        if key is None:  # a redelivery after a crash must not start a second run
            key = redelivery_key(msg)
            # only a redelivery can have started a run already: skip the lookup
            first_of_key = msg.metadata.num_delivered == 1
        request = StartRun(flow=flow, params=trigger.params, idempotency_key=key, source="trigger")
        await self._start(request, now, batch, first_of_key)

    async def start_from(self, request: StartRun, now: float, batch: Batch, *,
                         schedule: str | None = None, scheduled_for: float | None = None,
                         batch_id: str | None = None) -> RunRecord:
        """A run started by a schedule or a batch (recorded with it), inside their batch."""
        origin = {"schedule": schedule, "scheduled_for": scheduled_for, "batch": batch_id}
        return await self._start(request, now, batch, origin=origin)

    async def _start(self, request: StartRun, now: float, batch: Batch,
                     first_of_key: bool = False,
                     origin: dict[str, Any] | None = None) -> RunRecord:
        """Start a run (or return the run its idempotency key already started; with
        ``first_of_key`` the key is known to be new and the store is not asked)."""
        flow = await self.flows.current(request.flow)
        check_run_params(request.params)
        only = check_only(request.flow, flow, request.only)
        specs = flow.params if only is None else flow.spec.param_specs(only)
        check_params(request.flow, specs, request.params,
                     allow_unknown=flow.accepts_any_param, known=flow.param_names)
        key = request.idempotency_key
        if key and not first_of_key:
            existing = batch.keys.get((request.flow, key)) or await self.store.run_by_key(
                request.flow, key
            )
            if existing is not None:
                return existing
        run = RunRecord(
            run_id=new_run_id(), flow=request.flow, version=flow.version,
            params=dict(request.params), created_at=now, idempotency_key=key,
            source=request.source, only=sorted(only) if only is not None else None,
            priority=flow.spec.priority if request.priority is None else request.priority,
            **(origin or {}),
        )
        if key:
            batch.keys[(request.flow, key)] = run
        reused = None
        if only is not None:
            wanted = {i for t in only for i in flow.tasks[t].inputs if i not in only}
            reused = await self.store.last_outputs(request.flow, wanted)
        self.start_run(run, flow, now, batch.changes, reused)
        return run


async def _settle(action: Callable[[], Awaitable[None]]) -> None:
    try:
        await action()
    except Exception as exc:  # noqa: BLE001 - NATS away: the message comes back later
        log.debug("ack/term failed: %r", exc)
