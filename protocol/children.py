"""Child tasks: what a running task asks the coordinator to spawn and wait for.

A child is a task instance of the same run, named after its parent and its spawn number:
``train/0``, ``train/1``, a child of a child ``train/0/3``, of a mapped instance
``score~7/0``. The parent's next attempt spawns in the same order, so it finds the same
children (succeeded ones keep their outputs; failed ones run again).
"""

from typing import Annotated, Any

import msgspec

from protocol.fields import Attempt, FunctionRef, Name, Text, Token
from protocol.limits import MAX_ID_CHARS, NAME_PATTERN
from protocol.states import TaskStatus

CHILD_SEP = "/"
MAX_SEQ = 9_999_999
"""Spawn numbers run from 0 to this (a parent spawns at most ten million children)."""
MAX_SPAWN_AT_ONCE = 1_000
"""Children one spawn request may carry (the SDK sends more in several)."""
MAX_RANGES = 1_000
DEFAULT_MAX_DEPTH = 5
"""How deep children may nest by default: a flow task's child is at depth 1."""
DEFAULT_MAX_CHILDREN = 100_000
"""How many children one run may have by default."""

Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
TaskPath = Annotated[str, msgspec.Meta(
    pattern=NAME_PATTERN[:-1] + r"(~[0-9]{1,7})?(/[0-9]{1,7}){0,32}$", max_length=MAX_ID_CHARS)]
"""A task, a mapped instance or a child: whatever may have children."""
AfterChild = Annotated[str, msgspec.Meta(
    pattern="^(" + NAME_PATTERN[1:-1] + r"(~[0-9]{1,7})?(/[0-9]{1,7}){1,32})?$",
    max_length=MAX_ID_CHARS)]
"""A child's name (``train/3``) to list the children after, or nothing to list from the first."""
Retries = Annotated[int, msgspec.Meta(ge=0, le=100)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=366 * 86400)]


def child_name(parent: str, seq: int) -> str:
    return f"{parent}{CHILD_SEP}{seq}"


def split_child(name: str) -> tuple[str, int] | None:
    """``(parent, seq)`` of a child's name; None for any other name."""
    parent, sep, seq = name.rpartition(CHILD_SEP)
    if not sep or not seq.isdigit():
        return None
    return parent, int(seq)


def depth_of(name: str) -> int:
    """How deep a task is nested: 0 for a flow task or a mapped instance, 1 for its child."""
    return name.count(CHILD_SEP)


def root_of(name: str) -> str:
    """The flow task (or mapped instance) a child descends from."""
    return name.split(CHILD_SEP, 1)[0]


class ChildSpawn(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One child: its number among its parent's spawns, its function and how to run it."""

    seq: Seq
    function: FunctionRef
    queue: Name = "default"
    params: dict[str, Any] = {}
    retries: Retries = 0
    retry_delay_s: Seconds = 0.0
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=366 * 86400)] | None = None


class SpawnChildren(msgspec.Struct, frozen=True, kw_only=True):
    """``children.spawn``: start these children of a running task (those already spawned by
    an earlier attempt are found again, not repeated)."""

    run_id: Token
    parent: TaskPath
    attempt: Attempt
    agent_id: Token
    children: Annotated[list[ChildSpawn], msgspec.Meta(min_length=1,
                                                       max_length=MAX_SPAWN_AT_ONCE)]


class Spawned(msgspec.Struct, frozen=True, kw_only=True):
    started: int
    """Children queued now (new, or failed before and run again)."""
    found: int
    """Children an earlier attempt spawned that are running or succeeded."""
    total: int
    """Children the run has now."""


SeqRange = tuple[Seq, Seq]
"""First and last spawn number, both included."""


class AwaitChildren(msgspec.Struct, frozen=True, kw_only=True):
    """``children.wait``: how many of these children are still open. While some are, the
    coordinator wakes the agent (``<ns>.wake.<agent_id>``) when none is — or, with
    ``fail_fast``, when one failed for good."""

    run_id: Token
    parent: TaskPath
    attempt: Attempt
    agent_id: Token
    ranges: Annotated[list[SeqRange], msgspec.Meta(min_length=1, max_length=MAX_RANGES)]
    fail_fast: bool = True


class ChildrenState(msgspec.Struct, frozen=True, kw_only=True):
    open: int
    """Of the children asked about, how many are queued, running or waiting for a retry."""
    failed: int
    """How many failed for good (or were cancelled)."""


class GetChildResults(msgspec.Struct, frozen=True, kw_only=True):
    """``children.results``: the outcomes of a parent's children in spawn order, from
    ``after + 1`` to ``upto``, as many as fit in one answer."""

    run_id: Token
    parent: TaskPath
    after: Annotated[int, msgspec.Meta(ge=-1, le=MAX_SEQ)] = -1
    upto: Seq = MAX_SEQ


class ChildOutcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    seq: int
    status: TaskStatus
    function: str
    output: msgspec.Raw = msgspec.Raw(b"null")
    error_type: str | None = None
    message: Text | None = None


class ChildResults(msgspec.Struct, frozen=True, kw_only=True):
    outcomes: list[ChildOutcome]
    more: bool = False
    """Outcomes up to ``upto`` did not fit: ask again after the last one here."""


class ListChildren(msgspec.Struct, frozen=True, kw_only=True):
    """``children.list``: the children of a run (of one parent, or of every task), each with
    its state, in name order after ``after`` (only those in ``status`` if given); with how
    many there are in each state (of every state, whatever ``status``)."""

    run_id: Token
    parent: TaskPath | None = None
    after: AfterChild = ""
    limit: Annotated[int, msgspec.Meta(ge=0, le=1_000)] = 100
    status: TaskStatus | None = None


class ChildInfo(msgspec.Struct, frozen=True, kw_only=True):
    parent: str
    seq: int
    function: str
    status: TaskStatus
    attempt: int
    agent_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    output: msgspec.Raw = msgspec.Raw(b"null")
    error_type: str | None = None
    error_message: str | None = None
    note: str | None = None


class ChildList(msgspec.Struct, frozen=True, kw_only=True):
    children: list[ChildInfo]
    counts: dict[str, dict[str, int]]
    """Per parent: how many of its children are in each state."""
    more: bool = False


class Wake(msgspec.Struct, frozen=True, kw_only=True):
    """Coordinator -> agent on ``<ns>.wake.<agent_id>``: a parent's wait may be over."""

    run_id: str
    parent: str


CHILD_REQUESTS: dict[tuple[str, str], type[msgspec.Struct]] = {
    ("children", "spawn"): SpawnChildren,
    ("children", "wait"): AwaitChildren,
    ("children", "results"): GetChildResults,
    ("children", "list"): ListChildren,
}

wake_decoder = msgspec.json.Decoder(Wake)
