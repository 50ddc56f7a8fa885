"""InsightsScreen: the summary charts of the runs kept (``stats.flow``) — runs per UTC day
stacked by status, task durations p50/p95, failure rate per flow — for every flow or one (a
picker), over 7 to 90 days. Asked for again when runs change (at most every REFRESH_GAP_S) and
every IDLE_REFRESH_S otherwise: one request, however busy the deployment."""

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Select, Static
from textual_plotext import PlotextPlot

from flowforge.stats_charts import STATUS_ORDER, percent
from flowforge.terminal import safe
from protocol.errors import FlowForgeError
from protocol.stats import FlowStats, TaskDurations
from tui.banner import Banner
from tui.hub import hub_of
from tui.model import Dirty
from tui.reloading import ReloadingScreen

DAY_CHOICES = (7, 14, 30, 90)
REFRESH_GAP_S = 5.0
"""Least time between two requests while runs keep changing."""
IDLE_REFRESH_S = 60.0
"""Asked for again this often when nothing changed (the window moves at midnight UTC)."""
TASKS_PLOTTED = 12
"""Of every flow's tasks, the slowest by p95 are plotted (the head says how many there are);
of the flows, those failing most."""
COLOUR = {"succeeded": (76, 175, 80), "failed": (229, 57, 53), "cancelled": (158, 158, 158),
          "running": (253, 216, 53), "pending": (77, 208, 225), "p50": (66, 165, 245),
          "p95": (171, 71, 188)}
"""RGB, so the plots and their legends agree whatever the theme (plotext's named colours
follow the terminal's palette); states as the CLI and the run views colour them."""


def legend(names: tuple[str, ...]) -> Text:
    text = Text()
    for name in names:
        text.append("██ ", style="rgb({},{},{})".format(*COLOUR[name])).append(f"{name}   ")
    return text


def day_series(stats: FlowStats) -> tuple[list[str], list[list[int]]]:
    """Day labels (``06-15``) and one series per status in STATUS_ORDER."""
    labels = [d.day[5:] for d in stats.runs_per_day]
    return labels, [[d.counts.get(k, 0) for d in stats.runs_per_day] for k in STATUS_ORDER]


def plotted_tasks(stats: FlowStats) -> list[TaskDurations]:
    """One flow's tasks in name order; of every flow's, the TASKS_PLOTTED slowest by p95."""
    if stats.flow is not None:
        return stats.durations[:TASKS_PLOTTED]
    slowest = sorted(stats.durations, key=lambda d: -d.p95_s)[:TASKS_PLOTTED]
    return sorted(slowest, key=lambda d: (d.flow, d.task))


def head_text(stats: FlowStats) -> str:
    what = stats.flow or "every flow"
    first, last = stats.runs_per_day[0].day, stats.runs_per_day[-1].day
    runs = sum(d.total for d in stats.runs_per_day)
    parts = [f"Insights: {what}, {first} to {last} (UTC): {runs} runs",
             f"durations of succeeded attempts in the {stats.sample_runs} newest finished runs"]
    if stats.flow is not None and stats.failures:
        parts.append(f"failure rate {percent(stats.failures[0].failure_rate)}")
    if stats.flow is None and len(stats.durations) > TASKS_PLOTTED:
        parts.append(f"the {TASKS_PLOTTED} slowest of {len(stats.durations)} tasks plotted")
    return " · ".join(parts)


class InsightsScreen(ReloadingScreen):
    BINDINGS = [Binding("escape", "back", "Back"), Binding("d", "cycle_days", "Days")]

    def __init__(self, flow: str | None = None, days: int = 14) -> None:
        super().__init__(REFRESH_GAP_S)
        self.flow = flow
        self.days = days
        self.stats: FlowStats | None = None
        self.error: str | None = None
        self.loads = 0
        """Answers (or errors) drawn so far."""
        self.flow_names: list[str] = []

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        with Vertical(id="insights-main"):
            with Horizontal(id="insights-bar"):
                yield Select[str]([], prompt="flow: all", id="insights-flow")
                yield Select([(f"last {d} days", d) for d in DAY_CHOICES], value=self.days,
                             allow_blank=False, id="insights-days")
            yield Static("Insights: loading…", id="insights-head")
            yield PlotextPlot(id="runs-plot")
            yield Static(legend(STATUS_ORDER), id="runs-legend")
            with Horizontal(id="insights-lower"):
                yield PlotextPlot(id="durations-plot")
                yield PlotextPlot(id="failures-plot")
            yield Static(legend(("p50", "p95")), id="durations-legend")
        yield Footer()

    def on_mount(self) -> None:
        self.fill_flows()
        self.query_one("#insights-flow", Select).focus()
        hub_of(self).changed.subscribe(self, self.on_changed)
        self.load()

    def fill_flows(self) -> None:
        select: Select[str] = self.query_one("#insights-flow", Select)
        names = sorted(set(hub_of(self).model.flows) | ({self.flow} if self.flow else set()))
        if names != self.flow_names:
            self.flow_names = names
            with select.prevent(Select.Changed):
                select.set_options([(n, n) for n in names])  # resets the choice: put it back
                if self.flow in names:
                    select.value = self.flow

    def on_changed(self, dirty: Dirty) -> None:
        if "flows" in dirty.kinds:
            self.fill_flows()
        if dirty.runs or "link" in dirty.kinds or (
                "tick" in dirty.kinds and time.monotonic() - self._loaded_at >= IDLE_REFRESH_S):
            self.mark_stale()
        self.load_when_due()

    @on(Select.Changed, "#insights-flow")
    @on(Select.Changed, "#insights-days")
    def choice_changed(self) -> None:
        flow = self.query_one("#insights-flow", Select).value
        days = self.query_one("#insights-days", Select).value
        chosen = (None if flow is Select.NULL else str(flow),
                  int(days) if isinstance(days, int) else self.days)
        if chosen != (self.flow, self.days):
            self.flow, self.days = chosen
            self.load()

    def action_cycle_days(self) -> None:
        after = [d for d in DAY_CHOICES if d > self.days]
        self.query_one("#insights-days", Select).value = after[0] if after else DAY_CHOICES[0]

    @work(exclusive=True, group="insights")
    async def load(self) -> None:
        hub = hub_of(self)
        self._loaded_at = time.monotonic()
        try:
            stats = await hub.source.flow_stats(self.flow, self.days, until=hub.clock())
        except FlowForgeError as exc:
            self.error = f"could not fetch the charts: {exc}"
        else:
            self.error, self.stats = None, stats
        self.draw()
        self.loads += 1

    def draw(self) -> None:
        s = self.stats
        head = self.error or (head_text(s) if s else "Insights: loading…")
        self.query_one("#insights-head", Static).update(Text(safe(head)))
        if s is not None:
            self._draw_runs(s)
            self._draw_durations(s)
            self._draw_failures(s)

    def _draw_runs(self, s: FlowStats) -> None:
        plot = self.query_one("#runs-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_figure()
        labels, series = day_series(s)
        plt.stacked_bar(labels, series, color=[COLOUR[k] for k in STATUS_ORDER])
        plt.title("runs per UTC day, by status")
        plot.refresh()

    def _draw_durations(self, s: FlowStats) -> None:
        plot = self.query_one("#durations-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_figure()
        tasks = plotted_tasks(s)
        top = max((d.p95_s for d in tasks), default=0.0)
        unit, scale = ("min", 60.0) if top >= 120 else ("s", 1.0) if top >= 1 else ("ms", 1e-3)
        if tasks:
            names = [safe(d.task if s.flow else f"{d.flow}:{d.task}") for d in tasks]
            plt.multiple_bar(names, [[d.p50_s / scale for d in tasks],
                                     [d.p95_s / scale for d in tasks]],
                             color=[COLOUR["p50"], COLOUR["p95"]],
                             orientation="horizontal")
        plt.title(f"task duration p50 / p95 ({unit})" if tasks else
                  "task duration: no succeeded task in the finished runs")
        plot.refresh()

    def _draw_failures(self, s: FlowStats) -> None:
        plot = self.query_one("#failures-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_figure()
        rated = [f for f in s.failures if f.failure_rate is not None]
        rated = sorted(sorted(rated, key=lambda f: -(f.failure_rate or 0.0))[:TASKS_PLOTTED],
                       key=lambda f: f.flow)  # the worst, in name order
        if rated:
            plt.bar([safe(f.flow) for f in rated], [100 * (f.failure_rate or 0.0) for f in rated],
                    color=COLOUR["failed"], orientation="horizontal")
            plt.xlim(0, 100)
        plt.title("failure rate, % of finished runs" if rated else "failure rate: no run finished")
        plot.refresh()

    def action_back(self) -> None:
        self.app.pop_screen()

