"""``python -m tui.screenshot``: the dashboard, headless, against a live deployment, saved as SVG.

For docs and reviews: open a flow's DAG, a run (with one of its tasks selected) or the agents
view, wait until it is drawn, save the screen and exit. Exit codes: 0 saved, 1 the flow, run
or task was not found in time, 2 usage.
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tui.screenshot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_connection_args(p, nats_default=DEFAULT_NATS_URL)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--flow", help="the flows view with this flow's DAG")
    what.add_argument("--run", metavar="RUN_ID", help="the detail of this run")
    what.add_argument("--agents", action="store_true", help="the agents view")
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
