"""The SQLite store: migrations in order, recorded in user_version, data kept across them."""

import sqlite3
from pathlib import Path

from coordinator.schema import MIGRATIONS
from coordinator.store import Store


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
