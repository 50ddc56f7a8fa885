"""The coordinator API on ``<ns>.api.<noun>.<verb>``: strict decoding, replies with error codes."""

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from coordinator.agents import AgentRegistry
from coordinator.flows import FlowCache
from coordinator.intake import scoped_key
from coordinator.mapping import split_instance
from coordinator.operations import Operations
from coordinator.publisher import Publisher
from coordinator.store import Store
from coordinator.writer import Writer
from flowforge.jetstream import ensure_task_consumer
from protocol.api import (
    API_REQUESTS,
    ErrorBody,
    FlowDetail,
    GetFlow,
    GetLog,
    GetRun,
    ListAgents,
    ListRejected,
    ListRuns,
    RegisteredFlow,
    RegisterFlows,
    Reply,
    StartRun,
    TaskLogText,
)
from protocol.children import root_of
from protocol.dag import validate_flow
from protocol.errors import BadRequest, ErrorCode, FlowForgeError, UnknownFlow, UnknownRun
from protocol.messages import encoder
from protocol.records import RunDetail, TaskRecord
from protocol.subjects import Subjects
from protocol.untrusted import decode

log = logging.getLogger("flowforge.coordinator.api")

REPLY_MARGIN_BYTES = 16 * 1024
"""Room in an answer for the envelope around a page of task instances."""

MAX_HANDLED_AT_ONCE = 16
MAX_WAITING = 256
MAX_WAITING_BYTES = 64 * 1024 * 1024
"""Requests waiting for one of the MAX_HANDLED_AT_ONCE places, by count and by bytes."""

_decoders = {key: msgspec.json.Decoder(t) for key, t in API_REQUESTS.items()}
_BUSY = encoder.encode(Reply(ok=False, error=ErrorBody(
    code=ErrorCode.BUSY, message="the coordinator has too many requests in hand; try again "
    "shortly")))


class Api:
    """Answers requests; anything that changes runs goes through the writer."""

    def __init__(
        self, store: Store, flows: FlowCache, writer: Writer, publisher: Publisher,
        js: JetStreamContext, subjects: Subjects, lease_s: float, agents: AgentRegistry,
        max_reply_bytes: int = 1024 * 1024,
    ) -> None:
        self.store = store
        self.flows = flows
        self.writer = writer
        self.publisher = publisher
        self.js = js
        self.subjects = subjects
        self.lease_s = lease_s
        self.agents = agents
        self.operations = Operations(writer, store, flows, writer.scheduler)
        self._inflight: set[asyncio.Task[None]] = set()
        self.max_reply_bytes = max_reply_bytes
        """The NATS server's max_payload: no answer may be larger."""
        self._register_lock = asyncio.Lock()
        self.schedules: Any = None
        """The schedule requests (``coordinator.schedules_api``), once the coordinator made
        them: registration hands them the schedules written in code."""
        self._slots = asyncio.Semaphore(MAX_HANDLED_AT_ONCE)
        self._waiting_bytes = 0
        self.refused_busy = 0
        """Requests answered ``busy`` since start."""
        self._handlers: dict[tuple[str, str], Callable[[Any], Awaitable[Any]]] = {
            ("flows", "register"): self.register_flows,
            ("flows", "list"): lambda _: self.store.list_flows(),
            ("flows", "get"): self.get_flow,
            ("runs", "start"): self.writer.submit_start,
            ("runs", "get"): self.get_run,
            ("runs", "list"): self.list_runs,
            ("rejected", "list"): self.list_rejected,
            ("agents", "list"): self.list_agents,
            ("runs", "cancel"): self.operations.cancel,
            ("runs", "retry"): self.operations.retry,
            ("tasks", "mark"): self.operations.mark,
            ("tasks", "log"): self.task_log,
        }

    def route(self, handlers: dict[tuple[str, str], Callable[[Any], Awaitable[Any]]]) -> None:
        """Answer more requests (each noun and verb must have a request type in
        ``protocol.api.API_REQUESTS``)."""
        for key in handlers:
            assert key in _decoders, key
        self._handlers.update(handlers)

    async def on_message(self, msg: Msg) -> None:
        """Subscription callback: each request runs as its own task, at most
        ``MAX_HANDLED_AT_ONCE`` at a time; past ``MAX_WAITING`` (or ``MAX_WAITING_BYTES``) a
        request is answered ``busy`` at once, so a flood cannot take the memory or starve the
        requests already in hand."""
        if (len(self._inflight) >= MAX_HANDLED_AT_ONCE + MAX_WAITING
                or self._waiting_bytes + len(msg.data) > MAX_WAITING_BYTES):
            self.refused_busy += 1
            if msg.reply:
                with contextlib.suppress(Exception):
                    await msg.respond(_BUSY)
            return
        self._waiting_bytes += len(msg.data)
        task = asyncio.create_task(self._answer(msg))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def wait_idle(self, timeout_s: float) -> None:
        """Let requests already being handled finish and be answered (used at shutdown)."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=timeout_s)

    async def _answer(self, msg: Msg) -> None:
        try:
            async with self._slots:
                reply = await self.handle(msg.subject, msg.data)
        finally:
            self._waiting_bytes -= len(msg.data)
        if msg.reply:
            data = encoder.encode(reply)
            limit = self.max_reply_bytes
            if len(data) > limit:
                data = encoder.encode(Reply(ok=False, error=ErrorBody(
                    code=ErrorCode.TOO_LARGE,
                    message=f"the answer is {len(data):,} bytes, over the NATS server's "
                    f"max_payload of {limit:,}; ask for less (a smaller --limit) or raise "
                    "max_payload on the server",
                )))
            try:
                await msg.respond(data)
            except Exception as exc:  # noqa: BLE001 - answer with an internal error, keep serving
                log.debug("could not answer %s: %s", msg.subject, exc)

    async def handle(self, subject: str, data: bytes) -> Reply:
        parts = subject.split(".")  # <ns>.api.<noun>.<verb>[.<identity>]
        key = (parts[2], parts[3]) if len(parts) in (4, 5) else ("", "")
        handler = self._handlers.get(key)
        try:
            if handler is None:
                raise BadRequest(f"unknown API subject {subject[:200]!r}")
            request = decode(_decoders[key], data or b"{}", f"{key[0]}.{key[1]} request")
            if isinstance(request, StartRun) and len(parts) == 5:
                request = msgspec.structs.replace(
                    request, idempotency_key=scoped_key(parts[4], request.idempotency_key))
            return Reply(ok=True, result=await handler(request))
        except FlowForgeError as exc:
            return Reply(ok=False, error=ErrorBody(code=exc.code, message=exc.message))
        except Exception as exc:
            log.exception("API %s failed", subject)
            return Reply(ok=False, error=ErrorBody(
                code=ErrorCode.INTERNAL, message=f"internal error: {type(exc).__name__}: {exc}"
            ))

    async def register_flows(self, req: RegisterFlows) -> list[RegisteredFlow]:
        for spec in req.flows:
            validate_flow(spec)
        if req.schedules is not None and self.schedules is not None:
            self.schedules.check_code(req)
        out = []
        async with self._register_lock:
            for spec in req.flows:
                version, changed = await self.writer.register_flow(spec, req.replace)
                for queue in spec.queues():
                    await ensure_task_consumer(self.js, self.subjects, queue, self.lease_s, update=True)
                out.append(RegisteredFlow(name=spec.name, version=version, changed=changed))
        if req.schedules is not None and self.schedules is not None:
            await self.schedules.sync_code(req)
        summaries = {f.name: f for f in await self.store.list_flows()}
        for spec in req.flows:
            if spec.name in summaries:
                await self.publisher.flow_event(summaries[spec.name])
        return out

    async def get_flow(self, req: GetFlow) -> FlowDetail:
        row = await self.store.get_flow(req.name, req.version)
        if row is None:
            raise UnknownFlow(req.name)
        spec, version, at = row
        return FlowDetail(spec=spec, version=version, registered_at=at)

    async def get_run(self, req: GetRun) -> Any:
        """The run and its task instances from ``task_offset``, as many as fit in one answer."""
        if req.task_offset < 0:
            raise BadRequest(f"task_offset must be 0 or more, got {req.task_offset}")
        detail = await self.store.get_run(req.run_id)
        if detail is None:
            raise UnknownRun(req.run_id)
        budget = self.max_reply_bytes - REPLY_MARGIN_BYTES - len(encoder.encode(detail.run))
        page: list[TaskRecord] = []
        start = req.task_offset
        if req.after_task is not None:  # name order: the first task named after it
            start = bisect.bisect_right([t.task for t in detail.tasks], req.after_task)
        for task in detail.tasks[start:]:
            budget -= len(encoder.encode(task)) + 1
            if page and budget < 0:
                break
            page.append(task)
        end = start + len(page)
        return RunDetail(run=detail.run, tasks=page,
                         next_task=end if end < len(detail.tasks) else None)

    async def list_runs(self, req: ListRuns) -> Any:
        return await self.store.list_runs(req.flow, req.status, req.limit)

    async def task_log(self, req: GetLog) -> TaskLogText:
        """A task's log, a mapped task's instance's (``T~3``) or a child's (``T/0``); an unknown
        run or a task its flow does not have is an error (an empty answer would look like a
        task that printed nothing)."""
        found = await self.store.run_flow(req.run_id)
        if found is None:
            raise UnknownRun(req.run_id)
        flow = await self.flows.version(*found)
        base = root_of(req.task)  # a child's log: its root task must be the flow's
        instance = split_instance(base)
        task = instance[0] if instance else base
        if task not in flow.tasks:
            raise BadRequest(f"run {req.run_id} of {found[0]!r} has no task {task!r}; it has "
                             f"{', '.join(sorted(flow.tasks)[:20])}")
        if instance and not flow.tasks[task].map_over:
            raise BadRequest(f"task {task!r} of run {req.run_id} is not mapped: it has no "
                             f"instance {req.task!r}")
        return TaskLogText(run_id=req.run_id, task=req.task,
                           log=await self.store.task_log(req.run_id, req.task))

    async def list_agents(self, req: ListAgents) -> Any:
        return self.agents.listing(req.include_gone)

    async def list_rejected(self, req: ListRejected) -> Any:
        """The newest refused messages, as many as fit in one answer."""
        budget = self.max_reply_bytes - REPLY_MARGIN_BYTES
        out = []
        for row in await self.store.list_rejected(req.limit):
            budget -= len(encoder.encode(row)) + 1
            if budget < 0:
                break
            out.append(row)
        return out
