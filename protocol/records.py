"""Stored documents: a run and a task instance, as kept in SQLite and sent in events."""

from typing import Any

import msgspec

from protocol.states import RunStatus, TaskStatus

NULL = msgspec.Raw(b"null")


class Attempt(msgspec.Struct, kw_only=True):
    """One finished try of a task instance: where it ran, when, and how it ended."""

    attempt: int
    agent_id: str | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    outcome: str = "failed"
    """succeeded, failed, timed_out, lost (its agent vanished) or cancelled."""
    error_type: str | None = None
    error_message: str | None = None


class TaskRecord(msgspec.Struct, kw_only=True):
    """The full state of one task instance of a run."""

    run_id: str
    task: str
    status: TaskStatus = TaskStatus.PENDING
    attempt: int = 0
    queue: str = "default"
    agent_id: str | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    output: msgspec.Raw = msgspec.field(default_factory=lambda: NULL)
    """JSON of the function's return value (``null`` until it succeeded)."""
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    checkpoint: str | None = None
    checkpoint_at: float | None = None
    progress: float | None = None
    retry_at: float | None = None
    """When the next attempt is due, while in retry_wait."""
    dispatch: int = 0
    """The attempt number the task message now out was sent with (redeliveries keep it)."""
    deadline_at: float | None = None
    """While running with a timeout: when the coordinator gives up on hearing back."""
    history: list[Attempt] = []
    """Every finished attempt, oldest first (the last one is also in the fields above)."""
    note: str | None = None
    """Why it is in this state when that is not obvious (e.g. skipped by a partial run)."""
    held: bool = False
    """Queued but held back by a concurrency limit: its message is not sent yet (the note
    says which limit and who holds it)."""


class TaskEvents(msgspec.Struct, kw_only=True):
    """One event message: the new state of the tasks of one run that changed together (one
    coordinator batch; a batch with many changes is split into several messages)."""

    run_id: str
    tasks: list[TaskRecord]


class RunCounts(msgspec.Struct, kw_only=True):
    total: int = 0
    done: int = 0
    succeeded: int = 0
    failed: int = 0
    running: int = 0


class RunRecord(msgspec.Struct, kw_only=True):
    """The full state of one run of a flow."""

    run_id: str
    flow: str
    version: str
    status: RunStatus = RunStatus.PENDING
    params: dict[str, Any] = {}
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    idempotency_key: str | None = None
    source: str = "api"
    """How it was started: api, cli, trigger, dev."""
    only: list[str] | None = None
    """A partial run: just these tasks ran; the others were skipped."""
    counts: RunCounts = msgspec.field(default_factory=RunCounts)
    schedule: str | None = None
    """The schedule that started it, if one did."""
    scheduled_for: float | None = None
    """A scheduled run's nominal time (UTC epoch seconds): the time whose data it handles."""
    batch: str | None = None
    """The batch whose item it runs, if a batch started it."""
    priority: int = 0
    """Its tasks go before those of lower priority in their queues (the flow's, unless the
    run was started with its own)."""
    note: str | None = None
    """Why it is pending or was cancelled when that is not obvious (a concurrency limit)."""


class RunDetail(msgspec.Struct, kw_only=True):
    run: RunRecord
    tasks: list[TaskRecord]
    next_task: int | None = None
    """A page of a run too big for one message: ask again from this task (``Client.get``
    does); None when ``tasks`` holds the rest."""


class FlowSummary(msgspec.Struct, kw_only=True):
    name: str
    version: str
    display_name: str = ""
    tasks: int = 0
    queues: list[str] = []
    registered_at: float = 0.0
    last_run_id: str | None = None
    last_run_status: RunStatus | None = None


class RejectedMessage(msgspec.Struct, kw_only=True):
    """A message that could not be accepted, kept with its raw bytes and the reason."""

    id: int
    subject: str
    reason: str
    code: str
    raw: bytes
    received_at: float


class AgentInfo(msgspec.Struct, kw_only=True):
    """An agent as the coordinator last heard of it."""

    agent_id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    functions: tuple[str, ...]
    slots_total: int
    slots_busy: int
    started_at: float
    last_seen: float
    status: str = "live"
    """live, lost (no heartbeat for a while) or stopped (said goodbye)."""
