"""The Client's ``stats()`` and ``flow_stats()`` calls (``flowforge stats [--flow F]``)."""

from typing import TypeVar

import msgspec

from protocol.stats import FlowStats, GetFlowStats, GetStats, Stats

T = TypeVar("T")


class StatsCalls:
    """Mixed into ``Client``, which provides ``request``."""

    async def request(self, body: msgspec.Struct, result_type: type[T]) -> T:
        raise NotImplementedError

    async def stats(self) -> Stats:
        """The coordinator's figures: queues, runs, task outcomes, retries, waits and
        durations, agents, schedule fires — what its ``--metrics`` endpoint serves."""
        return await self.request(GetStats(), Stats)

    async def flow_stats(self, flow: str | None = None, days: int = 14,
                         until: float | None = None) -> FlowStats:
        """The summary charts of ``flow`` (default: every flow) over the last ``days`` UTC
        days, the last one the day of ``until`` (default now): runs per day by status, task
        durations p50/p95 over the recent finished runs, failure rate per flow."""
        return await self.request(GetFlowStats(flow=flow, days=days, until=until), FlowStats)
