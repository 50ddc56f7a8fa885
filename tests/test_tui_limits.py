"""The dashboard's limits screen driven by keys (Textual Pilot) over fixed data: every limit
with its holders and waiters, the highlighted one in full, asked for again every tick."""

from textual.widgets import DataTable

from protocol.concurrency import LimitInfo, Slot
from tests.test_tui_app import SIZE, app_for, panel_text
from tests.test_tui_support import memory_source, until
from tui.limits_view import LimitsScreen, limit_detail
from tui.model import Dirty

GPU = LimitInfo(name="queue:gpu", limit=2, holding=2, waiting=3,
                holders=[Slot(run_id="run-a", task="train"), Slot(run_id="run-b", task="train")],
                waiters=[Slot(run_id="run-c", task="train", priority=9),
                         Slot(run_id="run-d", task="train")])
FLOW = LimitInfo(name="flow:nightly", limit=1, origin="code", holding=1,
                 holders=[Slot(run_id="run-n")])


def test_a_limit_in_full_names_its_holders_and_waiters_in_order() -> None:
    assert limit_detail(GPU).splitlines() == [
        "queue:gpu: 2 at once (set over the API)", "held by 2:", "  run run-a task train",
        "  run run-b task train", "waiting 3:", "  run run-c task train (priority 9)",
        "  run run-d task train", "  … 1 more"]
    assert limit_detail(FLOW).splitlines()[-1] == "waiting 0: none"


async def test_the_limits_screen_lists_limits_and_follows_them_every_tick() -> None:
    source = memory_source()
    source.limit_list = [GPU, FLOW]
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("L")
        await until(lambda: isinstance(app.screen, LimitsScreen)
                    and app.screen.query_one("#limits-table", DataTable).row_count == 2)
        table = app.screen.query_one("#limits-table", DataTable)
        assert [str(c) for c in table.get_row_at(0)] == ["queue:gpu", "2", "2", "3", "api"]
        await until(lambda: "run run-c task train (priority 9)" in panel_text(app, "#limit-detail"))
        await pilot.press("down")
        await until(lambda: "flow:nightly: 1 at once (set in code)" in
                    panel_text(app, "#limit-detail"))

        source.limit_list = [GPU]  # the flow's run ended
        app.hub.changed.publish(Dirty({"tick"}))
        await until(lambda: table.row_count == 1)
        assert ("limits", 50) in source.calls

        source.down = "lost NATS"
        app.hub.changed.publish(Dirty({"tick"}))
        await until(lambda: "could not fetch the limits" in panel_text(app, "#limits-head"))
        assert table.row_count == 1  # what was known stays

        await pilot.press("escape")
        assert not isinstance(app.screen, LimitsScreen)


async def test_no_limits_says_how_to_set_one() -> None:
    source = memory_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("L")
        await until(lambda: isinstance(app.screen, LimitsScreen)
                    and "flowforge limit set" in panel_text(app, "#limits-head"))

