"""The Experiments view's table, as data: its columns, a row's cells, the order a sort gives
(in memory: every row is loaded), and what the plot draws. No widgets here."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from rich.text import Text

from flowforge.terminal import safe
from protocol.experiments import ExperimentRow, RunExperiment, Series
from tui import palette

CELL_CHARS = 24
"""A parameter's value is cut to this many characters in its cell."""
DIFFERING_STYLE = "bold yellow"
"""Parameters that differ between the rows: the whole column, header and cells."""


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    """``run``, ``status``, ``params.<key>`` or ``metrics.<name>``: the --sort field's text."""
    label: str

    @property
    def kind(self) -> str:
        return self.key.partition(".")[0]

    @property
    def name(self) -> str:
        return self.key.partition(".")[2]


def columns(differing: Sequence[str], metrics: Sequence[str]) -> list[Column]:
    """Run id, status, each parameter that differs between the rows, each metric."""
    return ([Column("run", "run"), Column("status", "status")]
            + [Column(f"params.{p}", p) for p in differing]
            + [Column(f"metrics.{m}", m) for m in metrics])


def header(column: Column) -> Text:
    return Text(safe(column.label), style=DIFFERING_STYLE if column.kind == "params" else "bold")


def number_text(value: float) -> str:
    """A metric as the CLI prints it: up to 6 significant digits."""
    return f"{value:.6g}"


def param_text(value: Any) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    text = safe(text)
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS - 1] + "…"


_STATUS_TEXT: dict[Any, Text] = {}


def cells(row: ExperimentRow, cols: Sequence[Column]) -> list[str | Text]:
    """A row's cells: plain ``str`` where the text is known to be safe (run ids, numbers),
    Text where it came from the user (parameters)."""
    status = _STATUS_TEXT.get(row.status)
    if status is None:
        status = _STATUS_TEXT[row.status] = palette.run_text(row.status)
    out: list[str | Text] = [Text(safe(row.run_id)), status]
    for col in cols[2:]:
        if col.kind == "params":
            out.append(Text(param_text(row.params[col.name]), style=DIFFERING_STYLE)
                       if col.name in row.params else Text("-", style="grey50"))
        else:
            value = row.metrics.get(col.name)
            out.append(Text("-", style="grey50") if value is None else
                       Text(number_text(value), justify="right"))
    return out


# -- sorting ---------------------------------------------------------------------------------

def _value(row: ExperimentRow, column: Column) -> Any:
    match column.kind:
        case "metrics":
            return row.metrics.get(column.name)
        case "params":
            return row.params.get(column.name)
        case "status":
            return row.status.value
        case _:
            return row.run_id


def _rank(value: Any) -> tuple[int, Any]:
    """Numbers, then text, then anything else (by its JSON)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 0, value
    if isinstance(value, str):
        return 1, value
    return 2, msgspec.json.encode(value, order="sorted")


def newest_first(rows: Sequence[ExperimentRow]) -> list[ExperimentRow]:
    return sorted(rows, key=lambda r: (r.created_at, r.run_id), reverse=True)


def sorted_rows(rows: Sequence[ExperimentRow], column: Column | None,
                descending: bool) -> list[ExperimentRow]:
    """Rows by ``column`` (None: newest first), rows without a value last whichever way; ties
    newest first."""
    base = newest_first(rows)
    if column is None:
        return base
    present = [r for r in base if _value(r, column) is not None]
    missing = [r for r in base if _value(r, column) is None]
    if descending:  # a stable reverse keeps ties newest first
        present.reverse()
        present.sort(key=lambda r: _rank(_value(r, column)))
        present.reverse()
    else:
        present.sort(key=lambda r: _rank(_value(r, column)))
    return present + missing


# -- the plot --------------------------------------------------------------------------------

MAX_PLOTTED = 2_000
"""Runs plotted across the table at most (every n-th, the last kept): the plot is a few hundred
cells wide."""


def thinned(n: int, most: int = MAX_PLOTTED) -> list[int]:
    """Indices 0..n-1, at most ``most`` of them evenly spread, the last one kept."""
    if n <= most:
        return list(range(n))
    stride = math.ceil(n / most)
    picked = list(range(0, n, stride))
    return picked if picked[-1] == n - 1 else [*picked, n - 1]


def across_runs(rows: Sequence[ExperimentRow], metric: str) -> tuple[list[int], list[float]]:
    """x (1-based table positions) and y of the rows that have ``metric``."""
    xs, ys = [], []
    for i in thinned(len(rows)):
        value = rows[i].metrics.get(metric)
        if value is not None:
            xs.append(i + 1)
            ys.append(value)
    return xs, ys


def latest_series(run: RunExperiment, metric: str) -> list[Series]:
    """Each task's series of ``metric`` from its latest attempt that logged it."""
    latest: dict[str, Series] = {}
    for s in run.series:
        if s.name == metric and (s.task not in latest or s.attempt > latest[s.task].attempt):
            latest[s.task] = s
    return [latest[t] for t in sorted(latest)]


def short_id(run_id: str) -> str:
    """The end of a run id, which differs between runs started one after another."""
    return run_id[-6:]
