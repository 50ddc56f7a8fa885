"""The coordinator API's experiment requests: ``experiments.list`` (one row per run of a flow:
parameters and final metrics, filtered and sorted) and ``experiments.compare`` (chosen runs in
full: series, results, artifacts). Answers stay under the server's max_payload: a list is
paged (``next_offset``), a comparison thins its series and leaves out what does not fit."""

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from coordinator import experiment_store
from coordinator.api import REPLY_MARGIN_BYTES
from coordinator.experiment_store import Query, RunData
from coordinator.store import Store
from coordinator.writer import Writer
from protocol.errors import UnknownFlow, UnknownRun
from protocol.experiment_query import parse_sort, parse_where
from protocol.experiments import (
    DEFAULT_MAX_METRIC_POINTS,
    CompareRuns,
    Comparison,
    ExperimentRow,
    ExperimentsPage,
    ListExperiments,
    RunExperiment,
    differing,
)
from protocol.states import RunStatus

__all__ = ["DEFAULT_MAX_METRIC_POINTS", "ExperimentsApi"]

MAX_PAGE_ROWS = 5_000
"""Rows read for one answer at most (the client asks for the next page)."""
POINT_BYTES = 24
"""About what one point of a series takes in an answer (a step and a value)."""
_enc = msgspec.json.Encoder()
_params_dec = msgspec.json.Decoder(dict[str, Any])


class MetricCap(Protocol):
    @property
    def max_metric_points(self) -> int: ...


class ExperimentsApi:
    """Answers ``experiments.*``; and sets the writer's per-run cap from the coordinator's
    configuration (``--max-metric-points``), the one place where the two meet."""

    def __init__(self, store: Store, writer: Writer, config: MetricCap,
                 max_reply_bytes: int = 1024 * 1024) -> None:
        self.store = store
        self.max_reply_bytes = max_reply_bytes
        """The NATS server's max_payload: no answer may be larger."""
        writer.experiments.max_points_per_run = config.max_metric_points

    def handlers(self) -> dict[tuple[str, str], Callable[[Any], Awaitable[Any]]]:
        return {("experiments", "list"): self.list_runs, ("experiments", "compare"): self.compare}

    async def list_runs(self, req: ListExperiments) -> ExperimentsPage:
        query = Query(req.flow, parse_where(req.where), parse_sort(req.sort))
        total, rows = await experiment_store.page(
            self.store.database, query, req.offset, min(req.limit, MAX_PAGE_ROWS), req.metrics)
        if not total and await self.store.get_flow(req.flow) is None:
            raise UnknownFlow(req.flow)
        rows = self._fitting(rows)
        shown = req.offset + len(rows)
        more = shown < total and len(rows) < req.limit
        return ExperimentsPage(
            flow=req.flow, rows=rows, metrics=req.metrics or _metric_names(rows),
            differing=differing([r.params for r in rows]), total=total,
            next_offset=shown if more else None)

    def _fitting(self, rows: list[ExperimentRow]) -> list[ExperimentRow]:
        """As many rows as fit in one answer (at least one)."""
        budget = self.max_reply_bytes - REPLY_MARGIN_BYTES
        for i, row in enumerate(rows):
            budget -= len(_enc.encode(row)) + 1
            if budget < 0 and i:
                return rows[:i]
        return rows

    async def compare(self, req: CompareRuns) -> Comparison:
        found: list[RunData] = []
        for run_id in dict.fromkeys(req.run_ids):
            data = await experiment_store.run_data(self.store.database, run_id, req.max_points)
            if data is None:
                raise UnknownRun(run_id)
            found.append(data)
        runs = self._fit([_experiment(d) for d in found])
        return Comparison(runs=runs, differing=differing([r.params for r in runs]))

    def _fit(self, runs: list[RunExperiment]) -> list[RunExperiment]:
        """Series thinned, then results and artifacts left out, until the answer fits."""
        budget = self.max_reply_bytes - REPLY_MARGIN_BYTES
        size = len(_enc.encode(runs))
        points = sum(len(s.steps) for r in runs for s in r.series)
        if size > budget and points:
            series = sum(len(r.series) for r in runs)
            keep = max(2, (points - (size - budget) // POINT_BYTES) // series)
            for r in runs:
                r.series = [_thin(s, keep) for s in r.series]
            size = len(_enc.encode(runs))
        for r in runs if size > budget else []:
            r.left_out = len(r.results) + len(r.artifacts)
            r.results, r.artifacts = [], []
        return runs


def _thin(s: Any, keep: int) -> Any:
    if len(s.steps) <= keep:
        return s
    kept = experiment_store.thinned(len(s.steps), keep)
    return msgspec.structs.replace(s, steps=[s.steps[i] for i in kept],
                                   values=[s.values[i] for i in kept])


def _experiment(d: RunData) -> RunExperiment:
    run_id, flow, status, created_at, params = d.run
    return RunExperiment(run_id=run_id, flow=flow, status=RunStatus(status), created_at=created_at,
                         params=_params_dec.decode(params), metrics=d.finals, series=d.series,
                         results=d.results, artifacts=d.artifacts)


def _metric_names(rows: list[ExperimentRow]) -> list[str]:
    return sorted({name for r in rows for name in r.metrics})
