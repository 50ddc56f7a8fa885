"""Metric accumulators shared by the coordinator and the agent: histograms kept as plain bucket
counts, label sets bounded so they cannot grow with runs, and quantiles read from buckets.

Pure and cheap on purpose: the hot paths only add to dicts and lists; the Prometheus text
and ``flowforge stats`` are built from these when asked for (``flowforge.metrics_http``).
"""

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from protocol.children import CHILD_SEP
from protocol.dag import INSTANCE_SEP

BOUNDS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                               30.0, 60.0, 300.0, 900.0, 3600.0)
"""Upper bounds of the histogram buckets (seconds): tasks last from milliseconds to hours."""
OTHER = "other"
"""The label value a label set past its cap is folded into."""
MAX_TASK_LABELS = 250
"""Distinct (flow, task) label pairs kept; the rest count as (flow, "other") or
("other", "other") once the flows are past the cap too."""
MAX_VALUE_LABELS = 100
"""Distinct flows, queues or functions kept as label values."""
MAX_FOLDED_REMEMBERED = 2_000
"""Folded label values remembered, so each is counted once in ``folded``."""


def root_task(name: str) -> str:
    """The flow task a task instance belongs to: ``T`` for ``T``, ``T~7``, ``T/0``,
    ``T~7/0/3`` — never an instance's or a child's own name (those grow with the work)."""
    root = name.split(CHILD_SEP, 1)[0]
    return root.split(INSTANCE_SEP, 1)[0]


def kind_of(name: str) -> str:
    """``task``, ``instance`` (of a mapped task) or ``child`` (spawned from a task)."""
    if CHILD_SEP in name:
        return "child"
    return "instance" if INSTANCE_SEP in name else "task"


class LabelCap:
    """Folds label values past a cap into ``other``, so a flood of names (a flow registered
    under a new name per customer, say) costs a bounded number of series."""

    def __init__(self, max_pairs: int = MAX_TASK_LABELS, max_values: int = MAX_VALUE_LABELS) -> None:
        self.max_pairs = max_pairs
        self.max_values = max_values
        self._pairs: set[tuple[str, str]] = set()
        self._flows: set[str] = set()
        self._values: set[str] = set()
        self._folded: set[object] = set()
        self.folded = 0
        """Label values folded into ``other`` (each counted once while remembered)."""

    def flow(self, name: str) -> str:
        """A flow's name as labelled: itself while under the cap."""
        return name if name in self._flows else self._keep(self._flows, self.max_values, name)

    def pair(self, flow: str, task: str) -> tuple[str, str]:
        """(flow, task) as labelled: themselves while under the caps."""
        if (flow, task) in self._pairs:
            return flow, task
        label = self.flow(flow)
        if label == OTHER:
            return OTHER, OTHER
        kept = self._keep(self._pairs, self.max_pairs, (flow, task))
        return (flow, task) if kept != OTHER else (flow, OTHER)

    def value(self, text: str) -> str:
        """One label value (a queue, a function) as labelled: itself while under the cap."""
        return text if text in self._values else self._keep(self._values, self.max_values, text)

    def _keep(self, kept: set[Any], cap: int, key: Any) -> Any:
        if len(kept) < cap:
            kept.add(key)
            return key
        if key not in self._folded:
            self.folded += 1
            if len(self._folded) < MAX_FOLDED_REMEMBERED:
                self._folded.add(key)
        return OTHER


@dataclass(slots=True)
class Buckets:
    """One histogram series: a count per bucket (not cumulative; the last is +Inf) and the sum."""

    bounds: tuple[float, ...]
    counts: list[int]
    total: float = 0.0

    def add(self, value: float) -> None:
        if value < 0.0:
            value = 0.0  # clocks of two hosts: a start stamped before the queueing
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value


@dataclass(slots=True)
class Histograms:
    """Histogram series by label values, over ``BOUNDS_S``."""

    bounds: tuple[float, ...] = BOUNDS_S
    series: dict[tuple[str, ...], Buckets] = field(default_factory=dict)

    def series_of(self, labels: tuple[str, ...]) -> Buckets:
        """The series of these labels (made empty the first time): keep it to ``add`` to it
        without looking it up again."""
        found = self.series.get(labels)
        if found is None:
            found = self.series[labels] = Buckets(self.bounds, [0] * (len(self.bounds) + 1))
        return found

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        self.series_of(labels).add(value)

    def items(self) -> Iterator[tuple[tuple[str, ...], list[int], float]]:
        """Each series with observations: its labels, cumulative counts per bound (+Inf
        last) and its sum."""
        for labels, b in self.series.items():
            if not any(b.counts):
                continue  # made ready for a task instance that had nothing timed yet
            cumulative, running = [], 0
            for n in b.counts:
                running += n
                cumulative.append(running)
            yield labels, cumulative, b.total


def add(counts: dict[tuple[str, ...], int], key: tuple[str, ...], n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def quantile_bound(q: float, bounds: Sequence[float], cumulative: Sequence[int]) -> float | None:
    """The upper bound of the bucket that holds the ``q`` quantile (0..1) of a histogram
    (``math.inf`` when it is past the top bound; None when the histogram is empty): what the
    buckets can tell without making up precision."""
    total = cumulative[-1] if cumulative else 0
    if not total:
        return None
    i = bisect.bisect_left(cumulative, q * total)
    return bounds[i] if i < len(bounds) else math.inf
