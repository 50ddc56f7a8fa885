"""``flowforge experiments FLOW`` and ``flowforge compare RUN RUN...``: runs side by side —
their parameters (those that differ between them highlighted) and each metric's final value;
``compare`` adds every metric's series, step by step, and the runs' results and artifacts."""

import argparse
import csv
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec

from flowforge import render, runtime
from flowforge.connection import DEFAULT_NATS_URL, add_connection_args
from flowforge.terminal import out, safe, safe_json
from protocol.experiment_query import WHERE_HELP
from protocol.experiments import (
    MAX_COMPARED_RUNS,
    MAX_EXPERIMENT_ROWS,
    Comparison,
    ExperimentsPage,
    RunExperiment,
    Series,
)

SERIES_ROWS = 20
"""Steps shown per series in the terminal (evenly spread, the last kept; --json has all)."""
CELL = 24
BOLD, PLAIN = "\x1b[1m", "\x1b[0m"

EXPERIMENTS_EPILOG = """examples:
  flowforge experiments pipeline_simple_ml
  flowforge experiments pipeline_simple_ml --metric accuracy --sort -accuracy --limit 10
  flowforge experiments pipeline_simple_ml --where 'params.lr<0.01 and status=succeeded'
  flowforge experiments pipeline_simple_ml --limit 10000 --csv runs.csv
"""
COMPARE_EPILOG = """examples:
  flowforge compare RUN_ID RUN_ID
  flowforge compare RUN_ID RUN_ID RUN_ID --json
"""


def _rows(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_EXPERIMENT_ROWS:
        raise argparse.ArgumentTypeError(f"{value} is not from 1 to {MAX_EXPERIMENT_ROWS:,}")
    return value


def add_experiments_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    help_text = ("one row per run of a flow: its parameters (those that differ highlighted) "
                 "and each metric's final value")
    p = sub.add_parser("experiments", help=help_text, description=help_text,
                       epilog=EXPERIMENTS_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("flow")
    p.add_argument("--metric", action="append", dest="metrics", metavar="NAME",
                   help="a metric column; repeatable (default: every metric of the runs shown)")
    p.add_argument("--sort", metavar="KEY", help="-accuracy (highest first), accuracy, "
                   "params.lr, created_at, status (default: newest first)")
    p.add_argument("--where", metavar="EXPR", help=WHERE_HELP)
    p.add_argument("--limit", type=_rows, default=50,
                   help=f"1 to {MAX_EXPERIMENT_ROWS:,} runs (default: %(default)s)")
    p.add_argument("--csv", type=Path, metavar="FILE",
                   help="also write the rows to FILE: every parameter and metric as a column")
    p.add_argument("--json", action="store_true", help="print JSON")
    _sort_keys_are_values(p)

    help_text = ("runs side by side: parameters (those that differ highlighted), final "
                 "metrics, each metric's series by step, results and artifacts")
    c = sub.add_parser("compare", help=help_text, description=help_text, epilog=COMPARE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(c)
    c.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    c.add_argument("--max-points", type=int, default=5_000, metavar="N",
                   help="points per series at most; longer ones are thinned evenly "
                   "(default: %(default)s)")
    c.add_argument("--json", action="store_true", help="print JSON")


def _sort_keys_are_values(p: argparse.ArgumentParser) -> None:
    """``--sort -accuracy``: argparse takes any word that starts with '-' for an option and
    then says ``--sort`` has no value; here a word that is none of this parser's options
    (``-accuracy``, ``-params.lr``) is a value, as ``--sort=-accuracy`` would be."""
    options = p._option_string_actions
    parse_optional = p._parse_optional

    def optional_unless_sort_key(arg: str) -> Any:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2 \
                and arg not in options and arg[1].isalpha():
            return None  # not an option: a value
        return parse_optional(arg)

    p._parse_optional = optional_unless_sort_key  # type: ignore[method-assign]


def _common(p: argparse.ArgumentParser) -> None:
    add_connection_args(p, nats_default=DEFAULT_NATS_URL)
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for each coordinator answer (default: %(default)s)")


async def run_experiments(client: Any, ns: argparse.Namespace) -> int:
    page: ExperimentsPage = await client.experiments(
        ns.flow, metrics=ns.metrics, sort=ns.sort, where=ns.where, limit=ns.limit)
    if ns.csv is not None:
        with ns.csv.open("w", newline="") as f:
            write_csv(page, f)
        out(f"wrote {len(page.rows):,} runs to {ns.csv}", file=sys.stderr)
    if ns.json:
        _print_json(page)
    else:
        sys.stdout.write(experiments_text(page, emphasis=_emphasis(sys.stdout), sort=ns.sort)
                         + "\n")
    return runtime.EXIT_OK


async def run_compare(client: Any, ns: argparse.Namespace) -> int:
    if len(ns.run_ids) > MAX_COMPARED_RUNS:
        out(f"flowforge compare: at most {MAX_COMPARED_RUNS} runs at once", file=sys.stderr)
        return runtime.EXIT_USAGE
    comparison: Comparison = await client.compare(ns.run_ids, max_points=max(2, ns.max_points))
    if ns.json:
        _print_json(comparison)
    else:
        sys.stdout.write(compare_text(comparison, emphasis=_emphasis(sys.stdout)) + "\n")
    return runtime.EXIT_OK


EXPERIMENT_COMMANDS = {"experiments": run_experiments, "compare": run_compare}


# -- text ------------------------------------------------------------------------------------


def experiments_text(page: ExperimentsPage, emphasis: bool = False,
                     sort: str | None = None) -> str:
    """The runs as a table: the parameters that differ (highlighted), then the metrics; the
    parameters the same in every row are said once above it."""
    if not page.rows:
        return f"no runs of {page.flow} to show"
    lines = []
    same = [k for k in page.rows[0].params if k not in page.differing]
    if same:
        first = page.rows[0].params
        lines.append("same in every run: " + ", ".join(f"{k}={value_text(first[k])}"
                                                        for k in same))
    headers = ["run", "status", "created", *page.differing, *page.metrics]
    rows = [[r.run_id, r.status.value, render.stamp(r.created_at),
             *(value_text(r.params[k]) if k in r.params else "-" for k in page.differing),
             *(number_text(r.metrics.get(m)) for m in page.metrics)] for r in page.rows]
    highlighted = set(range(3, 3 + len(page.differing)))
    lines.append(grid(headers, rows, highlighted if emphasis else set()))
    order = f"sorted by {sort}" if sort else "newest first"
    lines.append(f"{len(page.rows):,} of {page.total:,} runs, {order}"
                 + (" (--limit for more)" if len(page.rows) < page.total else ""))
    return "\n".join(lines)


def compare_text(c: Comparison, emphasis: bool = False) -> str:
    runs = c.runs
    ids = [r.run_id for r in runs]
    rows = [["flow", *(r.flow for r in runs)], ["status", *(r.status.value for r in runs)],
            ["created", *(render.stamp(r.created_at) for r in runs)]]
    keys = list(dict.fromkeys(k for r in runs for k in r.params))
    bold_rows = {len(rows) + i for i, k in enumerate(keys) if k in c.differing}
    rows += [[f"params.{k}", *(value_text(r.params[k]) if k in r.params else "-" for r in runs)]
             for k in keys]
    names = sorted({n for r in runs for n in r.metrics})
    rows += [[m, *(number_text(r.metrics.get(m)) for r in runs)] for m in names]
    parts = [grid(["", *ids], rows, set(), bold_rows if emphasis else set(), upper=False)]
    parts += [_series_text(name, task, runs) for name, task in  # one point: the final value
              dict.fromkeys((s.name, s.task) for r in runs for s in r.series if s.points > 1)]
    parts += [p for p in (_results_text(runs), _artifacts_text(runs)) if p]
    return "\n\n".join(parts)


def _series_text(name: str, task: str, runs: Sequence[RunExperiment]) -> str:
    """One metric of one task in every run (each run's latest attempt that logged it), by
    step; at most SERIES_ROWS steps shown."""
    latest: list[Series | None] = []
    notes = []
    for r in runs:
        mine = [s for s in r.series if s.name == name and s.task == task]
        last = max(mine, key=lambda s: s.attempt) if mine else None
        latest.append(last)
        if last is not None and len(mine) > 1:
            notes.append(f"{r.run_id}: attempt {last.attempt} shown (attempts "
                         f"{', '.join(str(s.attempt) for s in mine)} logged it)")
    values = [dict(zip(s.steps, s.values, strict=True)) if s else {} for s in latest]
    steps = sorted({step for v in values for step in v})
    shown = sorted({*(steps[i] for i in _spread(len(steps), SERIES_ROWS)),
                    *(s.steps[-1] for s in latest if s and s.steps)})  # and each one's last
    rows = [[str(step), *(number_text(v.get(step)) for v in values)] for step in shown]
    stored = max((s.points for s in latest if s), default=0)
    title = f"{name} ({task})"
    if len(shown) < max(len(steps), stored):
        notes.append(f"{len(shown)} of {max(len(steps), stored):,} steps shown; --json has more")
    return "\n".join([safe(title), grid(["step", *(r.run_id for r in runs)], rows, set(),
                                         upper=False), *map(safe, notes)])


def _results_text(runs: Sequence[RunExperiment]) -> str:
    rows = [[r.run_id, f"{x.task} #{x.attempt}", x.algorithm, value_text(x.params, 40),
             value_text(x.metrics, 40), x.artifact or "-"] for r in runs for x in r.results]
    left = sum(r.left_out for r in runs)
    text = grid(["results", "task", "algorithm", "params", "metrics", "artifact"], rows, set()) \
        if rows else ""
    return text + (f"\n({left} results and artifacts left out: too many for one answer)"
                   if left else "")


def _artifacts_text(runs: Sequence[RunExperiment]) -> str:
    rows = [[r.run_id, f"{a.task} #{a.attempt}", a.kind or "-", a.uri]
            for r in runs for a in r.artifacts]
    return grid(["artifacts", "task", "kind", "uri"], rows, set()) if rows else ""


def _spread(n: int, at_most: int) -> list[int]:
    if n <= at_most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (at_most - 1)) for i in range(at_most)})


def value_text(value: Any, width: int = CELL) -> str:
    """A parameter as a cell: text as it is, a number to 6 digits, a dict as ``k=v, ...``,
    anything else as compact JSON; cut to ``width``."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, float):
        text = number_text(value)
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={value_text(v, width)}" for k, v in value.items())
    else:
        text = msgspec.json.encode(value).decode()
    return render.cut(text, width)


def number_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def grid(headers: Sequence[str], rows: Sequence[Sequence[str]], bold_columns: set[int],
         bold_rows: set[int] | None = None, upper: bool = True) -> str:
    """``render.table`` with the text made safe first and the highlighted columns (or rows)
    in bold after padding, so the escape codes never shift a column; headers in upper case
    unless they are run ids (``upper=False``)."""
    headers = [safe(h) for h in headers]
    rows = [row if safe(joined := "\n".join(row)) == joined else [safe(c) for c in row]
            for row in rows]  # one pass a row: almost every row has nothing to escape
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    bold_rows = bold_rows or set()

    def line(cells: Sequence[str], row: int | None) -> str:
        padded = [c.ljust(w) for c, w in zip(cells, widths, strict=True)]
        return "  ".join(f"{BOLD}{c}{PLAIN}" if i in bold_columns or row in bold_rows else c
                         for i, c in enumerate(padded)).rstrip()

    return "\n".join([line([h.upper() if upper else h for h in headers], None),
                      *(line(r, i) for i, r in enumerate(rows))])


def _emphasis(stream: TextIO) -> bool:
    """Bold only on a terminal, and not when NO_COLOR is set (no-color.org)."""
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


# -- CSV and JSON ------------------------------------------------------------------------------


def write_csv(page: ExperimentsPage, f: TextIO) -> None:
    """run_id, status, created_at (UTC, ISO 8601), ``params.<key>`` for every parameter of
    any row, ``metrics.<name>`` for every metric column."""
    keys = list(dict.fromkeys(k for r in page.rows for k in r.params))
    writer = csv.writer(f)
    writer.writerow(["run_id", "status", "created_at", *(f"params.{k}" for k in keys),
                     *(f"metrics.{m}" for m in page.metrics)])
    for r in page.rows:
        writer.writerow([
            r.run_id, r.status.value,
            dt.datetime.fromtimestamp(r.created_at, dt.UTC).isoformat(timespec="seconds"),
            *(_csv_value(r.params.get(k)) for k in keys),
            *("" if r.metrics.get(m) is None else repr(r.metrics[m]) for m in page.metrics)])


def _csv_value(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return msgspec.json.encode(value).decode()


def _print_json(value: Any) -> None:
    sys.stdout.write(safe_json(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())
                     + "\n")
