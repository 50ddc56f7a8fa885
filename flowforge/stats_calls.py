"""The Client's ``stats()`` call (``flowforge stats``)."""

from typing import TypeVar

import msgspec

from protocol.stats import GetStats, Stats

T = TypeVar("T")


class StatsCalls:
    """Mixed into ``Client``, which provides ``request``."""

    async def request(self, body: msgspec.Struct, result_type: type[T]) -> T:
        raise NotImplementedError

    async def stats(self) -> Stats:
        """The coordinator's figures: queues, runs, task outcomes, retries, waits and
        durations, agents, schedule fires — what its ``--metrics`` endpoint serves."""
        return await self.request(GetStats(), Stats)
