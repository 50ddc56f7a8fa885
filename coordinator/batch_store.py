"""Batches in SQLite: a row per batch, a row per item (waiting items stay here, not in memory,
until they start). Writes go in the writer's batch transaction (``BatchWrites``); reads go
through the read connection."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import msgspec

from coordinator.database import Database
from protocol.batches import BatchItem, BatchRecord, BatchState, ItemStatus, Prior

_enc = msgspec.json.Encoder()
_record_dec = msgspec.json.Decoder(BatchRecord)
_params_dec = msgspec.json.Decoder(dict[str, Any])
_ITEM_COLS = "batch_id, seq, status, params, run_id, reason, scheduled_for"
_FINAL_STATES = (BatchState.CANCELLED.value, BatchState.DONE.value)
_IN_CHUNK = 500
"""Keys per ``IN (...)`` query."""


@dataclass(slots=True)
class NewItem:
    seq: int
    key: str
    params: bytes
    """Canonical JSON."""
    status: ItemStatus
    reason: str | None = None
    scheduled_for: float | None = None


@dataclass(slots=True)
class BatchWrites:
    """What a writer batch changes about batches (written in its transaction)."""

    records: dict[str, BatchRecord] = field(default_factory=dict)
    items: list[tuple[str, NewItem]] = field(default_factory=list)
    updates: dict[tuple[str, int], tuple[ItemStatus, str | None, str | None]] = field(
        default_factory=dict)
    """(batch, seq) -> (status, run id, reason)."""
    run_statuses: dict[str, ItemStatus] = field(default_factory=dict)
    """Items follow their runs: run id -> its status now."""
    cancelled: set[str] = field(default_factory=set)
    """Batches whose waiting items are cancelled."""
    reconcile: set[str] = field(default_factory=set)
    """Batches whose active items take their runs' status from the runs table (at start: a
    run may have ended in a commit that did not follow its item, the rebuild of the runs)."""
    started_keys: set[str] = field(default_factory=set)
    """Item keys started in this writer batch (not written: not committed yet, so a read
    cannot see them)."""

    def __bool__(self) -> bool:
        return bool(self.records or self.items or self.updates or self.run_statuses
                    or self.cancelled or self.reconcile)

    async def write(self, conn: aiosqlite.Connection) -> None:
        if self.records:
            await conn.executemany(
                "INSERT OR REPLACE INTO batches (batch_id, name, flow, state, record, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)", [_record_row(r) for r in self.records.values()])
        if self.items:
            await conn.executemany(
                "INSERT OR IGNORE INTO batch_items (batch_id, seq, item_key, params, "
                "scheduled_for, status, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(b, i.seq, i.key, i.params, i.scheduled_for, i.status.value, i.reason)
                 for b, i in self.items])
        if self.updates:
            await conn.executemany(
                "UPDATE batch_items SET status = ?, run_id = ?, reason = ? "
                "WHERE batch_id = ? AND seq = ?",
                [(s.value, run, why, b, seq) for (b, seq), (s, run, why) in self.updates.items()])
        if self.run_statuses:
            await conn.executemany(
                "UPDATE batch_items SET status = ? WHERE run_id = ? AND status != ?",
                [(s.value, run, s.value) for run, s in self.run_statuses.items()])
        if self.cancelled:
            await conn.executemany(
                "UPDATE batch_items SET status = ?, reason = ? WHERE batch_id = ? AND status = ?",
                [(ItemStatus.CANCELLED.value, "the batch was cancelled before it started",
                  b, ItemStatus.WAITING.value) for b in self.cancelled])
        if self.reconcile:  # by state: the primary key would read every item of the batch
            await conn.executemany(
                "UPDATE batch_items INDEXED BY batch_items_by_status SET status = (SELECT "
                "r.status FROM runs r WHERE r.run_id = batch_items.run_id) "
                "WHERE batch_id = ? AND status IN (?, ?) AND run_id IS NOT NULL",
                [(b, ItemStatus.PENDING.value, ItemStatus.RUNNING.value) for b in self.reconcile])


def _record_row(r: BatchRecord) -> tuple[Any, ...]:
    stored = msgspec.structs.replace(r, counts={})
    return (r.batch_id, r.spec.name, r.spec.flow, r.state.value, _enc.encode(stored),
            r.created_at)


async def open_batches(db: Database) -> list[BatchRecord]:
    """Batches not cancelled or done, oldest first."""
    rows = await db.fetchall("SELECT record FROM batches WHERE state NOT IN (?, ?) "
                             "ORDER BY created_at", _FINAL_STATES)
    return [_record_dec.decode(r[0]) for r in rows]


async def find(db: Database, ref: str) -> BatchRecord | None:
    """A batch by id, or the newest batch of that name."""
    row = await db.fetchone("SELECT record FROM batches WHERE batch_id = ?", (ref,))
    if row is None:
        row = await db.fetchone("SELECT record FROM batches WHERE name = ? "
                                "ORDER BY created_at DESC LIMIT 1", (ref,))
    return None if row is None else _record_dec.decode(row[0])


async def newest(db: Database, before: str | None, limit: int,
                 flow: str | None = None) -> list[BatchRecord]:
    where, args = ["1"], []
    if before is not None:  # ids are ordered by time, and unlike times never equal
        where.append("batch_id < ?")
        args.append(before)
    if flow is not None:
        where.append("flow = ?")
        args.append(flow)
    rows = await db.fetchall(f"SELECT record FROM batches WHERE {' AND '.join(where)} "
                             "ORDER BY batch_id DESC LIMIT ?", (*args, limit))
    return [_record_dec.decode(r[0]) for r in rows]


async def counts(db: Database, batch_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """Items by status of each batch."""
    ids = list(batch_ids)
    out: dict[str, dict[str, int]] = {b: {} for b in ids}
    for part in _chunks(ids):
        rows = await db.fetchall(
            f"SELECT batch_id, status, count(*) FROM batch_items WHERE batch_id IN "
            f"({_marks(len(part))}) GROUP BY batch_id, status", part)
        for batch_id, status, n in rows:
            out[batch_id][status] = n
    return out


async def items(db: Database, batch_id: str, after_seq: int, limit: int,
                status: ItemStatus | None = None, budget: int = 1 << 20) -> list[BatchItem]:
    """Items in order after ``after_seq``: at most ``limit``, and (after the first) no more
    than fit in ``budget`` bytes of parameters — measured before any is read."""
    where, args = "batch_id = ? AND seq > ?", [batch_id, after_seq]
    if status is not None:
        where, args = where + " AND status = ?", [*args, status.value]
    sizes = await db.fetchall(f"SELECT seq, length(params) FROM batch_items WHERE {where} "
                              "ORDER BY seq LIMIT ?", (*args, limit))
    taken = 0
    for _, size in sizes:
        budget -= size + 256
        if budget < 0 and taken:
            break
        taken += 1
    if not taken:
        return []
    rows = await db.fetchall(f"SELECT {_ITEM_COLS} FROM batch_items WHERE {where} "
                             "ORDER BY seq LIMIT ?", (*args, taken))
    return [BatchItem(batch_id=r[0], seq=r[1], status=ItemStatus(r[2]),
                      params=_params_dec.decode(r[3]), run_id=r[4], reason=r[5],
                      scheduled_for=r[6]) for r in rows]


async def priors(db: Database, keys: Iterable[str], batch_id: str) -> dict[str, list[Prior]]:
    """What decides each key: its items in batch ``batch_id``, and its last run (in any
    batch). Both are index lookups, whatever the number of earlier batches or of the batch's
    items (without ``INDEXED BY``, having no ANALYZE statistics, SQLite read the first through
    the primary key's ``batch_id``: every item of the batch, at each fill and chunk added)."""
    out: dict[str, list[Prior]] = {}
    for part in _chunks(list(set(keys))):
        marks = _marks(len(part))
        own, ran = await db.fetch_together(
            (f"SELECT item_key, batch_id, seq, status, run_id FROM batch_items INDEXED BY "
             f"batch_items_by_key WHERE item_key IN ({marks}) AND batch_id = ?",
             (*part, batch_id)),
            (f"SELECT item_key, batch_id, seq, status, max(run_id) FROM batch_items "
             f"WHERE item_key IN ({marks}) AND run_id IS NOT NULL GROUP BY item_key", part))
        for key, b, seq, status, run_id in [*own, *ran]:
            out.setdefault(key, []).append(Prior(b, seq, ItemStatus(status), run_id))
    return out


async def runs_by_keys(db: Database, flow: str, keys: Iterable[str]) -> dict[str, tuple[str, str]]:
    """The runs of ``flow`` with these idempotency keys: key -> (run id, status)."""
    out: dict[str, tuple[str, str]] = {}
    for part in _chunks(list(keys)):
        rows = await db.fetchall(
            f"SELECT idempotency_key, run_id, status FROM runs WHERE flow = ? AND "
            f"idempotency_key IN ({_marks(len(part))})", (flow, *part))
        out.update({key: (run_id, status) for key, run_id, status in rows})
    return out


async def waiting(db: Database, batch_id: str, from_seq: int,
                  limit: int) -> list[tuple[int, str, dict[str, Any], float | None]]:
    """The next waiting items of a batch from ``from_seq``: (seq, key, params, nominal)."""
    rows = await db.fetchall(
        "SELECT seq, item_key, params, scheduled_for FROM batch_items WHERE batch_id = ? AND "
        "status = ? AND seq >= ? ORDER BY seq LIMIT ?",
        (batch_id, ItemStatus.WAITING.value, from_seq, limit))
    return [(r[0], r[1], _params_dec.decode(r[2]), r[3]) for r in rows]


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(values), _IN_CHUNK):
        yield values[i:i + _IN_CHUNK]


def _marks(n: int) -> str:
    return ", ".join("?" * n)
