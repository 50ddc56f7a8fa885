"""ChildrenScreen: a task's child tasks counted by state and listed failed first (a page per state,
never all of them), the highlighted one in full; live as their events come. Enter on a child
that has children of its own opens theirs, nested under it."""

from rich.console import RenderableType
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from flowforge.terminal import safe
from protocol.children import CHILD_SEP, ChildInfo, split_child
from protocol.records import TaskRecord
from tui import describe
from tui.banner import Banner
from tui.child_rows import (
    ChildShown,
    child_row,
    counts_line,
    info_of,
    listed_note,
    name_of,
    record_of,
    updated,
)
from tui.child_watch import of_run, resynced, try_fetch_children
from tui.forms import TextScreen
from tui.hub import hub_of
from tui.map_watch import Throttle
from tui.model import Dirty
from tui.table_sync import selected_key, sync_rows

MAX_ROWS = 300
"""Most children listed (a task may have a hundred thousand): the first of each state."""


def trail(parent: str) -> str:
    """``train > train/0 > train/0/3``: where a child sits among its ancestors."""
    parts = parent.split(CHILD_SEP)
    return " > ".join(CHILD_SEP.join(parts[:i]) for i in range(1, len(parts) + 1))


class ChildrenScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("enter", "open", "Its children", show=False),  # the table takes enter first
        Binding("o", "output", "Full output"),
    ]

    def __init__(self, run_id: str, parent: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.parent_task = parent
        self.shown: ChildShown | None = None
        self.records: dict[str, TaskRecord] = {}
        """The newest event record of each listed child (it has the traceback and attempts)."""
        self._during: dict[str, TaskRecord] | None = None
        """Records that came while a fetch was out: they may be newer than its answer."""
        self.throttle = Throttle(self, self.load, group="children")

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        with Vertical(id="kids-main"):
            yield Static(f"children of {self.parent_task} in run {self.run_id}: loading…",
                         id="kids-head")
            yield DataTable(id="kids-table", cursor_type="row")
            yield Static("", id="kids-note")
            with VerticalScroll(id="kids-child-scroll"):
                yield Static("", id="kids-child")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#kids-table", DataTable)
        table.add_columns("seq", "status", "function", "attempt", "took", "children",
                          "output or error")
        table.focus()
        hub_of(self).changed.subscribe(self, self.on_changed)
        self.throttle.poke(at_once=True)

    def on_changed(self, dirty: Dirty) -> None:
        below = [r for r in of_run(dirty, self.run_id)
                 if r.task.startswith(self.parent_task + CHILD_SEP)]
        mine = [r for r in below if (split_child(r.task) or ("", 0))[0] == self.parent_task]
        if below or resynced(self, dirty):
            self.throttle.poke()  # counts, and children not listed yet
        if mine:
            if self._during is not None:
                self._during.update((r.task, r) for r in mine)
            self.take(mine)
        elif "tick" in dirty.kinds:
            self.draw()

    def take(self, records: list[TaskRecord]) -> None:
        """Events for this task's children: the listed ones change at once."""
        if self.shown is None:
            return
        self.shown = updated(self.shown, records)
        listed = {name_of(k) for k in self.shown.children}
        self.records.update((r.task, r) for r in records if r.task in listed)
        self.draw()

    async def load(self) -> None:
        self._during = {}
        try:
            shown = await try_fetch_children(hub_of(self).source, self.run_id, self.parent_task,
                                             MAX_ROWS, self.shown)
        finally:
            during, self._during = self._during or {}, None
        if not self.is_attached:
            return
        self.shown = updated(shown, during.values())
        listed = {name_of(k): k for k in self.shown.children}
        self.records = {n: r for n, r in self.records.items()  # those the answer agrees with
                        if n in listed and info_of(r, listed[n].function) == listed[n]}
        self.draw()

    def draw(self) -> None:
        shown = self.shown
        if shown is None or not self.is_attached:
            return
        now = hub_of(self).clock()
        sync_rows(self.query_one("#kids-table", DataTable),
                  [child_row(k, shown.counts, now) for k in shown.children])
        self.query_one("#kids-note", Static).update(Text(safe(listed_note(shown))))
        head = Text("children of ", style="grey70")
        head.append(safe(self.parent_task), style="bold")
        head.append(safe(f" in run {self.run_id}"), style="grey70")
        if CHILD_SEP in self.parent_task:
            head.append(safe(f"   {trail(self.parent_task)}"), style="italic grey62")
        head.append("\n")
        head.append_text(counts_line(shown.own))
        self.query_one("#kids-head", Static).update(head)
        self.show_child()

    @property
    def child(self) -> ChildInfo | None:
        """The highlighted child, as last fetched or as its events say."""
        key = selected_key(self.query_one("#kids-table", DataTable))
        return next((k for k in self.shown.children if name_of(k) == key), None) if self.shown else None

    @on(DataTable.RowHighlighted, "#kids-table")
    def show_child(self) -> None:
        k = self.child
        text: RenderableType = describe.plain("no child selected", style="grey50")
        if k is not None and self.shown is not None:
            rec = self.records.get(name_of(k)) or record_of(self.run_id, k)
            text = describe.child_task(rec, k.function, self.shown.counts.get(name_of(k)),
                                       hub_of(self).clock())
        for panel in self.query("#kids-child").results(Static):
            panel.update(text)

    @on(DataTable.RowSelected, "#kids-table")
    def action_open(self) -> None:
        """The highlighted child's own children, nested under it."""
        k = self.child
        if k is None or self.shown is None:
            return
        if self.shown.counts.get(name_of(k)):
            self.app.push_screen(ChildrenScreen(self.run_id, name_of(k)))
        else:
            self.app.notify(safe(f"{name_of(k)} has no children"), markup=False)

    def action_back(self) -> None:
        self.dismiss(None)

    def action_output(self) -> None:
        k = self.child
        if k is None:
            return
        rec = self.records.get(name_of(k)) or record_of(self.run_id, k)
        text = describe.pretty_output(rec)
        if rec.error_type:
            text += f"\n\n{rec.error_type}: {rec.error_message}\n{rec.traceback or ''}"
        self.app.push_screen(TextScreen(f"{rec.task} of run {self.run_id}", text))
