"""SchedulesView: every schedule, its next fire and what became of its last time (its run's
state when the dashboard knows the run); pause, resume and run now (each confirmed)."""

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from flowforge.firetimes import next_fires
from flowforge.schedule_cli import describe_when, local_time
from flowforge.terminal import safe
from protocol.records import RunRecord
from protocol.schedules import FireOutcome, FireRecord, ScheduleState
from tui.hub import hub_of
from tui.model import Dirty
from tui.palette import run_text
from tui.table_sync import Row, selected_key, sync_rows

OUTCOME_COLOUR = {FireOutcome.STARTED: "green", FireOutcome.SKIPPED: "yellow",
                  FireOutcome.MISSED: "bold red", FireOutcome.BUFFERED: "cyan"}


def last_text(last: FireRecord | None, run: RunRecord | None) -> Text:
    """What became of the last time: its run's state when the dashboard knows the run (a
    started run succeeded, failed...), else the time's outcome (skipped, missed...)."""
    if last is None:
        return Text("-")
    if run is not None and run.run_id == last.run_id:
        return run_text(run.status)
    return Text(last.outcome.value, style=OUTCOME_COLOUR.get(last.outcome, ""))


def schedule_row(s: ScheduleState, last: FireRecord | None, run: RunRecord | None = None) -> Row:
    spec = s.spec
    upcoming = [] if s.paused else next_fires(spec, s.cursor, 1)
    state = Text("paused" + (f": {s.note}" if s.note else ""), style="yellow") if s.paused \
        else Text("active", style="green")
    return spec.name, (spec.name, spec.flow, describe_when(spec),
                       local_time(upcoming[0], spec.timezone) if upcoming else "-",
                       last_text(last, run), state)


def schedule_detail(s: ScheduleState, last: FireRecord | None,
                    run: RunRecord | None = None) -> str:
    spec = s.spec
    times = [] if s.paused else next_fires(spec, s.cursor, 5)
    lines = [f"{spec.name}: flow {spec.flow}, {describe_when(spec)}, overlap {spec.overlap.value}, "
             f"catch-up {spec.catchup.value}, "
             f"{'defined in code' if s.origin == 'code' else 'added from the CLI'}",
             "next: " + (", ".join(local_time(t, spec.timezone) for t in times) or "-")]
    if last is not None:
        lines.append(f"last: {local_time(last.nominal, spec.timezone)} {last.outcome.value}"
                     f"{' run ' + last.run_id if last.run_id else ''}"
                     f"{', ' + run.status.value if run is not None else ''}"
                     f"{' (' + last.reason + ')' if last.reason else ''}")
    lines.append("u pause or resume, n run now")
    return "\n".join(lines)


class SchedulesView(Vertical):
    BINDINGS = [Binding("u", "toggle_pause", "Pause/resume"), Binding("n", "run_now", "Run now")]

    def compose(self) -> ComposeResult:
        yield DataTable(id="schedules-table", cursor_type="row")
        with VerticalScroll(id="schedule-detail-scroll"):
            yield Static("", id="schedule-detail")

    def on_mount(self) -> None:
        table = self.query_one("#schedules-table", DataTable)
        table.add_columns("schedule", "flow", "when", "next fire", "last", "state")
        hub_of(self).changed.subscribe(self, self.on_changed)
        self.fill()

    def on_changed(self, dirty: Dirty) -> None:
        runs = hub_of(self).model.runs
        if ("schedules" in dirty.kinds or "tick" in dirty.kinds
                or any(runs[r].schedule for r in dirty.runs if r in runs)):  # a run of one
            self.fill()

    def _last(self, name: str) -> tuple[FireRecord | None, RunRecord | None]:
        model = hub_of(self).model
        last = model.last_fire.get(name)
        return last, model.runs.get(last.run_id) if last and last.run_id else None

    def fill(self) -> None:
        model = hub_of(self).model
        rows = [schedule_row(s, *self._last(name)) for name, s in sorted(model.schedules.items())]
        sync_rows(self.query_one("#schedules-table", DataTable), rows)
        self.show_detail()

    def _selected(self) -> ScheduleState | None:
        key = selected_key(self.query_one("#schedules-table", DataTable))
        return hub_of(self).model.schedules.get(key or "")

    @on(DataTable.RowHighlighted, "#schedules-table")
    def show_detail(self) -> None:
        state = self._selected()
        text = (schedule_detail(state, *self._last(state.spec.name))
                if state else "no schedules: `flowforge schedule add` or schedules=[...] in code")
        self.query_one("#schedule-detail", Static).update(Text(safe(text)))

    def action_toggle_pause(self) -> None:
        state = self._selected()
        if state is not None:
            hub_of(self).operator.toggle_schedule(state.spec.name, state.paused)

    def action_run_now(self) -> None:
        state = self._selected()
        if state is not None:
            hub_of(self).operator.run_schedule(state.spec.name)
