"""The Client's limit calls (``flowforge limit ...``)."""

from typing import TypeVar

import msgspec

from protocol.concurrency import DeleteLimit, LimitInfo, ListLimits, SetLimit

T = TypeVar("T")


class LimitCalls:
    """Mixed into ``Client``, which provides ``request``."""

    async def request(self, body: msgspec.Struct, result_type: type[T]) -> T:
        raise NotImplementedError

    async def set_limit(self, name: str, limit: int) -> LimitInfo:
        """At most ``limit`` tasks of a queue (``queue:gpu``) queued or running at once, from
        now (raised: waiting tasks go; lowered: nothing running is stopped)."""
        return await self.request(SetLimit(name=name, limit=limit), LimitInfo)

    async def limits(self, holders: int = 20) -> list[LimitInfo]:
        """Every limit (queues, tasks' max_active, flows' max_active_runs, concurrency keys)
        with how many hold it and wait for it, and the first ``holders`` of each."""
        return await self.request(ListLimits(holders=holders), list[LimitInfo])

    async def delete_limit(self, name: str) -> LimitInfo:
        """The queue is no longer limited (its waiting tasks go)."""
        return await self.request(DeleteLimit(name=name), LimitInfo)
