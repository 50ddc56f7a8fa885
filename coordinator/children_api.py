"""The coordinator API's ``children.*``: a running task spawns children and waits for them;
anyone reads them (``children.list``)."""

from collections.abc import Awaitable, Callable
from typing import Any

from coordinator import child_store
from coordinator.api import REPLY_MARGIN_BYTES
from coordinator.scheduler import Scheduler
from coordinator.store import Store
from coordinator.writer import Batch, Writer
from protocol.children import (
    AwaitChildren,
    ChildList,
    ChildrenState,
    ChildResults,
    GetChildResults,
    ListChildren,
    SpawnChildren,
    Spawned,
)
from protocol.errors import InvalidState, UnknownRun


class ChildrenApi:
    def __init__(self, writer: Writer, store: Store, max_reply_bytes: int = 1024 * 1024) -> None:
        self.writer = writer
        self.scheduler: Scheduler = writer.scheduler
        self.store = store
        self.budget = max(16 * 1024, max_reply_bytes - REPLY_MARGIN_BYTES)

    def handlers(self) -> dict[tuple[str, str], Callable[[Any], Awaitable[Any]]]:
        return {("children", "spawn"): self.spawn, ("children", "wait"): self.wait,
                ("children", "results"): self.results, ("children", "list"): self.listing}

    async def spawn(self, req: SpawnChildren) -> Spawned:
        """Stored and queued in one of the writer's batches: answered once committed."""

        async def act(now: float, batch: Batch) -> Spawned:
            state = self.scheduler.run_state(req.run_id)
            if state is None:
                await self._known(req.run_id)
                raise InvalidState(f"run {req.run_id} is not running; its tasks cannot spawn "
                                   "children")
            parent = self.scheduler.task_record(req.run_id, req.parent)
            return self.scheduler.children.spawn(state, parent, req, now, batch.changes)

        return await self.writer.submit(act)

    async def wait(self, req: AwaitChildren) -> ChildrenState:
        """Answered after the writer's next commit: every child it counts as ended is stored
        by then, so the results read next are there."""

        async def act(now: float, batch: Batch) -> ChildrenState:
            return self.scheduler.children.waiting(req.run_id, req, batch.changes)

        return await self.writer.submit(act)

    async def results(self, req: GetChildResults) -> ChildResults:
        return await child_store.results(self.store.database, req, self.budget)

    async def listing(self, req: ListChildren) -> ChildList:
        await self._known(req.run_id)
        return await child_store.listing(self.store.database, req, self.budget)

    async def _known(self, run_id: str) -> None:
        if await self.store.run_flow(run_id) is None:
            raise UnknownRun(run_id)
