"""What the dashboard draws of a mapped task (pure): the caption of its box, the instances it lists
and in what order, an instance's row, the lines that explain them."""

from collections.abc import Mapping
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from flowforge.render import MAPPED_ORDER, cut, duration
from flowforge.terminal import safe
from protocol.records import TaskRecord
from protocol.states import TaskStatus
from tui import palette
from tui.table_sync import Row, unlisted

LIST_ORDER = tuple(s for s in MAPPED_ORDER if s is not TaskStatus.PENDING)
"""The order instances are listed in: failed first, then those going on, then the rest."""
ACTIVE = (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.RETRY_WAIT)
ENDED = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)
PANEL_ROWS = 10
"""Instances the run view's panel lists for the selected mapped task."""
ERROR_WIDTH = 70


@dataclass(frozen=True, slots=True)
class MapShown:
    """A mapped task's instances as last fetched: counted by state, and some of them listed in
    ``LIST_ORDER`` (none when only the counts were asked for)."""

    task: str
    counts: dict[str, int] = field(default_factory=dict)
    total: int | None = None
    instances: list[TaskRecord] = field(default_factory=list)
    listed: bool = False
    """Instances were asked for (not only the counts)."""
    error: str | None = None


def index_of(rec: TaskRecord) -> int:
    return int(rec.task.rpartition("~")[2])


def short(n: int) -> str:
    """A count in at most five characters: 999, 1.2k, 37k, 1.0M."""
    if n < 1_000:
        return str(n)
    if n < 10_000:
        return f"{n / 1_000:.1f}k"
    if n < 1_000_000:
        return f"{n // 1_000}k"
    return f"{n / 1_000_000:.1f}M"


def caption(counts: Mapping[str, int], total: int | None, width: int) -> str:
    """``37/100 ✓35 ✗2 ▶3``: ended of all, succeeded, failed, going on — what fits in
    ``width`` (the failures are the last to go)."""
    done = sum(counts.get(s, 0) for s in ENDED)
    active = sum(counts.get(s, 0) for s in ACTIVE)
    head = f"{short(done)}/{short(total)}" if total is not None else f"{short(done)} done"
    ok = f"✓{short(counts.get(TaskStatus.SUCCEEDED, 0))}"
    failed = f"✗{short(counts[TaskStatus.FAILED])}" if counts.get(TaskStatus.FAILED) else ""
    going = f"▶{short(active)}" if active else ""
    for parts in ((head, ok, failed, going), (head, failed, going), (head, failed)):
        text = " ".join(p for p in parts if p)
        if len(text) <= width:
            return text
    return text


def counts_line(shown: MapShown) -> Text:
    """Each state's count in its colour, and the items not reached yet."""
    out = Text()
    for s in MAPPED_ORDER:
        if shown.counts.get(s):
            if out:
                out.append("   ")
            out.append(f"{palette.TASK_GLYPH[s]} {shown.counts[s]:,} {s.value}",
                       style=palette.TASK_COLOUR[s])
    made = sum(shown.counts.values())
    if shown.total is not None and shown.total > made:
        out.append(f"{'   ' if out else ''}{shown.total - made:,} not started", style="grey62")
    if not out:
        out.append("no instances yet", style="grey50")
    if shown.total is not None:
        out.append(f"   of {shown.total:,} items", style="grey62")
    return out


def error_of(rec: TaskRecord) -> str:
    return f"{rec.error_type}: {rec.error_message or ''}" if rec.error_type else rec.note or ""


def instance_row(rec: TaskRecord, now: float) -> Row:
    status = Text(f"{palette.TASK_GLYPH[rec.status]} {rec.status.value}",
                  style=palette.TASK_COLOUR[rec.status])
    took = duration(rec.started_at, rec.finished_at or (now if rec.started_at else None))
    return rec.task, (str(index_of(rec)), status, str(rec.attempt), rec.agent_id or "-", took,
                      cut(error_of(rec), ERROR_WIDTH))


def listed_note(shown: MapShown | None) -> str:
    """The line under the instances: how many are listed, in what order, and which are not."""
    if shown is None or not shown.listed:
        return "asking the coordinator for its instances…"
    if shown.error is not None:
        return f"could not list the instances ({shown.error})"
    made = sum(shown.counts.values())
    if made == 0:
        return "no instances yet: they are made as the items are reached"
    hidden = unlisted(shown.counts, (r.status for r in shown.instances), LIST_ORDER)
    order = "failed first, then those going on, then the rest"
    if not hidden:
        return f"all {made:,} instances made, {order}"
    return f"{len(shown.instances):,} of {made:,} instances made, {order}; not listed: {hidden}"


def mapped_panel(shown: MapShown | None, rows: int = PANEL_ROWS) -> RenderableType:
    """The run view's panel under a selected mapped task: its counts and the first instances
    (failed first), and how to see them all."""
    title = Text("instances", style="grey62")
    title.append("  enter lists them all, failed first", style="italic")
    if shown is None or not shown.listed:
        return Group(title, Text(listed_note(shown), style="grey50"))
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="grey62")
    for col in ("index", "status", "attempt", "agent", "error"):
        table.add_column(col)
    for rec in shown.instances[:rows]:
        table.add_row(str(index_of(rec)), palette.task_text(rec.status), str(rec.attempt),
                      Text(safe(rec.agent_id or "-")), Text(safe(cut(error_of(rec), ERROR_WIDTH))))
    parts: list[RenderableType] = [title, counts_line(shown)]
    if shown.error is not None:
        parts.append(Text(safe(listed_note(shown)), style="red"))
    if shown.instances:
        parts.append(table)
    return Group(*parts)
