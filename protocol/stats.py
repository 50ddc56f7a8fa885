"""The coordinator's figures (``<ns>.api.stats.get``): the same ones its ``--metrics`` endpoint
serves to Prometheus, as one answer for ``flowforge stats``.

Labels are low-cardinality by construction: flow, task (a flow task's name, never an instance's
or a child's own), queue, status, agent — never a run id.
"""

import msgspec


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


STATS_REQUESTS: dict[tuple[str, str], type[msgspec.Struct]] = {("stats", "get"): GetStats}
