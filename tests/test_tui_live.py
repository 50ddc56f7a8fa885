"""The dashboard against the real stack: nats-server, an in-process coordinator and agent
(runs, cancel and retry, live logs, lost links, batches)."""

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

import tests.taskflows  # noqa: F401 - registers the flows the agent serves
from coordinator.service import Coordinator
from flowforge.client import Client
from flowforge.connection import ConnectOptions
from flowforge.embedded import EmbeddedNats
from tests import batchflows
from tests.test_tui_app import (
    SIZE,
    form_error,
    panel_text,
    run_screen,
    shown,
    submit_params,
    text_of,
)
from tests.test_tui_support import until, utc
from tui.app import DashboardApp
from tui.banner import Banner
from tui.client_source import ClientSource
from tui.dag_view import DagView
from tui.forms import ConfirmScreen, TriggerScreen


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    with utc():
        yield


async def open_trigger_form(app: DashboardApp, pilot: Pilot[None], flow: str) -> None:
    """Select ``flow`` in the flows view and open its trigger form."""
    table = app.query_one("#flows-table", DataTable)
    await until(lambda: flow in [str(k.value) for k in table.rows])
    table.move_cursor(row=table.get_row_index(flow))
    await pilot.press("t")
    await until(lambda: isinstance(app.screen, TriggerScreen))


async def test_a_run_triggered_from_the_dashboard_reaches_succeeded_on_screen(
    coordinator: Coordinator, start_agent: Callable[..., Awaitable[object]], client: Client,
    nats_opts: ConnectOptions,
) -> None:
    await client.register()
    await start_agent()
    app = DashboardApp(ClientSource(nats_opts), tick_s=None)
    async with app.run_test(size=SIZE) as pilot:
        await open_trigger_form(app, pilot, "progress")
        await pilot.press("ctrl+s")
        screen = await run_screen(app)
        dag = screen.query_one("#run-dag", DagView)
        await until(lambda: "✓ work" in shown(dag), what="the task drawn succeeded")
        await until(lambda: "succeeded" in panel_text(app, "#run-head"))
        assert "all four steps done" in panel_text(app, "#run-task")  # the last checkpoint
        assert screen.run_id in [r.run_id for r in await client.runs(flow="progress")]


async def test_cancel_and_retry_from_the_dashboard_reach_the_real_coordinator(
    coordinator: Coordinator, start_agent: Callable[..., Awaitable[object]], client: Client,
    nats_opts: ConnectOptions, tmp_path: Path,
) -> None:
    await client.register()
    await start_agent()
    app = DashboardApp(ClientSource(nats_opts), tick_s=None)
    async with app.run_test(size=SIZE) as pilot:
        await open_trigger_form(app, pilot, "cancellable")
        form = await submit_params(app, pilot, "{not json")
        await until(lambda: "not valid JSON" in form_error(form))
        assert await client.runs(flow="cancellable") == []  # nothing was sent
        await submit_params(app, pilot, "{}")
        screen = await run_screen(app)
        await until(lambda: "● sync_long" in shown(screen.dag_view), what="a task running")
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(lambda: "cancelled" in panel_text(app, "#run-head"), timeout_s=20,
                    what="the run cancelled on screen")
        assert (await client.get(screen.run_id)).run.status == "cancelled"

        marker = tmp_path / "fixed"
        failed = await client.start("retryable", {"marker": str(marker)})
        await client.wait(failed.run_id, timeout_s=20)
        await pilot.press("escape")
        app.open_run(failed.run_id)
        screen = await run_screen(app)
        await until(lambda: "✗ flaky" in shown(screen.dag_view))
        marker.touch()
        await pilot.press("y")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(lambda: "✓ after_flaky" in shown(screen.dag_view), timeout_s=20,
                    what="the retried tasks succeeded on screen")
        assert (await client.get(failed.run_id)).run.status == "succeeded"


async def test_the_log_pane_follows_a_running_task_s_log_live(
    coordinator: Coordinator, start_agent: Callable[..., Awaitable[object]], client: Client,
    nats_opts: ConnectOptions, tmp_path: Path,
) -> None:
    await client.register()
    await start_agent()
    release = tmp_path / "release"
    run = await client.start("talk_until_released", {"release": str(release)})
    app = DashboardApp(ClientSource(nats_opts), tick_s=None)
    async with app.run_test(size=SIZE):
        app.open_run(run.run_id)
        screen = await run_screen(app)
        await until(lambda: "waiting for the release" in panel_text(app, "#run-task"),
                    what="the stored log of the running task")
        await until(lambda: app.hub.model.runs[run.run_id].status == "running",
                    what="the run's running event")
        release.touch()
        await until(lambda: "released, finishing" in panel_text(app, "#run-task"),
                    what="a line logged after the log was fetched, from a log event")
        assert screen.task_name == "listen"
        await until(lambda: "succeeded" in panel_text(app, "#run-head"))


async def test_a_nats_restart_shows_a_banner_then_the_dashboard_resyncs_and_follows_again(
    nats_server: EmbeddedNats, coordinator: Coordinator, client: Client,
    nats_opts: ConnectOptions, start_agent: Callable[..., Awaitable[object]],
) -> None:
    await client.register()
    app = DashboardApp(ClientSource(nats_opts, link_check_s=0.05), tick_s=None)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.query_one(Banner)
        await until(lambda: app.follower.syncs == 1)
        await nats_server.stop()
        await until(lambda: banner.display, what="a banner while NATS is away")
        assert "lost NATS" in text_of(banner)
        assert app.query_one("#flows-table", DataTable).row_count > 0  # the last state stays
        await nats_server.start()
        await until(lambda: not banner.display and app.follower.syncs >= 2, timeout_s=30)
        await start_agent()
        run = await client.start("wide")
        await pilot.press("r")
        runs = app.query_one("#runs-table", DataTable)
        await until(lambda: run.run_id in [str(k.value) for k in runs.rows])
        await until(lambda: app.hub.model.runs[run.run_id].status == "succeeded", timeout_s=20)


async def test_a_stopped_coordinator_shows_a_banner_and_a_new_one_is_found(
    start_coordinator: Callable[..., Awaitable[Coordinator]], client: Client,
    nats_opts: ConnectOptions,
) -> None:
    first = await start_coordinator()
    await client.register()
    app = DashboardApp(ClientSource(nats_opts, timeout_s=1.0), tick_s=None, quiet_s=0.2)
    async with app.run_test(size=SIZE):
        banner = app.query_one(Banner)
        await until(lambda: app.follower.syncs == 1)
        await first.shutdown()
        await until(lambda: banner.display, what="a banner once no coordinator answers")
        assert "coordinator" in text_of(banner)
        await start_coordinator()
        await until(lambda: not banner.display, timeout_s=30)
        assert app.follower.syncs >= 2


async def test_the_batches_view_follows_a_real_batch_and_pauses_and_cancels_it(
    coordinator: Coordinator, start_agent: Callable[..., Awaitable[object]], client: Client,
    nats_opts: ConnectOptions,
) -> None:
    await client.register([batchflows.register_square(), batchflows.register_slow_square()])
    await start_agent(concurrency=4)
    done = await client.submit_batch("square", [{"x": 1}, {"x": 2, "fail": True}, {"x": 3}],
                                     name="squares")
    assert done.batch is not None
    await client.wait_batch(done.batch.batch_id, timeout_s=30)
    slow = await client.submit_batch("slow_square", [{"x": i, "hold_s": 0.5} for i in range(20)],
                                     name="slow", max_active=1)
    assert slow.batch is not None
    app = DashboardApp(ClientSource(nats_opts), tick_s=None)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b")
        table = app.query_one("#batches-table", DataTable)
        items = app.query_one("#batch-items-table", DataTable)
        await until(lambda: table.row_count == 2 and cells(table, 0)[0] == "slow")
        await until(lambda: cells(table, 0)[4] not in ("0", ""), timeout_s=20,
                    what="succeeded items counted from batch events")
        await until(lambda: "running" in column(items, 1) and "waiting" in column(items, 1),
                    what="the items fetched again as the batch goes on")
        await pilot.press("u")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(lambda: cells(table, 0)[2].startswith("paused"), what="paused, from its event")
        assert (await client.batch("slow")).batch.state == "paused"
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(lambda: cells(table, 0)[2] == "cancelled", timeout_s=20)
        await until(lambda: "cancelled" in column(items, 1) and "waiting" not in column(items, 1))

        await pilot.press("down")  # the finished batch: its failed item first, then the rest
        await until(lambda: column(items, 1) == ["failed", "succeeded", "succeeded"])
        assert cells(table, 1)[3].endswith("100%") and cells(table, 1)[5] == "1"
        await pilot.press("enter", "enter")
        screen = await run_screen(app)
        await until(lambda: "failed" in panel_text(app, "#run-head"))
        assert screen.run_id == cells(items, 0)[2]


def cells(table: DataTable, row: int) -> list[str]:
    return [str(c) for c in table.get_row_at(row)]


def column(table: DataTable, col: int) -> list[str]:
    return [cells(table, i)[col] for i in range(table.row_count)]
