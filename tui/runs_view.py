"""RunsView: recent runs, newest first, filtered by flow and status, kept current by events."""

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Select

from flowforge.render import stamp
from protocol.records import RunRecord
from protocol.states import RUN_FINAL, RunStatus
from tui import describe, palette
from tui.hub import hub_of
from tui.model import Dirty
from tui.table_sync import Row, selected_key, sync_rows


def run_row(run: RunRecord, now: float) -> Row:
    end = run.finished_at if run.status in RUN_FINAL else None
    progress = f"{run.counts.done}/{run.counts.total}"
    if run.counts.failed:
        progress += f" ({run.counts.failed} failed)"
    return run.run_id, (run.run_id, run.flow, palette.run_text(run.status),
                        stamp(run.started_at or run.created_at),
                        describe.elapsed(run.started_at, end, now), Text(progress))


class RunsView(Vertical):
    BINDINGS = [
        Binding("c", "cancel", "Cancel run"),
        Binding("y", "retry", "Retry failed"),
    ]

    def compose(self) -> ComposeResult:
        with Horizontal(id="runs-filters"):
            yield Input(placeholder="flow: all (type to filter)", id="runs-flow")
            yield Select([(s.value, s.value) for s in RunStatus], prompt="status: all",
                         id="runs-status")
        yield DataTable(id="runs-table", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        table.add_columns("run", "flow", "status", "started", "duration", "progress")
        hub_of(self).changed.subscribe(self, self.on_changed)
        self.fill()

    def on_changed(self, dirty: Dirty) -> None:
        if "runs" in dirty.kinds or "tick" in dirty.kinds:
            self.fill()

    @on(Input.Changed, "#runs-flow")
    @on(Select.Changed, "#runs-status")
    def filters_changed(self) -> None:
        self.fill()

    @on(Input.Submitted, "#runs-flow")
    def to_table(self) -> None:
        self.query_one("#runs-table", DataTable).focus()

    def fill(self) -> None:
        hub = hub_of(self)
        text = self.query_one("#runs-flow", Input).value.strip()
        status = self.query_one("#runs-status", Select).value
        runs = hub.model.runs_view(status=None if status is Select.NULL else str(status))
        if text:
            runs = [r for r in runs if text in r.flow]
        now = hub.clock()
        sync_rows(self.query_one("#runs-table", DataTable), [run_row(r, now) for r in runs])

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
