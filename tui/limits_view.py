"""LimitsScreen: every concurrency limit (queues, tasks' max_active, flows' max_active_runs,
concurrency keys) with how many hold it and wait for it, the highlighted one's holders and
waiters in full; asked for again every tick while it is open (limits have no events)."""

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from flowforge.limit_cli import limits_table
from flowforge.terminal import safe
from protocol.concurrency import LimitInfo, Slot
from protocol.errors import FlowForgeError
from tui.banner import Banner
from tui.hub import hub_of
from tui.model import Dirty
from tui.table_sync import Row, selected_key, sync_rows

HOLDERS_SHOWN = 50
"""Holders and waiters of each limit asked for (and listed in the detail)."""


def slot_text(slot: Slot) -> str:
    text = f"run {slot.run_id}" + (f" task {slot.task}" if slot.task else "")
    return text + (f" (priority {slot.priority})" if slot.priority else "")


def limit_row(info: LimitInfo) -> Row:
    full = info.limit is not None and info.holding >= info.limit
    slots = "-" if info.limit is None else str(info.limit)
    return info.name, (
        info.name, slots, Text(str(info.holding), style="bold yellow" if full else ""),
        Text(str(info.waiting), style="yellow" if info.waiting else ""), info.origin)


def limit_detail(info: LimitInfo) -> str:
    """A limit, its holders and its waiters (in the order they will go)."""
    limit = "not limited" if info.limit is None else f"{info.limit} at once"
    lines = [f"{info.name}: {limit} (set {'over the API' if info.origin == 'api' else 'in code'})",
             f"held by {info.holding}:"]
    lines += [f"  {slot_text(s)}" for s in info.holders]
    if info.holding > len(info.holders):
        lines.append(f"  … {info.holding - len(info.holders)} more")
    lines.append(f"waiting {info.waiting}:" + ("" if info.waiting else " none"))
    lines += [f"  {slot_text(s)}" for s in info.waiters]
    if info.waiting > len(info.waiters):
        lines.append(f"  … {info.waiting - len(info.waiters)} more")
    return "\n".join(lines)


class LimitsScreen(Screen[None]):
    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self) -> None:
        super().__init__()
        self.limits: dict[str, LimitInfo] = {}
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        with Vertical(id="limits-main"):
            yield Static("Concurrency limits: loading…", id="limits-head")
            yield DataTable(id="limits-table", cursor_type="row")
            with VerticalScroll(id="limit-detail-scroll"):
                yield Static("", id="limit-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#limits-table", DataTable)
        table.add_columns("limit", "slots", "holding", "waiting", "set by")
        table.focus()
        hub_of(self).changed.subscribe(self, self.on_changed)
        self.load()

    def on_changed(self, dirty: Dirty) -> None:
        if "tick" in dirty.kinds:
            self.load()

    @work(exclusive=True, group="limits")
    async def load(self) -> None:
        try:
            limits = await hub_of(self).source.limits(HOLDERS_SHOWN)
        except FlowForgeError as exc:
            self.error = f"could not fetch the limits: {exc}"
        else:
            self.error = None
            self.limits = {info.name: info for info in limits}
        self.draw()

    def draw(self) -> None:
        head = self.error or (f"Concurrency limits: {len(self.limits)}" if self.limits else
                              limits_table([]))
        self.query_one("#limits-head", Static).update(Text(safe(head)))
        sync_rows(self.query_one("#limits-table", DataTable),
                  [limit_row(info) for info in self.limits.values()])
        self.show_detail()

    @on(DataTable.RowHighlighted, "#limits-table")
    def show_detail(self) -> None:
        info = self.limits.get(selected_key(self.query_one("#limits-table", DataTable)) or "")
        text = limit_detail(info) if info else ""
        self.query_one("#limit-detail", Static).update(Text(safe(text)))

    def action_back(self) -> None:
        self.app.pop_screen()
