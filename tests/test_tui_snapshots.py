"""Screenshots of the dashboard over fixed data and a fixed clock (pytest-textual-snapshot).

Update the baselines after a deliberate change of the drawing with
``pytest tests/test_tui_snapshots.py --snapshot-update`` and look at them in the report.
"""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from tests.test_tui_app import SIZE, panel_text, run_screen, shown
from tests.test_tui_children import RUN as KIDS_RUN
from tests.test_tui_children import kids_source
from tests.test_tui_map import RUN as MAPPED_RUN
from tests.test_tui_map import map_source
from tests.test_tui_support import clock, memory_source, until, utc
from tui.app import DashboardApp
from tui.children_view import ChildrenScreen
from tui.dag_view import DagView
from tui.instances_view import InstancesScreen


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    with utc():
        yield


def dashboard() -> DashboardApp:
    return DashboardApp(memory_source(), clock=clock, tick_s=None)


def test_the_flows_view_draws_the_dag_of_pipeline_simple(snap_compare: Any) -> None:
    app = dashboard()

    async def ready(pilot: Pilot[None]) -> None:
        dag = app.query_one("#flow-dag", DagView)
        await until(lambda: dag.dag is not None and "some_post_process_function" in dag.dag.boxes)
        await until(lambda: "Fetch the first source" in panel_text(app, "#flow-task"))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_a_failed_run_shows_the_traceback_of_the_selected_task(snap_compare: Any) -> None:
    app = dashboard()

    async def ready(pilot: Pilot[None]) -> None:
        app.open_run("run-failed-1")
        screen = await run_screen(app)
        dag = screen.query_one("#run-dag", DagView)
        await until(lambda: dag.dag is not None)
        dag.selected = "faulty_transform"
        await until(lambda: "Traceback" in panel_text(app, "#run-task"))
        await until(lambda: "never defined" in panel_text(app, "#run-task"))
        panel = screen.query_one("#run-task")
        lines = panel_text(app, "#run-task").rstrip("\n").count("\n") + 1
        async with asyncio.timeout(10):  # under load Textual may keep the layout of the text
            while panel.size.height < lines:  # before the log came until something refreshes;
                panel.refresh(layout=True)  # the live dashboard's clock tick does, here we do
                await pilot.pause()
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_the_agents_view_lists_live_and_lost_agents_with_their_heartbeat(snap_compare: Any) -> None:
    app = dashboard()

    async def ready(pilot: Pilot[None]) -> None:
        await pilot.press("a")
        table = app.query_one("#agents-table", DataTable)
        await until(lambda: table.row_count == 2)
        await until(lambda: "agent-1 on build-7" in panel_text(app, "#agent-detail"))
        await pilot.wait_for_scheduled_animations()  # the tab's underline slides over
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_the_schedules_view_shows_next_fires_and_a_paused_schedule(snap_compare: Any) -> None:
    app = dashboard()

    async def ready(pilot: Pilot[None]) -> None:
        await pilot.press("w")
        table = app.query_one("#schedules-table", DataTable)
        await until(lambda: table.row_count == 2)
        await until(lambda: "every-15m" in panel_text(app, "#schedule-detail"))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_the_batches_view_shows_progress_counts_and_the_failed_items_first(snap_compare: Any) -> None:
    app = dashboard()

    async def ready(pilot: Pilot[None]) -> None:
        await pilot.press("b")
        items = app.query_one("#batch-items-table", DataTable)
        await until(lambda: items.row_count == 300)
        await until(lambda: "not listed" in panel_text(app, "#batch-items-note"))
        await pilot.wait_for_scheduled_animations()  # the tab's underline slides over
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_a_mapped_task_counts_its_instances_and_lists_the_failed_first(snap_compare: Any) -> None:
    app = DashboardApp(map_source(), clock=clock, tick_s=None)

    async def ready(pilot: Pilot[None]) -> None:
        app.open_run(MAPPED_RUN)
        screen = await run_screen(app)
        dag = screen.query_one("#run-dag", DagView)
        await until(lambda: dag.dag is not None and "37/100 ✓35 ✗2 ▶3" in shown(dag))
        dag.selected = "square"
        await until(lambda: "ValueError: item 17" in panel_text(app, "#run-task"))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_the_instances_of_a_mapped_task_failed_first_and_one_in_full(snap_compare: Any) -> None:
    app = DashboardApp(map_source(), clock=clock, tick_s=None)

    async def ready(pilot: Pilot[None]) -> None:
        app.open_run(MAPPED_RUN)
        screen = await run_screen(app)
        dag = screen.query_one("#run-dag", DagView)
        await until(lambda: dag.dag is not None and "37/100" in shown(dag))
        dag.selected = "square"
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, InstancesScreen))
        table = app.screen.query_one("#map-instances", DataTable)
        await until(lambda: table.row_count == 40)
        await until(lambda: "squaring item 4" in panel_text(app, "#map-instance"))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_a_task_with_children_counts_them_on_its_box_and_lists_the_failed_first(
        snap_compare: Any) -> None:
    app = DashboardApp(kids_source(), clock=clock, tick_s=None)

    async def ready(pilot: Pilot[None]) -> None:
        app.open_run(KIDS_RUN)
        screen = await run_screen(app)
        dag = screen.query_one("#run-dag", DagView)
        await until(lambda: dag.dag is not None and "10/12 ✗2 ▶2" in shown(dag))
        dag.selected = "train_model"
        await until(lambda: "ValueError: item 8" in panel_text(app, "#run-task"))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_the_children_of_a_task_failed_first_and_one_in_full(snap_compare: Any) -> None:
    app = DashboardApp(kids_source(), clock=clock, tick_s=None)

    async def ready(pilot: Pilot[None]) -> None:
        app.open_run(KIDS_RUN)
        screen = await run_screen(app)
        dag = screen.query_one("#run-dag", DagView)
        await until(lambda: dag.dag is not None and "10/12" in shown(dag))
        dag.selected = "train_model"
        await pilot.press("k")
        await until(lambda: isinstance(app.screen, ChildrenScreen))
        table = app.screen.query_one("#kids-table", DataTable)
        await until(lambda: table.row_count == 12)
        await until(lambda: "item 3 at 3" in panel_text(app, "#kids-child"))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)
