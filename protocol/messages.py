"""Messages between the parts: one tagged union per direction, codecs built once."""

from typing import Any

import msgspec

from protocol import PROTOCOL_VERSION


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Base of every tagged message."""

    v: int = PROTOCOL_VERSION


# coordinator -> agents, on <ns>.task.<queue>


class TaskDispatch(Message, frozen=True, kw_only=True, tag="task.v1"):
    """Run one attempt of one task."""

    run_id: str
    flow: str
    version: str
    task: str
    function: str
    attempt: int
    params: dict[str, Any] = {}
    inputs: dict[str, msgspec.Raw] = {}
    timeout_s: float | None = None
    queued_at: float = 0.0


# agents -> coordinator, on <ns>.report.<run_id> (or .several, for TaskResults of many runs)


class TaskStarted(Message, frozen=True, kw_only=True, tag="started.v1"):
    run_id: str
    task: str
    attempt: int
    agent_id: str
    delivery: int = 1
    """Which delivery of the task message this is; ``attempt`` counts redeliveries too."""
    at: float


class TaskSucceeded(Message, frozen=True, kw_only=True, tag="succeeded.v1"):
    run_id: str
    task: str
    attempt: int
    agent_id: str
    delivery: int = 1
    """Which delivery of the task message this is; ``attempt`` counts redeliveries too."""
    at: float
    started_at: float
    output: msgspec.Raw


class TaskFailed(Message, frozen=True, kw_only=True, tag="failed.v1"):
    run_id: str
    task: str
    attempt: int
    agent_id: str
    delivery: int = 1
    """Which delivery of the task message this is; ``attempt`` counts redeliveries too."""
    at: float
    started_at: float | None = None
    error_type: str
    message: str
    traceback: str = ""


class TaskProgress(Message, frozen=True, kw_only=True, tag="progress.v1"):
    """``ctx.progress()`` or ``ctx.checkpoint()`` from inside a task."""

    run_id: str
    task: str
    attempt: int
    agent_id: str
    delivery: int = 1
    """Which delivery of the task message this is; ``attempt`` counts redeliveries too."""
    at: float
    fraction: float | None = None
    message: str | None = None


class TaskLog(Message, frozen=True, kw_only=True, tag="log.v1"):
    """Lines a task logged or printed, sent in small batches while it runs."""

    run_id: str
    task: str
    attempt: int
    agent_id: str
    at: float
    text: str


class TaskResults(Message, frozen=True, kw_only=True, tag="results.v1"):
    """Results of tasks that finished together on one agent, stored as one message (one
    JetStream store and ack, one message for the coordinator): on ``<ns>.report.<run_id>``
    when all are of one run, else on ``<ns>.report.several``. A lone result goes as itself."""

    results: list[TaskSucceeded | TaskFailed]


Report = TaskStarted | TaskSucceeded | TaskFailed | TaskProgress | TaskLog | TaskResults
TERMINAL_REPORTS = (TaskSucceeded, TaskFailed)


# agents -> world, on <ns>.agent.heartbeat.<agent_id>


class AgentHeartbeat(Message, frozen=True, kw_only=True, tag="heartbeat.v1"):
    agent_id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    functions: tuple[str, ...]
    slots_total: int
    slots_busy: int
    started_at: float
    at: float
    stopping: bool = False


# anyone -> coordinator, on <ns>.trigger.<flow> (untagged: plain JSON from any client)


class Trigger(msgspec.Struct, frozen=True, kw_only=True):
    params: dict[str, Any] = {}
    idempotency_key: str | None = None


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
