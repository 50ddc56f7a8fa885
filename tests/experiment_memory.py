"""Experiments held in memory for the dashboard's tests: rows answered as ``experiments.list``
answers them (newest first, ``--where`` applied), and comparisons built from stored series."""

import operator
from collections.abc import Iterable
from typing import Any

from protocol.errors import UnknownRun
from protocol.experiment_query import Condition, parse_where
from protocol.experiments import (
    Comparison,
    ExperimentRow,
    ExperimentsPage,
    RunExperiment,
    Series,
    differing,
)
from protocol.states import RunStatus

_OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge}


def _field(row: ExperimentRow, c: Condition) -> Any:
    match c.field.kind:
        case "metric":
            return row.metrics.get(c.field.key)
        case "param":
            value: Any = row.params
            for part in c.field.key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            return value
        case "status":
            return row.status.value
        case kind:
            return getattr(row, kind)


def matches(row: ExperimentRow, conditions: list[Condition]) -> bool:
    """As the coordinator's SQL: null is missing; numbers compare with numbers, text with text."""
    for c in conditions:
        value = _field(row, c)
        if c.value is None:
            if (value is None) != (c.op == "="):
                return False
            continue
        if value is None or isinstance(value, str) != isinstance(c.value, str):
            return False
        if not _OPS[c.op](value, c.value):
            return False
    return True


class ExperimentMemory:
    """Rows by flow and series by run, as a test sets them."""

    def __init__(self) -> None:
        self.rows: dict[str, list[ExperimentRow]] = {}
        self.series: dict[str, list[Series]] = {}
        self.flows: dict[str, str] = {}
        """Each run's flow."""

    def add(self, flow: str, rows: Iterable[ExperimentRow]) -> None:
        for row in rows:
            self.rows.setdefault(flow, []).append(row)
            self.flows[row.run_id] = flow

    def page(self, flow: str, where: str | None, limit: int) -> ExperimentsPage:
        conditions = parse_where(where)  # BadRequest, as the coordinator answers
        found = sorted((r for r in self.rows.get(flow, []) if matches(r, conditions)),
                       key=lambda r: (r.created_at, r.run_id), reverse=True)
        rows = found[:limit]
        return ExperimentsPage(flow=flow, rows=rows,
                               metrics=sorted({n for r in rows for n in r.metrics}),
                               differing=differing([r.params for r in rows]), total=len(found))

    def compare(self, run_ids: list[str]) -> Comparison:
        runs = []
        for run_id in run_ids:
            flow = self.flows.get(run_id)
            if flow is None:
                raise UnknownRun(run_id)
            row = next(r for r in self.rows[flow] if r.run_id == run_id)
            runs.append(RunExperiment(run_id=run_id, flow=flow, status=row.status,
                                      created_at=row.created_at, params=row.params,
                                      metrics=row.metrics, series=self.series.get(run_id, [])))
        return Comparison(runs=runs, differing=differing([r.params for r in runs]))


def grid_rows(n: int, metrics: int = 2, t0: float = 1_767_225_600.0) -> list[ExperimentRow]:
    """``n`` runs of known numbers: learning rates 0.3, 0.03, 0.003 in turn, 30 or 60 epochs,
    the same seed everywhere; ``accuracy`` and ``loss`` (then ``m2``, ``m3``...) depend on them
    (run ``exp-0007`` is the 8th, created a second after the 7th)."""
    rows = []
    for i in range(n):
        lr, epochs = (0.3, 0.03, 0.003)[i % 3], (30, 60)[i // 3 % 2]
        accuracy = round(0.95 - 0.1 * (i % 3) + 0.01 * (epochs == 60) - 0.001 * (i % 7), 4)
        values = {"accuracy": accuracy, "loss": round(1.2 - accuracy, 4)}
        values.update({f"m{k}": float((i * k) % 97) for k in range(2, metrics)})
        rows.append(ExperimentRow(
            run_id=f"exp-{i:04d}", status=RunStatus.FAILED if i % 11 == 10 else
            RunStatus.SUCCEEDED, created_at=t0 + i,
            params={"learning_rate": lr, "epochs": epochs, "seed": 7}, metrics=values))
    return rows


def loss_series(row: ExperimentRow, steps: int = 5) -> list[Series]:
    """A falling loss ending at the row's final loss."""
    final = row.metrics["loss"]
    return [Series(name="loss", task="fit", attempt=1, steps=list(range(steps)),
                   values=[round(final + 0.1 * (steps - 1 - s), 4) for s in range(steps)],
                   points=steps)]
