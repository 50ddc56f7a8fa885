"""The dashboard's batches: the model follows batch events, the rows and notes the view draws,
the items fetched a page per status, and the Batches view driven by keys (Textual Pilot)."""

from collections.abc import Iterator

import msgspec
import pytest
from textual.widgets import DataTable, Static

from protocol.batches import BatchItem, BatchRecord, BatchSpec, BatchState, ItemStatus
from tests.memory_source import MemorySource
from tests.test_tui_app import SIZE, app_for, run_screen, text_of
from tests.test_tui_support import (
    BACKFILL,
    BIG_BATCH,
    NOW,
    OLD_BATCH,
    T0,
    batches,
    memory_source,
    until,
    utc,
)
from tui.batch_rows import (
    ItemsShown,
    ago,
    batch_detail,
    batch_row,
    item_row,
    items_note,
    progress,
)
from tui.batches_view import BatchesView, fetch_items
from tui.forms import ConfirmScreen
from tui.model import Model
from tui.run_view import RunScreen
from tui.source import load_snapshot


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    with utc():
        yield


def cells(table: DataTable, row: int) -> list[str]:
    return [str(c) for c in table.get_row_at(row)]


def record(batch_id: str, created_at: float, **extra: object) -> BatchRecord:
    return BatchRecord(batch_id=batch_id, spec=BatchSpec(flow="pipeline_simple"),
                       created_at=created_at, **extra)  # type: ignore[arg-type]


# -- the model ------------------------------------------------------------------------------


async def test_a_snapshot_lists_batches_newest_first_with_their_counts() -> None:
    model = Model()
    dirty = model.load(await load_snapshot(memory_source()), NOW)
    assert "batches" in dirty.kinds
    assert [b.batch_id for b in model.batches_view()] == [BIG_BATCH, BACKFILL, OLD_BATCH]
    assert model.batches[BIG_BATCH].counts == {"succeeded": 1497, "failed": 3, "running": 2,
                                               "pending": 1, "skipped": 1, "waiting": 496}


async def test_a_batch_event_replaces_the_batch_and_outlives_an_older_snapshot() -> None:
    source = memory_source()
    model = Model()
    model.load(await load_snapshot(source), NOW)
    since = model.seq
    stale = await load_snapshot(source)  # asked for before the event below
    newer = msgspec.structs.replace(model.batches[BIG_BATCH], state=BatchState.PAUSED,
                                    counts={"succeeded": 1999, "failed": 1})
    assert model.apply(newer, NOW).kinds == {"batches"}
    fresh = record("0019b7a1d0000000001", T0 + 30)
    model.apply(fresh, NOW)
    model.load(stale, NOW, since)
    assert model.batches[BIG_BATCH] is newer
    assert model.batches_view()[0] is fresh  # known from its event only, and the newest


def test_only_the_newest_batches_are_kept() -> None:
    model = Model(max_batches=3)
    for i in range(5):
        model.apply(record(f"b{i}", T0 + i), NOW)
    assert [b.batch_id for b in model.batches_view()] == ["b4", "b3", "b2"]


# -- what the view draws ----------------------------------------------------------------------


def test_a_batch_row_shows_its_progress_and_counts_running_with_pending() -> None:
    big = batches()[0][0]
    big.counts = {"succeeded": 1497, "failed": 3, "running": 2, "pending": 1, "skipped": 1,
                  "waiting": 496}
    key, row = batch_row(big, NOW)
    assert key == BIG_BATCH
    assert [str(c) for c in row] == [
        "reprocess-2025", "pipeline_simple", "active", "████████░░  75%",
        "1,497", "3", "3", "496", "1", "0", "1m ago"]
    assert str(progress(record("x", T0))) == "░░░░░░░░░░    -"  # no items yet
    paused = msgspec.structs.replace(big, state=BatchState.PAUSED,
                                     note="the warehouse is being migrated tonight")
    assert str(batch_row(paused, NOW)[1][2]) == "paused: the warehouse…"  # all of it below:
    assert batch_detail(paused).splitlines()[:2] == [
        "reprocess-2025 (0019b7a1c2e0000b1f0): flow pipeline_simple, at most 4 runs at once, "
        "reprocess none; created 2026-01-01 00:00:20",
        "paused: the warehouse is being migrated tonight; 1,501 of 2,000 items finished "
        "(3 failed, 2 running, 1 pending, 1 skipped, 496 waiting, 1,497 succeeded)"]
    assert [ago(T0, T0 + s) for s in (0, 59, 60, 7199, 86400 * 3)] == [
        "0s ago", "59s ago", "1m ago", "1h ago", "3d ago"]


def test_an_item_row_shortens_its_params_and_a_backfill_item_leads_with_its_time() -> None:
    big_items, backfill_items = batches()[0][1], batches()[1][1]
    assert [str(c) for c in item_row(big_items[1600])[1]] == [
        "1600", "skipped", "-", '{"n_rows":1700,"source":"s3://archive/2025/part-01600.parquet"}',
        "same parameters as item 3"]
    item = msgspec.structs.replace(big_items[0], params={"text": "x" * 100})
    assert str(item_row(item)[1][3]).endswith("xx…") and len(str(item_row(item)[1][3])) == 70
    assert str(item_row(backfill_items[0])[1][3]) == 'for 2025-12-31 00:00:00 {"n_rows":500}'


def test_the_items_note_says_what_is_not_listed() -> None:
    items = [BatchItem(batch_id="b", seq=i, status=ItemStatus.FAILED, params={}) for i in range(2)]
    counts = {"failed": 2, "succeeded": 5000, "waiting": 7}
    assert items_note(ItemsShown("b", items, counts)) == (
        "2 of 5,009 items, failed first, then running and pending, then the rest; "
        "not listed: 7 waiting, 5,000 succeeded")
    assert items_note(ItemsShown("b", items, {"failed": 2})).startswith("all 2 items")
    assert items_note(ItemsShown("b", [], {})) == "no items"
    assert items_note(ItemsShown("b", fetched=False)).startswith("asking the coordinator")


async def test_items_are_fetched_a_page_per_status_failed_first_never_the_whole_batch() -> None:
    source = memory_source()
    shown = await fetch_items(source, BIG_BATCH)
    assert [(i.seq, i.status.value) for i in shown.items[:8]] == [
        (17, "failed"), (404, "failed"), (1203, "failed"), (1500, "running"),
        (1501, "running"), (1502, "pending"), (1600, "skipped"), (1503, "waiting")]
    assert len(shown.items) == 300
    assert source.batch_queries == [
        (BIG_BATCH, 300, -1, "failed"), (BIG_BATCH, 297, -1, "running"),
        (BIG_BATCH, 295, -1, "pending"), (BIG_BATCH, 294, -1, "skipped"),
        (BIG_BATCH, 293, -1, "waiting")]  # none cancelled; no room left for the succeeded
    huge = [BatchItem(batch_id="h", seq=i, status=ItemStatus.SUCCEEDED, params={"i": i})
            for i in range(100_000)]
    source = MemorySource(batches=[(record("h", T0, total=100_000), huge)])
    shown = await fetch_items(source, "h", limit=5000)
    assert len(shown.items) == 1000 and max(q[1] for q in source.batch_queries) == 1000
    assert items_note(shown).startswith("1,000 of 100,000 items")


# -- the view -------------------------------------------------------------------------------


async def test_the_batches_view_lists_batches_and_the_selected_batch_s_items_failed_first() -> None:
    source = memory_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one("#batches-table", DataTable)
        items = app.query_one("#batch-items-table", DataTable)
        await until(lambda: table.row_count == 3)
        await pilot.pause()
        assert source.batch_queries == []  # no items fetched while the tab is not shown
        await pilot.press("b")
        await until(lambda: items.row_count == 300)
        assert app.focused is table
        assert [cells(table, i)[:3] for i in range(3)] == [
            ["reprocess-2025", "pipeline_simple", "active"],
            ["backfill nightly-ml", "pipeline_simple_ml", "paused: source system…"],
            [OLD_BATCH, "pipeline_simple_wit…", "done"]]
        assert [cells(items, i)[:3] for i in range(2)] == [["17", "failed", "run-failed-1"],
                                                            ["404", "failed", "0019b7a100000000194"]]
        note = text_of(app.query_one("#batch-items-note", Static))
        assert "not listed: 203 waiting, 1,497 succeeded" in note
        assert all(q[3] is not None and q[1] <= 300 for q in source.batch_queries)

        await pilot.press("down")  # the backfill: its items, with their nominal times
        await until(lambda: cells(items, 0)[3].startswith("for 2025-12-31 10:00:00"))
        assert items.row_count == 24 and cells(items, 0)[1] == "waiting"
        await pilot.press("up", "enter")  # into the big batch's items: enter opens a run
        await until(lambda: app.focused is items and cells(items, 0)[0] == "17")
        await pilot.press("enter")
        screen = await run_screen(app)
        assert screen.run_id == "run-failed-1"
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, RunScreen))
        assert app.query_one("#tabs").active == "batches"  # type: ignore[attr-defined]


async def test_batch_events_update_the_row_and_the_selected_batch_s_items() -> None:
    source = memory_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b")
        table = app.query_one("#batches-table", DataTable)
        items = app.query_one("#batch-items-table", DataTable)
        await until(lambda: items.row_count == 300)
        rows = source.batch_items[BIG_BATCH]
        rows[17] = msgspec.structs.replace(rows[17], status=ItemStatus.SUCCEEDED)
        rows[1503] = msgspec.structs.replace(rows[1503], status=ItemStatus.RUNNING, run_id="r")
        source.announce(BIG_BATCH)
        await until(lambda: cells(table, 0)[6] == "4", what="running and pending from the event")
        await until(lambda: cells(items, 0)[0] == "404", what="the items fetched again")
        assert [cells(items, i)[:2] for i in range(2, 4)] == [["1500", "running"],
                                                              ["1501", "running"]]
        assert ["1503", "running", "r"] in [cells(items, i)[:3] for i in range(6)]
        fresh = msgspec.structs.replace(source.counted(BACKFILL), batch_id="0019b7a1e0000000001",
                                        spec=BatchSpec(flow="pipeline_simple", name="new"),
                                        created_at=T0 + 60, state=BatchState.LOADING)
        source.push(fresh)
        await until(lambda: table.row_count == 4 and cells(table, 0)[0] == "new")
        assert cells(table, 0)[2] == "loading"


async def test_pause_resume_and_cancel_a_batch_each_confirmed() -> None:
    source = memory_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b")
        table = app.query_one("#batches-table", DataTable)
        await until(lambda: table.row_count == 3)
        await pilot.press("u")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")  # no: nothing is sent
        await until(lambda: not isinstance(app.screen, ConfirmScreen))
        await pilot.press("u")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(lambda: cells(table, 0)[2] == "paused: paused from t…")
        assert source.calls == [("pause_batch", BIG_BATCH, "paused from the dashboard")]
        await pilot.press("u")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(lambda: cells(table, 0)[2] == "active")
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        assert isinstance(app.screen, ConfirmScreen)
        assert "496 waiting items never start" in app.screen.question
        await pilot.press("y")
        await until(lambda: cells(table, 0)[2] == "cancelled" and cells(table, 0)[9] == "496")
        assert source.calls[1:] == [("resume_batch", BIG_BATCH), ("cancel_batch", BIG_BATCH)]
        await pilot.press("c")  # cancelled already: said, not asked
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen) and len(source.calls) == 3
        assert app.query_one(BatchesView).batch is not None


async def test_a_busy_batch_s_items_are_fetched_at_most_once_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("tui.batches_view.ITEMS_REFRESH_S", 3600.0)
    source = memory_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b")
        view = app.query_one(BatchesView)
        items = app.query_one("#batch-items-table", DataTable)
        await until(lambda: items.row_count == 300)
        asked = len(source.batch_queries)
        source.announce(BIG_BATCH)
        await until(lambda: view._due is not None, what="a fetch put off to the interval's end")
        due = view._due
        source.announce(BIG_BATCH)
        await until(lambda: view.batch is app.hub.model.batches[BIG_BATCH]
                    and view.batch is not view._basis)
        await pilot.pause()
        assert view._due is due and len(source.batch_queries) == asked  # still the one put off
        await pilot.press("down")  # another batch: its items at once
        await until(lambda: items.row_count == 24 and view._due is None)
