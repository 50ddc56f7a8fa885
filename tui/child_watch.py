"""Fetching a run's child tasks for the dashboard: every parent's counts (the boxes' badges) and a
page per state of one task's children (failed first, never all of them), fetched again — a
second apart at most — as the children's events come."""

from collections.abc import Callable

from rich.console import RenderableType
from textual.dom import DOMNode

from protocol.errors import FlowForgeError
from protocol.records import TaskRecord
from tui.child_rows import ChildShown, badge, children_panel, updated
from tui.hub import hub_of
from tui.map_rows import LIST_ORDER, PANEL_ROWS
from tui.map_watch import MAX_PER_REQUEST, Throttle
from tui.model import Dirty
from tui.source import DataSource


async def fetch_children(source: DataSource, run_id: str, parent: str | None,
                         limit: int) -> ChildShown:
    """Every parent's children counted by state, and up to ``limit`` of ``parent``'s children in
    ``LIST_ORDER``: one request per state that has any (the first of each, in spawn order)."""
    counts = (await source.children(run_id, limit=0)).counts
    if parent is None:
        return ChildShown("", counts)
    own = counts.get(parent, {})
    found = []
    for status in LIST_ORDER:
        left = min(limit - len(found), MAX_PER_REQUEST)
        if left <= 0:
            break
        if own.get(status.value):
            got = await source.children(run_id, parent, limit=left, status=status.value)
            found += got.children[:left]
    return ChildShown(parent, counts, found, listed=True)


async def try_fetch_children(source: DataSource, run_id: str, parent: str | None, limit: int,
                             old: ChildShown | None) -> ChildShown:
    """``fetch_children``, or on an error the last ones fetched with the error said."""
    try:
        return await fetch_children(source, run_id, parent, limit)
    except FlowForgeError as exc:
        old = old or ChildShown(parent or "")
        return ChildShown(parent or "", old.counts, old.children if old.parent == parent else [],
                          listed=parent is not None, error=str(exc))


def of_run(dirty: Dirty, run_id: str) -> list[TaskRecord]:
    """The child records of one run that came."""
    return [rec for (run, _), rec in dirty.children.items() if run == run_id]


def resynced(owner: DOMNode, dirty: Dirty) -> bool:
    """Is the deployment back after a loss (events may have been missed meanwhile)?"""
    return "link" in dirty.kinds and hub_of(owner).model.link_down is None


class RunChildren:
    """A run's children as the run view shows them: every parent's counts, for the badges on the
    boxes, and the first children (failed first) of the selected task, for its panel."""

    def __init__(self, owner: DOMNode, run_id: str, selected: Callable[[], str | None],
                 redraw: Callable[[], None]) -> None:
        self.run_id = run_id
        self.selected = selected
        self.redraw = redraw
        self.owner = owner
        self.shown = ChildShown("")
        """The counts, with the selected task's children listed when it has any."""
        self.throttle = Throttle(owner, self.load, group="run-children")

    async def load(self) -> None:
        name = self.selected()
        parent = name if self.has_children(name) else None
        self.shown = await try_fetch_children(hub_of(self.owner).source, self.run_id, parent,
                                              PANEL_ROWS, self.shown)
        if self.owner.is_attached:
            self.redraw()  # the selected task's panel asks for its children if it has some now
            self.owner.refresh_bindings()

    def on_changed(self, dirty: Dirty) -> None:
        records = of_run(dirty, self.run_id)
        if records and (shown := updated(self.shown, records)) is not self.shown:
            self.shown = shown
            self.redraw()  # the listed ones at once; the counts of all with the next fetch
        if records or resynced(self.owner, dirty):
            self.throttle.poke()

    def has_children(self, name: str | None) -> bool:
        return name is not None and bool(self.shown.counts.get(name))

    def badge(self, name: str, width: int) -> str:
        own = self.shown.counts.get(name)
        return badge(own, width) if own else ""

    def panel(self, name: str) -> RenderableType | None:
        """The selected task's children panel, if it has children (asked for when they are
        not listed yet)."""
        if not self.has_children(name):
            return None
        if self.shown.parent != name or not self.shown.listed:
            self.throttle.poke(at_once=True)
            return children_panel(None)
        return children_panel(self.shown)
