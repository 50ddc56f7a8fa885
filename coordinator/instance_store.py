"""Reads of mapped tasks' instances (``map_instances``): counted by state, a page in index order,
one by index.

A row is keyed by run, task and index (migration 10), so the instances of ``T`` are a range of
the key in index order: a page of them is read in order and stops where it ends, whatever the
number of instances; counting them by state is one pass over the range.
"""

from dataclasses import dataclass, field

import msgspec

from coordinator.database import Database
from coordinator.map_writes import named
from coordinator.store import TASK_COLS, task_from_row
from protocol.dag import INSTANCE_SEP
from protocol.records import TaskRecord
from protocol.states import TaskStatus

ROW_OVERHEAD_BYTES = 600
"""What an instance's JSON takes beyond its output, texts and history (its other fields)."""
_SIZE = ("coalesce(length(output), 0) + coalesce(length(history), 0) + "
         + " + ".join(f"coalesce(length(CAST({c} AS BLOB)), 0)"
                      for c in ("error_message", "traceback", "checkpoint", "note")))
"""Bytes of an instance's large fields, read without reading them."""


async def items_of(db: Database, run_id: str) -> dict[str, list[msgspec.Raw]]:
    """The items a run's generator tasks yielded, by task, in order."""
    out: dict[str, list[msgspec.Raw]] = {}
    for task, item in await db.fetchall(
            "SELECT task, item FROM map_items WHERE run_id = ? ORDER BY task, idx", (run_id,)):
        out.setdefault(task, []).append(msgspec.Raw(item))
    return out


@dataclass(slots=True)
class Mapped:
    """What one read found of a mapped task: its own record's state and note, its instances
    counted by state, and the names (with sizes) of a page of them, in index order."""

    status: TaskStatus
    note: str | None
    counts: dict[str, int] = field(default_factory=dict)
    page: list[tuple[int, int]] = field(default_factory=list)
    """(index, estimated bytes) of the instances of the page."""


async def survey(db: Database, run_id: str, task: str, *, counts: bool = True,
                 status: TaskStatus | None = None, after_index: int = -1,
                 limit: int = 0) -> Mapped | None:
    """The mapped task's record, its counts and a page's indexes, read together (one commit);
    None when the run has no record of the task."""
    where, args = "run_id = ? AND task = ?", [run_id, task]
    index = "idx"
    queries = [("SELECT status, note FROM task_instances WHERE run_id = ? AND task = ?",
                [run_id, task])]
    if counts:
        queries.append((f"SELECT status, count(*) FROM map_instances WHERE {where} "
                        "GROUP BY status", args))
    if limit:
        page_where = f"{where} AND {index} > ?" + (" AND status = ?" if status else "")
        page_args = [*args, after_index, *([status.value] if status else [])]
        queries.append((f"SELECT {index}, {_SIZE} FROM map_instances WHERE {page_where} "
                        f"ORDER BY {index} LIMIT ?", [*page_args, limit]))
    found = await db.fetch_together(*queries)
    if not found[0]:
        return None
    (own_status, note), *_ = found[0]
    out = Mapped(status=TaskStatus(own_status), note=note)
    if counts:
        out.counts = {s: n for s, n in found[1]}
    if limit:
        out.page = [(i, size + ROW_OVERHEAD_BYTES) for i, size in found[-1]]
    return out


async def instances(db: Database, run_id: str, task: str, indexes: list[int]) -> list[TaskRecord]:
    """The instances of these indexes that exist, in the order given."""
    if not indexes:
        return []
    names = [f"{task}{INSTANCE_SEP}{i}" for i in indexes]
    rows = await db.fetchall(
        f"SELECT {named(TASK_COLS)} FROM map_instances WHERE run_id = ? AND task = ? AND idx IN "
        f"({', '.join('?' * len(indexes))})", [run_id, task, *indexes])
    found = {r.task: r for r in map(task_from_row, rows)}
    return [found[n] for n in names if n in found]


async def one(db: Database, run_id: str, task: str, index: int) -> TaskRecord | None:
    found = await instances(db, run_id, task, [index])
    return found[0] if found else None
