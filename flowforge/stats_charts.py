"""``flowforge stats --flow F``: the summary charts as terminal text — a bar per UTC day of the
runs created that day, stacked by status (unicode blocks, each status its own shade, coloured
when the terminal allows), task durations p50/p95, failure rates."""

import datetime as dt
import os
from collections.abc import Sequence
from typing import TextIO

from flowforge import render
from flowforge.render import seconds
from flowforge.terminal import safe
from protocol.stats import DayRuns, FlowFailures, FlowStats

BAR_WIDTH = 40
"""Cells of the bar of the busiest day."""
STATUS_ORDER = ("succeeded", "failed", "cancelled", "running", "pending")
GLYPH = {"succeeded": "█", "failed": "▓", "cancelled": "░", "running": "▒", "pending": "·"}
"""One shade per status, so the stack reads without colour too."""
MARK = {"succeeded": "✓", "failed": "✗", "cancelled": "■", "running": "●", "pending": "○"}
ANSI = {"succeeded": "32", "failed": "31", "cancelled": "90", "running": "33", "pending": "36"}
"""Green, red, grey, yellow, cyan: the dashboard's colours of the run states."""


def use_colour(stream: TextIO) -> bool:
    """Colour on a terminal, unless ``NO_COLOR`` is set (``FORCE_COLOR`` forces it)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def _paint(text: str, status: str, colour: bool) -> str:
    return f"\x1b[{ANSI[status]}m{text}\x1b[0m" if colour and text else text


def charts_text(s: FlowStats, colour: bool = False) -> str:
    """The three charts; every name from the answer goes through ``safe`` (only our own colour
    codes reach the terminal)."""
    what = safe(s.flow) if s.flow else "every flow"
    first, last = s.runs_per_day[0].day, s.runs_per_day[-1].day
    parts = [f"{what}: runs per UTC day ({first} to {last}), by their status now\n"
             + day_bars(s.runs_per_day, colour)]
    parts.append(durations_text(s))
    parts.append(failures_text(s.failures, one_flow=s.flow is not None))
    if s.truncated:
        parts.append("(more flows or tasks than one answer holds: ask for one flow with --flow)")
    return "\n\n".join(parts)


def day_bars(days: Sequence[DayRuns], colour: bool = False, width: int = BAR_WIDTH) -> str:
    """A line per day: its date, its bar (stacked by status), its total and counts; a legend."""
    top = max((d.total for d in days), default=0)
    lines = []
    for d in days:
        date = dt.date.fromisoformat(d.day)
        bar = "".join(_paint(GLYPH[k] * n, k, colour)
                      for k, n in zip(STATUS_ORDER, segments(d, top, width), strict=True))
        cells = sum(segments(d, top, width))
        counts = " ".join(_paint(f"{MARK[k]}{d.counts.get(k, 0)}", k, colour)
                          for k in STATUS_ORDER if d.counts.get(k, 0))
        total = str(d.total) if d.total else "-"
        lines.append(f"{d.day} {date:%a} │{bar}{' ' * max(0, width - cells)} {total:>5}  {counts}"
                     .rstrip())
    legend = "  ".join(_paint(f"{GLYPH[k]} {MARK[k]} {k}", k, colour) for k in STATUS_ORDER)
    lines.append(" " * 15 + legend)
    return "\n".join(lines)


def segments(day: DayRuns, top: int, width: int = BAR_WIDTH) -> list[int]:
    """Cells of each status's part of the day's bar (STATUS_ORDER), the busiest day ``width``
    long: cumulative ends rounded, so the parts add up to the bar; a status with runs gets a
    cell at least."""
    if not top:
        return [0] * len(STATUS_ORDER)
    out, done, cum = [], 0, 0
    for k in STATUS_ORDER:
        n = day.counts.get(k, 0)
        cum += n
        end = max(round(cum * width / top), done + (1 if n else 0))
        out.append(end - done)
        done = end
    return out


def durations_text(s: FlowStats) -> str:
    if not s.durations:
        return (f"task durations: no task succeeded in the finished runs of the window "
                f"({s.sample_runs} finished runs)")
    head = (f"task durations: succeeded attempts in the {s.sample_runs} newest finished runs "
            "of the window (p50, p95: nearest rank)")
    flows = s.flow is None
    rows = [[*([safe(d.flow)] if flows else []), safe(d.task), str(d.count), seconds(d.p50_s),
             seconds(d.p95_s), seconds(d.max_s)] for d in s.durations]
    return head + "\n" + render.table(
        [*(["flow"] if flows else []), "task", "attempts", "p50", "p95", "max"], rows)


def failures_text(failures: Sequence[FlowFailures], one_flow: bool) -> str:
    if not failures:
        return "failure rate: no runs in the window"
    if one_flow:
        [f] = failures
        return f"failure rate: {_rate_words(f)}; {f.runs} runs in the window"
    return "failure rate per flow (failed / finished runs of the window)\n" + render.table(
        ["flow", "runs", "finished", "failed", "cancelled", "failure rate"],
        [[safe(f.flow), str(f.runs), str(f.succeeded + f.failed + f.cancelled), str(f.failed),
          str(f.cancelled), percent(f.failure_rate)] for f in failures])


def _rate_words(f: FlowFailures) -> str:
    finished = f.succeeded + f.failed + f.cancelled
    if not finished:
        return "no run finished yet"
    return f"{f.failed} of {finished} finished runs failed ({percent(f.failure_rate)})"


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f} %"
