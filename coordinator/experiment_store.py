"""Reading experiments from SQLite: the runs of a flow with their final metrics (filtered and
sorted in SQL), and chosen runs in full (every series, result and artifact).

``--where`` conditions become SQL with every value bound as a parameter; the only text put
into the SQL itself is an operator from a fixed list.
"""

from dataclasses import dataclass
from typing import Any

import msgspec

from coordinator.database import Database, Row
from protocol.errors import BadRequest
from protocol.experiment_query import Condition, Field, SortKey
from protocol.experiments import ExperimentRow, Series, StoredArtifact, StoredResult
from protocol.states import RunStatus

_params_dec = msgspec.json.Decoder(dict[str, Any])
_metrics_dec = msgspec.json.Decoder(dict[str, float])
_STATUS = {s.value: s for s in RunStatus}
_OPS = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_PARAM = "json_extract(CAST(r.params AS TEXT), ?)"
_METRIC = "(SELECT value FROM run_metrics WHERE run_id = r.run_id AND name = ?)"
MAX_IN = 900
"""Run ids per ``IN (...)``."""


@dataclass(slots=True)
class Query:
    """A ``runs`` query of one flow: the WHERE, the sort key and their arguments."""

    flow: str
    conditions: list[Condition]
    sort: SortKey | None

    def where(self) -> tuple[str, list[Any]]:
        parts, args = ["r.flow = ?"], [self.flow]
        for c in self.conditions:
            sql, more = _condition(c)
            parts.append(sql)
            args += more
        return " AND ".join(parts), args

    def source(self) -> tuple[str, list[Any]]:
        """The runs, joined to the final values of the metric they are sorted by (one lookup
        per run, where a subquery in ORDER BY made two)."""
        if self.sort is None or self.sort.field.kind != "metric":
            return "runs r", []
        return ("runs r LEFT JOIN run_metrics s ON s.run_id = r.run_id AND s.name = ?",
                [self.sort.field.key])

    def order(self) -> tuple[str, list[Any]]:
        if self.sort is None:
            return "r.created_at DESC, r.run_id DESC", []
        expr, args = ("s.value", []) if self.sort.field.kind == "metric" else _expression(
            self.sort.field)
        way = "DESC" if self.sort.descending else "ASC"
        return f"({expr}) IS NULL, {expr} {way}, r.created_at DESC, r.run_id DESC", args * 2


def _expression(field: Field) -> tuple[str, list[Any]]:
    match field.kind:
        case "param":
            return _PARAM, [f"$.{field.key}"]
        case "metric":
            return _METRIC, [field.key]
        case _:
            return f"r.{field.kind}", []


def _condition(c: Condition) -> tuple[str, list[Any]]:
    expr, args = _expression(c.field)
    op = _OPS[c.op]
    if c.value is None:
        if op not in ("=", "!="):
            raise BadRequest(f"--where: {c.field}{c.op}null: null can only be compared with = "
                             "or != (missing or null, or not)")
        return f"{expr} IS {'NOT ' if op == '!=' else ''}NULL", args
    value = int(c.value) if isinstance(c.value, bool) else c.value  # JSON true is 1 in SQLite
    return f"{expr} {op} ?", [*args, value]


async def page(db: Database, q: Query, offset: int, limit: int,
               metrics: list[str] | None) -> tuple[int, list[ExperimentRow]]:
    """How many runs match, and the rows from ``offset`` (at most ``limit``) with their final
    metrics (only ``metrics`` if given), read from one commit."""
    where, where_args = q.where()
    source, source_args = q.source()
    order, order_args = q.order()
    count_rows, rows = await db.fetch_together(
        (f"SELECT count(*) FROM runs r WHERE {where}", where_args),
        (f"SELECT r.run_id, r.status, r.created_at, r.params FROM {source} WHERE {where} "
         f"ORDER BY {order} LIMIT ? OFFSET ?",
         [*source_args, *where_args, *order_args, limit, offset]))
    finals = await _finals(db, [r[0] for r in rows], metrics)
    return int(count_rows[0][0]), [
        ExperimentRow(run_id=r[0], status=_STATUS[r[1]], created_at=r[2],
                      params=_params_dec.decode(r[3]), metrics=finals.get(r[0], {}))
        for r in rows]


async def _finals(db: Database, run_ids: list[str],
                  names: list[str] | None) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    only = f" AND name IN ({', '.join('?' * len(names))})" if names else ""
    for i in range(0, len(run_ids), MAX_IN):
        chunk = run_ids[i:i + MAX_IN]
        rows = await db.fetchall(
            f"SELECT run_id, name, value FROM run_metrics WHERE run_id IN "
            f"({', '.join('?' * len(chunk))}){only}", [*chunk, *(names or [])])
        for run_id, name, value in rows:
            out.setdefault(run_id, {})[name] = value
    return out


@dataclass(slots=True)
class RunData:
    """One run, as ``experiments.compare`` shows it."""

    run: Row
    """run_id, flow, status, created_at, params"""
    finals: dict[str, float]
    series: list[Series]
    results: list[StoredResult]
    artifacts: list[StoredArtifact]


async def run_data(db: Database, run_id: str, max_points: int) -> RunData | None:
    """A run with every metric's series (per task and attempt, by step), results and
    artifacts; None when there is no such run. A series longer than ``max_points`` is
    thinned evenly, its last point kept."""
    runs, finals, points, results, artifacts = await db.fetch_together(
        ("SELECT run_id, flow, status, created_at, params FROM runs WHERE run_id = ?", (run_id,)),
        ("SELECT name, value FROM run_metrics WHERE run_id = ? ORDER BY name", (run_id,)),
        ("SELECT task, attempt, name, step, value FROM metric_points WHERE run_id = ? "
         "ORDER BY task, attempt, name, step", (run_id,)),
        ("SELECT task, attempt, algorithm, params, metrics, artifact, metadata, at FROM "
         "experiment_results WHERE run_id = ? ORDER BY at, task, attempt, seq", (run_id,)),
        ("SELECT task, attempt, uri, kind, at FROM artifacts WHERE run_id = ? "
         "ORDER BY at, task, attempt, seq", (run_id,)))
    if not runs:
        return None
    return RunData(
        run=runs[0], finals={name: value for name, value in finals},
        series=_series(points, max_points),
        results=[StoredResult(task=r[0], attempt=r[1], algorithm=r[2],
                              params=_params_dec.decode(r[3]), metrics=_metrics_dec.decode(r[4]),
                              artifact=r[5], metadata=_params_dec.decode(r[6]), at=r[7])
                 for r in results],
        artifacts=[StoredArtifact(task=a[0], attempt=a[1], uri=a[2], kind=a[3], at=a[4])
                   for a in artifacts])


def _series(points: list[Row], max_points: int) -> list[Series]:
    groups: dict[tuple[str, int, str], tuple[list[int], list[float]]] = {}
    for task, attempt, name, step, value in points:
        steps, values = groups.setdefault((task, attempt, name), ([], []))
        steps.append(step)
        values.append(value)
    out = []
    for (task, attempt, name), (steps, values) in sorted(groups.items(),
                                                         key=lambda g: (g[0][2], g[0][0], g[0][1])):
        kept = thinned(len(steps), max_points)
        out.append(Series(name=name, task=task, attempt=attempt, points=len(steps),
                          steps=[steps[i] for i in kept], values=[values[i] for i in kept]))
    return out


def thinned(n: int, at_most: int) -> list[int]:
    """Indexes of at most ``at_most`` of ``n`` points, evenly spread, first and last kept."""
    if n <= at_most:
        return list(range(n))
    step = (n - 1) / (at_most - 1)
    return sorted({round(i * step) for i in range(at_most)})
