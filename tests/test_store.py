"""The SQLite store: migrations in order, recorded in user_version, data kept across them;
readers see whole commits only."""

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec
import pytest

from coordinator import store as store_module
from coordinator.changes import Changes
from coordinator.map_writes import DoneInstance
from coordinator.schema import MIGRATIONS
from coordinator.store import Store
from protocol.records import RunCounts, RunRecord, TaskRecord
from protocol.states import RunStatus, TaskStatus


async def test_a_database_from_the_first_schema_is_migrated_and_keeps_its_runs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
    db.execute(
        "INSERT INTO runs (run_id, flow, version, status, params, created_at, source, counts) "
        "VALUES ('r1', 'f', 'v', 'succeeded', '{}', 1.0, 'api', '{}')"
    )
    db.commit()
    db.close()

    store = await Store.open(path)
    try:
        detail = await store.get_run("r1")
        assert detail is not None and detail.run.only is None
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


async def test_instances_stored_by_name_are_keyed_by_task_and_index_after_migration_10(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("\n".join(MIGRATIONS[:9]) + "\nPRAGMA user_version = 9;")
    for name in ("square~2", "square~10"):
        db.execute("INSERT INTO map_instances (run_id, task, status, attempt, queue, output) "
                   "VALUES ('r1', ?, 'succeeded', 1, 'default', '4')", (name,))
    db.commit()
    db.close()
    store = await Store.open(path)
    try:
        assert sorted(r.task for r in await store.instances_of("r1")) == ["square~10", "square~2"]
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT task, idx FROM map_instances ORDER BY idx").fetchall() == [
        ("square", 2), ("square", 10)]
    db.close()


async def test_opening_a_current_database_twice_changes_nothing(tmp_path: Path) -> None:
    for _ in range(2):
        store = await Store.open(tmp_path / "new.db")
        await store.close()
    db = sqlite3.connect(tmp_path / "new.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    db.close()


def _run(run_id: str, status: RunStatus, **kw: object) -> RunRecord:
    return RunRecord(run_id=run_id, flow="f", version="v", status=status, params={"n": 1},
                     created_at=1.0, idempotency_key=f"k-{run_id}", source="trigger", **kw)


async def test_a_stored_run_is_updated_in_place_and_one_never_stored_is_written_whole(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "ff.db")
    try:
        first = Changes()
        first.new_runs.append("r1")
        first.runs["r1"] = _run("r1", RunStatus.RUNNING, started_at=2.0)
        await store.commit(first)

        later = Changes()  # r1 finished; r2 changed without ever being stored (written whole)
        later.runs["r1"] = _run("r1", RunStatus.SUCCEEDED, started_at=2.0, finished_at=3.0,
                                counts=RunCounts(total=4, done=4, succeeded=4))
        later.runs["r2"] = _run("r2", RunStatus.FAILED, finished_at=5.0)
        await store.commit(later)

        r1, r2 = await store.get_run("r1"), await store.get_run("r2")
        assert r1 is not None and r2 is not None
        assert r1.run == later.runs["r1"] and r2.run == later.runs["r2"]
        assert await store.run_by_key("f", "k-r1") == later.runs["r1"]
    finally:
        await store.close()


def _task(run_id: str, task: str, status: TaskStatus) -> TaskRecord:
    return TaskRecord(run_id=run_id, task=task, status=status, attempt=1)


def _batch(status: RunStatus, task_status: TaskStatus, new: bool = False) -> Changes:
    ch = Changes(runs={"r1": _run("r1", status)},
                 tasks={("r1", t): _task("r1", t, task_status) for t in ("a", "b")})
    if new:
        ch.new_runs.append("r1")
    return ch


class Pause:
    """Holds one awaited aiosqlite call after it ran, until the test lets it go on."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.go_on = asyncio.Event()

    def wrap(self, call: Callable[..., Awaitable[Any]], when: Callable[[str], bool]) -> Any:
        async def paused(conn: aiosqlite.Connection, sql: str, *args: Any) -> Any:
            result = await call(conn, sql, *args)
            if when(sql) and not self.reached.is_set():
                self.reached.set()
                await asyncio.wait_for(self.go_on.wait(), 10)
            return result
        return paused


async def test_a_read_during_a_batch_sees_the_state_before_it_and_the_batch_whole_once_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = await Store.open(tmp_path / "ff.db")
    try:
        await store.commit(_batch(RunStatus.RUNNING, TaskStatus.QUEUED, new=True))
        pause = Pause()  # the batch stops after its first statement, its transaction open
        monkeypatch.setattr(aiosqlite.Connection, "executemany",
                            pause.wrap(aiosqlite.Connection.executemany, lambda sql: True))
        later = _batch(RunStatus.SUCCEEDED, TaskStatus.SUCCEEDED)
        later.runs["r2"] = _run("r2", RunStatus.PENDING)
        later.new_runs.append("r2")
        committing = asyncio.create_task(store.commit(later))
        await asyncio.wait_for(pause.reached.wait(), 10)

        detail = await store.get_run("r1")
        assert detail is not None and detail.run.status is RunStatus.RUNNING
        assert {t.status for t in detail.tasks} == {TaskStatus.QUEUED}
        assert [r.run_id for r in await store.list_runs()] == ["r1"]
        assert await store.get_run("r2") is None and await store.run_by_key("f", "k-r2") is None

        pause.go_on.set()
        await asyncio.wait_for(committing, 10)
        detail = await store.get_run("r1")  # asked after the commit: sees all of it
        assert detail is not None and detail.run.status is RunStatus.SUCCEEDED
        assert {t.status for t in detail.tasks} == {TaskStatus.SUCCEEDED}
        assert {r.run_id for r in await store.active_runs()} == {"r2"}
    finally:
        await store.close()


async def test_a_run_and_its_tasks_are_read_from_one_commit_even_when_one_lands_in_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = await Store.open(tmp_path / "ff.db")
    try:
        await store.commit(_batch(RunStatus.RUNNING, TaskStatus.QUEUED, new=True))
        pause = Pause()  # get_run stops after reading the run, before reading its tasks
        monkeypatch.setattr(aiosqlite.Connection, "execute_fetchall", pause.wrap(
            aiosqlite.Connection.execute_fetchall, lambda sql: sql.endswith("WHERE run_id = ?")))
        reading = asyncio.create_task(store.get_run("r1"))
        await asyncio.wait_for(pause.reached.wait(), 10)
        await store.commit(_batch(RunStatus.SUCCEEDED, TaskStatus.SUCCEEDED))
        pause.go_on.set()

        detail = await asyncio.wait_for(reading, 10)
        assert detail is not None and detail.run.status is RunStatus.RUNNING
        assert {t.status for t in detail.tasks} == {TaskStatus.QUEUED}
        after = await store.get_run("r1")
        assert after is not None and {t.status for t in after.tasks} == {TaskStatus.SUCCEEDED}
    finally:
        await store.close()


async def test_a_failed_batch_is_rolled_back_whole_and_the_store_goes_on(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "ff.db")
    try:
        await store.commit(_batch(RunStatus.RUNNING, TaskStatus.QUEUED, new=True))
        broken = _batch(RunStatus.SUCCEEDED, TaskStatus.SUCCEEDED)
        broken.tasks[("r1", "c")] = TaskRecord(run_id="r1", task="c", queue=None)  # type: ignore[arg-type]
        with pytest.raises(sqlite3.IntegrityError):  # queue is NOT NULL: the tasks' statement fails
            await store.commit(broken)
        detail = await store.get_run("r1")
        assert detail is not None and detail.run.status is RunStatus.RUNNING
        await store.commit(_batch(RunStatus.SUCCEEDED, TaskStatus.SUCCEEDED))
        detail = await store.get_run("r1")
        assert detail is not None and detail.run.status is RunStatus.SUCCEEDED
    finally:
        await store.close()


async def test_rejected_messages_get_their_ids_in_order_and_only_the_newest_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "MAX_REJECTED_KEPT", 3)
    store = await Store.open(tmp_path / "ff.db")
    try:
        first = await store.commit(Changes(), [(f"s.{i}", "bad", "why", b"x") for i in range(2)])
        second = await store.commit(Changes(), [(f"s.{i}", "bad", "why", b"x") for i in (2, 3)])
        assert first == [1, 2] and second == [3, 4]
        kept = await store.list_rejected()
        assert [(r.id, r.subject) for r in kept] == [(4, "s.3"), (3, "s.2"), (2, "s.1")]
    finally:
        await store.close()


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before]


def test_a_store_its_owner_never_closed_is_closed_when_the_event_loop_ends(tmp_path: Path) -> None:
    before = set(threading.enumerate())

    async def owner_fails_after_open() -> None:
        await Store.open(tmp_path / "ff.db")
        raise RuntimeError("the coordinator failed to start")

    with pytest.raises(RuntimeError):
        asyncio.run(owner_fails_after_open())
    for thread in _new_threads(before):  # a connection thread left running hangs the exit
        thread.join(10)
        assert not thread.is_alive(), thread


def test_a_store_that_fails_to_open_leaves_no_connection_behind(tmp_path: Path) -> None:
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not an SQLite file" * 100)
    before = set(threading.enumerate())
    with pytest.raises(sqlite3.DatabaseError):
        asyncio.run(Store.open(path))
    for thread in _new_threads(before):
        thread.join(10)
        assert not thread.is_alive(), thread


async def test_a_restart_reads_succeeded_instances_as_their_output_and_attempt_only(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        ch = Changes()
        for i, status in enumerate((TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.RUNNING)):
            rec = TaskRecord(run_id="r1", task=f"m~{i}", status=status, attempt=2,
                             output=msgspec.Raw(b"%d" % i), note="kept only when not succeeded")
            ch.tasks[("r1", rec.task)] = rec
        await store.commit(ch)
        got = {r.task: r for r in await store.instances_of("r1")}
        assert got["m~0"] == DoneInstance("m~0", 2, msgspec.Raw(b"0"))
        assert isinstance(got["m~1"], TaskRecord) and got["m~1"].note == "kept only when not succeeded"
        assert isinstance(got["m~2"], TaskRecord) and got["m~2"].status is TaskStatus.RUNNING
    finally:
        await store.close()


async def test_children_of_a_mapped_task_mapping_again_are_deleted_with_its_instances(
    tmp_path: Path,
) -> None:
    from coordinator.changes import Changes
    from protocol.records import TaskRecord

    store = await Store.open(tmp_path / "ff.db")
    try:
        ch = Changes()
        for name in ("m~0/0", "m~1/0", "m_x~0/0", "p/0"):
            parent, _, seq = name.rpartition("/")
            ch.child_specs.append(("r1", parent, int(seq), "mod:f", b"{}", 1))
            ch.tasks[("r1", name)] = TaskRecord(run_id="r1", task=name)
        await store.commit(ch)
        reset = Changes()
        reset.instances_reset.append(("r1", "m"))
        await store.commit(reset)
        db = store.database
        left = await db.fetchall("SELECT parent || '/' || seq FROM child_tasks ORDER BY 1")
        specs = await db.fetchall("SELECT parent || '/' || seq FROM child_specs ORDER BY 1")
        assert [r[0] for r in left] == [r[0] for r in specs] == ["m_x~0/0", "p/0"]
    finally:
        await store.close()
