"""The dashboard's Insights screen (i): runs per UTC day stacked by status, task durations
p50/p95, failure rate per flow, for every flow or a chosen one — driven by keys (Textual Pilot)
over the figures the coordinator's SQL gives for runs of known times (tests/stats_seed.py), and
against the real stack."""

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import Select
from textual_plotext import PlotextPlot

from coordinator.service import Coordinator
from flowforge.connection import ConnectOptions
from tests import stats_seed
from tests.memory_source import MemorySource, flow_detail
from tests.test_tui_app import SIZE, panel_text
from tests.test_tui_support import T0, memory_source, until, utc
from tui.app import DashboardApp
from tui.client_source import ClientSource
from tui.insights_view import InsightsScreen, day_series, plotted_tasks
from tui.model import Dirty

EVERY = ("Insights: every flow, 2025-06-02 to 2025-06-15 (UTC): 12 runs · durations of succeeded "
         "attempts in the 11 newest finished runs")
NIGHTLY = ("Insights: nightly, 2025-06-02 to 2025-06-15 (UTC): 8 runs · durations of succeeded "
           "attempts in the 7 newest finished runs · failure rate 14.3 %")
"""14 days: n0 (06-12) is in."""


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    with utc():
        yield


def seeded_source(tmp_path: Path) -> MemorySource:
    """The usual fixed deployment, plus the seeded flows and their figures (computed by the
    coordinator's SQL over a seeded SQLite file)."""
    source = memory_source()
    for spec in (stats_seed.NIGHTLY, stats_seed.HOURLY):
        source.flow_details[spec.name] = flow_detail(spec, T0)
    source.stats_answers = asyncio.run(stats_seed.figures(tmp_path / "ff.db", None, "nightly"))
    return source


def dashboard(source: Any) -> DashboardApp:
    return DashboardApp(source, clock=lambda: stats_seed.UNTIL, tick_s=None)


async def insights(app: DashboardApp, pilot: Pilot[None], head: str) -> InsightsScreen:
    await pilot.press("i")
    await until(lambda: isinstance(app.screen, InsightsScreen) and app.screen.loads > 0)
    await until(lambda: head_of(app) == head, what=f"head {head!r}, not {head_of(app)!r}")
    assert isinstance(app.screen, InsightsScreen)
    return app.screen


def head_of(app: DashboardApp) -> str:
    return panel_text(app, "#insights-head").strip()


def plot_text(screen: InsightsScreen, selector: str) -> str:
    return Text.from_ansi(screen.query_one(selector, PlotextPlot).plt.build()).plain


async def test_the_insights_screen_charts_every_flow_then_one_and_follows_run_changes(
        tmp_path: Path) -> None:
    source = await asyncio.to_thread(seeded_source, tmp_path)
    app = dashboard(source)
    async with app.run_test(size=SIZE) as pilot:
        screen = await insights(app, pilot, EVERY)
        assert ("flow_stats", None, 14, stats_seed.UNTIL) in source.calls
        assert "runs per UTC day, by status" in plot_text(screen, "#runs-plot")
        assert "06-15" in plot_text(screen, "#runs-plot")
        assert "nightly:fanout" in plot_text(screen, "#durations-plot")
        assert "hourly" in plot_text(screen, "#failures-plot")

        screen.query_one("#insights-flow", Select).value = "nightly"
        await until(lambda: head_of(app) == NIGHTLY)
        assert "fanout" in plot_text(screen, "#durations-plot")
        assert "hourly" not in plot_text(screen, "#failures-plot")

        await pilot.press("d")  # 14 → 30 days
        await until(lambda: ("flow_stats", "nightly", 30, stats_seed.UNTIL) in source.calls)

        screen.refresh_gap_s = 0.0
        asked = len(source.calls)
        app.hub.changed.publish(Dirty(set(), {"run-failed-1"}))  # a run changed: ask again
        await until(lambda: len(source.calls) > asked)

        source.down = "lost NATS"
        app.hub.changed.publish(Dirty(set(), {"run-failed-1"}))
        await until(lambda: "could not fetch the charts" in panel_text(app, "#insights-head"))
        assert "fanout" in plot_text(screen, "#durations-plot")  # what was drawn stays

        await pilot.press("escape")
        assert not isinstance(app.screen, InsightsScreen)


def test_the_plots_take_each_status_per_day_and_the_slowest_tasks(tmp_path: Path) -> None:
    every = seeded_source(tmp_path).stats_answers[None]
    labels, series = day_series(every)
    assert labels[-3:] == ["06-13", "06-14", "06-15"]
    assert [s[-1] for s in series] == [4, 1, 0, 1, 0]  # succeeded, failed, cancelled, running, pending
    assert [(d.flow, d.task) for d in plotted_tasks(every)] == [
        ("hourly", "ping"), ("nightly", "extract"), ("nightly", "fanout"), ("nightly", "load")]


async def test_the_insights_screen_against_the_real_stack(
        tmp_path: Path, nats_opts: ConnectOptions,
        start_coordinator: Callable[..., Awaitable[Coordinator]]) -> None:
    await stats_seed.seed(tmp_path / "ff.db")
    await start_coordinator(db_path=tmp_path / "ff.db")
    app = dashboard(ClientSource(nats_opts))
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: "nightly" in app.hub.model.flows)
        screen = await insights(app, pilot, EVERY)
        screen.query_one("#insights-flow", Select).value = "nightly"
        await until(lambda: head_of(app) == NIGHTLY)
        assert "load" in plot_text(screen, "#durations-plot")


def test_the_insights_screen_draws_runs_per_day_durations_and_failure_rates(
        snap_compare: Any, tmp_path: Path) -> None:
    app = dashboard(seeded_source(tmp_path))

    async def ready(pilot: Pilot[None]) -> None:
        await insights(app, pilot, EVERY)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


async def test_no_runs_in_the_window_draws_empty_charts_that_say_so() -> None:
    app = dashboard(memory_source())
    async with app.run_test(size=SIZE) as pilot:
        screen = await insights(app, pilot, "Insights: every flow, 1970-01-01 to 1970-01-14 (UTC): "
                                            "0 runs · durations of succeeded attempts in the 0 "
                                            "newest finished runs")
        assert "no succeeded task" in plot_text(screen, "#durations-plot")
        assert "no run finished" in plot_text(screen, "#failures-plot")
        screen.query_one("#insights-flow", Select).value = "pipeline_simple"
        await until(lambda: ("flow_stats", "pipeline_simple", 14, stats_seed.UNTIL) in
                    app.hub.source.calls)  # type: ignore[attr-defined]
