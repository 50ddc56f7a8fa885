"""Persistence in SQLite (aiosqlite, WAL): one transaction per batch of changes on the
writer's connection; reads on a second connection, from committed data only."""

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import msgspec

from coordinator.changes import Changes
from coordinator.child_store import ChildWrites
from coordinator.database import Database, transaction
from coordinator.map_writes import DoneInstance, Instances, Items, named
from coordinator.schema import MIGRATIONS
from coordinator.task_rows import TASK_COLS, split_rows, task_from_row
from protocol.dag import INSTANCE_SEP
from protocol.errors import FlowExists
from protocol.flows import FlowSpec
from protocol.limits import (
    MAX_LIST_LIMIT,
    MAX_LOG_KEPT_CHARS,
    MAX_REJECTED_KEPT,
    MAX_REJECTED_RAW_BYTES,
    MAX_TEXT_CHARS,
)
from protocol.records import (
    FlowSummary,
    RejectedMessage,
    RunCounts,
    RunDetail,
    RunRecord,
    TaskRecord,
)
from protocol.states import RUN_FINAL, RunStatus, TaskStatus

MAX_SUBJECT_KEPT = 512


class SideWrites(Protocol):
    """Changes to other tables (schedules, batches) that go in a batch's transaction."""

    def __bool__(self) -> bool: ...

    async def write(self, conn: aiosqlite.Connection) -> None: ...

_enc = msgspec.json.Encoder()
_spec_dec = msgspec.json.Decoder(FlowSpec)
_counts_dec = msgspec.json.Decoder(RunCounts)
_params_dec = msgspec.json.Decoder(dict[str, Any])
_only_dec = msgspec.json.Decoder(list[str])

_RUN_COLS = (
    "run_id, flow, version, status, params, created_at, started_at, finished_at, "
    "idempotency_key, source, counts, only_tasks, schedule, scheduled_for, batch, priority, note"
)

PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000")
_TASKS_OF = f"SELECT {TASK_COLS} FROM task_instances WHERE run_id = ? ORDER BY task"

_RUN_UPDATE = "UPDATE runs SET status = ?, started_at = ?, finished_at = ?, counts = ? WHERE run_id = ?"
"""What changes on a stored run: an update touches only the indexes that hold its status,
where a replace rewrites all of them."""


async def _write_batch(
    db: aiosqlite.Connection, new_runs: list[tuple[Any, ...]], changed_runs: list[tuple[Any, ...]],
    tasks: list[tuple[Any, ...]], logs: list[tuple[Any, ...]],
    rejected: list[tuple[str, str, str, bytes]], side: Sequence[SideWrites] = (),
) -> list[int]:
    """One transaction: runs, task instances, log tails, rejected messages (their new ids).

    ``changed_runs`` are (row, update) pairs of stored runs; a run the update misses is
    written whole. Each statement is a hand-over to the connection's thread, so each table
    is written by one ``executemany``, whatever the size of the batch."""
    async with transaction(db):
        if changed_runs:
            cur = await db.executemany(_RUN_UPDATE, [update for _, update in changed_runs])
            if cur.rowcount != len(changed_runs):  # not stored after all: write them whole
                new_runs = new_runs + [row for row, _ in changed_runs]
        if new_runs:
            await db.executemany(
                f"INSERT OR REPLACE INTO runs ({_RUN_COLS}) VALUES ({_marks(17)})", new_runs)
        if tasks:
            await db.executemany(
                f"INSERT OR REPLACE INTO task_instances ({TASK_COLS}) VALUES ({_marks(22)})",
                tasks)
        if logs:
            await db.executemany(
                "INSERT INTO task_logs (run_id, task, log) VALUES (?, ?, substr(?, ?)) "
                "ON CONFLICT (run_id, task) DO UPDATE SET log = substr(log || excluded.log, ?)",
                logs)
        for writes in side:
            if writes:
                await writes.write(db)
        return await _insert_rejected(db, rejected) if rejected else []


async def _insert_rejected(
    db: aiosqlite.Connection, rejected: list[tuple[str, str, str, bytes]]
) -> list[int]:
    """The rejected rows and their ids, in order: the newest ids are this batch's (there is
    one writer), and the table keeps only the newest rows, so a flood of bad messages
    cannot fill the disk."""
    now = time.time()
    await db.executemany(
        "INSERT INTO rejected (subject, code, reason, raw, received_at) VALUES (?, ?, ?, ?, ?)",
        [(subject[:MAX_SUBJECT_KEPT], code, reason[:MAX_TEXT_CHARS], _kept_raw(raw), now)
         for subject, code, reason, raw in rejected])
    rows = await db.execute_fetchall("SELECT id FROM rejected ORDER BY id DESC LIMIT ?",
                                     (len(rejected),))
    ids = sorted(row[0] for row in rows)
    await db.execute("DELETE FROM rejected WHERE id <= ?", (ids[-1] - MAX_REJECTED_KEPT,))
    return ids


async def _migrate(db: aiosqlite.Connection) -> None:
    """The migrations not applied yet, each in its own transaction with its number."""
    rows = await db.execute_fetchall("PRAGMA user_version")
    current = next(iter(rows))[0]
    for number, script in enumerate(MIGRATIONS, start=1):
        if number > current:
            await db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")


async def _register_flow(
    db: aiosqlite.Connection, spec: FlowSpec, version: str, blob: bytes, replace: bool, now: float,
) -> tuple[str, bool]:
    rows = list(await db.execute_fetchall("SELECT version FROM flows WHERE name = ?", (spec.name,)))
    if rows and rows[0][0] == version:
        return version, False
    if rows and not replace:
        raise FlowExists(
            f"flow {spec.name!r} is already registered with version {rows[0][0]}; "
            "pass clear_existing_flow_in_db=True (or --replace) to replace it"
        )
    async with transaction(db):
        await db.execute("INSERT OR IGNORE INTO flow_versions (flow, version, spec, created_at) "
                         "VALUES (?, ?, ?, ?)", (spec.name, version, blob, now))
        await db.execute(
            "INSERT INTO flows (name, version, display_name, registered_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "version = excluded.version, display_name = excluded.display_name, "
            "updated_at = excluded.updated_at",
            (spec.name, version, spec.display_name, now, now),
        )
    return version, True


def _kept_raw(raw: bytes) -> bytes:
    """The start of a refused message, and how much was cut (a 7.9 MB message was kept
    whole, and then listing refused messages failed: its answer was over max_payload)."""
    if len(raw) <= MAX_REJECTED_RAW_BYTES:
        return raw
    return raw[:MAX_REJECTED_RAW_BYTES] + f"…({len(raw):,} bytes, cut)".encode()


_RUN_STATUS = {s.value: s for s in RunStatus}
"""Enum lookups by value without Enum.__call__ (a tenth of the cost, on every row read)."""


def _run_row(r: RunRecord) -> tuple[Any, ...]:
    return (
        r.run_id, r.flow, r.version, r.status.value, _enc.encode(r.params), r.created_at,
        r.started_at, r.finished_at, r.idempotency_key, r.source, _enc.encode(r.counts),
        None if r.only is None else _enc.encode(r.only), r.schedule, r.scheduled_for, r.batch,
        r.priority, r.note,
    )


def _run_update(r: RunRecord) -> tuple[Any, ...]:
    return (r.status.value, r.started_at, r.finished_at, _enc.encode(r.counts), r.run_id)


def _run_from_row(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        run_id=row[0], flow=row[1], version=row[2], status=_RUN_STATUS[row[3]],
        params=_params_dec.decode(row[4]), created_at=row[5], started_at=row[6],
        finished_at=row[7], idempotency_key=row[8], source=row[9],
        counts=_counts_dec.decode(row[10]),
        only=None if row[11] is None else _only_dec.decode(row[11]),
        schedule=row[12], scheduled_for=row[13], batch=row[14], priority=row[15], note=row[16],
    )


class Store:
    """The coordinator's SQLite file. Only this module writes SQL."""

    def __init__(self, db: Database, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(cls, path: Path | str) -> "Store":
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await Database.open(path, PRAGMAS)
        try:
            await _migrate(db.writer)
        except BaseException:
            await db.close()
            raise
        return cls(db, path)

    @property
    def database(self) -> Database:
        """For the readers of other tables kept in this file (``coordinator.schedule_store``)."""
        return self._db

    async def close(self) -> None:
        await self._db.close()

    # -- flows -----------------------------------------------------------------------

    async def register_flow(self, spec: FlowSpec, replace: bool) -> tuple[str, bool]:
        """Store a definition; returns (version, changed). Raises FlowExists when refused.

        Like ``commit``, called only by the writer: one transaction at a time."""
        return await _register_flow(self._db.writer, spec, spec.version(), _enc.encode(spec),
                                    replace, time.time())

    async def get_flow(self, name: str, version: str | None = None) -> tuple[FlowSpec, str, float] | None:
        if version is None:
            sql = ("SELECT v.spec, v.version, f.updated_at FROM flows f JOIN flow_versions v "
                   "ON v.flow = f.name AND v.version = f.version WHERE f.name = ?")
            args: tuple[Any, ...] = (name,)
        else:
            sql = "SELECT spec, version, created_at FROM flow_versions WHERE flow = ? AND version = ?"
            args = (name, version)
        row = await self._db.fetchone(sql, args)
        return None if row is None else (_spec_dec.decode(row[0]), row[1], row[2])

    async def list_flows(self) -> list[FlowSummary]:
        sql = (
            "SELECT f.name, f.version, f.display_name, f.updated_at, v.spec, "
            "(SELECT run_id || ' ' || status FROM runs r WHERE r.flow = f.name "
            " ORDER BY created_at DESC LIMIT 1) "
            "FROM flows f JOIN flow_versions v ON v.flow = f.name AND v.version = f.version "
            "ORDER BY f.name"
        )
        out = []
        for name, version, display, at, spec_blob, last in await self._db.fetchall(sql):
            spec = _spec_dec.decode(spec_blob)
            run_id, status = last.split(" ") if last else (None, None)
            out.append(FlowSummary(
                name=name, version=version, display_name=display, tasks=len(spec.tasks),
                queues=sorted(spec.queues()), registered_at=at, last_run_id=run_id,
                last_run_status=RunStatus(status) if status else None,
            ))
        return out

    # -- runs --------------------------------------------------------------------------

    async def commit(
        self, ch: Changes, rejected: Iterable[tuple[str, str, str, bytes]] = (),
        logs: dict[tuple[str, str], str] | None = None,
        side: Sequence[SideWrites] = (),
    ) -> list[int]:
        """Write one batch in one transaction; returns the ids of the rejected rows.

        Called only by the coordinator's single writer, on the write connection: readers,
        on their own connection, see the batch once it is committed, whole."""
        logs = logs or {}
        new = set(ch.new_runs)
        new_runs = [_run_row(r) for r in ch.runs.values() if r.run_id in new]
        changed = [(_run_row(r), _run_update(r)) for r in ch.runs.values() if r.run_id not in new]
        tasks, instances, children = split_rows(ch.tasks.values())
        log_rows = [(run_id, task, text, -MAX_LOG_KEPT_CHARS, -MAX_LOG_KEPT_CHARS)
                    for (run_id, task), text in logs.items()]
        return await _write_batch(self._db.writer, new_runs, changed, tasks, log_rows,
                                  list(rejected), [*side, Instances(instances, TASK_COLS,
                                                             ch.instances_reset),
                                                   Items(ch.items_reset, ch.items),
                                                   ChildWrites(ch.child_specs, children,
                                                               TASK_COLS, ch.instances_reset)])

    async def get_run(self, run_id: str) -> RunDetail | None:
        """The run and its tasks, read together (never from two different commits)."""
        runs, task_rows = await self._db.fetch_together(
            (f"SELECT {_RUN_COLS} FROM runs WHERE run_id = ?", (run_id,)), (_TASKS_OF, (run_id,)))
        if not runs:
            return None
        return RunDetail(run=_run_from_row(runs[0]), tasks=[task_from_row(r) for r in task_rows])

    async def instances_of(self, run_id: str) -> list["TaskRecord | DoneInstance"]:
        """The stored instances of a run's mapped tasks, for a restart or a retry: those that
        succeeded without their history and texts (their output and state is what counts, and
        a million of them would otherwise take gigabytes)."""
        done, rest = await self._db.fetch_together(
            (f"SELECT task || '{INSTANCE_SEP}' || idx, attempt, output FROM map_instances "
             "WHERE run_id = ? AND status = ?", (run_id, TaskStatus.SUCCEEDED.value)),
            (f"SELECT {named(TASK_COLS)} FROM map_instances WHERE run_id = ? AND status != ?",
             (run_id, TaskStatus.SUCCEEDED.value)))
        return [*(DoneInstance(task, attempt, msgspec.Raw(output)) for task, attempt, output
                  in done), *(task_from_row(r) for r in rest)]

    async def tasks_of(self, run_id: str) -> list[TaskRecord]:
        return [task_from_row(r) for r in await self._db.fetchall(_TASKS_OF, (run_id,))]

    async def run_flow(self, run_id: str) -> tuple[str, str] | None:
        """The flow and version of a run, or None when there is no such run."""
        row = await self._db.fetchone("SELECT flow, version FROM runs WHERE run_id = ?", (run_id,))
        return None if row is None else (row[0], row[1])

    async def task_log(self, run_id: str, task: str) -> str:
        row = await self._db.fetchone(
            "SELECT log FROM task_logs WHERE run_id = ? AND task = ?", (run_id, task))
        return row[0] if row else ""

    async def last_outputs(
        self, flow: str, tasks: Iterable[str]
    ) -> dict[str, tuple[msgspec.Raw, str]]:
        """The newest successful output of each task in any run of ``flow``, with its run."""
        out: dict[str, tuple[msgspec.Raw, str]] = {}
        for task in tasks:
            row = await self._db.fetchone(
                "SELECT ti.output, ti.run_id FROM task_instances ti JOIN runs r "
                "ON r.run_id = ti.run_id WHERE r.flow = ? AND ti.task = ? "
                "AND ti.status = 'succeeded' ORDER BY ti.finished_at DESC LIMIT 1",
                (flow, task),
            )
            if row is not None:
                out[task] = (msgspec.Raw(row[0] or b"null"), row[1])
        return out

    async def run_by_key(self, flow: str, key: str) -> RunRecord | None:
        """The run of ``flow`` started with this idempotency key, if any (keys are per flow)."""
        row = await self._db.fetchone(
            f"SELECT {_RUN_COLS} FROM runs WHERE flow = ? AND idempotency_key = ?", (flow, key))
        return None if row is None else _run_from_row(row)

    async def list_runs(
        self, flow: str | None = None, status: RunStatus | None = None, limit: int = 50
    ) -> list[RunRecord]:
        where, args = [], []
        if flow:
            where.append("flow = ?")
            args.append(flow)
        if status:
            where.append("status = ?")
            args.append(status.value)
        sql = f"SELECT {_RUN_COLS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(max(1, min(limit, MAX_LIST_LIMIT)))
        return [_run_from_row(r) for r in await self._db.fetchall(sql, args)]

    async def active_runs(self) -> list[RunRecord]:
        """Runs not finished, oldest first: the active states looked up in ``runs_by_status``
        (``NOT IN`` the final ones read every run ever stored, at each start)."""
        active = tuple(s.value for s in RunStatus if s not in RUN_FINAL)
        rows = await self._db.fetchall(
            f"SELECT {_RUN_COLS} FROM runs WHERE status IN ({_marks(len(active))}) "
            "ORDER BY created_at", active)
        return [_run_from_row(r) for r in rows]

    async def list_rejected(self, limit: int = 50) -> list[RejectedMessage]:
        rows = await self._db.fetchall(
            "SELECT id, subject, reason, code, raw, received_at FROM rejected "
            "ORDER BY id DESC LIMIT ?", (max(1, min(limit, MAX_LIST_LIMIT)),))
        return [RejectedMessage(id=r[0], subject=r[1], reason=r[2], code=r[3], raw=bytes(r[4]),
                                received_at=r[5]) for r in rows]


def _marks(n: int) -> str:
    return ", ".join("?" * n)
