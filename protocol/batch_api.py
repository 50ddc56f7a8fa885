"""The coordinator API's batch requests (``<ns>.api.batches.<verb>``) and their answers.

A batch is submitted in three steps, so that no message has to hold 100,000 items: ``create``
(its spec; the batch is ``loading``), ``add`` (a chunk of items at a time, each placed by its
sequence number, so a chunk sent twice is stored once) and ``start``.
"""

from typing import Annotated, Any

import msgspec

from protocol.batches import (
    MAX_ITEMS,
    BatchItem,
    BatchName,
    BatchRecord,
    BatchSpec,
    ItemStatus,
    MaxActive,
    Reprocess,
)
from protocol.fields import ListLimit, Name, Text, Time, Token

MAX_ITEMS_PER_CHUNK = 5_000
MAX_REASONS = 1_000
"""Most skipped items (or backfill times) one answer names with their reason."""
Seq = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
Chunk = Annotated[list[dict[str, Any]], msgspec.Meta(max_length=MAX_ITEMS_PER_CHUNK)]
BatchRef = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
"""A batch's id, or its name (the newest batch of that name)."""


class CreateBatch(msgspec.Struct, frozen=True, kw_only=True):
    spec: BatchSpec


class AddItems(msgspec.Struct, frozen=True, kw_only=True):
    """Items ``first_seq``, ``first_seq + 1``... of a loading batch."""

    batch_id: Token
    first_seq: Seq
    items: Chunk


class ItemsAdded(msgspec.Struct, kw_only=True):
    added: int
    skipped: dict[int, str] = {}
    """The items of this chunk that will not run, by sequence number, with the reason."""


class PlanItems(msgspec.Struct, frozen=True, kw_only=True):
    """A dry run: what would become of these items in a batch of ``flow`` (nothing stored)."""

    flow: Name
    reprocess: Reprocess = Reprocess.NONE
    first_seq: Seq = 0
    items: Chunk = []


class StartBatch(msgspec.Struct, frozen=True, kw_only=True):
    batch_id: Token


class ListBatches(msgspec.Struct, frozen=True, kw_only=True):
    """The newest batches first: those created before ``before`` (a batch id), at most
    ``limit``."""

    before: Token | None = None
    limit: ListLimit = 50
    flow: Name | None = None


class GetBatch(msgspec.Struct, frozen=True, kw_only=True):
    batch: BatchRef
    items: Annotated[int, msgspec.Meta(ge=0, le=1_000)] = 0
    """How many of its items to include, from ``after_seq``."""
    after_seq: Annotated[int, msgspec.Meta(ge=-1, le=MAX_ITEMS)] = -1
    status: ItemStatus | None = None
    """Only items in this status."""


class BatchDetail(msgspec.Struct, kw_only=True):
    batch: BatchRecord
    items: list[BatchItem] = []
    """In sequence order."""


class PauseBatch(msgspec.Struct, frozen=True, kw_only=True):
    batch: BatchRef
    note: Text | None = None


class ResumeBatch(msgspec.Struct, frozen=True, kw_only=True):
    batch: BatchRef


class CancelBatch(msgspec.Struct, frozen=True, kw_only=True):
    """No item starts any more; the batch's active runs are cancelled."""

    batch: BatchRef


class BackfillSchedule(msgspec.Struct, frozen=True, kw_only=True):
    """A batch of a schedule's nominal times from ``start`` to ``end`` (both included, ``end``
    no later than now), skipping the times that already have a run."""

    schedule: Name
    start: Time
    end: Time
    max_active: MaxActive = 1
    name: BatchName | None = None
    dry_run: bool = False


class BackfillPlan(msgspec.Struct, kw_only=True):
    """What a backfill started (or, as a dry run, would start)."""

    batch: BatchRecord | None
    times: int
    skipped: dict[str, str] = {}
    """Nominal times (ISO 8601, UTC) that will not run, with the reason (at most 1,000)."""


BATCH_REQUESTS: dict[tuple[str, str], type[msgspec.Struct]] = {
    ("batches", "create"): CreateBatch,
    ("batches", "add"): AddItems,
    ("batches", "plan"): PlanItems,
    ("batches", "start"): StartBatch,
    ("batches", "list"): ListBatches,
    ("batches", "get"): GetBatch,
    ("batches", "pause"): PauseBatch,
    ("batches", "resume"): ResumeBatch,
    ("batches", "cancel"): CancelBatch,
    ("batches", "backfill"): BackfillSchedule,
}
