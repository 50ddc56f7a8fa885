"""BatchRunner: starts the waiting items of each batch, never more than its max_active runs
at once, inside the writer's batches.

Items wait in SQLite. Starting one is one writer batch: its run is created and the item is
marked with the run's id in the same transaction, so after a kill -9 either both happened or
neither did, and a restart counts the batch's active runs before it starts any more. Only the
active runs of a batch and a cursor (the next item to look at) are kept in memory.
"""

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from coordinator import batch_store
from coordinator.store import Store
from coordinator.writer import Batch, Call, Writer
from protocol.api import StartRun
from protocol.batches import (
    BatchRecord,
    BatchState,
    ItemStatus,
    Prior,
    Reprocess,
    decide,
    item_key,
    item_status,
)
from protocol.errors import FlowForgeError, InvalidState
from protocol.records import RunRecord
from protocol.states import RUN_FINAL

log = logging.getLogger("flowforge.coordinator.batches")

FILL_MAX = 256
"""Items looked at in one writer batch; a batch with more room goes on in the next one."""
ANNOUNCE_EVERY_S = 0.5
"""Batch events (with counts) at most this often per batch."""


def item_run_key(record: BatchRecord, seq: int, key: str) -> str:
    """A backfill's item runs under its schedule's key for the nominal time (so the schedule
    and the backfill can never both run it); other items under their place in the batch."""
    return key if record.spec.schedule is not None else f"batch:{record.batch_id}:{seq}"


class BatchRunner:
    """``await start()`` after the coordinator restored its runs; ``stop()`` at shutdown."""

    def __init__(self, writer: Writer, store: Store) -> None:
        self.writer = writer
        self.store = store
        self.records: dict[str, BatchRecord] = {}
        """The batches not cancelled or done."""
        self.active: dict[str, set[str]] = {}
        self.cursor: dict[str, int] = {}
        self._filling: set[str] = set()
        self._again: set[str] = set()
        self._touched: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = False
        writer.run_listeners.append(self._runs_changed)
        writer.before_commit.append(self._follow_runs)

    async def start(self) -> None:
        """After the runs were rebuilt and the reports that piled up applied (this runner
        already follows their commits): the open batches, their active runs, and their items
        brought in line with their runs (the rebuild commits outside the writer)."""
        for record in await batch_store.open_batches(self.store.database):
            self._keep(record)
        for run in await self.store.active_runs():
            if run.batch in self.active:
                self.active[run.batch].add(run.run_id)
        if self.records:
            await self.writer.process([Call(self._reconcile, asyncio.get_running_loop().create_future())])
        for batch_id, record in self.records.items():
            if record.state is BatchState.ACTIVE:
                self.fill_later(batch_id)
        self._later(self._announce_loop())

    async def _reconcile(self, now: float, batch: Batch) -> None:
        batch.batches.reconcile.update(self.records)

    def stop(self) -> None:
        self._stopped = True
        for task in self._tasks:
            task.cancel()

    def _keep(self, record: BatchRecord) -> None:
        self.records[record.batch_id] = record
        self.active.setdefault(record.batch_id, set())
        self.cursor.setdefault(record.batch_id, 0)

    def put(self, record: BatchRecord, now: float, batch: Batch) -> BatchRecord:
        """A new or changed batch, written with ``batch``."""
        record.updated_at = now
        batch.batches.records[record.batch_id] = record
        self._touched.add(record.batch_id)
        if record.state in (BatchState.CANCELLED, BatchState.DONE):
            self.records.pop(record.batch_id, None)
            self.active.pop(record.batch_id, None)
            self.cursor.pop(record.batch_id, None)
        else:
            self._keep(record)
        return record

    # -- state changes (inside a writer batch) --------------------------------------------------

    def pause(self, record: BatchRecord, note: str | None, now: float, batch: Batch) -> BatchRecord:
        if record.state not in (BatchState.ACTIVE, BatchState.PAUSED):
            raise InvalidState(f"batch {record.batch_id} is {record.state}; only an active "
                               "batch can be paused")
        record.state, record.note = BatchState.PAUSED, note
        return self.put(record, now, batch)

    def resume(self, record: BatchRecord, now: float, batch: Batch) -> BatchRecord:
        if record.state not in (BatchState.ACTIVE, BatchState.PAUSED):
            raise InvalidState(f"batch {record.batch_id} is {record.state}; only a paused "
                               "batch can be resumed")
        record.state, record.note = BatchState.ACTIVE, None
        self.fill_later(record.batch_id)
        return self.put(record, now, batch)

    def begin(self, record: BatchRecord, now: float, batch: Batch) -> BatchRecord:
        """A loaded batch starts (with nothing in it, it is done at once)."""
        if record.state is not BatchState.LOADING:
            raise InvalidState(f"batch {record.batch_id} is {record.state}, not loading")
        record.state = BatchState.ACTIVE
        self.fill_later(record.batch_id)
        return self.put(record, now, batch)

    def cancel(self, record: BatchRecord, now: float, batch: Batch) -> BatchRecord:
        if record.state in (BatchState.CANCELLED, BatchState.DONE):
            raise InvalidState(f"batch {record.batch_id} is already {record.state}")
        for run_id in sorted(self.active.get(record.batch_id, ())):
            self.writer.scheduler.cancel(run_id, now, batch.changes)
        record.state, record.finished_at = BatchState.CANCELLED, now
        batch.batches.cancelled.add(record.batch_id)
        return self.put(record, now, batch)

    def check_reopen(self, run: Any) -> None:
        """A finished run of an open batch becomes active again (retry, mark) only if the
        batch has room for it: max_active holds for runs made active by hand too."""
        record = self.records.get(run.batch or "")
        if record is not None and len(self.active[record.batch_id]) >= record.spec.max_active:
            raise InvalidState(
                f"run {run.run_id} is an item of batch {record.batch_id}, which has its "
                f"{record.spec.max_active} runs going (max_active); retry it when one ends, or "
                "pause the batch first")

    @staticmethod
    def claim_reopened(run: RunRecord, batch: Batch, reopened: bool) -> None:
        """A batch's run made active again (``reopened``) takes its parameters for this writer
        batch: no batch starts them in it too (items are judged from committed rows, where the
        run is still failed). Before that (not ``reopened``), it is refused if a batch started
        them in it already."""
        if run.batch is None or run.schedule is not None:  # a backfill's run: a schedule key
            return
        key, started = item_key(run.flow, run.params), batch.batches.started_keys
        if reopened:
            started.add(key)
        elif key in started:
            raise InvalidState(f"a batch started run {run.run_id}'s parameters at this moment; "
                               "retry it when that run has ended, if it still needs to")

    # -- starting items -------------------------------------------------------------------------

    def fill_later(self, batch_id: str) -> None:
        """Start the batch's next items (in a writer batch of their own) while it has room."""
        if self._stopped:
            return
        if batch_id in self._filling:
            self._again.add(batch_id)
            return
        self._filling.add(batch_id)
        self._later(self._fill_loop(batch_id))

    async def _fill_loop(self, batch_id: str) -> None:
        try:
            while True:
                self._again.discard(batch_id)
                more = await self.writer.submit(
                    lambda now, batch: self.fill(batch_id, now, batch))
                if not more and batch_id not in self._again:
                    return
        except Exception:
            log.exception("starting the items of batch %s failed; trying again in a second",
                          batch_id)
            self._filling.discard(batch_id)
            asyncio.get_running_loop().call_later(1.0, self.fill_later, batch_id)
        finally:
            self._filling.discard(batch_id)

    async def fill(self, batch_id: str, now: float, batch: Batch) -> bool:
        """Start waiting items up to the batch's room; True when it has room for more now."""
        record = self.records.get(batch_id)
        if record is None or record.state is not BatchState.ACTIVE:
            return False
        active = self.active[batch_id]
        want = min(record.spec.max_active - len(active), FILL_MAX)
        if want <= 0:
            return False
        db = self.store.database
        rows = await batch_store.waiting(db, batch_id, self.cursor[batch_id], want)
        priors = {} if record.spec.schedule is not None else await batch_store.priors(
            db, [key for _, key, _, _ in rows], batch_id)
        for seq, key, params, nominal in rows:
            self.cursor[batch_id] = seq + 1
            others = [p for p in priors.get(key, ()) if p.batch_id != batch_id or (
                p.seq < seq and p.status is not ItemStatus.SKIPPED)]  # a repeat added at once
            await self._start_item(record, seq, key, params, nominal, others, now, batch)
        if len(rows) < want:  # nothing waits past the cursor
            if not active:
                record.state, record.finished_at = BatchState.DONE, now
                self.put(record, now, batch)
            return False
        return len(active) < record.spec.max_active

    async def _start_item(self, record: BatchRecord, seq: int, key: str, params: dict[str, Any],
                          nominal: float | None, others: list[Prior], now: float,
                          batch: Batch) -> None:
        writes, batch_id = batch.batches, record.batch_id
        reason = decide(record.spec.reprocess, batch_id, others)
        if reason is None and key in writes.started_keys and record.spec.reprocess is not Reprocess.ALL:
            reason = "started at the same moment by another batch or a retry"
        if reason is not None:
            writes.updates[(batch_id, seq)] = (ItemStatus.SKIPPED, None, reason)
            return
        request = StartRun(flow=record.spec.flow, params=params, source="batch",
                           idempotency_key=item_run_key(record, seq, key))
        try:
            run = await self.writer.start_from(request, now, batch, batch_id=batch_id,
                                               schedule=record.spec.schedule,
                                               scheduled_for=nominal)
        except Exception as exc:  # the flow changed under the batch, say
            if not isinstance(exc, FlowForgeError):
                log.exception("item %d of batch %s could not start", seq, batch_id)
            why = exc.message if isinstance(exc, FlowForgeError) else f"{type(exc).__name__}: {exc}"
            writes.updates[(batch_id, seq)] = (ItemStatus.FAILED, None,
                                               f"could not start: {why}"[:500])
            return
        if run.batch != batch_id:  # its key has a run already (a schedule's, say)
            writes.updates[(batch_id, seq)] = (
                ItemStatus.SKIPPED, None, f"already run: run {run.run_id} ({run.status})")
            return
        writes.updates[(batch_id, seq)] = (item_status(run.status), run.run_id, None)
        writes.started_keys.add(key)
        if run.status not in RUN_FINAL:
            self.active[batch_id].add(run.run_id)

    # -- runs ending ----------------------------------------------------------------------------

    @staticmethod
    def _follow_runs(now: float, batch: Batch) -> None:
        """Before a batch commits: each item takes its run's status, in the same transaction."""
        for run in batch.changes.runs.values():
            if run.batch is not None:
                batch.batches.run_statuses[run.run_id] = item_status(run.status)

    def _runs_changed(self, runs: Iterable[Any]) -> None:
        """After a commit: a batch whose run ended has room for its next item."""
        if self._stopped:
            return
        for run in runs:
            active = self.active.get(run.batch or "")
            if active is None:
                continue
            self._touched.add(run.batch)
            if run.status in RUN_FINAL:
                active.discard(run.run_id)
                self.fill_later(run.batch)
            else:  # started, or retried after it had ended
                active.add(run.run_id)

    # -- events -------------------------------------------------------------------------------

    async def _announce_loop(self) -> None:
        """Each batch that changed, with its counts, at most every ANNOUNCE_EVERY_S."""
        while not self._stopped:
            await asyncio.sleep(ANNOUNCE_EVERY_S)
            touched, self._touched = self._touched, set()
            if not touched:
                continue
            try:
                await self.announce(touched)
            except Exception:
                log.exception("batch events failed")

    async def announce(self, batch_ids: Iterable[str]) -> None:
        db = self.store.database
        ids = sorted(batch_ids)
        counts = await batch_store.counts(db, ids)
        for batch_id in ids:
            record = await batch_store.find(db, batch_id)
            if record is not None:
                record.counts = counts.get(batch_id, {})
                await self.writer.publisher.batch_event(record)

    def _later(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
