"""InstancesScreen: a mapped task's instances counted by state and listed failed first (a page per
state, never all of them), the highlighted one in full with its log; live as the task goes on."""

from rich.console import RenderableType
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from flowforge.terminal import safe
from protocol.flows import FlowSpec
from protocol.records import TaskRecord
from tui import describe, palette
from tui.banner import Banner
from tui.forms import TextScreen
from tui.hub import fetch_log, hub_of
from tui.map_rows import MapShown, counts_line, instance_row, listed_note
from tui.map_watch import Throttle, try_fetch
from tui.model import Dirty
from tui.table_sync import selected_key, sync_rows

MAX_ROWS = 300
"""Most instances listed (a task may map a million items): the first of each state."""


class InstancesScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back to the run"),
        Binding("o", "output", "Full output"),
        Binding("g", "log", "Full log"),
    ]

    def __init__(self, run_id: str, task: str, spec: FlowSpec | None) -> None:
        super().__init__()
        self.run_id = run_id
        self.mapped_task = task
        self.spec = spec
        self.shown: MapShown | None = None
        self._basis: TaskRecord | None = None
        """The mapped task's record when the instances were last asked for."""
        self.throttle = Throttle(self, self.load, group="map-instances")

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        with Vertical(id="map-main"):
            yield Static(f"{self.mapped_task} of run {self.run_id}: loading…", id="map-head")
            yield DataTable(id="map-instances", cursor_type="row")
            yield Static("", id="map-note")
            with VerticalScroll(id="map-instance-scroll"):
                yield Static("", id="map-instance")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#map-instances", DataTable)
        table.add_columns("index", "status", "attempt", "agent", "took", "error")
        table.focus()
        hub_of(self).changed.subscribe(self, self.on_changed)
        self.throttle.poke(at_once=True)

    def on_unmount(self) -> None:
        model = hub_of(self).model
        for key in [k for k in model.logs if k[0] == self.run_id
                    and k[1].startswith(self.mapped_task + "~")]:
            del model.logs[key]

    @property
    def record(self) -> TaskRecord | None:
        """The mapped task's own record."""
        return hub_of(self).model.tasks.get(self.run_id, {}).get(self.mapped_task)

    def on_changed(self, dirty: Dirty) -> None:
        if self.run_id not in dirty.runs and "tick" not in dirty.kinds:
            return
        if self.record is not self._basis:
            self.throttle.poke()
        self.draw_head()
        self.show_instance()

    async def load(self) -> None:
        self._basis = self.record
        shown = await try_fetch(hub_of(self).source, self.run_id, self.mapped_task, MAX_ROWS, self.shown)
        if not self.is_attached:
            return
        self.shown = shown
        now = hub_of(self).clock()
        sync_rows(self.query_one("#map-instances", DataTable),
                  [instance_row(r, now) for r in shown.instances])
        self.query_one("#map-note", Static).update(Text(safe(listed_note(shown))))
        self.draw_head()
        self.show_instance()

    def draw_head(self) -> None:
        rec = self.record
        head = Text(f"{self.mapped_task}", style="bold")
        head.append(f" of run {self.run_id}  ")
        if rec is not None:
            head.append_text(palette.task_text(rec.status))
            head.append(safe(f"  {rec.note or ''}"), style="italic")
        head.append("\n")
        head.append_text(counts_line(self.shown or MapShown(self.mapped_task)))
        for widget in self.query("#map-head").results(Static):
            widget.update(head)

    @property
    def instance(self) -> TaskRecord | None:
        """The highlighted instance, as last fetched."""
        key = selected_key(self.query_one("#map-instances", DataTable))
        return next((r for r in self.shown.instances if r.task == key), None) if self.shown else None

    @on(DataTable.RowHighlighted, "#map-instances")
    def show_instance(self) -> None:
        hub = hub_of(self)
        rec, run = self.instance, hub.model.runs.get(self.run_id)
        text: RenderableType = describe.plain("no instance selected", style="grey50")
        if rec is not None and run is not None:
            buffer, new = hub.model.follow_log(self.run_id, rec.task)
            if new:
                self.load_log(rec.task)
            log = buffer.text if buffer.loaded else None
            text = describe.run_task(run, self.spec, rec, self.mapped_task, hub.clock(), log)
        for panel in self.query("#map-instance").results(Static):
            panel.update(text)

    @work(group="map-log")
    async def load_log(self, name: str) -> None:
        if await fetch_log(hub_of(self), self.run_id, name) and self.is_attached:
            self.show_instance()

    def action_back(self) -> None:
        self.dismiss(None)

    def action_output(self) -> None:
        rec = self.instance
        if rec is None:
            return
        text = describe.pretty_output(rec)
        if rec.traceback:
            text += f"\n\n{rec.error_type}: {rec.error_message}\n{rec.traceback}"
        self.app.push_screen(TextScreen(f"{rec.task} of run {self.run_id}", text))

    def action_log(self) -> None:
        rec = self.instance
        buffer = hub_of(self).model.logs.get((self.run_id, rec.task)) if rec else None
        if rec is None or buffer is None or not buffer.loaded:
            return
        self.app.push_screen(TextScreen(f"log of {rec.task} in run {self.run_id}",
                                        buffer.text or "(nothing logged or printed)"))
