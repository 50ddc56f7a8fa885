"""Fetching a mapped task's instances for the dashboard: a page per state (failed first, never all
of them), and a throttle that refetches as the mapped task's record changes."""

import time
from collections.abc import Awaitable, Callable

from textual.dom import DOMNode
from textual.timer import Timer

from protocol.errors import FlowForgeError
from protocol.records import TaskRecord
from tui.map_rows import LIST_ORDER, MapShown
from tui.source import DataSource

MAX_PER_REQUEST = 1_000
"""Most instances one ``runs.instances`` returns."""
REFRESH_S = 1.0
"""A mapped task's instances are fetched again at most this often as its record changes..."""
COST_FACTOR = 4.0
"""... and never more often than this many times what the last fetch took (counting a million
instances takes the coordinator a fraction of a second)."""


async def fetch_shown(source: DataSource, run_id: str, task: str, limit: int) -> MapShown:
    """The instances counted by state and up to ``limit`` of them in ``LIST_ORDER``: one
    request per state that has any (the first of each, in index order); ``limit`` 0 for the
    counts alone."""
    if limit == 0:
        got = await source.instances(run_id, task, limit=0)
        return MapShown(task, got.counts, got.total)
    found: list[TaskRecord] = []
    counts: dict[str, int] | None = None
    total = None
    for status in LIST_ORDER:
        left = min(limit - len(found), MAX_PER_REQUEST)
        if left <= 0:
            break
        if counts is not None and not counts.get(status):
            continue
        got = await source.instances(run_id, task, status=status.value, limit=left,
                                     counts=counts is None)
        if counts is None:
            counts, total = got.counts, got.total
        found += got.instances[:left]
    return MapShown(task, counts or {}, total, found, listed=True)


async def try_fetch(source: DataSource, run_id: str, task: str, limit: int,
                    old: MapShown | None) -> MapShown:
    """``fetch_shown``, or on an error the last ones fetched with the error said."""
    try:
        return await fetch_shown(source, run_id, task, limit)
    except FlowForgeError as exc:
        old = old or MapShown(task)
        return MapShown(task, old.counts, old.total, old.instances, listed=limit > 0,
                        error=str(exc))


class Throttle:
    """Runs ``fetch`` now, or once ``REFRESH_S`` (or ``COST_FACTOR`` times what the last run
    took) has passed since the last one started; asked again while it runs, it runs once more
    after it. Timers and workers belong to ``owner`` (they end with it)."""

    def __init__(self, owner: DOMNode, fetch: Callable[[], Awaitable[None]], group: str) -> None:
        self.owner = owner
        self.fetch = fetch
        self.group = group
        self.runs = 0
        self._next_at = float("-inf")
        self._running = False
        self._again: bool | None = None
        """Asked again while running (whether at once), or None."""
        self._due: Timer | None = None

    def poke(self, at_once: bool = False) -> None:
        if not self.owner.is_attached:
            return
        if self._running:
            self._again = at_once or bool(self._again)
            return
        if self._due is not None:
            if not at_once:
                return
            self._due.stop()
            self._due = None
        wait_s = 0.0 if at_once else self._next_at - time.monotonic()
        if wait_s <= 0:
            self._running = True
            self.owner.run_worker(self._run(), group=self.group)
        else:
            self._due = self.owner.set_timer(wait_s, self._fire)

    def _fire(self) -> None:
        self._due = None
        self.poke(at_once=True)

    async def _run(self) -> None:
        started = time.monotonic()
        try:
            await self.fetch()
        finally:
            self.runs += 1
            self._next_at = started + max(REFRESH_S, COST_FACTOR * (time.monotonic() - started))
            self._running = False
            again, self._again = self._again, None
            if again is not None:
                self.poke(at_once=again)
