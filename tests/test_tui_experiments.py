"""The dashboard's Experiments screen (e): a flow's runs x metrics, sorted in memory, filtered
by a --where expression, plotted across runs or steps, a run opened from it — driven by keys
(Textual Pilot) over rows of known numbers, and against the real stack."""

from collections.abc import Awaitable, Callable
from typing import Any

from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DataTable, Input
from textual_plotext import PlotextPlot

from coordinator.service import Coordinator
from flowforge.client import Client
from flowforge.connection import ConnectOptions
from flowforge.dev_batch import experiments_app
from protocol.records import RunRecord
from protocol.states import RunStatus
from tests import experimentflows
from tests.experiment_memory import grid_rows, loss_series
from tests.memory_source import MemorySource
from tests.test_tui_app import SIZE, panel_text
from tests.test_tui_support import NOW, memory_source, until
from tui.app import DashboardApp
from tui.client_source import ClientSource
from tui.experiment_rows import columns, run_at, sorted_rows, thinned
from tui.experiments_view import ExperimentsScreen
from tui.model import Dirty
from tui.run_view import RunScreen

FLOW = "pipeline_simple_ml"


def seeded(n: int = 12) -> MemorySource:
    source = memory_source()
    rows = grid_rows(n)
    source.experiment_data.add(FLOW, rows)
    for row in rows:
        source.experiment_data.series[row.run_id] = loss_series(row)
    return source


def dashboard(source: Any) -> DashboardApp:
    return DashboardApp(source, clock=lambda: NOW, tick_s=None)


async def experiments(app: DashboardApp, pilot: Pilot[None], flow: str = FLOW,
                      loads: int = 1) -> ExperimentsScreen:
    await pilot.press("e")
    await until(lambda: isinstance(app.screen, ExperimentsScreen))
    screen = app.screen
    assert isinstance(screen, ExperimentsScreen)
    if screen.flow != flow:
        screen.query_one("#exp-flow").value = flow  # type: ignore[attr-defined]
    await until(lambda: screen.loads >= loads and screen.page is not None
                and screen.page.flow == flow, what="the experiments loaded")
    return screen


def column_labels(screen: ExperimentsScreen) -> list[str]:
    table = screen.query_one("#exp-table", DataTable)
    return [c.label.plain for c in table.ordered_columns]


def table_ids(screen: ExperimentsScreen) -> list[str]:
    table = screen.query_one("#exp-table", DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def plot_text(screen: ExperimentsScreen) -> str:
    return Text.from_ansi(screen.query_one("#exp-plot", PlotextPlot).plt.build()).plain


async def test_the_table_shows_differing_parameters_and_final_metrics_newest_first() -> None:
    app = dashboard(seeded())
    async with app.run_test(size=SIZE) as pilot:
        screen = await experiments(app, pilot)
        assert column_labels(screen) == ["run", "status", "learning_rate", "epochs",
                                         "accuracy", "loss"]  # seed is the same everywhere
        assert table_ids(screen)[:3] == ["exp-0011", "exp-0010", "exp-0009"]
        table = screen.query_one("#exp-table", DataTable)
        first = table.get_row_at(0)
        assert [Text.from_markup(c).plain for c in first[1:]] == [
            "succeeded", "0.003", "60", "0.756", "0.444"]
        assert Text.from_markup(first[2]).spans[0].style == "bold yellow"  # differs: highlighted
        assert panel_text(app, "#exp-head").startswith(
            f"Experiments: {FLOW}: 12 of 12 runs · sorted by newest first")


async def test_sorting_cycles_columns_and_directions_keeping_the_cursor_on_its_run() -> None:
    app = dashboard(seeded())
    async with app.run_test(size=SIZE) as pilot:
        screen = await experiments(app, pilot)
        await pilot.press("down", "down")
        assert screen.cursor_run() == "exp-0009"
        await pilot.press("s", "s", "s", "s", "s")  # run, status, learning_rate, epochs, accuracy
        assert screen.sort is not None and screen.sort.key == "metrics.accuracy"
        ids = table_ids(screen)
        accuracy = [r.metrics["accuracy"] for r in screen.rows]
        assert accuracy == sorted(accuracy) and ids == [r.run_id for r in screen.rows]
        assert screen.cursor_run() == "exp-0009"
        await pilot.press("o")
        accuracy = [r.metrics["accuracy"] for r in screen.rows]
        assert accuracy == sorted(accuracy, reverse=True)
        assert table_ids(screen)[0] == "exp-0009"  # 0.3, 60 epochs: the best
        assert "sorted by -metrics.accuracy" in panel_text(app, "#exp-head")
        assert screen.cursor_run() == "exp-0009"
        await pilot.press("s", "s")  # loss, then back to newest first
        assert screen.sort is None and table_ids(screen)[0] == "exp-0011"

        table = screen.query_one("#exp-table", DataTable)
        loss = next(c for c in table.ordered_columns if c.key.value == "metrics.loss")
        for _ in range(2):  # a header: highest first, then again: the other way
            table.post_message(DataTable.HeaderSelected(table, loss.key, 5, loss.label))
            await pilot.pause()
        assert screen.sort is not None and screen.sort.key == "metrics.loss"
        assert not screen.descending and table_ids(screen)[0] == "exp-0009"


async def test_a_where_expression_filters_through_the_source_and_a_bad_one_says_why() -> None:
    source = seeded()
    app = dashboard(source)
    async with app.run_test(size=SIZE) as pilot:
        screen = await experiments(app, pilot)
        await pilot.press("slash")
        where = screen.query_one("#exp-where", Input)
        assert where.has_focus
        where.value = "params.learning_rate<0.1 and accuracy>0.8"
        await pilot.press("enter")
        await until(lambda: screen.loads >= 2)
        assert ("experiments", FLOW, "params.learning_rate<0.1 and accuracy>0.8",
                10_000) in source.calls
        assert sorted(table_ids(screen)) == ["exp-0001", "exp-0004", "exp-0007", "exp-0010"]
        assert "4 of 4 runs · where params.learning_rate<0.1" in panel_text(app, "#exp-head")
        calls = len(source.calls)
        await pilot.press("slash")
        where.value = "params.lr<<1"
        await pilot.press("enter")
        await until(lambda: "expected a condition" in panel_text(app, "#exp-head"))
        assert len(source.calls) == calls  # refused before asking


async def test_the_plot_follows_the_chosen_metrics_across_runs_and_steps() -> None:
    source = seeded()
    app = dashboard(source)
    async with app.run_test(size=SIZE) as pilot:
        screen = await experiments(app, pilot)
        assert "accuracy across runs" in plot_text(screen)
        await pilot.press("m")
        assert "loss across runs" in plot_text(screen)
        await pilot.press("m")
        assert "accuracy, loss across runs" in plot_text(screen)
        await pilot.press("space", "down", "space", "v")
        await until(lambda: ("compare", ("exp-0011", "exp-0010")) in source.calls)
        await until(lambda: "loss by step: p-0011, p-0010" in plot_text(screen))
        assert screen.comparison is not None and len(screen.comparison.runs) == 2
        assert "2 marked" in panel_text(app, "#exp-head")


async def test_enter_opens_the_run_and_escape_comes_back() -> None:
    app = dashboard(seeded())
    async with app.run_test(size=SIZE) as pilot:
        screen = await experiments(app, pilot)
        await pilot.press("down", "enter")
        await until(lambda: isinstance(app.screen, RunScreen))
        assert isinstance(app.screen, RunScreen) and app.screen.run_id == "exp-0010"
        await pilot.press("escape")
        await until(lambda: app.screen is screen)
        await pilot.press("escape")
        assert not isinstance(app.screen, ExperimentsScreen)


async def test_a_click_on_a_point_of_the_runs_plot_selects_its_run_and_a_second_opens_it(
) -> None:
    app = dashboard(seeded())
    async with app.run_test(size=SIZE) as pilot:
        screen = await experiments(app, pilot)
        canvas = screen.plot_canvas()
        bottom = next(line for line in reversed(canvas.splitlines()) if "└" in line)
        left, right = bottom.index("└"), bottom.rindex("┘")
        x = round(left + 0.5 + 5 / 11 * (right - left - 1))
        await pilot.click("#exp-plot", offset=(x, 3))
        assert screen.cursor_run() == "exp-0006"  # the 6th row, newest first
        await pilot.click("#exp-plot", offset=(x, 3))
        await until(lambda: isinstance(app.screen, RunScreen))
        assert app.screen.run_id == "exp-0006"  # type: ignore[attr-defined]


async def test_a_finished_run_of_the_flow_loads_the_rows_again_once_per_gap() -> None:
    source = seeded()
    app = dashboard(source)
    async with app.run_test(size=SIZE) as pilot:
        screen = await experiments(app, pilot)
        screen.refresh_gap_s = 0.0
        new = grid_rows(13)[-1]
        source.experiment_data.add(FLOW, [new])
        app.hub.model.runs[new.run_id] = RunRecord(
            run_id=new.run_id, flow=FLOW, version="v", status=RunStatus.SUCCEEDED,
            created_at=new.created_at)
        loads = screen.loads
        app.hub.changed.publish(Dirty(set(), {"run-running-2"}))  # another flow's: no load
        await pilot.pause()
        assert screen.loads == loads
        app.hub.changed.publish(Dirty(set(), {new.run_id}))
        await until(lambda: screen.loads == loads + 1)
        assert table_ids(screen)[0] == "exp-0012"


def test_sorting_puts_runs_without_the_value_last_either_way() -> None:
    rows = grid_rows(6)
    rows[2] = type(rows[2])(run_id="exp-x", status=rows[2].status, created_at=rows[2].created_at,
                            params={"learning_rate": "auto"}, metrics={})
    col = next(c for c in columns(["learning_rate"], ["accuracy"]) if c.name == "accuracy")
    for descending in (False, True):
        assert sorted_rows(rows, col, descending)[-1].run_id == "exp-x"
    lr = columns(["learning_rate"], [])[2]
    assert sorted_rows(rows, lr, True)[0].run_id == "exp-x"  # text after numbers
    assert thinned(10, 4) == [0, 3, 6, 9] and thinned(11, 4) == [0, 3, 6, 9, 10]
    canvas = "1.0┤  │\n   └──────────┘\n"  # the plot area: columns 4 to 13
    assert [run_at(canvas, x, 3) for x in (3, 4, 8, 9, 13, 14)] == [None, 0, 1, 1, 2, None]


def test_the_experiments_screen_draws_the_table_and_the_plot(snap_compare: Any) -> None:
    app = dashboard(seeded())

    async def ready(pilot: Pilot[None]) -> None:
        await experiments(app, pilot)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


async def test_the_experiments_screen_against_the_real_stack(
        coordinator: Coordinator, start_agent: Callable[..., Awaitable[Any]], client: Client,
        nats_opts: ConnectOptions) -> None:
    await start_agent()
    await client.register(experimentflows.FLOWS)
    app = DashboardApp(ClientSource(nats_opts), tick_s=None)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: "exp_train" in app.hub.model.flows)
        first = await client.start("exp_train", {"lr": 0.1, "depth": 3})
        await client.wait(first.run_id, timeout_s=30)
        screen = await experiments(app, pilot, "exp_train")
        await until(lambda: len(screen.rows) == 1)
        screen.refresh_gap_s = 0.0
        second = await client.start("exp_train", {"lr": 0.01, "depth": 3})
        await client.wait(second.run_id, timeout_s=30)
        await until(lambda: len(screen.rows) == 2, what="the finished run listed")  # its event
        assert column_labels(screen) == ["run", "status", "lr", "accuracy", "checkpointed",
                                         "f1", "loss", "val.loss"]
        assert table_ids(screen) == [second.run_id, first.run_id]
        assert screen.cursor_run() == first.run_id  # the cursor stayed on its run
        await pilot.press("m", "m", "m")  # accuracy, checkpointed, f1, loss
        await pilot.press("up", "space", "v")
        await until(lambda: f"loss by step: {second.run_id[-6:]}" in plot_text(screen))
        assert screen.comparison is not None
        assert [s.steps for s in screen.comparison.runs[0].series if s.name == "loss"] == [
            [0, 1, 2, 3]]
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, RunScreen))
        assert app.screen.run_id == second.run_id  # type: ignore[attr-defined]


async def test_dev_batch_opens_the_dashboard_on_the_flows_experiments(
        coordinator: Coordinator, start_agent: Callable[..., Awaitable[Any]], client: Client,
        nats_opts: ConnectOptions) -> None:
    await start_agent()
    await client.register(experimentflows.FLOWS)
    done = await client.start("exp_train", {"lr": 0.1, "depth": 3})
    await client.wait(done.run_id, timeout_s=30)
    app = experiments_app(nats_opts, "exp_train")  # what `flowforge dev --batch` opens
    async with app.run_test(size=SIZE):
        await until(lambda: isinstance(app.screen, ExperimentsScreen))
        await until(lambda: len(app.screen.rows) == 1, what="the flow's run listed")
        assert table_ids(app.screen) == [done.run_id]
