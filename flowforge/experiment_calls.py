"""The Client's experiment calls (``flowforge experiments`` and ``flowforge compare``)."""

from collections.abc import Sequence
from typing import TypeVar

import msgspec

from protocol.experiments import (
    CompareRuns,
    Comparison,
    ExperimentsPage,
    ListExperiments,
    differing,
)

T = TypeVar("T")


class ExperimentCalls:
    """Mixed into ``Client``, which provides ``request``."""

    async def request(self, body: msgspec.Struct, result_type: type[T]) -> T:
        raise NotImplementedError

    async def experiments(self, flow: str, *, metrics: Sequence[str] | None = None,
                          sort: str | None = None, where: str | None = None,
                          limit: int = 100) -> ExperimentsPage:
        """One row per run of ``flow`` (at most ``limit``, newest first unless ``sort``
        says otherwise: ``-accuracy``, ``params.lr``): its parameters and each metric's final
        value. ``where`` filters: ``"params.lr<0.01 and metrics.accuracy>=0.9"``. Read in
        pages when the rows do not fit in one answer; ``differing`` names the parameters that
        are not the same in every row."""
        rows, offset = [], 0
        while True:
            page = await self.request(ListExperiments(
                flow=flow, metrics=list(metrics) if metrics else None, sort=sort, where=where,
                limit=limit - len(rows), offset=offset), ExperimentsPage)
            rows += page.rows
            if page.next_offset is None or not page.rows or len(rows) >= limit:
                break
            offset = page.next_offset
        names = list(metrics) if metrics else sorted({n for r in rows for n in r.metrics})
        return ExperimentsPage(flow=flow, rows=rows, metrics=names,
                               differing=differing([r.params for r in rows]), total=page.total)

    async def compare(self, run_ids: Sequence[str], *, max_points: int = 5_000) -> Comparison:
        """The runs side by side: parameters (``differing`` names those that differ), final
        metrics, each metric's series per task and attempt (thinned to ``max_points``, and
        further when the answer would outgrow the server's max_payload), results, artifacts."""
        return await self.request(CompareRuns(run_ids=list(run_ids), max_points=max_points),
                                  Comparison)
