"""Client: register flows, start, query and wait for runs, follow events — over NATS."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar, cast

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from flowforge.batch_calls import BatchCalls
from flowforge.child_calls import ChildCalls
from flowforge.connection import ConnectOptions, connect, denied
from flowforge.experiment_calls import ExperimentCalls
from flowforge.jspub import JsPublisher
from flowforge.limit_calls import LimitCalls
from flowforge.map_calls import MapCalls
from flowforge.registry import REGISTRY
from flowforge.schedule_calls import ScheduleCalls
from flowforge.stats_calls import StatsCalls
from protocol import api
from protocol.api import FlowDetail, RawReply, RegisteredFlow, TaskLogText, reply_decoder
from protocol.batches import BatchRecord
from protocol.errors import (
    BadRequest,
    ErrorCode,
    FlowForgeError,
    NotAuthorized,
    NotConnected,
    RemoteError,
    TooLarge,
)
from protocol.flows import FlowSpec
from protocol.limits import MAX_PARAMS_BYTES, is_valid_name
from protocol.messages import ErrorEvent, TaskLog, Trigger, encoder
from protocol.records import (
    AgentInfo,
    FlowSummary,
    RejectedMessage,
    RunDetail,
    RunRecord,
    TaskEvents,
    TaskRecord,
)
from protocol.schedules import ScheduleEvent, ScheduleSpec
from protocol.states import RUN_FINAL, RunStatus
from protocol.untrusted import decode

T = TypeVar("T")

_log_dec = msgspec.json.Decoder(TaskLog)
_EVENT_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    kind: msgspec.json.Decoder(t) for kind, t in (
        ("run", RunRecord), ("tasks", TaskEvents), ("flow", FlowSummary), ("error", ErrorEvent),
        ("agent", AgentInfo), ("schedule", ScheduleEvent), ("batch", BatchRecord))}

_ROUTES: dict[type[msgspec.Struct], tuple[str, str]] = {t: key for key, t in api.API_REQUESTS.items()}
"""The (noun, verb) of each request type: its subject is ``<ns>.api.<noun>.<verb>``."""


def route_of(body: msgspec.Struct) -> str:
    """``noun.verb`` of a request."""
    return ".".join(_ROUTES[type(body)])

NO_RESPONDER_RETRIES_S = (0.05, 0.2, 0.5)
BUSY_FIRST_PAUSE_S = 0.05
DENIAL_CHECK_S = 0.1

Event = RunRecord | TaskRecord | FlowSummary | ErrorEvent | AgentInfo | ScheduleEvent | BatchRecord


def decode_events(subject: str, data: bytes, namespace: str) -> list[Event]:
    """The records an event message carries (task events come several to a message); none
    for kinds this client does not know, and none for a message that is not a valid event
    (anyone on the bus can publish there)."""
    kind = subject[len(namespace) + len(".events."):].split(".", 1)[0]
    decoder = _EVENT_DECODERS.get(kind)
    if decoder is None:
        return []
    try:
        value = decode(decoder, data, f"{kind} event")
    except FlowForgeError:
        return []
    return list(value.tasks) if isinstance(value, TaskEvents) else [value]


def decode_log_event(data: bytes) -> TaskLog | None:
    """Lines of a task's log from ``<ns>.events.log.<run>.<task>``; None if not valid."""
    try:
        return decode(_log_dec, data, "log event")
    except FlowForgeError:
        return None


def _code_schedules(specs: list[FlowSpec]) -> dict[str, list[ScheduleSpec]]:
    """The code's schedules of the flows this process defined (a flow defined elsewhere
    keeps its own)."""
    return {s.name: REGISTRY.schedules.get(s.name, []) for s in specs
            if REGISTRY.flows.get(s.name) is s}


class Client(ScheduleCalls, BatchCalls, MapCalls, ChildCalls, LimitCalls, StatsCalls, ExperimentCalls):
    """``async with Client(ConnectOptions(url=...)) as c: run = await c.start("etl")``."""

    def __init__(self, options: ConnectOptions | None = None, *, timeout_s: float = 10.0) -> None:
        self.options = options or ConnectOptions()
        self.subjects = self.options.subjects
        self.timeout_s = timeout_s
        self._nc: NATS | None = None
        self._jspub: JsPublisher | None = None

    @classmethod
    def over(cls, nc: NATS, options: ConnectOptions, timeout_s: float = 10.0) -> "Client":
        """A client on a connection someone else owns (an agent's): never closed by it."""
        client = cls(options, timeout_s=timeout_s)
        client._nc = nc
        return client

    async def connect(self) -> "Client":
        if self._nc is None:
            self._nc = await connect(self.options, name="flowforge-client")
        return self

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        jspub, self._jspub = self._jspub, None
        if jspub is not None:
            await jspub.stop()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.drain()

    async def __aenter__(self) -> "Client":
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise NotConnected("Client is not connected: use `async with Client(...)`")
        return self._nc

    async def request(self, body: msgspec.Struct, result_type: type[T]) -> T:
        """One API call, on the subject of the request's type (``protocol.api.API_REQUESTS``);
        raises RemoteError with the coordinator's code on an error reply."""
        noun, verb = _ROUTES[type(body)]
        data = encoder.encode(body)
        limit = self.nc.max_payload
        if limit and len(data) > limit:
            raise TooLarge(
                f"the {noun}.{verb} request is {len(data):,} bytes, over the NATS server's "
                f"max_payload of {limit:,}; send less at once, or raise max_payload on the server"
            )
        deadline = time.monotonic() + self.timeout_s
        pause_s = BUSY_FIRST_PAUSE_S
        while True:
            reply = await self._ask(noun, verb, data)
            busy = not reply.ok and reply.error is not None and reply.error.code == ErrorCode.BUSY
            if not busy or time.monotonic() + pause_s > deadline:
                break
            await asyncio.sleep(pause_s)  # shed under load: ask again, less and less often
            pause_s = min(1.0, pause_s * 2)
        if not reply.ok:
            err = reply.error
            raise RemoteError(err.code if err else "internal", err.message if err else "error")
        try:
            return msgspec.json.decode(reply.result, type=result_type)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise RemoteError(ErrorCode.BAD_REQUEST, f"the {noun}.{verb} answer could not be "
                              f"read: {exc}") from None

    async def _request_unless_denied(self, subject: str, data: bytes) -> Any:
        """``nc.request``, ended early when NATS refuses it (it would only time out)."""
        request = asyncio.ensure_future(self.nc.request(subject, data, timeout=self.timeout_s))
        while True:
            done, _ = await asyncio.wait({request}, timeout=DENIAL_CHECK_S)
            if done:
                return request.result()
            if (why := denied(self.nc, subject)) is not None:
                request.cancel()
                raise NotAuthorized(f"NATS does not let this client send on {subject} ({why}); "
                                    "ask for credentials of a role that may")

    async def _ask(self, noun: str, verb: str, data: bytes) -> RawReply:
        for pause_s in NO_RESPONDER_RETRIES_S:  # a coordinator restarting: ask again shortly
            try:
                msg = await self._request_unless_denied(self.subjects.api(noun, verb), data)
                break
            except NoRespondersError:
                await asyncio.sleep(pause_s)
            except NatsTimeout:
                raise NotConnected(f"the coordinator did not answer {noun}.{verb} in "
                                   f"{self.timeout_s:g} s") from None
        else:
            raise NotConnected(
                f"no coordinator is answering on {self.subjects.api(noun, verb)} "
                f"(NATS {self.options.url}, namespace {self.options.namespace!r}); "
                "start one with `flowforge-coordinator`"
            )
        try:
            return decode(reply_decoder, msg.data, f"{noun}.{verb} answer")
        except FlowForgeError as exc:
            raise RemoteError(ErrorCode.BAD_REQUEST, exc.message) from None

    # -- flows -------------------------------------------------------------------------

    async def register(
        self, flows: Iterable[FlowSpec] | None = None, *, replace: bool | None = None
    ) -> list[RegisteredFlow]:
        """Store flow definitions (default: every flow registered in this process)."""
        specs = list(flows) if flows is not None else list(REGISTRY.flows.values())
        out: list[RegisteredFlow] = []
        for flag in (True, False):
            group = [
                s for s in specs
                if (replace if replace is not None else REGISTRY.replace.get(s.name, True)) is flag
            ]
            if not group:
                continue
            body = api.RegisterFlows(flows=group, replace=flag, schedules=_code_schedules(group))
            if len(encoder.encode(body)) <= self.nc.max_payload:  # all in one transaction
                out += await self.request(body, list[RegisteredFlow])
                continue
            for spec in group:  # too big together: one by one (each may still be too big)
                out += await self.request(api.RegisterFlows(
                    flows=[spec], replace=flag, schedules=_code_schedules([spec])),
                    list[RegisteredFlow])
        return out

    async def flows(self) -> list[FlowSummary]:
        return await self.request(api.ListFlows(), list[FlowSummary])

    async def flow(self, name: str, version: str | None = None) -> FlowDetail:
        return await self.request(api.GetFlow(name=name, version=version), FlowDetail)

    # -- triggers -----------------------------------------------------------------------

    async def send_trigger(
        self, flow: str, params: dict[str, Any] | None = None, *,
        idempotency_key: str | None = None,
    ) -> "asyncio.Future[int]":
        """Publish a trigger message for ``flow`` without waiting for it to be stored: the
        future gets its JetStream sequence once it is (or fails with ``PublishError``, a
        ``NotConnected``). Send many, then gather: this is how to start thousands of runs
        quickly. The run starts when the coordinator takes the message, even if it is down right now."""
        if not is_valid_name(flow):
            raise BadRequest(f"{flow!r} is not a valid flow name")
        try:
            data = encoder.encode(Trigger(params=dict(params or {}),
                                          idempotency_key=idempotency_key))
        except TypeError as exc:
            raise BadRequest(f"trigger parameters are not JSON-serialisable: {exc}") from None
        if len(data) > min(self.nc.max_payload, MAX_PARAMS_BYTES + 1024):
            raise TooLarge(f"the trigger is {len(data):,} bytes; parameters may take at most "
                           f"{MAX_PARAMS_BYTES:,}: pass a reference (a path or a key) instead")
        if self._jspub is None:
            jspub = JsPublisher(self.nc, ack_timeout_s=self.timeout_s)
            await jspub.start()
            self._jspub = jspub
        return await self._jspub.publish(self.subjects.trigger(flow), data)

    async def trigger(
        self, flow: str, params: dict[str, Any] | None = None, *,
        idempotency_key: str | None = None,
    ) -> int:
        """Publish a trigger message for ``flow`` and wait until JetStream stored it; returns
        its stream sequence. Unknown flows and bad parameters are refused by the coordinator
        when it takes the message (``flowforge rejected`` lists them)."""
        return await (await self.send_trigger(flow, params, idempotency_key=idempotency_key))

    # -- runs ----------------------------------------------------------------------------

    async def start(
        self, flow: str, params: dict[str, Any] | None = None, *, idempotency_key: str | None = None,
        source: str = "api", only: list[str] | None = None, priority: int | None = None,
    ) -> RunRecord:
        """Start a run; ``only`` runs just those tasks, reusing the others' last outputs;
        ``priority`` instead of its flow's (higher goes first in its queues)."""
        body = api.StartRun(flow=flow, params=params or {}, idempotency_key=idempotency_key,
                            source=source, only=only, priority=priority)
        return await self.request(body, RunRecord)

    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel a run: pending tasks are cancelled and running ones are told to stop."""
        return await self.request(api.CancelRun(run_id=run_id), RunRecord)

    async def retry(self, run_id: str) -> RunRecord:
        """Run again the failed, cancelled and upstream-failed tasks of a run."""
        return await self.request(api.RetryRun(run_id=run_id), RunRecord)

    async def mark(self, run_id: str, task: str, status: str, output: Any = None) -> TaskRecord:
        """Set a task succeeded (with ``output``) or failed by hand; its dependants follow."""
        body = api.MarkTask(run_id=run_id, task=task, status=status, output=output)
        return await self.request(body, TaskRecord)

    async def get(self, run_id: str) -> RunDetail:
        """A run and all its task instances (fetched in pages when they do not fit in one
        message; the run record is the newest page's)."""
        detail = await self.request(api.GetRun(run_id=run_id), RunDetail)
        while detail.next_task is not None and detail.tasks:  # by name: offsets move
            page = await self.request(
                api.GetRun(run_id=run_id, after_task=detail.tasks[-1].task), RunDetail)
            detail = RunDetail(run=page.run, tasks=detail.tasks + page.tasks,
                               next_task=page.next_task)
        return detail

    async def runs(
        self, flow: str | None = None, status: RunStatus | str | None = None, limit: int = 50
    ) -> list[RunRecord]:
        # a status that is not a RunStatus goes as it is: the coordinator answers bad_request
        body = api.ListRuns(flow=flow, status=cast("RunStatus | None", status), limit=limit)
        return await self.request(body, list[RunRecord])

    async def task_log(self, run_id: str, task: str) -> str:
        """The end of a task instance's log (what it logged and printed, every attempt)."""
        return (await self.request(api.GetLog(run_id=run_id, task=task), TaskLogText)).log

    async def follow_log(self, run_id: str, task: str) -> AsyncIterator[str]:
        """The stored log, then new lines as they arrive, until the run finishes."""
        sub = await self.nc.subscribe(self.subjects.log_event(run_id, task))
        runs = await self.nc.subscribe(self.subjects.run_event("*", run_id))
        try:
            yield await self.task_log(run_id, task)
            if (await self.get(run_id)).run.status in RUN_FINAL:
                return
            while True:
                log_msg = asyncio.ensure_future(sub.next_msg(timeout=None))
                run_msg = asyncio.ensure_future(runs.next_msg(timeout=None))
                done, pending = await asyncio.wait({log_msg, run_msg},
                                                   return_when=asyncio.FIRST_COMPLETED)
                for fut in pending:
                    fut.cancel()
                if log_msg in done and (lines := decode_log_event(log_msg.result().data)):
                    yield lines.text
                if run_msg in done and any(
                    isinstance(e, RunRecord) and e.status in RUN_FINAL for e in decode_events(
                        run_msg.result().subject, run_msg.result().data, self.subjects.namespace)):
                    return
        finally:
            for s in (sub, runs):
                with contextlib.suppress(Exception):
                    await s.unsubscribe()

    async def agents(self, include_gone: bool = True) -> list[AgentInfo]:
        """Agents the coordinator heard from: live ones first, then lost or stopped."""
        return await self.request(api.ListAgents(include_gone=include_gone), list[AgentInfo])

    async def rejected(self, limit: int = 50) -> list[RejectedMessage]:
        return await self.request(api.ListRejected(limit=limit), list[RejectedMessage])

    async def wait(self, run_id: str, timeout_s: float | None = None, poll_s: float = 2.0,
                   on_detail: Callable[[RunDetail], None] | None = None) -> RunDetail:
        """Wait until the run is finished; follows events, re-checks every ``poll_s``
        (``on_detail`` sees each state read while waiting, e.g. to say why tasks wait). A
        coordinator that stops answering once it did is restarting: it is asked again."""
        done, answered = asyncio.Event(), False

        async def on_event(msg: Any) -> None:
            for event in decode_events(msg.subject, msg.data, self.subjects.namespace):
                if isinstance(event, RunRecord) and event.status in RUN_FINAL:
                    done.set()

        sub = await self.nc.subscribe(self.subjects.run_event("*", run_id), cb=on_event)
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    try:
                        detail, answered = await self.get(run_id), True
                    except NotConnected:
                        if not answered:
                            raise
                    if detail.run.status in RUN_FINAL:
                        return detail
                    if on_detail is not None:
                        on_detail(detail)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(poll_s):
                            await done.wait()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # -- events ------------------------------------------------------------------------

    async def events(self, pattern: str = ">") -> AsyncIterator[Event]:
        """Every status event under ``<ns>.events.<pattern>``, decoded, as it happens."""
        sub = await self.nc.subscribe(f"{self.subjects.namespace}.events.{pattern}")
        try:
            async for msg in sub.messages:
                for event in decode_events(msg.subject, msg.data, self.subjects.namespace):
                    yield event
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
