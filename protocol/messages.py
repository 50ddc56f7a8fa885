"""Messages between the parts: one tagged union per direction, codecs built once."""

from typing import Annotated, Any

import msgspec

from protocol import PROTOCOL_VERSION
from protocol.experiments import (
    MAX_ARTIFACTS_PER_MESSAGE,
    MAX_POINTS_PER_MESSAGE,
    MAX_RESULTS_PER_MESSAGE,
    ArtifactRef,
    MetricPoint,
    ResultRecord,
)
from protocol.fields import (
    MAX_FUNCTIONS,
    Attempt,
    Count,
    Delivery,
    FunctionRef,
    Id,
    Key,
    Name,
    Text,
    Time,
    Token,
)
from protocol.limits import MAX_ID_CHARS, MAX_TIMESTAMP


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Base of every tagged message."""

    v: int = PROTOCOL_VERSION


# coordinator -> agents, on <ns>.task.<queue>


class TaskDispatch(Message, frozen=True, kw_only=True, tag="task.v1"):
    """Run one attempt of one task."""

    run_id: Id
    flow: Id
    version: Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)]
    task: Id
    function: FunctionRef
    attempt: Attempt
    params: dict[str, Any] = {}
    inputs: dict[str, msgspec.Raw] = {}
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_TIMESTAMP)] | None = None
    queued_at: Time = 0.0
    scheduled_for: Time | None = None
    """A scheduled run's nominal time (UTC epoch seconds)."""
    chunk: list[msgspec.Raw] | None = None
    """A chunked mapped task's items: the function is called once per item (with ``item``
    and ``map_index``), and the report's output is a list of ``ItemResult``."""
    first_index: Annotated[int, msgspec.Meta(ge=0)] = 0
    """The ``map_index`` of the chunk's first item."""


class ItemResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How one item of a chunk went: its output, or its error."""

    ok: bool
    output: msgspec.Raw = msgspec.Raw(b"null")
    error_type: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    message: Text | None = None
    traceback: Text | None = None


# agents -> coordinator, on <ns>.report.<run_id> (or .several, for TaskResults of many runs)


class AttemptReport(Message, frozen=True, kw_only=True):
    """What every report about one attempt of a task carries (not sent as itself)."""

    run_id: Id
    task: Id
    attempt: Attempt
    agent_id: Id
    delivery: Delivery = 1
    """Which delivery of the task message this is; ``attempt`` counts redeliveries too."""
    at: Time


class TaskStarted(AttemptReport, frozen=True, kw_only=True, tag="started.v1"):
    """A task still running after a moment (quick ones only send their result)."""


class TaskSucceeded(AttemptReport, frozen=True, kw_only=True, tag="succeeded.v1"):
    started_at: Time
    output: msgspec.Raw


class TaskFailed(AttemptReport, frozen=True, kw_only=True, tag="failed.v1"):
    started_at: Time | None = None
    error_type: Annotated[str, msgspec.Meta(max_length=1024)]
    message: Text
    traceback: str = ""


class TaskProgress(AttemptReport, frozen=True, kw_only=True, tag="progress.v1"):
    """``ctx.progress()`` or ``ctx.checkpoint()`` from inside a task."""

    fraction: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    message: Text | None = None


class TaskLog(Message, frozen=True, kw_only=True, tag="log.v1"):
    """Lines a task logged or printed, sent in small batches while it runs."""

    run_id: Id
    task: Id
    attempt: Attempt
    agent_id: Id
    at: Time
    text: str


class TaskItems(AttemptReport, frozen=True, kw_only=True, tag="items.v1"):
    """Items a generator task yielded, in order from ``first_index`` (a mapped task downstream
    maps over them); its result then counts them."""

    first_index: Annotated[int, msgspec.Meta(ge=0)]
    items: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=100_000)]


class TaskMetrics(AttemptReport, frozen=True, kw_only=True, tag="metrics.v1"):
    """What a task logged (``ctx.log_metric`` and the like) since the last such report: sent
    every half second or so while it runs, and the rest before its result; stored by the
    coordinator keyed by run, task, attempt, name and step."""

    points: Annotated[list[MetricPoint], msgspec.Meta(max_length=MAX_POINTS_PER_MESSAGE)] = []
    results: Annotated[list[ResultRecord], msgspec.Meta(max_length=MAX_RESULTS_PER_MESSAGE)] = []
    artifacts: Annotated[list[ArtifactRef],
                         msgspec.Meta(max_length=MAX_ARTIFACTS_PER_MESSAGE)] = []


class TaskResults(Message, frozen=True, kw_only=True, tag="results.v1"):
    """Results of tasks that finished together on one agent, stored as one message (one
    JetStream store and ack, one message for the coordinator): on ``<ns>.report.<run_id>``
    when all are of one run, else on ``<ns>.report.several``. A lone result goes as itself."""

    results: list[TaskSucceeded | TaskFailed]


Report = (TaskStarted | TaskSucceeded | TaskFailed | TaskProgress | TaskLog | TaskResults
          | TaskItems | TaskMetrics)


# agents -> world, on <ns>.agent.heartbeat.<agent_id>


class AgentHeartbeat(Message, frozen=True, kw_only=True, tag="heartbeat.v1"):
    agent_id: Token
    host: Annotated[str, msgspec.Meta(max_length=255)]
    pid: Annotated[int, msgspec.Meta(ge=0, le=2**31)]
    queues: Annotated[tuple[Name, ...], msgspec.Meta(max_length=64)]
    functions: Annotated[tuple[FunctionRef, ...],
                         msgspec.Meta(max_length=MAX_FUNCTIONS)]
    slots_total: Count
    slots_busy: Count
    started_at: Time
    at: Time
    stopping: bool = False


# anyone -> coordinator, on <ns>.trigger.<flow> (untagged: plain JSON from any client)


class Trigger(msgspec.Struct, frozen=True, kw_only=True):
    params: dict[str, Any] = {}
    idempotency_key: Key | None = None


# coordinator -> world, on <ns>.events.error.<kind>


class ErrorEvent(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    subject: str
    code: str
    reason: str
    at: float
    rejected_id: int | None = None


report_decoder = msgspec.json.Decoder(Report)
dispatch_decoder = msgspec.json.Decoder(TaskDispatch)
heartbeat_decoder = msgspec.json.Decoder(AgentHeartbeat)
trigger_decoder = msgspec.json.Decoder(Trigger)
encoder = msgspec.json.Encoder()
