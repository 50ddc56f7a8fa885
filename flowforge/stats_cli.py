"""``flowforge stats [--json]``: the coordinator's figures in the terminal — the same ones its
``--metrics`` endpoint serves to Prometheus (docs/metrics.md); ``flowforge stats --flow F
[--days N]``: the summary charts of the runs kept (docs/insights.md)."""

import argparse
import datetime as dt
import math
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from flowforge import render, runtime
from flowforge.connection import DEFAULT_NATS_URL, add_connection_args
from flowforge.metrics import quantile_bound
from flowforge.render import seconds
from flowforge.stats_charts import charts_text, use_colour
from flowforge.terminal import out, safe_json
from protocol.limits import is_valid_name
from protocol.stats import MAX_STATS_DAYS, FlowStats, HistogramSeries, Series, Stats

TASK_KEY = ("flow", "task", "queue", "kind")
OTHER_ENDS = ("upstream_failed", "cancelled", "skipped")
"""Task outcomes counted together in the table's OTHER column (``--json`` has each)."""


EPILOG = """examples:
  flowforge stats                         # the coordinator's figures since it started
  flowforge stats --json
  flowforge stats --flow nightly          # runs per day, task durations, failure rate
  flowforge stats --flow nightly --days 30 --until 2025-06-15 --json
  flowforge stats --days 7                # the charts of every flow

The charts are coloured on a terminal; NO_COLOR=1 turns that off, FORCE_COLOR=1 forces it.
"""


def add_stats_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    help_text = ("the coordinator's figures: queues, runs, task outcomes, retries, waits and "
                 "durations, agents, schedule fires (what --metrics serves to Prometheus); "
                 "with --flow or --days, the summary charts of the runs kept")
    p = sub.add_parser("stats", help=help_text, description=help_text, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_connection_args(p, nats_default=DEFAULT_NATS_URL)
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for the coordinator's answer (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON (every series, with "
                   "the histograms' buckets; or the charts' figures)")
    p.add_argument("--flow", type=flow_arg, metavar="FLOW", help="the summary charts of this flow: runs per "
                   "UTC day by status, task durations p50/p95 over the recent finished runs, "
                   "failure rate")
    p.add_argument("--days", type=days_arg, metavar="N", help="how many UTC days the charts "
                   f"cover, 1 to {MAX_STATS_DAYS} (default: 14); without --flow, every flow's")
    p.add_argument("--until", type=date_arg, metavar="YYYY-MM-DD", help="the last day of the "
                   "charts, a UTC date (default: today)")


def flow_arg(text: str) -> str:
    if not is_valid_name(text):
        raise argparse.ArgumentTypeError(f"not a flow name: {text!r} (letters, digits, _ and -, "
                                         "starting with a letter or _)")
    return text


def days_arg(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {text!r}") from None
    if not 1 <= days <= MAX_STATS_DAYS:
        raise argparse.ArgumentTypeError(f"{days} days is out of range: 1 to {MAX_STATS_DAYS}")
    return days


def date_arg(text: str) -> float:
    """A UTC date as a moment of that day (its noon)."""
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None
    return dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC).timestamp()


async def run(client: Any, ns: argparse.Namespace) -> int:
    if ns.flow is not None or ns.days is not None or ns.until is not None:
        return await _charts(client, ns)
    stats: Stats = await client.stats()
    if ns.json:
        out(safe_json(msgspec.json.format(msgspec.json.encode(stats), indent=2).decode()))
    else:
        out(stats_text(stats))
    return runtime.EXIT_OK


async def _charts(client: Any, ns: argparse.Namespace) -> int:
    figures: FlowStats = await client.flow_stats(ns.flow, ns.days or 14, ns.until)
    if ns.json:
        out(safe_json(msgspec.json.format(msgspec.json.encode(figures), indent=2).decode()))
    else:  # our colour codes must reach the terminal: charts_text made every name safe
        sys.stdout.write(charts_text(figures, colour=use_colour(sys.stdout)) + "\n")
    return runtime.EXIT_OK


def stats_text(s: Stats) -> str:
    """The figures as a few tables."""
    going = sum(x.value for x in s.runs_active)
    waiting = sum(x.value for x in s.runs_waiting)
    parts = [f"coordinator up {seconds(s.at - s.started_at)} (since {render.stamp(s.started_at)}); "
             f"runs: {going:.0f} going, {waiting:.0f} waiting"]
    parts.append(render.table(
        ["queue", "queued", "held", "running", "oldest wait"],
        [[q.queue, str(q.queued), str(q.held), str(q.running),
          seconds(s.at - q.oldest_queued_at) if q.oldest_queued_at else "-"] for q in s.queues])
        if s.queues else "no queues yet")
    agents = render.table(["agent", "status", "queues", "slots busy"],
                          [[a.agent_id, a.status, ",".join(a.queues),
                            f"{a.slots_busy}/{a.slots_total}"] for a in s.agents]) \
        if s.agents else "no agents"
    parts.append(f"{agents}\nagents lost since start: {s.agents_lost}")
    parts.append(_runs_table(s.runs_finished))
    parts.append(_tasks_table(s))
    if s.schedules or s.schedule_fires:
        fires = ", ".join(f"{x.labels['flow']} {x.labels['outcome']} {x.value:.0f}"
                          for x in s.schedule_fires) or "none yet"
        parts.append(f"schedules: {s.schedules}; fires: {fires}")
    if s.labels_folded:
        parts.append(f"{s.labels_folded} label values folded into 'other' (past the caps)")
    return "\n\n".join(parts)


def _runs_table(series: Sequence[Series]) -> str:
    if not series:
        return "no runs finished since start"
    by_flow: dict[str, dict[str, float]] = {}
    for x in series:
        by_flow.setdefault(x.labels["flow"], {})[x.labels["status"]] = x.value
    return render.table(
        ["runs finished", "succeeded", "failed", "cancelled"],
        [[flow, *(f"{n.get(k, 0):.0f}" for k in ("succeeded", "failed", "cancelled"))]
         for flow, n in sorted(by_flow.items())])


def _tasks_table(s: Stats) -> str:
    rows: dict[tuple[str, ...], dict[str, Any]] = {}

    def row(labels: dict[str, str]) -> dict[str, Any]:
        return rows.setdefault(tuple(labels[k] for k in TASK_KEY), {})

    for x in s.tasks_finished:
        ends = row(x.labels)
        ends[x.labels["status"]] = ends.get(x.labels["status"], 0) + x.value
    for x in s.task_retries:
        ends = row(x.labels)
        ends["retries"] = ends.get("retries", 0) + x.value
    for name, hists in (("wait", s.task_wait_s), ("run", s.task_duration_s)):
        for h in hists:
            row(h.labels)[name] = h
    if not rows:
        return "no task instances ended since start"
    return render.table(
        ["flow", "task", "queue", "kind", "succeeded", "failed", "other", "retries",
         "wait (mean, p95)", "run (mean, p95)"],
        [[*key, _n(r.get("succeeded")), _n(r.get("failed")),
          _n(sum(r.get(k, 0) for k in OTHER_ENDS)), _n(r.get("retries")),
          _spread(s.bounds_s, r.get("wait")), _spread(s.bounds_s, r.get("run"))]
         for key, r in sorted(rows.items())])


def _n(value: float | None) -> str:
    return f"{value:.0f}" if value else "0"


def _spread(bounds: Sequence[float], h: HistogramSeries | None) -> str:
    """``4 ms, p95 ≤5 ms``: the mean (exact) and the bucket the 95th percentile is in."""
    if h is None or not h.count:
        return "-"
    p95 = quantile_bound(0.95, bounds, h.buckets)
    top = f"≤{seconds(p95)}" if p95 is not None and p95 != math.inf else f">{seconds(bounds[-1])}"
    return f"{seconds(h.sum / h.count)}, p95 {top}"
