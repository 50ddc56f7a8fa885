"""The Client's batch calls (``flowforge batch ...``, ``schedule backfill``)."""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NATS

from protocol import batch_api
from protocol.batch_api import MAX_ITEMS_PER_CHUNK, MAX_REASONS, BackfillPlan, BatchDetail, ItemsAdded
from protocol.batches import (
    BATCH_FINAL,
    DEFAULT_MAX_ACTIVE,
    BatchRecord,
    BatchSpec,
    ItemStatus,
    Reprocess,
    item_key,
)
from protocol.errors import InvalidParams
from protocol.messages import encoder
from protocol.subjects import Subjects

T = TypeVar("T")
CHUNK_MARGIN_BYTES = 16 * 1024


class BatchSubmission(msgspec.Struct, kw_only=True):
    """What ``submit_batch`` did (or, as a dry run, would do)."""

    batch: BatchRecord | None
    """None for a dry run."""
    total: int
    to_run: int
    skipped: dict[int, str] = {}
    """The items that do not run, by their place (from 0), with the reason (the coordinator
    gives at most 1,000 reasons per chunk of items; ``total - to_run`` counts them all)."""


class BatchCalls:
    """Mixed into ``Client``, which provides ``request``, ``nc`` and ``subjects``."""

    subjects: Subjects

    async def request(self, body: msgspec.Struct, result_type: type[T]) -> T:
        raise NotImplementedError

    @property
    def nc(self) -> NATS:
        raise NotImplementedError

    async def submit_batch(
        self, flow: str, params_list: Iterable[dict[str, Any]], *, name: str | None = None,
        reprocess: Reprocess | str = Reprocess.NONE, max_active: int = DEFAULT_MAX_ACTIVE,
        dry_run: bool = False,
    ) -> BatchSubmission:
        """One run of ``flow`` per parameter set, at most ``max_active`` at once. Items whose
        parameters already ran are skipped per ``reprocess`` (``none``: any that succeeded or
        failed; ``failed``: those that succeeded; ``all``: none)."""
        items = list(params_list)
        reprocess = Reprocess(reprocess)
        if dry_run:
            return await self._plan(flow, items, reprocess)
        spec = BatchSpec(flow=flow, name=name, reprocess=reprocess, max_active=max_active)
        record = await self.request(batch_api.CreateBatch(spec=spec), BatchRecord)
        skipped: dict[int, str] = {}
        to_run = 0
        try:
            for first, chunk in self._chunks(items):
                got = await self.request(batch_api.AddItems(
                    batch_id=record.batch_id, first_seq=first, items=chunk), ItemsAdded)
                skipped.update(got.skipped)
                to_run += got.added
            record = await self.request(batch_api.StartBatch(batch_id=record.batch_id),
                                        BatchRecord)
        except BaseException:
            await asyncio.shield(self._drop(record.batch_id))
            raise
        return BatchSubmission(batch=record, total=len(items), to_run=to_run, skipped=skipped)

    async def _drop(self, batch_id: str) -> None:
        with contextlib.suppress(Exception):  # the error that brought us here is the one to tell
            await self.request(batch_api.CancelBatch(batch=batch_id), BatchRecord)

    async def _plan(self, flow: str, items: list[dict[str, Any]],
                    reprocess: Reprocess) -> BatchSubmission:
        """A dry run: the coordinator judges each chunk; a repeat of an item in an earlier
        chunk is found here (the coordinator sees one chunk at a time)."""
        first_of: dict[str, int] = {}
        skipped: dict[int, str] = {}
        for first, chunk in self._chunks(items, MAX_REASONS):  # every skip is named
            got = await self.request(batch_api.PlanItems(
                flow=flow, reprocess=reprocess, first_seq=first, items=chunk), ItemsAdded)
            skipped.update(got.skipped)
            for seq, params in enumerate(chunk, start=first):
                try:
                    key = item_key(flow, params)
                except ValueError as exc:
                    raise InvalidParams(f"item {seq} (line {seq + 1}): {exc}") from None
                if first_of.setdefault(key, seq) != seq:
                    skipped[seq] = f"same parameters as item {first_of[key]}"
        return BatchSubmission(batch=None, total=len(items), to_run=len(items) - len(skipped),
                               skipped=dict(sorted(skipped.items())))

    def _chunks(self, items: list[dict[str, Any]], most: int = MAX_ITEMS_PER_CHUNK
                ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """Runs of items that fit in one request (at most ``most`` items, and within the
        server's max_payload)."""
        budget = max(64 * 1024, self.nc.max_payload - CHUNK_MARGIN_BYTES)
        start, size = 0, 0
        for i, params in enumerate(items):
            n = len(encoder.encode(params)) + 1
            if i > start and (i - start >= most or size + n > budget):
                yield start, items[start:i]
                start, size = i, 0
            size += n
        if start < len(items) or not items:
            yield start, items[start:]

    async def batches(self, limit: int = 50, flow: str | None = None,
                      before: str | None = None) -> list[BatchRecord]:
        """The newest batches first, with their items counted by status."""
        return await self.request(batch_api.ListBatches(limit=limit, flow=flow, before=before),
                                  list[BatchRecord])

    async def batch(self, ref: str, items: int = 0, after_seq: int = -1,
                    status: ItemStatus | str | None = None) -> BatchDetail:
        """A batch by id or name, with a page of its items (``items`` of them after
        ``after_seq``, in order; only those in ``status`` if given)."""
        return await self.request(batch_api.GetBatch(
            batch=ref, items=items, after_seq=after_seq,
            status=ItemStatus(status) if status is not None else None), BatchDetail)

    async def pause_batch(self, ref: str, note: str | None = None) -> BatchRecord:
        return await self.request(batch_api.PauseBatch(batch=ref, note=note), BatchRecord)

    async def resume_batch(self, ref: str) -> BatchRecord:
        return await self.request(batch_api.ResumeBatch(batch=ref), BatchRecord)

    async def cancel_batch(self, ref: str) -> BatchRecord:
        """No more of its items start; its active runs are cancelled."""
        return await self.request(batch_api.CancelBatch(batch=ref), BatchRecord)

    async def backfill(self, schedule: str, start: datetime | float, end: datetime | float, *,
                       max_active: int = 1, name: str | None = None,
                       dry_run: bool = False) -> BackfillPlan:
        """A batch of the schedule's nominal times from ``start`` to ``end`` (both included),
        skipping those that already have a run."""
        return await self.request(batch_api.BackfillSchedule(
            schedule=schedule, start=_epoch(start), end=_epoch(end), max_active=max_active,
            name=name, dry_run=dry_run), BackfillPlan)

    async def wait_batch(
        self, ref: str, timeout_s: float | None = None,
        on_record: Callable[[BatchRecord], Awaitable[None]] | None = None,
    ) -> BatchRecord:
        """The batch once it is done or cancelled (its events, and a look every second);
        ``on_record`` sees the record at each look."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        changed = asyncio.Event()
        record = (await self.batch(ref)).batch

        async def on_event(msg: Any) -> None:
            changed.set()

        sub = await self.nc.subscribe(self.subjects.batch_event(record.batch_id), cb=on_event)
        try:
            while True:
                record = (await self.batch(record.batch_id)).batch
                if record.state in BATCH_FINAL:
                    return record
                if on_record is not None:
                    await on_record(record)
                left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if left <= 0:
                    raise TimeoutError(f"batch {record.batch_id} is still {record.state}")
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), left)
        finally:
            await sub.unsubscribe()


def _epoch(value: datetime | float) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)
