"""BatchesView: batches newest first with their progress and counts (from batch events); the
selected batch's items, failed first, a page per status; pause, resume and cancel (confirmed)."""

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Static

from flowforge.terminal import safe
from protocol.batches import BatchItem, BatchRecord
from protocol.errors import FlowForgeError
from tui.batch_rows import (
    COUNT_COLUMNS,
    ITEM_ORDER,
    MAX_ITEM_ROWS,
    MAX_ITEMS_PER_REQUEST,
    ItemsShown,
    batch_detail,
    batch_row,
    final,
    item_row,
    items_note,
    label,
)
from tui.hub import hub_of
from tui.model import Dirty
from tui.source import DataSource
from tui.table_sync import selected_key, sync_rows

ITEMS_REFRESH_S = 1.0
"""The selected batch's items are fetched again when it changes, at most this often."""


async def fetch_items(source: DataSource, batch_id: str, limit: int = MAX_ITEM_ROWS) -> ItemsShown:
    """At most ``limit`` items of a batch in ``ITEM_ORDER``: one request per status that has
    items (the first of each, in sequence order), never the whole batch."""
    items: list[BatchItem] = []
    counts: dict[str, int] | None = None
    for status in ITEM_ORDER:
        left = min(limit - len(items), MAX_ITEMS_PER_REQUEST)
        if left <= 0:
            break
        if counts is not None and not counts.get(status):
            continue
        detail = await source.batch(batch_id, items=left, status=status.value)
        counts = detail.batch.counts  # the newest: skips the statuses no item is in
        items += detail.items[:left]
    return ItemsShown(batch_id, items, counts or {})


class BatchesView(Vertical):
    BINDINGS = [
        Binding("u", "toggle_pause", "Pause/resume"),
        Binding("c", "cancel", "Cancel batch"),
        Binding("escape", "focus_batches", "Back to batches", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.shown: ItemsShown | None = None
        """The items listed, of the batch selected when they were fetched."""
        self._basis: BatchRecord | None = None
        """The batch's record when its items were last asked for: a newer one means refetch."""
        self._asked_at = float("-inf")
        self._due: Timer | None = None

    def compose(self) -> ComposeResult:
        yield DataTable(id="batches-table", cursor_type="row")
        yield Static("", id="batch-detail")
        yield DataTable(id="batch-items-table", cursor_type="row")
        yield Static("", id="batch-items-note")

    def on_mount(self) -> None:
        self.query_one("#batches-table", DataTable).add_columns(
            "batch", "flow", "state", "progress", *COUNT_COLUMNS, "created")
        self.query_one("#batch-items-table", DataTable).add_columns(
            "seq", "status", "run", "params", "reason")
        hub_of(self).changed.subscribe(self, self.on_changed)
        self.fill()

    def on_changed(self, dirty: Dirty) -> None:
        if "batches" in dirty.kinds or "tick" in dirty.kinds:
            self.fill()

    def fill(self) -> None:
        hub = hub_of(self)
        now = hub.clock()
        rows = [batch_row(b, now) for b in hub.model.batches_view()]
        sync_rows(self.query_one("#batches-table", DataTable), rows)
        self.show_batch()

    @property
    def batch(self) -> BatchRecord | None:
        """The selected batch."""
        key = selected_key(self.query_one("#batches-table", DataTable))
        return hub_of(self).model.batches.get(key or "")

    @property
    def watched(self) -> bool:
        """Its tab is the one shown: items are fetched only then (and again once it is)."""
        return self.is_mounted and all(w.display for w in self.ancestors_with_self
                                       if isinstance(w, Widget))

    def on_show(self) -> None:
        self.show_batch()

    @on(DataTable.RowHighlighted, "#batches-table")
    def show_batch(self) -> None:
        batch = self.batch
        text = batch_detail(batch) if batch else "no batches yet: Client.submit_batch starts one"
        self.query_one("#batch-detail", Static).update(Text(safe(text)))
        if batch is None:
            self._show(None)
            return
        if self.shown is None or self.shown.batch_id != batch.batch_id:
            self._show(ItemsShown(batch.batch_id, fetched=False))  # not the last batch's items
        if self.watched and batch is not self._basis:  # new, or changed since its items came
            self.refresh_items(at_once=not self.shown.fetched)

    def refresh_items(self, at_once: bool) -> None:
        """Fetch the selected batch's items now, or when ``ITEMS_REFRESH_S`` has passed since
        the last fetch (the changes meanwhile are seen by that one fetch)."""
        if self._due is not None:
            if not at_once:
                return
            self._due.stop()
            self._due = None
        wait_s = 0.0 if at_once else self._asked_at + ITEMS_REFRESH_S - time.monotonic()
        if wait_s <= 0:
            self._basis = self.batch
            self.load_items()
        else:
            self._due = self.set_timer(wait_s, self._fetch_due)

    def _fetch_due(self) -> None:
        self._due = None
        self.load_items()

    @work(exclusive=True, group="batch-items")
    async def load_items(self) -> None:
        batch = self.batch
        if batch is None or not self.watched:
            return
        self._basis, self._asked_at = batch, time.monotonic()
        try:
            shown = await fetch_items(hub_of(self).source, batch.batch_id)
        except FlowForgeError as exc:
            shown = ItemsShown(batch.batch_id, self.shown.items if self.shown else [],
                               error=str(exc))
        if self.is_mounted and self.batch is not None and self.batch.batch_id == batch.batch_id:
            self._show(shown)

    def _show(self, shown: ItemsShown | None) -> None:
        self.shown = shown
        rows = [item_row(i) for i in shown.items] if shown else []
        sync_rows(self.query_one("#batch-items-table", DataTable), rows)
        self.query_one("#batch-items-note", Static).update(Text(safe(items_note(shown))))

    # -- keys -----------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#batches-table")
    def focus_items(self) -> None:
        self.query_one("#batch-items-table", DataTable).focus()

    def action_focus_batches(self) -> None:
        self.query_one("#batches-table", DataTable).focus()

    @on(DataTable.RowSelected, "#batch-items-table")
    def open_item(self) -> None:
        key = selected_key(self.query_one("#batch-items-table", DataTable))
        item = next((i for i in self.shown.items if str(i.seq) == key), None) if self.shown else None
        if item is None:
            return
        if item.run_id is None:
            self.app.notify(safe(f"item {item.seq} has no run: it is {item.status.value}"
                                 + (f" ({item.reason})" if item.reason else "")), markup=False)
            return
        hub_of(self).operator.open_run(item.run_id)

    def action_toggle_pause(self) -> None:
        batch = self.batch
        if batch is not None and not self._ended(batch):
            hub_of(self).operator.toggle_batch(batch)

    def action_cancel(self) -> None:
        batch = self.batch
        if batch is not None and not self._ended(batch):
            hub_of(self).operator.cancel_batch(batch)

    def _ended(self, batch: BatchRecord) -> bool:
        if final(batch):
            self.app.notify(safe(f"batch {label(batch)} is {batch.state.value} already"),
                            markup=False)
        return final(batch)
