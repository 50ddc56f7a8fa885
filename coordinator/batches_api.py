"""The coordinator API's batch requests: create, add items, start; list, show, pause, resume,
cancel; a dry run (plan); a schedule's backfill."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from coordinator import batch_store
from coordinator.batch_runner import BatchRunner
from coordinator.batch_store import NewItem
from coordinator.flows import FlowCache
from coordinator.graph import CompiledFlow
from coordinator.intake import check_run_params
from coordinator.schedule_clock import ScheduleClock, run_key
from coordinator.writer import Batch, new_run_id
from flowforge.firetimes import nominal_times
from protocol.batch_api import (
    MAX_REASONS,
    AddItems,
    BackfillPlan,
    BackfillSchedule,
    BatchDetail,
    CancelBatch,
    CreateBatch,
    GetBatch,
    ItemsAdded,
    ListBatches,
    PauseBatch,
    PlanItems,
    ResumeBatch,
    StartBatch,
)
from protocol.batches import (
    MAX_ITEMS,
    BatchRecord,
    BatchSpec,
    BatchState,
    ItemStatus,
    Reprocess,
    as_item,
    canonical_json,
    decide,
)
from protocol.dag import check_params
from protocol.errors import (
    BadRequest,
    FlowForgeError,
    InvalidParams,
    InvalidState,
    TooLarge,
    UnknownBatch,
    UnknownSchedule,
)

T = TypeVar("T")
MAX_LOADING = 100
"""Batches created and not yet started, at once: each is kept in memory until it starts."""
MAX_BACKFILL_TIMES = 100_000


class BatchesApi:
    def __init__(self, runner: BatchRunner, flows: FlowCache, clock: ScheduleClock,
                 max_reply_bytes: int = 1 << 20) -> None:
        self.runner = runner
        self.max_reply_bytes = max_reply_bytes
        """An answer must fit in one NATS message: a page of items stops before that."""
        self.flows = flows
        self.clock = clock
        self.db = runner.store.database
        self._backfilling = asyncio.Lock()

    def handlers(self) -> dict[tuple[str, str], Callable[[Any], Awaitable[Any]]]:
        return {("batches", "create"): self.create, ("batches", "add"): self.add,
                ("batches", "plan"): self.plan, ("batches", "start"): self.start,
                ("batches", "list"): self.list_newest, ("batches", "get"): self.get,
                ("batches", "pause"): self.pause, ("batches", "resume"): self.resume,
                ("batches", "cancel"): self.cancel, ("batches", "backfill"): self.backfill}

    async def create(self, req: CreateBatch) -> BatchRecord:
        if req.spec.schedule is not None:
            raise BadRequest("a batch of a schedule's times is made by `schedule backfill`")
        loading = sum(r.state is BatchState.LOADING for r in self.runner.records.values())
        if loading >= MAX_LOADING:
            raise InvalidState(f"{loading} batches are loading (created, not started); cancel "
                               "the abandoned ones (`flowforge batch list` shows them)")
        await self.flows.current(req.spec.flow)
        return await self._write(
            lambda now, batch: self._new(req.spec, now, batch))

    async def _write(self, fn: Callable[[float, Batch], T]) -> T:
        """``fn(now, batch)`` in the next writer batch (committed when this returns)."""
        async def act(now: float, batch: Batch) -> T:
            return fn(now, batch)

        return await self.runner.writer.submit(act)

    def _new(self, spec: BatchSpec, now: float, batch: Batch) -> BatchRecord:
        record = BatchRecord(batch_id=new_run_id(), spec=spec, created_at=now)
        return self.runner.put(record, now, batch)

    async def add(self, req: AddItems) -> ItemsAdded:
        """Check a chunk of items (every one, before any is stored) and store them with what
        will become of them: waiting, or skipped with the reason."""
        record = await self._check_loading(req.batch_id)
        flow = await self.flows.current(record.spec.flow)
        if req.first_seq + len(req.items) > MAX_ITEMS:
            raise TooLarge(f"a batch holds at most {MAX_ITEMS:,} items")
        new = await self._judge(record.spec.flow, flow, record.spec.reprocess, record.batch_id,
                                req.first_seq, req.items)

        async def act(now: float, batch: Batch) -> ItemsAdded:
            record = self._loading(req.batch_id)
            batch.batches.items.extend((record.batch_id, item) for item in new)
            record.total = max(record.total, req.first_seq + len(new))
            self.runner.put(record, now, batch)
            return _added(new)

        return await self.runner.writer.submit(act)

    async def plan(self, req: PlanItems) -> ItemsAdded:
        """What ``add`` would answer, for a batch not created (nothing is stored)."""
        flow = await self.flows.current(req.flow)
        return _added(await self._judge(req.flow, flow, req.reprocess, "", req.first_seq,
                                        req.items))

    async def _judge(self, flow_name: str, flow: CompiledFlow, reprocess: Reprocess,
                     batch_id: str, first_seq: int, items: list[dict[str, Any]]) -> list[NewItem]:
        new: list[NewItem] = []
        seen: dict[str, int] = {}
        for seq, params in enumerate(items, start=first_seq):
            try:
                params, blob, key = as_item(flow_name, params)  # 3.0 is 3, as the key says
                check_run_params(params)
                check_params(flow_name, flow.params, params, allow_unknown=flow.accepts_any_param,
                             known=flow.param_names)
            except (FlowForgeError, ValueError) as exc:
                why = exc.message if isinstance(exc, FlowForgeError) else str(exc)
                raise InvalidParams(f"item {seq} (line {seq + 1}): {why}") from None
            new.append(NewItem(seq=seq, key=key, params=blob, status=ItemStatus.WAITING))
            if key in seen:
                new[-1].status, new[-1].reason = (ItemStatus.SKIPPED,
                                                  f"same parameters as item {seen[key]}")
            seen.setdefault(key, seq)
        priors = await batch_store.priors(self.db, seen, batch_id)
        for item in new:
            reason = item.reason or decide(reprocess, batch_id, [
                p for p in priors.get(item.key, ()) if p.seq != item.seq or p.batch_id != batch_id])
            if reason is not None:
                item.status, item.reason = ItemStatus.SKIPPED, reason
        return new

    async def start(self, req: StartBatch) -> BatchRecord:
        await self._check_loading(req.batch_id)
        return await self._write(
            lambda now, batch: self.runner.begin(self._loading(req.batch_id), now, batch))

    def _loading(self, batch_id: str, record: BatchRecord | None = None) -> BatchRecord:
        """The batch, which must be loading (``record``: as stored, when it is not open)."""
        record = self.runner.records.get(batch_id, record)
        if record is None:
            raise UnknownBatch(batch_id)
        if record.state is not BatchState.LOADING:
            raise InvalidState(f"batch {batch_id} is {record.state}: items are added only "
                               "before it starts")
        return record

    async def _check_loading(self, batch_id: str) -> BatchRecord:
        if batch_id in self.runner.records:
            return self._loading(batch_id)
        return self._loading(batch_id, await self._find(batch_id))

    # -- reading ------------------------------------------------------------------------------

    async def list_newest(self, req: ListBatches) -> list[BatchRecord]:
        records = await batch_store.newest(self.db, req.before, req.limit, req.flow)
        counts = await batch_store.counts(self.db, [r.batch_id for r in records])
        for record in records:
            record.counts = counts[record.batch_id]
        return records

    async def get(self, req: GetBatch) -> BatchDetail:
        record = await self._find(req.batch)
        record.counts = (await batch_store.counts(self.db, [record.batch_id]))[record.batch_id]
        items = await batch_store.items(
            self.db, record.batch_id, req.after_seq, req.items, req.status,
            self.max_reply_bytes - 64 * 1024) if req.items else []
        return BatchDetail(batch=record, items=items)

    async def _find(self, ref: str) -> BatchRecord:
        record = await batch_store.find(self.db, ref)
        if record is None:
            raise UnknownBatch(ref)
        return record

    # -- changing -----------------------------------------------------------------------------

    async def pause(self, req: PauseBatch) -> BatchRecord:
        record = await self._find(req.batch)
        return await self._write(
            lambda now, batch: self.runner.pause(self._open(record), req.note, now, batch))

    async def resume(self, req: ResumeBatch) -> BatchRecord:
        record = await self._find(req.batch)
        return await self._write(
            lambda now, batch: self.runner.resume(self._open(record), now, batch))

    async def cancel(self, req: CancelBatch) -> BatchRecord:
        record = await self._find(req.batch)
        return await self._write(
            lambda now, batch: self.runner.cancel(self._open(record), now, batch))

    def _open(self, record: BatchRecord) -> BatchRecord:
        """The runner's record of a batch (inside a writer batch: as it is now)."""
        live = self.runner.records.get(record.batch_id)
        if live is None:
            raise InvalidState(f"batch {record.batch_id} is already {record.state}")
        return live

    # -- backfill -----------------------------------------------------------------------------

    async def backfill(self, req: BackfillSchedule) -> BackfillPlan:
        """The schedule's nominal times from start to end as a batch; a time that already has
        a run (fired, or backfilled before) is skipped."""
        state = self.clock.states.get(req.schedule)
        if state is None:
            raise UnknownSchedule(req.schedule)
        spec = state.spec
        async with self._backfilling:  # one at a time, off the event loop: a long cron range
            times = await asyncio.to_thread(_times, spec, req.start, req.end)  # takes a while
        keys = [run_key(spec.name, t) for t in times]
        ran = await batch_store.runs_by_keys(self.db, spec.flow, keys)
        skipped = {t: f"already run: run {ran[k][0]} ({ran[k][1]})"
                   for t, k in zip(times, keys, strict=True) if k in ran}
        shown = dict(list((_iso(t), why) for t, why in skipped.items())[:MAX_REASONS])
        if req.dry_run:
            return BackfillPlan(batch=None, times=len(times), skipped=shown)
        params = canonical_json(spec.params)
        items = [NewItem(seq=i, key=k, params=params, scheduled_for=t,
                         status=ItemStatus.SKIPPED if t in skipped else ItemStatus.WAITING,
                         reason=skipped.get(t)) for i, (t, k) in enumerate(zip(times, keys,
                                                                              strict=True))]
        batch_spec = BatchSpec(flow=spec.flow, schedule=spec.name, max_active=req.max_active,
                               name=req.name or f"backfill {spec.name}")

        async def act(now: float, batch: Batch) -> BatchRecord:
            record = self._new(batch_spec, now, batch)
            record.total = len(items)
            batch.batches.items.extend((record.batch_id, item) for item in items)
            return self.runner.begin(record, now, batch)

        return BackfillPlan(batch=await self.runner.writer.submit(act), times=len(times),
                            skipped=shown)


def _times(spec: Any, start: float, end: float) -> list[float]:
    if end < start:
        raise BadRequest("the backfill's end is before its start")
    end = min(end, datetime.now(UTC).timestamp())
    if spec.every_s is not None and (end - start) / spec.every_s > MAX_BACKFILL_TIMES + 1:
        raise TooLarge(f"the backfill has more than {MAX_BACKFILL_TIMES:,} nominal times; "
                       "backfill a shorter range at a time")
    out: list[float] = []
    for t in nominal_times(spec, start - 1e-6):
        if t > end:
            break
        out.append(t)
        if len(out) > MAX_BACKFILL_TIMES:
            raise TooLarge(f"the backfill has more than {MAX_BACKFILL_TIMES:,} nominal times; "
                           "backfill a shorter range at a time")
    return out


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _added(items: list[NewItem]) -> ItemsAdded:
    skipped = {i.seq: i.reason or "" for i in items if i.status is ItemStatus.SKIPPED}
    return ItemsAdded(added=len(items) - len(skipped),
                      skipped=dict(list(skipped.items())[:MAX_REASONS]))
