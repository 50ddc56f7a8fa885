"""Child tasks in SQLite: each spawn written once (``child_specs``), each child's state as it
changes (``child_tasks``, the columns of a task with its parent and spawn number in place of
its name), and the reads of them: a restart's, a waiting parent's results, a listing."""

from typing import Any

import aiosqlite
import msgspec

from coordinator.child_state import OPEN, Child, Ended
from coordinator.database import Database
from protocol.children import (
    CHILD_SEP,
    ChildInfo,
    ChildList,
    ChildOutcome,
    ChildResults,
    ChildSpawn,
    GetChildResults,
    ListChildren,
    split_child,
)
from protocol.records import TaskRecord
from protocol.states import TaskStatus

OPEN_STATES = tuple(sorted(s.value for s in OPEN))
MAX_COUNTED = 2_000
"""Counts of at most this many (parent, state) pairs go in one listing (the first parents in
name order): an answer must fit in one message, however many parents a run has."""
_MAX_SEQ = (1 << 63) - 1
_spawn_dec = msgspec.json.Decoder(ChildSpawn)
_STATUS = {s.value: s for s in TaskStatus}


def child_columns(task_cols: str) -> str:
    """The columns of ``child_tasks``: a task's, with parent and seq in place of its name."""
    return task_cols.replace(", task,", ", parent, seq,", 1)


def named(task_cols: str) -> str:
    """What to select from ``child_tasks`` to read rows as task records (``train/3``)."""
    return task_cols.replace(", task,", f", parent || '{CHILD_SEP}' || seq,", 1)


def child_row(task_row: tuple[Any, ...], name: str) -> tuple[Any, ...]:
    parent, seq = split_child(name) or (name, 0)
    return (task_row[0], parent, seq, *task_row[2:])


class ChildWrites:
    """A batch's child rows: new spawns, and the state of the children that changed."""

    def __init__(self, specs: list[tuple[str, str, int, str, bytes, int]],
                 rows: list[tuple[Any, ...]], task_cols: str,
                 reset: list[tuple[str, str]] | None = None) -> None:
        self.specs, self.rows = specs, rows
        self.columns = child_columns(task_cols)
        self.reset = [(run_id, f"{task}~*") for run_id, task in reset or []]
        """Mapped tasks expanded again: their instances' children go first (a task name has
        no glob characters)."""

    def __bool__(self) -> bool:
        return bool(self.specs or self.rows or self.reset)

    async def write(self, conn: aiosqlite.Connection) -> None:
        for table in ("child_tasks", "child_specs") if self.reset else ():
            await conn.executemany(
                f"DELETE FROM {table} WHERE run_id = ? AND parent GLOB ?", self.reset)
        if self.specs:
            await conn.executemany(
                "INSERT OR IGNORE INTO child_specs (run_id, parent, seq, function, spawn, ident) "
                "VALUES (?, ?, ?, ?, ?, ?)", self.specs)
        if self.rows:
            marks = ", ".join("?" * len(self.columns.split(",")))
            await conn.executemany(
                f"INSERT OR REPLACE INTO child_tasks ({self.columns}) VALUES ({marks})", self.rows)


async def stored_children(db: Database, run_id: str, task_cols: str,
                          from_row: Any) -> tuple[list[Child], list[tuple[str, Ended]]]:
    """A run's children as the coordinator keeps them in memory: the open ones whole, the
    ended ones slim."""
    marks = ", ".join("?" * len(OPEN_STATES))
    cols = named(task_cols)  # the join is USING the key: its columns read unqualified
    open_rows, ended_rows = await db.fetch_together(
        (f"SELECT {cols}, s.spawn, s.ident FROM child_tasks t JOIN child_specs s "
         f"USING (run_id, parent, seq) WHERE t.run_id = ? AND t.status IN ({marks})",
         (run_id, *OPEN_STATES)),
        (f"SELECT t.parent || '{CHILD_SEP}' || t.seq, s.ident, t.status, t.attempt "
         f"FROM child_tasks t JOIN child_specs s USING (run_id, parent, seq) "
         f"WHERE t.run_id = ? AND t.status NOT IN ({marks})", (run_id, *OPEN_STATES)))
    opened = []
    for row in open_rows:
        rec: TaskRecord = from_row(row[:-2])
        opened.append(Child(_spawn_dec.decode(row[-2]), rec, row[-1]))
    ended = [(name, Ended(ident, _STATUS[status], attempt))
             for name, ident, status, attempt in ended_rows]
    return opened, ended


async def results(db: Database, req: GetChildResults, budget: int) -> ChildResults:
    """A parent's children's outcomes in spawn order, as many as fit in ``budget`` bytes."""
    rows = await db.fetchall(
        "SELECT t.seq, t.status, s.function, t.output, t.error_type, t.error_message "
        "FROM child_tasks t JOIN child_specs s USING (run_id, parent, seq) "
        "WHERE t.run_id = ? AND t.parent = ? AND t.seq > ? AND t.seq <= ? "
        "ORDER BY t.seq LIMIT 1001", (req.run_id, req.parent, req.after, req.upto))
    out: list[ChildOutcome] = []
    used = 0
    for seq, status, function, output, error_type, message in rows[:1000]:
        size = len(output or b"") + len(message or "") + 200
        if out and used + size > budget:
            return ChildResults(outcomes=out, more=True)
        used += size
        out.append(ChildOutcome(seq=seq, status=_STATUS[status], function=function,
                                output=msgspec.Raw(output or b"null"), error_type=error_type,
                                message=message))
    return ChildResults(outcomes=out, more=len(rows) > 1000)


async def listing(db: Database, req: ListChildren, budget: int) -> ChildList:
    """Children of a run (of one parent, or all; in one state, or any) in name order, and
    counts per parent."""
    where, args = "t.run_id = ?", [req.run_id]
    if req.parent is not None:
        where += " AND t.parent = ?"
        args.append(req.parent)
    after_parent, _, after_seq = req.after.rpartition(CHILD_SEP)
    page_where, args_page = where, list(args)
    if req.status is not None:  # the counts stay those of every state
        page_where += " AND t.status = ?"
        args_page.append(req.status.value)
    if req.after:
        after_where, after_args = _after(req.parent, after_parent, int(after_seq or -1))
        page_where += after_where
        args_page += after_args
    rows, counts = await db.fetch_together(
        ("SELECT t.parent, t.seq, s.function, t.status, t.attempt, t.agent_id, t.started_at, "
         "t.finished_at, t.output, t.error_type, t.error_message, t.note FROM child_tasks t "
         f"JOIN child_specs s USING (run_id, parent, seq) WHERE {page_where} "
         "ORDER BY t.parent, t.seq LIMIT ?", (*args_page, req.limit + 1)),
        (f"SELECT t.parent, t.status, count(*) FROM child_tasks t WHERE {where} "
         f"GROUP BY t.parent, t.status ORDER BY t.parent LIMIT {MAX_COUNTED}", tuple(args)))
    out: list[ChildInfo] = []
    used = sum(len(r[0]) + 40 for r in counts)
    for row in rows[:req.limit]:
        info = ChildInfo(parent=row[0], seq=row[1], function=row[2], status=_STATUS[row[3]],
                         attempt=row[4], agent_id=row[5], started_at=row[6], finished_at=row[7],
                         output=msgspec.Raw(row[8] or b"null"), error_type=row[9],
                         error_message=row[10], note=row[11])
        used += len(row[8] or b"") + len(row[10] or "") + 300
        if out and used > budget:
            return ChildList(children=out, counts=_counts(counts), more=True)
        out.append(info)
    return ChildList(children=out, counts=_counts(counts), more=len(rows) > req.limit)


def _after(parent: str | None, after_parent: str, after_seq: int) -> tuple[str, list[Any]]:
    """Where a page starts, as a range of the key: past the cursor's ``(parent, seq)``, or
    within one parent past the cursor's spawn number (a cursor of another parent is before
    its first child or after its last). An ``OR`` of the two columns read every child of the
    run before the cursor, at each page."""
    if parent is None:
        return " AND (t.parent, t.seq) > (?, ?)", [after_parent, after_seq]
    if parent != after_parent:
        after_seq = -1 if parent > after_parent else _MAX_SEQ
    return " AND t.seq > ?", [after_seq]


def _counts(rows: list[Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for parent, status, n in rows:
        out.setdefault(parent, {})[status] = n
    return out
