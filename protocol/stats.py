"""The coordinator's figures (``<ns>.api.stats.get``): the same ones its ``--metrics`` endpoint
serves to Prometheus, as one answer for ``flowforge stats``; and the summary charts of the runs
kept in SQLite (``<ns>.api.stats.flow``, ``flowforge stats --flow F``).

Labels are low-cardinality by construction: flow, task (a flow task's name, never an instance's
or a child's own), queue, status, agent — never a run id.
"""

from typing import Annotated

import msgspec

from protocol.fields import Name, Time


class GetStats(msgspec.Struct, frozen=True, kw_only=True):
    """Everything at once; the answer's size is bounded by the label caps."""


class Series(msgspec.Struct, frozen=True, kw_only=True):
    """One value of a counter or gauge, with its labels."""

    labels: dict[str, str]
    value: float


class HistogramSeries(msgspec.Struct, frozen=True, kw_only=True):
    """One histogram: cumulative counts at each of ``Stats.bounds_s`` and then +Inf."""

    labels: dict[str, str]
    buckets: list[int]
    sum: float

    @property
    def count(self) -> int:
        return self.buckets[-1] if self.buckets else 0


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    """Task instances of one queue in the active runs, now."""

    queue: str
    queued: int = 0
    """Queued and not started: sent, waiting for the release window, or held by a limit."""
    held: int = 0
    """Of those, held back by a concurrency limit."""
    running: int = 0
    oldest_queued_at: float | None = None
    """When the task waiting longest was queued (None when none waits)."""


class AgentStats(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: str
    status: str
    """live, lost or stopped."""
    queues: list[str]
    slots_busy: int
    slots_total: int


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """The coordinator's figures. Counters count since ``started_at`` (the process start)."""

    at: float
    started_at: float
    bounds_s: list[float]
    """Upper bounds of the histograms' buckets, in seconds."""
    queues: list[QueueStats] = []
    runs_active: list[Series] = []
    """Labels: flow."""
    runs_waiting: list[Series] = []
    """Runs held pending by a flow's max_active_runs or a concurrency key. Labels: flow."""
    runs_finished: list[Series] = []
    """Labels: flow, status."""
    tasks_finished: list[Series] = []
    """Task instances that ended. Labels: flow, task, queue, kind (task, instance of a mapped
    task, child), status."""
    task_retries: list[Series] = []
    """Attempts that failed and were followed by another. Labels: flow, task, queue, kind,
    reason (failed, timed_out, lost)."""
    task_wait_s: list[HistogramSeries] = []
    """Queued to started, per attempt. Labels: flow, task, queue, kind."""
    task_duration_s: list[HistogramSeries] = []
    """Started to finished, per attempt. Labels: flow, task, queue, kind."""
    agents: list[AgentStats] = []
    agents_lost: int = 0
    """Agents that went silent past --agent-lost-after since start."""
    schedules: int = 0
    schedule_fires: list[Series] = []
    """Nominal times dealt with. Labels: flow, outcome (started, skipped, missed, buffered)."""
    labels_folded: int = 0
    """Label sets folded into ``other`` by the caps."""


MAX_STATS_DAYS = 90
"""Most UTC days one ``stats.flow`` answer covers."""
RECENT_RUNS = 500
"""Task durations come from at most this many finished runs: the newest of the window."""
INSTANCES_PER_TASK = 1_000
"""Of a mapped task in one run, the durations of at most this many instances (the first by
index): a run of a million instances must not make the answer slow."""
MAX_STATS_FLOWS = 200
MAX_STATS_TASKS = 500
"""Most flows (failure rates) and flow tasks (durations) in one answer."""


class GetFlowStats(msgspec.Struct, frozen=True, kw_only=True):
    """The summary charts of one flow, or of every flow: runs per UTC day by status, task
    durations over recent runs, failure rates."""

    flow: Name | None = None
    days: Annotated[int, msgspec.Meta(ge=1, le=MAX_STATS_DAYS)] = 14
    """How many UTC days, the last one the day of ``until``."""
    until: Time | None = None
    """A moment of the last day shown (UTC epoch seconds); default now."""


class DayRuns(msgspec.Struct, frozen=True, kw_only=True):
    """Runs created on one UTC day, counted by their status now."""

    day: str
    """The UTC date, ``2025-05-01``."""
    start: float
    """Its first second (UTC epoch seconds)."""
    counts: dict[str, int]
    """Every run status, 0 where none."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class TaskDurations(msgspec.Struct, frozen=True, kw_only=True):
    """How long one task of a flow ran: its succeeded attempts in the recent finished runs
    (``finished_at - started_at``; a mapped task's instances count as the task)."""

    flow: str
    task: str
    count: int
    """Attempts measured."""
    p50_s: float
    p95_s: float
    """Nearest-rank percentiles: a duration that was measured."""
    max_s: float


class FlowFailures(msgspec.Struct, frozen=True, kw_only=True):
    """One flow's runs created in the window, by how they ended."""

    flow: str
    runs: int
    """All of them, going ones too."""
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    failure_rate: float | None = None
    """failed / (succeeded + failed + cancelled); None when none finished."""


class FlowStats(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``stats.flow``."""

    flow: str | None
    """The flow asked for; None for every flow."""
    days: int
    since: float
    until: float
    """The window: ``since <= created_at < until``, whole UTC days."""
    runs_per_day: list[DayRuns]
    """Every day of the window, oldest first (days without runs too)."""
    sample_runs: int
    """Finished runs the durations come from: the newest of the window, at most RECENT_RUNS."""
    durations: list[TaskDurations] = []
    """By flow and task name."""
    failures: list[FlowFailures] = []
    """By flow name; only flows with runs in the window."""
    truncated: bool = False
    """More flows or tasks than an answer holds (MAX_STATS_FLOWS, MAX_STATS_TASKS) were left out."""


STATS_REQUESTS: dict[tuple[str, str], type[msgspec.Struct]] = {
    ("stats", "get"): GetStats, ("stats", "flow"): GetFlowStats}
