"""ExperimentsScreen: one flow's runs x metrics (``experiments.list``) — run, status, the
parameters that differ between the rows (highlighted), each final metric — sorted in memory,
filtered by a ``--where`` expression (the coordinator's SQL), and a plot of chosen metrics
across the runs in table order or across the steps of chosen runs (``experiments.compare``).
Asked for again when a run of the flow finishes, at most every REFRESH_GAP_S."""

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import Click
from textual.widgets import DataTable, Footer, Input, Select, Static
from textual_plotext import PlotextPlot

from flowforge.terminal import safe
from protocol.errors import FlowForgeError
from protocol.experiment_query import parse_where
from protocol.experiments import Comparison, ExperimentRow, ExperimentsPage
from protocol.states import RUN_FINAL
from tui.banner import Banner
from tui.experiment_rows import (
    Column,
    across_runs,
    columns,
    header,
    latest_series,
    newest_first,
    run_at,
    short_id,
    sorted_rows,
    table_cells,
)
from tui.hub import hub_of
from tui.model import Dirty
from tui.reloading import ReloadingScreen
from tui.run_view import RunScreen
from tui.runs_table import RunsTable
from tui.table_sync import selected_key

MAX_ROWS = 10_000
"""Runs loaded at most (the newest that match)."""
REFRESH_GAP_S = 3.0
"""Least time between two loads while runs of the flow keep finishing."""
MAX_COMPARED = 10
"""Runs whose steps are plotted at once."""


class ExperimentsScreen(ReloadingScreen):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("s", "next_sort", "Sort by next"),
        Binding("o", "reverse", "Reverse"),
        Binding("m", "next_metric", "Plot metric"),
        Binding("v", "toggle_plot", "Runs/steps"),
        Binding("space", "mark", "Mark run"),
        Binding("slash", "where", "Filter", show=False),
    ]

    def __init__(self, flow: str | None = None) -> None:
        super().__init__(REFRESH_GAP_S)
        self.flow = flow
        self.where: str | None = None
        self.page: ExperimentsPage | None = None
        self.rows: list[ExperimentRow] = []
        """The loaded rows, in table order."""
        self.newest: list[ExperimentRow] = []
        """The same, newest first."""
        self.cols: list[Column] = []
        self.sort: Column | None = None
        self.descending = False
        self.plotted: list[str] = []
        """The metrics plotted (empty: the first one)."""
        self.steps = False
        """Plot across the steps of the marked runs (else across the runs, in table order)."""
        self.marked: list[str] = []
        self.comparison: Comparison | None = None
        self.error: str | None = None
        self.loads = 0
        self.timings: dict[str, float] = {}
        """The last load's: waiting for the rows, filling the table (for the benchmark)."""
        self.flow_names: list[str] = []

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        with Vertical(id="exp-main"):
            with Horizontal(id="exp-bar"):
                yield Select[str]([], prompt="flow", id="exp-flow")
                yield Input(placeholder="where: params.lr<0.01 and metrics.accuracy>=0.9 "
                            "(enter)", id="exp-where")
            yield Static("Experiments: choose a flow", id="exp-head")
            yield RunsTable(id="exp-table", cursor_type="row", zebra_stripes=True)
            yield PlotextPlot(id="exp-plot")
        yield Footer()

    def on_mount(self) -> None:
        if self.flow is None and hub_of(self).model.flows:
            self.flow = min(hub_of(self).model.flows)
        self.fill_flows()
        self.query_one("#exp-table", DataTable).focus()
        hub_of(self).changed.subscribe(self, self.on_changed)
        if self.flow is not None:
            self.load()

    def fill_flows(self) -> None:
        select: Select[str] = self.query_one("#exp-flow", Select)
        names = sorted(set(hub_of(self).model.flows) | ({self.flow} if self.flow else set()))
        if names != self.flow_names:
            self.flow_names = names
            with select.prevent(Select.Changed):
                select.set_options([(safe(n), n) for n in names])
                if self.flow in names:
                    select.value = self.flow

    # -- loading ---------------------------------------------------------------------------

    def on_changed(self, dirty: Dirty) -> None:
        if "flows" in dirty.kinds:
            self.fill_flows()
        runs = hub_of(self).model.runs
        if any((run := runs.get(r)) is not None and run.flow == self.flow
               and run.status in RUN_FINAL for r in dirty.runs) or "link" in dirty.kinds:
            self.mark_stale()
        if self.flow is not None:  # runs finishing one after another: one load after the gap
            self.load_when_due()

    @on(Select.Changed, "#exp-flow")
    def flow_changed(self, event: Select.Changed) -> None:
        flow = None if event.value is Select.NULL else str(event.value)
        if flow != self.flow:
            self.flow, self.sort, self.plotted, self.marked = flow, None, [], []
            self.comparison, self.steps = None, False
            self.load()

    @on(Input.Submitted, "#exp-where")
    def where_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip() or None
        try:
            parse_where(text)
        except FlowForgeError as exc:
            self.error = str(exc)
            self.draw_head()
            return
        self.where = text
        self.query_one("#exp-table", DataTable).focus()
        self.load()

    @work(exclusive=True, group="experiments")
    async def load(self) -> None:
        if self.flow is None:
            return
        self._loaded_at = time.monotonic()
        try:
            page = await hub_of(self).source.experiments(self.flow, where=self.where,
                                                         limit=MAX_ROWS)
        except FlowForgeError as exc:
            self.error = f"could not list the experiments: {exc}"
        else:
            self.error, self.page = None, page
            fetched = time.monotonic()
            self.fill_table(page)
            self.timings = {"fetch_s": fetched - self._loaded_at,
                            "table_s": time.monotonic() - fetched}
            if self.steps:
                await self.load_steps()
        self.draw_head()
        self.draw_plot()
        self.loads += 1

    async def load_steps(self) -> None:
        chosen = self.chosen_runs()
        if not chosen:
            self.comparison = None
            return
        try:
            self.comparison = await hub_of(self).source.compare(chosen)
        except FlowForgeError as exc:
            self.error = f"could not compare the runs: {exc}"

    def chosen_runs(self) -> list[str]:
        """The marked runs still shown, else the cursor's."""
        shown = {r.run_id for r in self.rows}
        chosen = [r for r in self.marked if r in shown][:MAX_COMPARED]
        current = self.cursor_run()
        return chosen or ([current] if current else [])

    # -- the table -------------------------------------------------------------------------

    def fill_table(self, page: ExperimentsPage) -> None:
        """Columns and rows anew (one batch), in the current sort's order; the cursor stays on
        its run."""
        table = self.query_one("#exp-table", RunsTable)
        current = self.cursor_run()
        cols = columns(page.differing, page.metrics)
        if self.sort is not None and self.sort.key not in {c.key for c in cols}:
            self.sort = None
        self.newest = newest_first(page.rows)
        self.rows = sorted_rows(self.newest, self.sort, self.descending, newest=True)
        table.clear(columns=True)
        self.cols = cols
        built, sizes = table_cells(self.rows, cols)
        for col, width in zip(cols, sizes, strict=True):
            table.add_column(header(col), key=col.key, width=width)
        table.add_keyed_rows([(r.run_id, c) for r, c in zip(self.rows, built, strict=True)])
        self.move_to(current)

    def cursor_run(self) -> str | None:
        return selected_key(self.query_one("#exp-table", DataTable))

    def move_to(self, run_id: str | None) -> None:
        table = self.query_one("#exp-table", DataTable)
        index = next((i for i, r in enumerate(self.rows) if r.run_id == run_id), 0)
        if self.rows:
            table.move_cursor(row=index, animate=False)

    def sort_by(self, column: Column | None, descending: bool) -> None:
        """Re-orders the rows already in the table (no rebuild); the cursor stays on its run."""
        current = self.cursor_run()
        self.sort, self.descending = column, descending
        self.rows = sorted_rows(self.newest, column, descending, newest=True)
        self.query_one("#exp-table", RunsTable).reorder([r.run_id for r in self.rows])
        self.move_to(current)
        self.draw_head()
        self.draw_plot()

    def action_next_sort(self) -> None:
        keys = [c.key for c in self.cols]
        at = keys.index(self.sort.key) + 1 if self.sort is not None else 0
        self.sort_by(self.cols[at] if at < len(self.cols) else None, False)

    def action_reverse(self) -> None:
        if self.sort is not None:
            self.sort_by(self.sort, not self.descending)

    @on(DataTable.HeaderSelected, "#exp-table")
    def header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = next(c for c in self.cols if c.key == event.column_key.value)
        same = self.sort is not None and self.sort.key == column.key
        self.sort_by(column, not self.descending if same else column.kind == "metrics")

    @on(DataTable.RowSelected, "#exp-table")
    def row_selected(self) -> None:
        run_id = self.cursor_run()
        if run_id is not None:  # over this screen: escape comes back here
            self.app.push_screen(RunScreen(run_id))

    @on(DataTable.RowHighlighted, "#exp-table")
    def row_highlighted(self) -> None:
        if self.rows and not self.steps:
            self.draw_plot()

    # -- marks and the plot ----------------------------------------------------------------

    def action_mark(self) -> None:
        run_id = self.cursor_run()
        if run_id is None:
            return
        self.marked = ([r for r in self.marked if r != run_id] if run_id in self.marked
                       else [*self.marked, run_id])
        self.draw_head()
        if self.steps:
            self.refresh_steps()

    def action_next_metric(self) -> None:
        """One metric after another, then all of them together."""
        names = self.page.metrics if self.page else []
        if not names:
            return
        now = self.plotted or names[:1]
        if len(now) > 1:
            self.plotted = names[:1]
        elif now[0] in names and names.index(now[0]) + 1 < len(names):
            self.plotted = [names[names.index(now[0]) + 1]]
        else:
            self.plotted = list(names) if len(names) > 1 else names[:1]
        self.draw_plot()

    def action_toggle_plot(self) -> None:
        self.steps = not self.steps
        if self.steps:
            self.refresh_steps()
        else:
            self.draw_plot()

    @work(exclusive=True, group="experiment-steps")
    async def refresh_steps(self) -> None:
        await self.load_steps()
        self.draw_head()
        self.draw_plot()

    def action_where(self) -> None:
        self.query_one("#exp-where", Input).focus()

    def plotted_metrics(self) -> list[str]:
        names = self.page.metrics if self.page else []
        chosen = [m for m in self.plotted if m in names]
        return chosen or names[:1]

    def draw_head(self) -> None:
        text = self.error or self.head_text()
        self.query_one("#exp-head", Static).update(Text(safe(text)))

    def head_text(self) -> str:
        if self.page is None:
            return "Experiments: loading…" if self.flow else "Experiments: choose a flow"
        p = self.page
        shown = len(self.rows)
        parts = [f"Experiments: {p.flow}: {shown:,} of {p.total:,} runs"
                 + (f" (the newest {MAX_ROWS:,})" if p.total > shown else "")]
        if self.where:
            parts.append(f"where {self.where}")
        parts.append("sorted by " + (f"{'-' if self.descending else ''}{self.sort.key}"
                                     if self.sort else "newest first"))
        if self.marked:
            parts.append(f"{len(self.marked)} marked")
        return " · ".join(parts)

    def draw_plot(self) -> None:
        plot = self.query_one("#exp-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_figure()
        metrics = self.plotted_metrics()
        if not metrics:
            plt.title("no metric logged by these runs")
        elif self.steps:
            self._plot_steps(metrics)
        else:
            self._plot_runs(metrics)
        plot.refresh()

    def _plot_runs(self, metrics: list[str]) -> None:
        plt = self.query_one("#exp-plot", PlotextPlot).plt
        for name in metrics:
            xs, ys = across_runs(self.rows, name)
            if xs:
                plt.scatter(xs, ys, label=safe(name), marker="dot")  # runs: no lines between them
        cursor = self.query_one("#exp-table", DataTable).cursor_row
        if self.rows and 0 <= cursor < len(self.rows):
            plt.vline(cursor + 1, "gray")
        if len(self.rows) > 1:
            plt.xlim(1, len(self.rows))  # run_at maps a click back to a run
        plt.title(f"{', '.join(metrics)} across runs, table order (line: cursor)")

    def _plot_steps(self, metrics: list[str]) -> None:
        plt = self.query_one("#exp-plot", PlotextPlot).plt
        runs = self.comparison.runs if self.comparison else []
        for run in runs:
            for name in metrics:
                for s in latest_series(run, name):
                    tail = f" {s.task}" if len({x.task for x in run.series}) > 1 else ""
                    plt.plot(s.steps, s.values, label=f"{short_id(run.run_id)} {safe(name)}"
                             f"{safe(tail)}", marker="braille")
        plt.title(f"{', '.join(metrics)} by step: "
                  f"{', '.join(short_id(r.run_id) for r in runs) or 'no run chosen'}")

    @on(Click, "#exp-plot")
    def plot_clicked(self, event: Click) -> None:
        """A click on the runs plot puts the cursor on the run under it; a click on the run
        already under the cursor opens it."""
        if self.steps or not self.rows:
            return
        index = run_at(self.plot_canvas(), event.x, len(self.rows))
        if index is None:
            return
        table = self.query_one("#exp-table", DataTable)
        if index == table.cursor_row:
            self.row_selected()
        else:
            table.move_cursor(row=index, animate=False)

    def plot_canvas(self) -> str:
        """The plot as drawn on screen, as plain text."""
        plot = self.query_one("#exp-plot", PlotextPlot)
        plot.plt.plotsize(plot.size.width, plot.size.height)
        return Text.from_ansi(plot.plt.build()).plain

    def action_back(self) -> None:
        self.app.pop_screen()
