"""Requests and replies of the coordinator API on ``<ns>.api.<noun>.<verb>``."""

from typing import Annotated, Any

import msgspec

from protocol.batch_api import BATCH_REQUESTS
from protocol.children import CHILD_REQUESTS, TaskPath
from protocol.concurrency import LIMIT_REQUESTS, Priority
from protocol.experiments import EXPERIMENT_REQUESTS
from protocol.fields import Key, ListLimit, Name, Text, Token
from protocol.flows import FlowSpec
from protocol.limits import MAX_ID_CHARS, MAX_LIST_LIMIT
from protocol.records import TaskRecord
from protocol.schedules import FireRecord, ScheduleSpec, ScheduleState
from protocol.states import RunStatus, TaskStatus
from protocol.stats import STATS_REQUESTS


class RegisterFlows(msgspec.Struct, frozen=True, kw_only=True):
    flows: list[FlowSpec]
    replace: bool = True
    """``clear_existing_flow_in_db``: replace an existing flow's definition."""
    schedules: dict[Name, list[ScheduleSpec]] | None = None
    """The schedules written in code of these flows (``schedules=[...]``): they replace the
    flow's code-defined schedules; None leaves schedules alone."""


class RegisteredFlow(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: str
    changed: bool


class GetFlow(msgspec.Struct, frozen=True, kw_only=True):
    name: Name
    version: Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)] | None = None


class FlowDetail(msgspec.Struct, frozen=True, kw_only=True):
    spec: FlowSpec
    version: str
    registered_at: float


class ListFlows(msgspec.Struct, frozen=True, kw_only=True):
    pass


class StartRun(msgspec.Struct, frozen=True, kw_only=True):
    flow: Name
    params: dict[str, Any] = {}
    idempotency_key: Key | None = None
    source: Annotated[str, msgspec.Meta(pattern=r"^[a-z]{1,16}$")] = "api"
    only: list[Name] | None = None
    """Run just these tasks; the rest are skipped, reusing their last successful outputs."""
    priority: Priority | None = None
    """The run's priority (None: its flow's)."""


class GetRun(msgspec.Struct, frozen=True, kw_only=True):
    run_id: Token
    task_offset: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Tasks are in name order; the answer holds as many from here as fit in one message."""
    after_task: Name | None = None
    """Instead of an offset: the tasks named after this one. Pages of a run that is still
    going must be read this way (tasks are stored as they first change, so offsets move)."""


class CancelRun(msgspec.Struct, frozen=True, kw_only=True):
    run_id: Token


class RetryRun(msgspec.Struct, frozen=True, kw_only=True):
    run_id: Token


class MarkTask(msgspec.Struct, frozen=True, kw_only=True):
    """Set a task instance succeeded (with an output) or failed, as an operator."""

    run_id: Token
    task: Name
    status: Annotated[str, msgspec.Meta(max_length=32)]
    output: Any = None


class GetLog(msgspec.Struct, frozen=True, kw_only=True):
    run_id: Token
    task: TaskPath
    """A task, an instance of a mapped task (``T~3``) or a child (``T/0``, ``T~3/0/1``)."""


MAX_MAP_INDEX = 9_999_999
"""Largest index an instance name can carry (``T~9999999``)."""
MapIndex = Annotated[int, msgspec.Meta(ge=0, le=MAX_MAP_INDEX)]


class GetInstances(msgspec.Struct, frozen=True, kw_only=True):
    """The instances of a mapped task of a run: how many are in each state, and a page of them
    in index order (those after ``after_index``, only in ``status`` if given) — or with
    ``index`` exactly that one."""

    run_id: Token
    task: Name
    status: TaskStatus | None = None
    after_index: Annotated[int, msgspec.Meta(ge=-1, le=MAX_MAP_INDEX)] = -1
    limit: Annotated[int, msgspec.Meta(ge=0, le=MAX_LIST_LIMIT)] = 100
    """At most this many (fewer when they would not fit in one answer); 0 for the counts only."""
    index: MapIndex | None = None
    counts: bool = True
    """Count the instances by state (a pass over all of them: leave it out for later pages)."""


class MapInstances(msgspec.Struct, kw_only=True):
    """A mapped task of a run, its instances counted by state, and a page of them."""

    run_id: str
    task: str
    status: TaskStatus
    """The mapped task's own state."""
    total: int | None = None
    """How many items it maps over, once it started (None when not known)."""
    counts: dict[str, int] = {}
    """Instances made so far by state; the items not reached yet have none (``total`` minus
    their sum). Empty when not asked for."""
    instances: list[TaskRecord] = []
    """In index order."""
    next_after: int | None = None
    """More may follow: ask again with ``after_index`` set to this; None after the last."""


class TaskLogText(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    task: str
    log: str


class ListRuns(msgspec.Struct, frozen=True, kw_only=True):
    flow: Name | None = None
    status: RunStatus | None = None
    limit: ListLimit = 50


class ListRejected(msgspec.Struct, frozen=True, kw_only=True):
    limit: ListLimit = 50


class ListAgents(msgspec.Struct, frozen=True, kw_only=True):
    include_gone: bool = True
    """Also list agents that stopped or were lost."""


class PutSchedule(msgspec.Struct, frozen=True, kw_only=True):
    """Create a schedule, or change one (its cursor stays: nothing fires twice)."""

    spec: ScheduleSpec


class ListSchedules(msgspec.Struct, frozen=True, kw_only=True):
    """A page of schedules by name: those after ``after``, at most ``limit``."""

    after: Name | None = None
    limit: ListLimit = 500


class GetSchedule(msgspec.Struct, frozen=True, kw_only=True):
    name: Name
    fires: ListLimit = 20
    """How many of the newest nominal times dealt with to include."""
    upcoming: ListLimit = 5
    """How many next fire times to include."""


class PauseSchedule(msgspec.Struct, frozen=True, kw_only=True):
    name: Name
    note: Text | None = None
    """Why (shown by ``schedule list`` and ``show``)."""


class ResumeSchedule(msgspec.Struct, frozen=True, kw_only=True):
    """Fire again from now; the times that came due while paused are recorded as skipped."""

    name: Name


class DeleteSchedule(msgspec.Struct, frozen=True, kw_only=True):
    name: Name


class TriggerSchedule(msgspec.Struct, frozen=True, kw_only=True):
    """Start a run of the schedule now (its nominal time is now), outside its times."""

    name: Name


class ScheduleDetail(msgspec.Struct, frozen=True, kw_only=True):
    state: ScheduleState
    next_fires: list[float]
    """The next nominal times (UTC epoch seconds); empty when paused or ended."""
    fires: list[FireRecord] = []
    """The newest nominal times dealt with, newest first."""


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str


class Reply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Every API reply: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {...}}``."""

    ok: bool
    result: Any = None
    error: ErrorBody | None = None


API_REQUESTS: dict[tuple[str, str], type[msgspec.Struct]] = {
    ("flows", "register"): RegisterFlows,
    ("flows", "list"): ListFlows,
    ("flows", "get"): GetFlow,
    ("runs", "start"): StartRun,
    ("runs", "get"): GetRun,
    ("runs", "list"): ListRuns,
    ("runs", "cancel"): CancelRun,
    ("runs", "retry"): RetryRun,
    ("tasks", "mark"): MarkTask,
    ("tasks", "log"): GetLog,
    ("runs", "instances"): GetInstances,
    ("rejected", "list"): ListRejected,
    ("agents", "list"): ListAgents,
    ("schedules", "put"): PutSchedule,
    ("schedules", "list"): ListSchedules,
    ("schedules", "get"): GetSchedule,
    ("schedules", "pause"): PauseSchedule,
    ("schedules", "resume"): ResumeSchedule,
    ("schedules", "delete"): DeleteSchedule,
    ("schedules", "trigger"): TriggerSchedule,
    **BATCH_REQUESTS,
    **CHILD_REQUESTS,
    **LIMIT_REQUESTS,
    **STATS_REQUESTS,
    **EXPERIMENT_REQUESTS,
}

class RawReply(msgspec.Struct, frozen=True, kw_only=True):
    """A reply as a client reads it: the result left as raw JSON for a typed decode."""

    ok: bool
    result: msgspec.Raw = msgspec.Raw(b"null")
    error: ErrorBody | None = None


reply_decoder = msgspec.json.Decoder(RawReply)
