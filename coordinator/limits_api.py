"""The coordinator API's limit requests: set a queue's limit (now: raised, it releases waiting
tasks), list every limit with its holders and waiters, delete one."""

from collections.abc import Awaitable, Callable
from typing import Any

from coordinator.limits import Limits
from coordinator.writer import Batch
from protocol.concurrency import DeleteLimit, LimitInfo, ListLimits, SetLimit
from protocol.errors import BadRequest


class LimitsApi:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def handlers(self) -> dict[tuple[str, str], Callable[[Any], Awaitable[Any]]]:
        return {("limits", "set"): self.set, ("limits", "list"): self.list_all,
                ("limits", "delete"): self.delete}

    async def set(self, req: SetLimit) -> LimitInfo:
        async def act(now: float, batch: Batch) -> None:
            await self.limits.write(req.name, req.limit, now)

        await self.limits.writer.submit(act)
        return self.limits.info(req.name)  # after the commit: with the waiters it let go

    async def delete(self, req: DeleteLimit) -> LimitInfo:
        async def act(now: float, batch: Batch) -> None:
            if req.name not in self.limits.gate.limits:
                raise BadRequest(f"no limit {req.name!r} is set; `flowforge limit list` shows "
                                 "the limits")
            await self.limits.write(req.name, None, now)

        await self.limits.writer.submit(act)
        return self.limits.info(req.name)  # after the commit: with the waiters it let go

    async def list_all(self, req: ListLimits) -> list[LimitInfo]:
        return self.limits.listing(req.holders)
