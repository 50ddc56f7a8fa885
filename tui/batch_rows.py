"""What the Batches view draws (pure): a batch's row with its progress and counts, which of its
items are shown and in what order, an item's row, the lines that explain them."""

from dataclasses import dataclass, field

import msgspec
from rich.text import Text

from flowforge.render import cut, stamp
from protocol.batches import BATCH_FINAL, ITEM_DONE, BatchItem, BatchRecord, BatchState, ItemStatus
from tui import palette
from tui.table_sync import Row, unlisted

ITEM_ORDER = (ItemStatus.FAILED, ItemStatus.RUNNING, ItemStatus.PENDING, ItemStatus.CANCELLED,
              ItemStatus.SKIPPED, ItemStatus.WAITING, ItemStatus.SUCCEEDED)
"""The order items are listed in: what needs a look first, then what is going on, then the rest."""
MAX_ITEM_ROWS = 300
"""Most items listed for one batch (a batch may have a million): the first of each status."""
MAX_ITEMS_PER_REQUEST = 1_000
"""Most items one ``batches.get`` returns (``GetBatch.items``)."""
FINISHED = ITEM_DONE
"""Statuses an item keeps, in the order the progress bar draws them."""
BAR_WIDTH = 10
COUNT_COLUMNS = ("succeeded", "failed", "running", "waiting", "skipped", "cancelled")
"""The batch table's count columns ("running" counts pending items too: runs started)."""
PARAMS_WIDTH = 70
NOTE_WIDTH = 14
"""A paused batch's note, in the table (the line under it has all of it)."""
NAME_WIDTH = 20
KEYS = "enter its items, u pause or resume, c cancel; enter on an item opens its run"

_json = msgspec.json.Encoder(order="deterministic")


def label(batch: BatchRecord) -> str:
    """How a batch is called on screen: its name, else its id."""
    return batch.spec.name or batch.batch_id


def count(batch: BatchRecord, status: str) -> int:
    """Its items in one status; "running" takes the pending ones too (their runs started)."""
    n = batch.counts.get(status, 0)
    return n + batch.counts.get(ItemStatus.PENDING, 0) if status == ItemStatus.RUNNING else n


def progress(batch: BatchRecord) -> Text:
    """A bar of the finished items coloured by status, and the share finished."""
    total = max(batch.total, sum(batch.counts.values()))
    out, drawn, done = Text(), 0, 0
    for status in FINISHED:
        done += batch.counts.get(status, 0)
        upto = round(done / total * BAR_WIDTH) if total else 0
        out.append("█" * (upto - drawn), style=palette.ITEM_COLOUR[status])
        drawn = upto
    out.append("░" * (BAR_WIDTH - drawn), style="grey35")
    out.append(f" {done * 100 // total:3d}%" if total else "    -")
    return out


def state_text(batch: BatchRecord, note_width: int = NOTE_WIDTH) -> Text:
    text = batch.state.value
    if batch.state is BatchState.PAUSED and batch.note:
        text += f": {cut(batch.note, note_width)}"
    return Text(text, style=palette.BATCH_COLOUR.get(batch.state, ""))


def ago(at: float, now: float) -> str:
    """How long ago, in its largest unit: "42s ago", "5m ago", "3h ago", "2d ago"."""
    s = max(0, int(now - at))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit} ago"
    return f"{s}s ago"


def _count_cell(n: int, status: str) -> Text:
    style = "grey50" if n == 0 else "bold red" if status == ItemStatus.FAILED else ""
    return Text(f"{n:,}", style=style)


def batch_row(batch: BatchRecord, now: float) -> Row:
    counts = [_count_cell(count(batch, s), s) for s in COUNT_COLUMNS]
    return batch.batch_id, (cut(label(batch), NAME_WIDTH), cut(batch.spec.flow, NAME_WIDTH),
                            state_text(batch), progress(batch), *counts,
                            ago(batch.created_at, now))


def batch_detail(batch: BatchRecord) -> str:
    """Two lines about the selected batch: what it is, then how far it got."""
    spec = batch.spec
    what = [f"flow {spec.flow}", f"at most {spec.max_active:,} runs at once",
            f"reprocess {spec.reprocess.value}"]
    if spec.schedule:
        what.append(f"backfill of schedule {spec.schedule}")
    when = f"created {stamp(batch.created_at)}"
    if batch.finished_at is not None:
        when += f", finished {stamp(batch.finished_at)}"
    head = f"{label(batch)}" + (f" ({batch.batch_id})" if spec.name else "")
    done = batch.done()
    state = batch.state.value + (f": {batch.note}" if batch.note else "")
    counts = ", ".join(f"{batch.counts[s]:,} {s.value}" for s in ITEM_ORDER if batch.counts.get(s))
    return (f"{head}: {', '.join(what)}; {when}\n"
            f"{state}; {done:,} of {batch.total:,} items finished" + (f" ({counts})" if counts else "")
            + f"\n{KEYS}")


def final(batch: BatchRecord) -> bool:
    return batch.state in BATCH_FINAL


@dataclass(frozen=True, slots=True)
class ItemsShown:
    """The items of one batch listed, as fetched, with the batch's counts at the time."""

    batch_id: str
    items: list[BatchItem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    fetched: bool = True
    """False while the first fetch for this batch is under way."""


def short_params(item: BatchItem, width: int = PARAMS_WIDTH) -> str:
    """Its parameters as compact JSON, cut to ``width``; a backfill's items lead with their time."""
    text = _json.encode(item.params).decode()
    if item.scheduled_for is not None:
        text = f"for {stamp(item.scheduled_for)} {text}"
    return cut(text, width)


def item_row(item: BatchItem) -> Row:
    status = Text(item.status.value, style=palette.ITEM_COLOUR.get(item.status, ""))
    return str(item.seq), (str(item.seq), status, item.run_id or "-",
                           short_params(item), cut(item.reason or "", 80))


def items_note(shown: ItemsShown | None) -> str:
    """The line under the items: how many are listed, in what order, and which are not."""
    if shown is None:
        return "no batch selected"
    if not shown.fetched:
        return "asking the coordinator for its items…"
    if shown.error is not None:
        return f"could not list the items ({shown.error})"
    total = sum(shown.counts.values())
    if total == 0:
        return "no items"
    hidden = unlisted(shown.counts, (i.status for i in shown.items), ITEM_ORDER)
    order = "failed first, then running and pending, then the rest"
    if not hidden:
        return f"all {total:,} items, {order}"
    return f"{len(shown.items):,} of {total:,} items, {order}; not listed: {hidden}"
