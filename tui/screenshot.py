"""``python -m tui.screenshot``: the dashboard, headless, against a live deployment, saved as SVG.

For docs and reviews: open a flow's DAG, a run (with one of its tasks selected), the agents
view or a flow's experiments, wait until it is drawn, save the screen and exit. Exit codes:
0 saved, 1 the flow, run, task or experiments were not found in time, 2 usage.
"""

import argparse
import asyncio
import sys
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import DataTable

from flowforge.connection import DEFAULT_NATS_URL, add_connection_args, options_from_args
from tui.app import DashboardApp
from tui.client_source import ClientSource
from tui.dag_view import DagView
from tui.experiments_view import ExperimentsScreen
from tui.run_view import RunScreen

WAIT_S = 15.0


class NotFound(Exception):
    """What was asked for did not appear in time."""


async def _until(check: object, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise NotFound(f"{what} did not appear within {timeout_s:g} s")
        await asyncio.sleep(0.05)


async def _show_flow(app: DashboardApp, pilot: Pilot[None], flow: str) -> None:
    table = app.query_one("#flows-table", DataTable)
    await _until(lambda: flow in [str(k.value) for k in table.rows], f"flow {flow!r}")
    table.move_cursor(row=table.get_row_index(flow))
    dag = app.query_one("#flow-dag", DagView)
    await _until(lambda: dag.spec is not None and dag.spec.name == flow, f"the DAG of {flow!r}")


async def _show_run(app: DashboardApp, run_id: str, task: str | None) -> None:
    await _until(lambda: app.follower.syncs > 0, "the first snapshot")
    app.open_run(run_id)
    await _until(lambda: isinstance(app.screen, RunScreen) and app.screen.dag_view.dag is not None,
                 f"run {run_id}")
    screen = app.screen
    assert isinstance(screen, RunScreen)
    if task is not None:
        if task not in (screen.dag_view.dag.boxes if screen.dag_view.dag else {}):
            raise NotFound(f"run {run_id} has no task {task!r}")
        screen.dag_view.selected = task
        buffer = app.hub.model.logs
        await _until(lambda: (run_id, task) in buffer and buffer[(run_id, task)].loaded,
                     f"the log of {task!r}")


async def _show_experiments(app: DashboardApp, pilot: Pilot[None], ns: argparse.Namespace) -> None:
    """The Experiments view of a flow, sorted by ``--sort``, ``--metric`` plotted; with
    ``--steps``, by step for the first five runs."""
    screen = ExperimentsScreen(ns.experiments)
    app.push_screen(screen)
    await _until(lambda: screen.loads > 0 and screen.page is not None, "the experiments")
    if ns.sort:
        key = ns.sort.lstrip("-")
        column = next((c for c in screen.cols if key in (c.key, c.name)), None)
        if column is None:
            raise NotFound(f"no column {key!r} in the experiments of {ns.experiments!r}")
        screen.sort_by(column, ns.sort.startswith("-"))
    if ns.metric:
        screen.plotted = list(ns.metric)
    if ns.steps:
        screen.marked = [r.run_id for r in screen.rows[:5]]
        screen.action_toggle_plot()
        await _until(lambda: screen.comparison is not None, "the runs' steps")
    screen.draw_head()
    screen.draw_plot()
    await pilot.pause()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tui.screenshot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_connection_args(p, nats_default=DEFAULT_NATS_URL)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--flow", help="the flows view with this flow's DAG")
    what.add_argument("--run", metavar="RUN_ID", help="the detail of this run")
    what.add_argument("--agents", action="store_true", help="the agents view")
    what.add_argument("--experiments", metavar="FLOW", help="the Experiments view of this flow")
    p.add_argument("--sort", help="with --experiments: sort by this column (-NAME: descending)")
    p.add_argument("--metric", action="append", help="with --experiments: plot this metric "
                   "(repeatable)")
    p.add_argument("--steps", action="store_true",
                   help="with --experiments: plot by step, the first five runs")
    p.add_argument("--task", help="with --run: select this task (its output, error and log)")
    p.add_argument("--size", default="150x44", help="terminal COLUMNSxROWS (default: %(default)s)")
    p.add_argument("out", type=Path, help="where to write the SVG")
    return p


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        cols, rows = (int(v) for v in ns.size.lower().split("x"))
        options = options_from_args(ns)
    except ValueError as exc:
        print(f"screenshot: bad --size or connection option: {exc}", file=sys.stderr)
        return 2
    app = DashboardApp(ClientSource(options), tick_s=None)
    failure: list[str] = []

    async def pilot_script(pilot: Pilot[None]) -> None:
        try:
            if ns.flow:
                await _show_flow(app, pilot, ns.flow)
            elif ns.run:
                await _show_run(app, ns.run, ns.task)
            elif ns.experiments:
                await _show_experiments(app, pilot, ns)
            else:
                app.action_show_tab("agents")
                await _until(lambda: app.query_one("#agents-table", DataTable).row_count > 0,
                             "an agent")
            await pilot.pause(0.3)
            app.save_screenshot(ns.out.name, str(ns.out.parent.resolve()))
        except NotFound as exc:
            failure.append(str(exc))
        app.exit()

    app.run(headless=True, size=(cols, rows), auto_pilot=pilot_script)
    if failure:
        print(f"screenshot: {failure[0]}", file=sys.stderr)
        return 1
    print(f"wrote {ns.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
