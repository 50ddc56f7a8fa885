"""Batches: one flow over many parameter sets. Each item is keyed by the flow and the
canonical JSON of its parameters, so the same parameters are the same item in any batch and
an item that already succeeded is not run again. Pure: msgspec and the stdlib only."""

import hashlib
import math
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any, NamedTuple

import msgspec

from protocol.fields import Name, Time
from protocol.states import RunStatus

_canonical = msgspec.json.Encoder(order="deterministic")


class Reprocess(StrEnum):
    """Which items run again when their parameters were run before (in any batch)."""

    NONE = "none"
    """Items never run, or whose last run was cancelled: a second submit runs nothing new."""
    FAILED = "failed"
    """Also items whose last run failed."""
    ALL = "all"
    """Every item, even one that succeeded before."""


def canonical(value: Any) -> Any:
    """The value as JSON sees it: a float with an integral value is that integer (1.0 is 1),
    so parameters written either way are the same item; dicts and lists all the way down."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("parameters must be finite numbers (no NaN or infinity)")
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def canonical_json(params: dict[str, Any]) -> bytes:
    """Sorted keys, no spaces, integral floats as integers."""
    return _canonical.encode(canonical(params))


def item_key(flow: str, params: dict[str, Any]) -> str:
    """The key of one item: the same for equal parameters (as JSON values) of one flow."""
    return _key(flow, canonical_json(params))


def as_item(flow: str, params: dict[str, Any]) -> tuple[dict[str, Any], bytes, str]:
    """The parameters made canonical once: as they run, as canonical JSON, and the key."""
    value = canonical(params)
    blob = _canonical.encode(value)
    return value, blob, _key(flow, blob)


def _key(flow: str, params_json: bytes) -> str:
    digest = hashlib.sha256(flow.encode() + b"\0" + params_json).hexdigest()
    return f"item:{digest[:40]}"


MAX_ITEMS = 1_000_000
"""Most items in one batch."""
DEFAULT_MAX_ACTIVE = 100
"""Runs of one batch active at once when the batch does not say: the others wait in SQLite."""
MAX_ACTIVE_LIMIT = 10_000
BatchName = Annotated[str, msgspec.Meta(min_length=1, max_length=100,
                                        pattern=r"^[^\x00-\x1f\x7f]+$")]
MaxActive = Annotated[int, msgspec.Meta(ge=1, le=MAX_ACTIVE_LIMIT)]


class BatchState(StrEnum):
    LOADING = "loading"
    """Its items are arriving; nothing runs until it is started."""
    ACTIVE = "active"
    PAUSED = "paused"
    """No new run starts; the runs going on finish."""
    CANCELLED = "cancelled"
    DONE = "done"
    """Every item ran or was skipped."""


BATCH_FINAL = frozenset({BatchState.CANCELLED, BatchState.DONE})


class ItemStatus(StrEnum):
    """An item's status: waiting or skipped, then its run's status once it has one."""

    WAITING = "waiting"
    SKIPPED = "skipped"
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    """Its run was cancelled, or the batch was cancelled before it started."""


ITEM_ACTIVE = frozenset({ItemStatus.PENDING, ItemStatus.RUNNING})
ITEM_DONE = (ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.CANCELLED, ItemStatus.SKIPPED)


def item_status(run: RunStatus) -> ItemStatus:
    return ItemStatus(run.value)


class BatchSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a batch is asked to be (``batch submit``, ``schedule backfill``)."""

    flow: Name
    name: BatchName | None = None
    reprocess: Reprocess = Reprocess.NONE
    max_active: MaxActive = DEFAULT_MAX_ACTIVE
    schedule: Name | None = None
    """A backfill: the schedule whose nominal times the items are."""


class BatchRecord(msgspec.Struct, kw_only=True):
    """A batch as stored, with its items counted by status when it is shown."""

    batch_id: str
    spec: BatchSpec
    state: BatchState = BatchState.LOADING
    created_at: Time = 0.0
    updated_at: Time = 0.0
    finished_at: Time | None = None
    note: str | None = None
    total: int = 0
    counts: dict[str, int] = {}
    """Items by status (``ItemStatus``); filled in when read, not stored."""

    def done(self) -> int:
        """Items that will not change any more (ended or skipped)."""
        return sum(self.counts.get(s, 0) for s in ITEM_DONE)


class BatchItem(msgspec.Struct, kw_only=True):
    batch_id: str
    seq: int
    """Its place in the batch, from 0 (its line in the file)."""
    status: ItemStatus
    params: dict[str, Any]
    run_id: str | None = None
    reason: str | None = None
    """Why it was skipped (or could not start)."""
    scheduled_for: float | None = None
    """A backfill's nominal time."""


class Prior(NamedTuple):
    """An item with the same key, in this batch or another."""

    batch_id: str
    seq: int
    status: ItemStatus
    run_id: str | None


def decide(reprocess: Reprocess, batch_id: str, priors: Iterable[Prior]) -> str | None:
    """Why an item is skipped given the items with its key (None: it runs). The same
    parameters twice in one batch run once; otherwise what counts is the last run."""
    ran: list[Prior] = []
    for p in priors:
        if p.batch_id == batch_id:
            return f"same parameters as item {p.seq}"
        if p.run_id is not None:
            ran.append(p)
    if not ran or reprocess is Reprocess.ALL:
        return None
    last = max(ran, key=lambda p: p.run_id or "")  # run ids are ordered by time
    where = f"in batch {last.batch_id} (run {last.run_id})"
    if last.status in ITEM_ACTIVE:
        return f"running {where}"
    if last.status is ItemStatus.SUCCEEDED:
        return f"succeeded {where}"
    if last.status is ItemStatus.FAILED and reprocess is Reprocess.NONE:
        return f"failed {where}; --reprocess failed runs it again"
    return None
