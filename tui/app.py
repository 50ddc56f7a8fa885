"""flowforge-dashboard: the Textual app, its data source given as a parameter, and its entry point."""

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.signal import Signal
from textual.widgets import Footer, Header, TabbedContent, TabPane

from flowforge.connection import DEFAULT_NATS_URL, add_connection_args, options_from_args
from protocol.states import RUN_FINAL
from tui.agents_view import AgentsView
from tui.banner import Banner
from tui.batches_view import BatchesView
from tui.children_view import ChildrenScreen
from tui.experiments_view import ExperimentsScreen
from tui.flows_view import FlowsView
from tui.follower import Follower
from tui.hub import Hub
from tui.insights_view import InsightsScreen
from tui.instances_view import InstancesScreen
from tui.limits_view import LimitsScreen
from tui.model import Dirty, Model
from tui.operator import Operator
from tui.problems_view import ProblemsView
from tui.run_view import RunScreen
from tui.runs_view import RunsView
from tui.schedules_view import SchedulesView
from tui.source import DataSource

RUN_SCREENS = (RunScreen, InstancesScreen, ChildrenScreen, LimitsScreen, InsightsScreen,
               ExperimentsScreen)
"""The screens over the tabs (one run's, limits, insights, experiments): a tab's key leaves them all."""
FLUSH_S = 0.05
"""Events are applied at once but drawn at most this often: a busy run stays cheap to watch."""

EPILOG = """examples:
  flowforge-dashboard                              # NATS on 127.0.0.1:4222
  flowforge-dashboard --nats nats://ops-nats:4222 --namespace staging

keys: f flows, r runs, a agents, p problems, enter open (on a mapped task: its instances,
failed first; on a task with children, k too: its children, failed first, and enter on a child
its own), t trigger, c cancel, y retry,
w schedules (u pause or resume, n run now), L limits (holders and waiters),
i insights (runs per day by status, task durations p50/p95, failure rates; d: 7 to 90 days),
e experiments (a flow's runs x metrics: s / o sort, / filter, m metric, v runs or steps,
space mark, enter the run),
b batches (enter its items, enter on an item its run, u pause or resume, c cancel),
m mark a task, o a task's whole output, g its whole log, l load more runs,
in a DAG: arrows move, - / + zoom out / in, x collapse or expand a group, X all groups,
s stack or unstack wide fan-outs,
escape back, ctrl+p command palette, q quit
"""


class DashboardApp(App[None]):
    """Follows one deployment through ``source``; ``clock`` gives "now" (fixed in tests)."""

    CSS_PATH = "dashboard.tcss"
    TITLE = "FlowForge"
    BINDINGS = [
        Binding("f", "show_tab('flows')", "Flows"),
        Binding("r", "show_tab('runs')", "Runs"),
        Binding("a", "show_tab('agents')", "Agents"),
        Binding("p", "show_tab('problems')", "Problems"),
        Binding("w", "show_tab('schedules')", "Schedules"),
        Binding("b", "show_tab('batches')", "Batches"),
        Binding("L", "limits", "Limits", show=False),
        Binding("i", "insights", "Insights"),
        Binding("e", "experiments", "Experiments"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, source: DataSource, *, clock: Callable[[], float] = time.time,
                 tick_s: float | None = 1.0, quiet_s: float = 15.0, retry_s: float = 0.5) -> None:
        super().__init__()
        self.hub = Hub(source, Model(), clock, Signal(self, "changed"))
        self.hub.operator = Operator(self, self.hub, self.open_run)
        self.follower = Follower(source, self.hub.model, clock, self.on_model_change,
                                 quiet_s=quiet_s, retry_s=retry_s)
        self.tick_s = tick_s
        self.sub_title = source.description
        self._dirty = Dirty()
        self._flush_pending = False

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Banner(id="banner")
        with TabbedContent(initial="flows", id="tabs"):
            with TabPane("Flows", id="flows"):
                yield FlowsView(id="flows-view")
            with TabPane("Runs", id="runs"):
                yield RunsView(id="runs-view")
            with TabPane("Agents", id="agents"):
                yield AgentsView(id="agents-view")
            with TabPane("Problems", id="problems"):
                yield ProblemsView(id="problems-view")
            with TabPane("Schedules", id="schedules"):
                yield SchedulesView(id="schedules-view")
            with TabPane("Batches", id="batches"):
                yield BatchesView(id="batches-view")
        yield Footer()

    FOCUS = {"flows": "#flows-table", "runs": "#runs-table", "agents": "#agents-table",
             "problems": "#problems-table", "schedules": "#schedules-table",
             "batches": "#batches-table"}
    """The widget that takes the keys when a tab is shown."""

    def on_mount(self) -> None:
        self.query_one("#flows-table").focus()
        self.follow()
        if self.tick_s:
            self.set_interval(self.tick_s, lambda: self.on_model_change(Dirty({"tick"})))

    @work(exclusive=True, group="follow")
    async def follow(self) -> None:
        await self.follower.run()

    async def on_unmount(self) -> None:
        await self.hub.source.close()

    def on_model_change(self, dirty: Dirty) -> None:
        self._dirty.merge(dirty)
        if not self._flush_pending:
            self._flush_pending = True
            self.set_timer(FLUSH_S, self._publish_changes)

    def _publish_changes(self) -> None:
        dirty, self._dirty, self._flush_pending = self._dirty, Dirty(), False
        if dirty:
            self.hub.changed.publish(dirty)

    # -- navigation and commands -----------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # While a dialog is open, the tab keys belong to it.
        return not (action == "show_tab" and isinstance(self.screen, ModalScreen))

    def action_show_tab(self, tab: str) -> None:
        while len(self.screen_stack) > 1 and isinstance(self.screen, RUN_SCREENS):
            self.pop_screen()
        self.query_one("#tabs", TabbedContent).active = tab
        self.query_one(self.FOCUS[tab]).focus()

    def action_limits(self) -> None:
        """Concurrency limits with their holders and waiters (a screen over the tabs)."""
        if not isinstance(self.screen, LimitsScreen | ModalScreen):
            self.push_screen(LimitsScreen())

    def action_insights(self) -> None:
        """The summary charts of the runs kept (a screen over the tabs)."""
        if not isinstance(self.screen, InsightsScreen | ModalScreen):
            self.push_screen(InsightsScreen())

    def action_experiments(self) -> None:
        """A flow's runs x metrics, sortable, filterable, plotted (a screen over the tabs); the
        flow under the Flows tab's cursor, if that tab is shown."""
        if not isinstance(self.screen, ExperimentsScreen | ModalScreen):
            on_flows = (len(self.screen_stack) == 1
                        and self.query_one("#tabs", TabbedContent).active == "flows")
            self.push_screen(ExperimentsScreen(self.query_one(FlowsView).flow_name
                                               if on_flows else None))

    def open_run(self, run_id: str) -> None:
        while len(self.screen_stack) > 1 and isinstance(self.screen, RUN_SCREENS):
            self.pop_screen()
        self.push_screen(RunScreen(run_id))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for tab in self.FOCUS:
            yield SystemCommand(f"Show {tab}", f"the {tab} view",
                                lambda tab=tab: self.action_show_tab(tab))
        yield SystemCommand("Show limits", "concurrency limits, their holders and waiters (L)",
                            self.action_limits)
        yield SystemCommand("Show insights", "runs per day by status, task durations, failure "
                            "rates (i)", self.action_insights)
        yield SystemCommand("Show experiments", "a flow's runs x metrics: sort, filter, plot (e)",
                            self.action_experiments)
        model = self.hub.model
        for flow in model.flows_view():
            yield SystemCommand(f"Trigger {flow.name}", "start a run with parameters",
                                lambda name=flow.name: self.hub.operator.trigger(name),
                                discover=False)
        for run in model.runs_view()[:50]:
            yield SystemCommand(f"Open run {run.run_id}", f"{run.flow}, {run.status.value}",
                                lambda run_id=run.run_id: self.open_run(run_id), discover=False)
        yield from self._run_commands(screen)

    def selected_run(self, screen: Screen[Any]) -> str | None:
        """The run the user is on: the open run, else the runs table's highlighted row."""
        if isinstance(screen, RUN_SCREENS):
            return screen.run_id
        tabs = next(screen.query("#tabs").results(TabbedContent), None)
        if tabs is None or tabs.active != "runs":
            return None
        return screen.query_one(RunsView).run_id

    def _run_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Cancel, retry and mark for the selected run (each asks first, like its key)."""
        run_id = self.selected_run(screen)
        run = self.hub.model.runs.get(run_id or "")
        if run is None:
            return
        operator = self.hub.operator
        if run.status not in RUN_FINAL:
            yield SystemCommand(f"Cancel run {run.run_id}", "pending tasks are cancelled, running "
                                "ones told to stop (c)", lambda: operator.cancel(run.run_id))
        yield SystemCommand(f"Retry run {run.run_id}", "its failed, cancelled and upstream-failed "
                            "tasks (y)", lambda: operator.retry(run.run_id))
        if not isinstance(screen, RunScreen):
            return
        selected = screen.task_name
        names = [t.name for t in screen.spec.tasks] if screen.spec else []
        for name in sorted(names, key=lambda n: n != selected):  # the selected task first
            yield SystemCommand(f"Mark {name} of run {run.run_id}",
                                "set it succeeded (with an output) or failed; dependants follow (m)",
                                lambda name=name: operator.mark(run.run_id, name),
                                discover=name == selected)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowforge-dashboard", epilog=EPILOG,
        description="Follow a FlowForge deployment live: flows, runs, agents, problems, schedules, "
                    "batches, limits, insights.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_connection_args(p, nats_default=DEFAULT_NATS_URL)
    return p


def main(argv: list[str] | None = None) -> int:
    """Console script: exits 0 when the user quits, 2 on a usage error."""
    from tui.client_source import ClientSource

    ns = build_parser().parse_args(argv)
    try:
        options = options_from_args(ns)
        source = ClientSource(options)
    except ValueError as exc:  # e.g. a namespace that is not a valid subject token
        print(f"flowforge-dashboard: {exc}", file=sys.stderr)
        return 2
    DashboardApp(source).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
