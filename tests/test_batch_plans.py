"""The queries a batch runs while it starts its items read what they need by an index, never
every item of the batch: each fill and each chunk added asks them, so a scan would make a
batch of n items cost n² (SQLite plans without ANALYZE statistics, as the coordinator's)."""

from pathlib import Path

from coordinator import batch_store
from coordinator.store import Store
from tests.query_plans import Recorder, plans


async def test_a_fill_and_an_added_chunk_look_up_items_by_key_not_by_reading_the_batch(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "ff.db")
    try:
        db = store.database
        await db.writer.executemany(
            "INSERT INTO batch_items (batch_id, seq, item_key, params, status) "
            "VALUES (?, ?, ?, ?, ?)",
            [("b1", n, f"k{n}", b"{}", "waiting") for n in range(1000)])
        await db.writer.commit()
        recorder = Recorder(db)
        await batch_store.waiting(db, "b1", 10, 100)
        priors = await batch_store.priors(db, ["k1", "k2", "k3"], "b1")
        assert sorted(priors) == ["k1", "k2", "k3"]
        read = await plans(db, list(recorder.statements))
    finally:
        await store.close()
    assert len(read) == 3
    assert all(p.startswith("SEARCH") for p in read), read
    assert not [p for p in read if p.endswith("(batch_id=?)")], read
