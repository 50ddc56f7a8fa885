"""The SQLite store: migrations in order, recorded in user_version, data kept across them."""

import sqlite3
from pathlib import Path

from coordinator.changes import Changes
from coordinator.schema import MIGRATIONS
from coordinator.store import Store
from protocol.records import RunCounts, RunRecord
from protocol.states import RunStatus


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
