"""The dashboard's Experiments view timed headless against a running coordinator, for
``bench.experiments``: opening it on a flow (every row asked for over the API, the table
filled, the screen drawn) and sorting it by a metric and by a parameter (re-ordered in memory,
then drawn)."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

from flowforge.connection import ConnectOptions
from tui.app import DashboardApp
from tui.client_source import ClientSource
from tui.experiments_view import ExperimentsScreen

SIZE = (150, 44)


async def _until(predicate: Callable[[], object], timeout_s: float = 120.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.001)


async def measure_view(url: str, flow: str, rows: int, repeat: int) -> dict[str, list[float]]:
    """Seconds per sample: ``open`` (the screen pushed until its ``rows`` rows are in the table
    and drawn; of which ``open_fetch`` waiting for the rows, ``open_table`` filling the table;
    the rest is drawing), ``sort_metric`` and ``sort_param`` (from the key's action until drawn; each
    sample flips the direction)."""
    app = DashboardApp(ClientSource(ConnectOptions(url=url)), tick_s=None)
    out: dict[str, list[float]] = {"open": [], "open_fetch": [], "open_table": [],
                                   "sort_metric": [], "sort_param": []}
    async with app.run_test(size=SIZE) as pilot:
        await _until(lambda: flow in app.hub.model.flows)
        for _ in range(repeat):
            t0 = time.perf_counter()
            screen = ExperimentsScreen(flow)
            app.push_screen(screen)
            await _until(lambda s=screen: s.loads >= 1)  # type: ignore[misc]
            await pilot.pause()  # drawn
            out["open"].append(time.perf_counter() - t0)
            out["open_fetch"].append(screen.timings["fetch_s"])
            out["open_table"].append(screen.timings["table_s"])
            table = screen.query_one("#exp-table")
            assert table.row_count == rows, (table.row_count, rows)  # type: ignore[attr-defined]
            by_key = {c.key: c for c in screen.cols}
            for key, name in (("metrics.accuracy", "sort_metric"), ("params.lr", "sort_param")):
                t0 = time.perf_counter()
                screen.sort_by(by_key[key], not screen.descending)
                await pilot.pause()
                out[name].append(time.perf_counter() - t0)
            app.pop_screen()
            await pilot.pause()
    return out


def view_results(samples: dict[str, list[float]], table_target_s: float,
                 sort_target_s: float, summary: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return {"tui_open": summary(samples["open"], table_target_s),
            "tui_open_fetch": summary(samples["open_fetch"], None),
            "tui_open_table": summary(samples["open_table"], None),
            "tui_sort_metric": summary(samples["sort_metric"], sort_target_s),
            "tui_sort_param": summary(samples["sort_param"], sort_target_s)}
