"""RunsView: runs newest first, filtered by flow and status through the API a page at a time,
kept current by events."""

from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Select, Static

from flowforge.render import stamp
from flowforge.terminal import safe
from protocol.errors import FlowForgeError
from protocol.limits import MAX_LIST_LIMIT
from protocol.records import RunRecord
from protocol.states import RUN_FINAL, RunStatus
from tui import describe, palette
from tui.hub import hub_of
from tui.model import Dirty
from tui.table_sync import Row, selected_key, sync_rows

PAGE = 100
"""Runs asked for at first, and added by each "load more"."""

Filters = tuple[str | None, str | None]
"""(flow, status); None for all."""


@dataclass(frozen=True, slots=True)
class Window:
    """What the last query asked for and got. Matching runs older than the oldest it returned
    are not shown (others may lie between them) unless it returned every matching run."""

    filters: Filters
    limit: int
    oldest: tuple[float, str] | None
    """(created_at, run_id) of the oldest run returned, or None: that was all of them."""


def run_row(run: RunRecord, now: float) -> Row:
    end = run.finished_at if run.status in RUN_FINAL else None
    progress = f"{run.counts.done}/{run.counts.total}"
    if run.counts.failed:
        progress += f" ({run.counts.failed} failed)"
    return run.run_id, (run.run_id, run.flow, palette.run_text(run.status),
                        stamp(run.started_at or run.created_at),
                        describe.elapsed(run.started_at, end, now), Text(progress))


def window_note(window: Window | None, shown: int, error: str | None) -> str:
    """The line under the table: how much of the history is shown, and how to see more."""
    if error is not None:
        return f"could not list runs ({error}); showing the runs already known"
    if window is None:
        return "asking the coordinator for runs…"
    if window.oldest is None:
        return f"{shown} run{'s' * (shown != 1)}: all there are"
    if window.limit >= MAX_LIST_LIMIT:
        return f"the newest {shown} runs (the coordinator lists at most {MAX_LIST_LIMIT:,} at once)"
    return f"the newest {shown} runs; l loads {PAGE} more"


class RunsView(Vertical):
    BINDINGS = [
        Binding("c", "cancel", "Cancel run"),
        Binding("y", "retry", "Retry failed"),
        Binding("l", "more", "Load more"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.limit = PAGE
        self.window: Window | None = None
        self.error: str | None = None
        self.flow_names: list[str] = []

    def compose(self) -> ComposeResult:
        with Horizontal(id="runs-filters"):
            yield Select[str]([], prompt="flow: all", id="runs-flow")
            yield Select([(s.value, s.value) for s in RunStatus], prompt="status: all",
                         id="runs-status")
        yield DataTable(id="runs-table", cursor_type="row")
        yield Static("", id="runs-note")

    def on_mount(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        table.add_columns("run", "flow", "status", "started", "duration", "progress")
        hub_of(self).changed.subscribe(self, self.on_changed)
        self.fill_flows()
        self.fill()
        self.ask()

    def on_changed(self, dirty: Dirty) -> None:
        if "flows" in dirty.kinds:
            self.fill_flows()
        if "link" in dirty.kinds and hub_of(self).model.link_down is None:
            self.ask()  # (re)synced: runs may have started while we were away
        if "runs" in dirty.kinds or "tick" in dirty.kinds:
            self.fill()

    def fill_flows(self) -> None:
        select: Select[str] = self.query_one("#runs-flow", Select)
        names = sorted(hub_of(self).model.flows)
        if names != self.flow_names:
            self.flow_names = names
            value = select.value
            select.set_options([(n, n) for n in names])  # resets the choice: put it back
            if value in names:
                select.value = value

    @property
    def filters(self) -> Filters:
        flow = self.query_one("#runs-flow", Select).value
        status = self.query_one("#runs-status", Select).value
        return (None if flow is Select.NULL else str(flow),
                None if status is Select.NULL else str(status))

    @on(Select.Changed, "#runs-flow")
    @on(Select.Changed, "#runs-status")
    def filters_changed(self) -> None:
        if self.window is None or self.window.filters != self.filters:
            self.limit = PAGE
            self.ask()
        self.fill()

    def action_more(self) -> None:
        w = self.window
        if w is not None and w.oldest is not None and w.limit < MAX_LIST_LIMIT:
            self.limit = min(w.limit + PAGE, MAX_LIST_LIMIT)
            self.ask()

    @work(exclusive=True, group="runs-query")
    async def ask(self) -> None:
        """The newest ``limit`` runs matching the filters, from the coordinator."""
        if not self.shown:
            return
        hub = hub_of(self)
        filters, limit = self.filters, self.limit
        since = hub.model.seq
        try:
            runs = await hub.source.runs(flow=filters[0], status=filters[1], limit=limit)
        except FlowForgeError as exc:
            self.window, self.error = None, str(exc)
        else:
            hub.model.add_runs(runs, since)
            hub.model.listed = {r.run_id for r in runs}
            oldest = min(((r.created_at, r.run_id) for r in runs), default=None)
            self.window = Window(filters, limit, oldest if len(runs) >= limit else None)
            self.error = None
        self.fill()

    @property
    def shown(self) -> bool:
        """Still on screen (a query may end while the app closes)."""
        return bool(self.query("#runs-table"))

    def fill(self) -> None:
        if not self.shown:
            return
        hub = hub_of(self)
        filters = self.filters
        runs = hub.model.runs_view(flow=filters[0], status=filters[1])
        w = self.window if self.window is not None and self.window.filters == filters else None
        if w is not None and w.oldest is not None:
            runs = [r for r in runs if (r.created_at, r.run_id) >= w.oldest]
        now = hub.clock()
        sync_rows(self.query_one("#runs-table", DataTable), [run_row(r, now) for r in runs])
        self.query_one("#runs-note", Static).update(Text(safe(window_note(w, len(runs), self.error))))

    @property
    def run_id(self) -> str | None:
        return selected_key(self.query_one("#runs-table", DataTable))

    @on(DataTable.RowSelected, "#runs-table")
    def open_selected(self) -> None:
        if self.run_id is not None:
            hub_of(self).operator.open_run(self.run_id)

    def action_cancel(self) -> None:
        if self.run_id is not None:
            hub_of(self).operator.cancel(self.run_id)

    def action_retry(self) -> None:
        if self.run_id is not None:
            hub_of(self).operator.retry(self.run_id)
