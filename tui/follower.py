"""Keeps a Model in step with a DataSource: a snapshot, then events; on loss a banner, then resync."""

import asyncio
import contextlib
from collections.abc import Callable

from protocol.errors import FlowForgeError
from tui.model import Dirty, Model
from tui.source import DataSource, LinkDown, LinkUp, SourceEvent, load_snapshot

_END = object()


class Follower:
    """Runs until cancelled; ``on_change`` hears what changed after each step.

    Events are followed from before the snapshot is asked for, so nothing is missed
    between the two: each event carries the full state of its object, and applying them
    in arrival order after the snapshot ends with the newest state. When no event came for
    ``quiet_s`` a cheap API call checks that a coordinator still answers.
    """

    def __init__(self, source: DataSource, model: Model, clock: Callable[[], float],
                 on_change: Callable[[Dirty], None], *, retry_s: float = 0.5,
                 max_retry_s: float = 8.0, quiet_s: float = 15.0, runs_limit: int = 200) -> None:
        self.source = source
        self.model = model
        self.clock = clock
        self.on_change = on_change
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.quiet_s = quiet_s
        self.runs_limit = runs_limit
        self.syncs = 0
        """How many snapshots were loaded (1 at start, +1 per resync)."""

    async def run(self) -> None:
        delay = self.retry_s
        while True:
            try:
                await self.source.open()
                events = await self.source.subscribe()
            except FlowForgeError as exc:
                self._apply(LinkDown(str(exc)))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_s)
                continue
            queue: asyncio.Queue[object] = asyncio.Queue()
            pump = asyncio.create_task(self._pump(events, queue))
            try:
                await self._follow(queue)
                return
            except Exception as exc:  # noqa: BLE001 - keep the last state, say why, start again
                self._apply(LinkDown(f"{type(exc).__name__}: {exc}"))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_s)
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump

    @staticmethod
    async def _pump(events: object, queue: asyncio.Queue[object]) -> None:
        try:
            async for event in events:  # type: ignore[attr-defined]
                queue.put_nowait(event)
        finally:
            queue.put_nowait(_END)

    async def _follow(self, queue: asyncio.Queue[object]) -> None:
        need_sync, nats_down, delay = True, False, self.retry_s
        while True:
            timeout: float | None = self.quiet_s
            if need_sync and not nats_down:
                if await self._sync():
                    need_sync, delay = False, self.retry_s
                else:
                    timeout, delay = delay, min(delay * 2, self.max_retry_s)
            elif nats_down:
                timeout = None
            try:
                event = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                if not need_sync:
                    need_sync = not await self._probe()
                continue
            if event is _END:
                return
            if isinstance(event, LinkDown):
                nats_down = need_sync = True
            elif isinstance(event, LinkUp):
                nats_down = False
                continue  # resync first: the banner goes once the snapshot is in
            self._apply(event)  # type: ignore[arg-type]

    async def _sync(self) -> bool:
        since = self.model.seq
        try:
            snap = await load_snapshot(self.source, self.runs_limit)
            details = [await self.source.get(run_id) for run_id in sorted(self.model.pinned)]
            logs = [(key, self.model.logs[key].ask(), await self.source.task_log(*key))
                    for key in list(self.model.logs)]
        except FlowForgeError as exc:
            self._apply(LinkDown(str(exc)))
            return False
        dirty = self.model.load(snap, self.clock(), since)
        for detail in details:
            dirty.merge(self.model.set_detail(detail, since))
        for (run_id, task), ticket, stored in logs:  # lines may be missed while unsubscribed
            dirty.merge(self.model.set_log(run_id, task, stored, ticket))
        dirty.merge(self.model.apply(LinkUp(), self.clock()))
        self.syncs += 1
        self.on_change(dirty)
        return True

    async def _probe(self) -> bool:
        """Is a coordinator still answering? Refreshes the agents on the way."""
        try:
            agents = await self.source.agents()
        except FlowForgeError as exc:
            self._apply(LinkDown(str(exc)))
            return False
        self.on_change(self.model.apply_all(agents, self.clock()))
        return True

    def _apply(self, event: SourceEvent) -> None:
        self.on_change(self.model.apply(event, self.clock()))
