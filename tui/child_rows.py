"""What the dashboard draws of a task's child tasks (pure): the badge on its box, the children it
lists and in what order, a child's row, the lines that explain them, and a child's record kept
current by the events that come."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from flowforge.render import MAPPED_ORDER, cut, duration
from flowforge.terminal import safe
from protocol.children import ChildInfo, child_name, split_child
from protocol.records import TaskRecord
from protocol.states import TaskStatus
from tui import palette
from tui.map_rows import ACTIVE, ERROR_WIDTH, LIST_ORDER, PANEL_ROWS, caption, short
from tui.table_sync import Row, unlisted

OUTPUT_WIDTH = 60
_RANK = {s: i for i, s in enumerate(LIST_ORDER)}

Counts = dict[str, dict[str, int]]
"""Per parent of a run: its children counted by state."""


@dataclass(frozen=True, slots=True)
class ChildShown:
    """A task's children as last fetched: counted by state (with every parent's counts in the
    run, so a child's own children are known), and some of them listed in ``LIST_ORDER`` (none
    when only the counts were asked for)."""

    parent: str
    counts: Counts = field(default_factory=dict)
    children: list[ChildInfo] = field(default_factory=list)
    listed: bool = False
    """Children were asked for (not only the counts)."""
    error: str | None = None

    @property
    def own(self) -> dict[str, int]:
        """The parent's children counted by state."""
        return self.counts.get(self.parent, {})


def name_of(k: ChildInfo) -> str:
    return child_name(k.parent, k.seq)


def order_key(k: ChildInfo) -> tuple[int, int]:
    """Failed first, then those going on, then the rest; by spawn number within a state."""
    return _RANK.get(k.status, len(_RANK)), k.seq


def badge(counts: Mapping[str, int], width: int) -> str:
    """``9/12 ✓8 ✗1 ▶3``: a task's children ended of all, succeeded, failed, going on — what
    fits in ``width`` (the failures are the last to go; nothing if not even they fit)."""
    if not counts:
        return ""
    full = caption(counts, sum(counts.values()), width)
    if len(full) <= width:
        return full
    failed = f"✗{short(counts[TaskStatus.FAILED])}" if counts.get(TaskStatus.FAILED) else ""
    going = sum(counts.get(s, 0) for s in ACTIVE)
    for text in (f"{failed} ▶{short(going)}" if failed and going else "", failed,
                 f"▶{short(going)}" if going else ""):
        if text and len(text) <= width:
            return text
    return ""


def info_of(rec: TaskRecord, function: str = "") -> ChildInfo:
    """A child's event record as a row of the listing (the function is not in the record)."""
    parent, seq = split_child(rec.task) or (rec.task, 0)
    return ChildInfo(parent=parent, seq=seq, function=function, status=rec.status,
                     attempt=rec.attempt, agent_id=rec.agent_id, started_at=rec.started_at,
                     finished_at=rec.finished_at, output=rec.output, error_type=rec.error_type,
                     error_message=rec.error_message, note=rec.note)


def record_of(run_id: str, k: ChildInfo) -> TaskRecord:
    """A listed child as a task record, for the panels that draw one."""
    return TaskRecord(run_id=run_id, task=name_of(k), status=k.status, attempt=k.attempt,
                      agent_id=k.agent_id, started_at=k.started_at, finished_at=k.finished_at,
                      output=k.output, error_type=k.error_type, error_message=k.error_message,
                      note=k.note)


def updated(shown: ChildShown, records: Iterable[TaskRecord]) -> ChildShown:
    """The listed children as the events say they are now (counts moved along with them; the
    children not listed wait for the next fetch)."""
    by_name = {name_of(k): k for k in shown.children}
    own = dict(shown.own)
    changed = False
    for rec in records:
        old = by_name.get(rec.task)
        new = info_of(rec, old.function) if old is not None else None
        if old is None or new is None or new == old:
            continue
        own[old.status.value] = own.get(old.status.value, 1) - 1
        own[new.status.value] = own.get(new.status.value, 0) + 1
        by_name[rec.task] = new
        changed = True
    if not changed:
        return shown
    counts = shown.counts | {shown.parent: {s: n for s, n in own.items() if n > 0}}
    return replace(shown, counts=counts, children=sorted(by_name.values(), key=order_key))


def result_of(k: ChildInfo) -> str:
    """Its error once it failed, its output once it succeeded, else why it is as it is (a
    cancelled child's note)."""
    if k.error_type:
        return f"{k.error_type}: {k.error_message or ''}"
    if k.status is TaskStatus.SUCCEEDED:
        return bytes(k.output).decode()
    return k.note or ""


def child_row(k: ChildInfo, counts: Counts, now: float) -> Row:
    status = Text(f"{palette.TASK_GLYPH[k.status]} {k.status.value}",
                  style=palette.TASK_COLOUR[k.status])
    took = duration(k.started_at, k.finished_at or (now if k.started_at else None))
    own = counts.get(name_of(k))
    return name_of(k), (str(k.seq), status, k.function or "…", str(k.attempt), took,
                        badge(own, 16) if own else "-", cut(result_of(k), OUTPUT_WIDTH))


def counts_line(own: Mapping[str, int]) -> Text:
    """Each state's count in its colour."""
    out = Text()
    for s in (*MAPPED_ORDER, *(s for s in TaskStatus if s not in MAPPED_ORDER)):
        if own.get(s.value):
            if out:
                out.append("   ")
            out.append(f"{palette.TASK_GLYPH[s]} {own[s.value]:,} {s.value}",
                       style=palette.TASK_COLOUR[s])
    if not out:
        out.append("no children yet", style="grey50")
    return out


def listed_note(shown: ChildShown | None) -> str:
    """The line under the children: how many are listed, in what order, which are not."""
    if shown is None or not shown.listed:
        return "asking the coordinator for its children…"
    if shown.error is not None:
        return f"could not list the children ({shown.error})"
    made = sum(shown.own.values())
    if made == 0:
        return "no children yet"
    hidden = unlisted(shown.own, (k.status.value for k in shown.children),
                      [s.value for s in LIST_ORDER])
    order = "failed first, then those going on, then the rest"
    more = ""
    if any(p.startswith(shown.parent + "/") for p in shown.counts if p != shown.parent):
        more = "; enter on one with children lists them"
    if not hidden:
        return f"all {made:,} children, {order}{more}"
    return f"{len(shown.children):,} of {made:,} children, {order}; not listed: {hidden}{more}"


def children_panel(shown: ChildShown | None, rows: int = PANEL_ROWS) -> RenderableType:
    """The run view's panel under a selected task that has children: their counts and the first
    of them (failed first), and how to see them all."""
    title = Text("children", style="grey62")
    title.append("  enter lists them all, failed first", style="italic")
    if shown is None or not shown.listed:
        return Group(title, Text(listed_note(shown), style="grey50"))
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="grey62")
    for col in ("seq", "status", "function", "attempt", "error"):
        table.add_column(col)
    for k in shown.children[:rows]:
        error = "" if k.status is TaskStatus.SUCCEEDED else result_of(k)
        table.add_row(str(k.seq), palette.task_text(k.status), Text(safe(k.function)),
                      str(k.attempt), Text(safe(cut(error, ERROR_WIDTH))))
    parts: list[RenderableType] = [title, counts_line(shown.own)]
    if shown.error is not None:
        parts.append(Text(safe(listed_note(shown)), style="red"))
    if shown.children:
        parts.append(table)
    return Group(*parts)

