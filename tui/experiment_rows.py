"""The Experiments view's table, as data: its columns, a row's cells, the order a sort gives
(in memory: every row is loaded), and what the plot draws. No widgets here."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from rich.cells import cell_len
from rich.markup import escape
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


def param_text(value: Any) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    text = safe(text)
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS - 1] + "…"


def table_cells(rows: Sequence[ExperimentRow],
                cols: Sequence[Column]) -> tuple[list[list[str]], list[int]]:
    """Each row's cells as Rich markup (the user's text escaped: DataTable makes a cell's Text
    only when its row is drawn), and each column's width in cells (its header or its widest
    value). Built column by column: 10,000 rows x 12 columns in ~0.1 s."""
    columns_: list[list[str]] = []
    widths: list[int] = []
    for col in cols:
        texts, shown = _column(rows, col)
        columns_.append(shown)
        widths.append(max(max(map(cell_len, texts), default=1), cell_len(safe(col.label))))
    return [list(cells) for cells in zip(*columns_, strict=True)], widths


def _column(rows: Sequence[ExperimentRow], col: Column) -> tuple[list[str], list[str]]:
    """A column's plain texts (for its width) and its markup cells."""
    if col.kind == "run":
        texts = [safe(r.run_id) for r in rows]
        return texts, [escape(t) for t in texts]
    if col.kind == "status":
        colour = palette.RUN_COLOUR
        return ([r.status.value for r in rows],
                [f"[{colour.get(r.status, 'default')}]{r.status.value}[/]" for r in rows])
    name = col.name
    if col.kind == "params":
        values = [param_text(r.params[name]) if name in r.params else None for r in rows]
        return ([v for v in values if v is not None],
                [MISSING if v is None else f"[{DIFFERING_STYLE}]{escape(v)}[/]" for v in values])
    shown = [MISSING if v is None else f"{v:.6g}"  # as the CLI prints a metric
             for v in (r.metrics.get(name) for r in rows)]
    return [t for t in shown if t is not MISSING], shown


MISSING = "[grey50]-[/]"


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
                descending: bool, *, newest: bool = False) -> list[ExperimentRow]:
    """Rows by ``column`` (None: newest first), rows without a value last whichever way; ties
    newest first. ``newest``: ``rows`` are newest first already (saves a sort)."""
    base = list(rows) if newest else newest_first(rows)
    if column is None:
        return base
    values = [_value(r, column) for r in base]
    present = [r for r, v in zip(base, values, strict=True) if v is not None]
    missing = [r for r, v in zip(base, values, strict=True) if v is None]
    keys = [v for v in values if v is not None]
    if not all(type(v) in (int, float) for v in keys):  # numbers, text, others: by rank
        keys = [_rank(v) for v in keys]
    order = sorted(range(len(present)), key=keys.__getitem__, reverse=descending)
    return [present[i] for i in order] + missing


# -- the plot --------------------------------------------------------------------------------

MAX_PLOTTED = 400
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


def run_at(canvas: str, x: int, n: int) -> int | None:
    """The table position (0-based) of the run under column ``x`` of a drawn runs plot of
    ``n`` runs, x from 1 to ``n`` (``plt.xlim(1, n)``): the plot's area lies between the corners
    of its bottom border, ``└`` and ``┘``. None outside it."""
    bottom = next((line for line in reversed(canvas.splitlines()) if "└" in line and "┘" in line),
                  None)
    if bottom is None or n < 1:
        return None
    left, right = bottom.index("└"), bottom.rindex("┘")
    if not left < x < right:
        return None
    if n == 1:
        return 0
    fraction = (x - left - 0.5) / max(right - left - 1, 1)
    return min(max(round(fraction * (n - 1)), 0), n - 1)


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
