"""Experiments: what a task logs (metric points, result records, artifact references), the
rules every part holds them to, and the ``experiments.*`` requests and answers.

A metric name is an identifier, optionally dotted (``val.loss``); a value a finite number; a
step a whole number from 0. The agent checks as a task logs, the coordinator again as it
stores (a report is untrusted, whoever sent it).
"""

import math
import numbers
import re
from typing import Annotated, Any

import msgspec

from protocol.fields import Name, Time, Token
from protocol.states import RunStatus

MAX_METRIC_NAME_CHARS = 64
METRIC_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
MAX_STEP = 2**53
"""Steps are whole numbers from 0 to this (exact as a JSON number anywhere)."""
DEFAULT_MAX_METRIC_POINTS = 100_000
"""Points, results and artifacts one run may store (``--max-metric-points`` of the
coordinator; an agent has the same default per attempt)."""
MAX_POINTS_PER_MESSAGE = 2_000
MAX_RESULTS_PER_MESSAGE = 16
MAX_ARTIFACTS_PER_MESSAGE = 256
MAX_RESULT_BYTES = 32 * 1024
"""A result record's params, metrics and metadata together, as JSON."""
MAX_URI_CHARS = 2048
MAX_LABEL_CHARS = 256
"""An algorithm's name, an artifact's kind."""
MAX_COMPARED_RUNS = 50
MAX_EXPERIMENT_ROWS = 100_000
"""Most rows one ``experiments.list`` may ask for (the answer pages them by size)."""
MAX_QUERY_CHARS = 1000
MAX_CONDITIONS = 16

MetricName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_METRIC_NAME_CHARS)]
"""Bounded on the wire; the pattern is checked point by point, so one bad name drops one point."""
Step = Annotated[int, msgspec.Meta(ge=0, le=MAX_STEP)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=10**9)]
Label = Annotated[str, msgspec.Meta(max_length=MAX_LABEL_CHARS)]
Uri = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URI_CHARS)]


class MetricPoint(msgspec.Struct, frozen=True, array_like=True):
    """``[name, value, step, at]`` on the wire: a run logs many of them."""

    name: MetricName
    value: float
    step: Step
    at: Time


class ResultRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``ctx.log_result(...)``: the original's experiment record. ``seq`` numbers the records
    of one attempt (a message sent twice is stored once)."""

    seq: Seq
    algorithm: Label
    params: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    artifact: Uri | None = None
    metadata: dict[str, Any] = {}
    at: Time


class ArtifactRef(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``ctx.log_artifact(uri, kind)``: where a file is; the file itself never travels."""

    seq: Seq
    uri: Uri
    kind: Label | None = None
    at: Time


class Logged(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a task logged since the last time it was sent."""

    points: list[MetricPoint] = []
    results: list[ResultRecord] = []
    artifacts: list[ArtifactRef] = []

    def __bool__(self) -> bool:
        return bool(self.points or self.results or self.artifacts)

    def __len__(self) -> int:
        return len(self.points) + len(self.results) + len(self.artifacts)


# -- the rules -----------------------------------------------------------------------------


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a metric name, or None."""
    if not isinstance(name, str):
        return f"the name {shown(name)} is not text"
    if len(name) > MAX_METRIC_NAME_CHARS:
        return f"the name {shown(name)} is over {MAX_METRIC_NAME_CHARS} characters"
    if not METRIC_NAME_RE.match(name):
        return (f"the name {shown(name)} is not an identifier (letters, digits and '_', not "
                "starting with a digit; dots between parts, like val.loss)")
    return None


def value_problem(value: object) -> str | None:
    """Why ``value`` is not a metric value (a finite int or float, not a bool), or None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"the value {shown(value)} is not a number"
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        return f"the value {shown(value)} does not fit a float"
    return None if math.isfinite(number) else f"the value {shown(value)} is not finite"


def step_problem(step: object) -> str | None:
    """Why ``step`` is not a step (a whole number from 0), or None."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        return f"the step {shown(step)} is not a whole number"
    if not 0 <= int(step) <= MAX_STEP:
        return f"the step {shown(step)} is not from 0 to {MAX_STEP}"
    return None


def shown(value: object, width: int = 80) -> str:
    """``repr(value)``, cut: user values go into log lines."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def differing(rows: list[dict[str, Any]]) -> list[str]:
    """The keys whose values are not the same in every one of ``rows`` (a missing key counts
    as a value of its own), in first-seen order."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return [k for k in keys if len({_canonical(row, k) for row in rows}) > 1]


def _canonical(row: dict[str, Any], key: str) -> bytes | None:
    return msgspec.json.encode(row[key], order="sorted") if key in row else None


# -- experiments.list and experiments.compare ------------------------------------------------


class ListExperiments(msgspec.Struct, frozen=True, kw_only=True):
    """One row per run of ``flow``: parameters and final metrics. ``where`` and ``sort`` are
    the small language of ``protocol.experiment_query`` (``params.lr<0.01 and
    metrics.accuracy>=0.9``; ``-accuracy``)."""

    flow: Name
    metrics: Annotated[list[MetricName], msgspec.Meta(max_length=64)] | None = None
    """The metric columns (None: every metric of the rows returned)."""
    sort: Annotated[str, msgspec.Meta(max_length=MAX_QUERY_CHARS)] | None = None
    """None: newest first."""
    where: Annotated[str, msgspec.Meta(max_length=MAX_QUERY_CHARS)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_EXPERIMENT_ROWS)] = 100
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0


class ExperimentRow(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    status: RunStatus
    created_at: float
    params: dict[str, Any]
    metrics: dict[str, float] = {}
    """Each metric's final value: the latest attempt's value at its highest step."""


class ExperimentsPage(msgspec.Struct, kw_only=True):
    flow: str
    rows: list[ExperimentRow]
    metrics: list[str]
    """The metric columns, in order."""
    differing: list[str]
    """The parameters whose values differ between these rows."""
    total: int
    """Runs that match (all pages)."""
    next_offset: int | None = None
    """Rows left out to keep the answer under the server's max_payload: ask again from here."""


class CompareRuns(msgspec.Struct, frozen=True, kw_only=True):
    run_ids: Annotated[list[Token], msgspec.Meta(min_length=1, max_length=MAX_COMPARED_RUNS)]
    max_points: Annotated[int, msgspec.Meta(ge=2, le=1_000_000)] = 5_000
    """Points per series at most: a longer series is thinned evenly (its last point kept)."""


class Series(msgspec.Struct, frozen=True, kw_only=True):
    """One metric of one attempt of one task, step by step."""

    name: str
    task: str
    attempt: int
    steps: list[int]
    values: list[float]
    points: int
    """How many are stored (more than ``len(steps)`` when thinned)."""


class StoredResult(msgspec.Struct, frozen=True, kw_only=True):
    task: str
    attempt: int
    algorithm: str
    params: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    artifact: str | None = None
    metadata: dict[str, Any] = {}
    at: float


class StoredArtifact(msgspec.Struct, frozen=True, kw_only=True):
    task: str
    attempt: int
    uri: str
    kind: str | None = None
    at: float


class RunExperiment(msgspec.Struct, kw_only=True):
    run_id: str
    flow: str
    status: RunStatus
    created_at: float
    params: dict[str, Any]
    metrics: dict[str, float] = {}
    series: list[Series] = []
    results: list[StoredResult] = []
    artifacts: list[StoredArtifact] = []
    left_out: int = 0
    """Results and artifacts not in the answer (it would outgrow the server's max_payload)."""


class Comparison(msgspec.Struct, kw_only=True):
    runs: list[RunExperiment]
    differing: list[str]
    """The parameters whose values differ between these runs."""


EXPERIMENT_REQUESTS: dict[tuple[str, str], type[msgspec.Struct]] = {
    ("experiments", "list"): ListExperiments,
    ("experiments", "compare"): CompareRuns,
}
