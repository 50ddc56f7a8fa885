"""The coordinator's figures as Prometheus metric families: one ``stats.get`` snapshot per
scrape, so ``flowforge stats`` and the scrape always agree (docs/metrics.md)."""

from collections.abc import Iterator, Sequence

from prometheus_client.metrics_core import Metric

from coordinator.stats_api import StatsApi
from flowforge.metrics_http import counter, gauge, histogram
from protocol.stats import HistogramSeries, Series, Stats

PREFIX = "flowforge_"


class CoordinatorCollector:
    """A prometheus-client collector over the coordinator's ``StatsApi``."""

    def __init__(self, stats: StatsApi) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats.snapshot()
        yield from _queues(s)
        yield from _tasks(s)
        yield from _runs(s)
        yield from _agents(s)
        if s.schedules or s.schedule_fires:
            yield gauge(PREFIX + "schedules", "Schedules defined.", (), [((), s.schedules)])
            yield _counter("schedule_fires", "Nominal times of schedules dealt with, by what "
                           "became of them (skipped and missed: not run).", ("flow", "outcome"),
                           s.schedule_fires)
        yield counter(PREFIX + "metrics_labels_folded", "Label values folded into 'other' by "
                      "the caps on distinct flows, tasks and queues.", (),
                      [((), s.labels_folded)])
        yield gauge(PREFIX + "coordinator_start_time_seconds", "When this coordinator started "
                    "(Unix time); counters count from then.", (), [((), s.started_at)])


def _queues(s: Stats) -> Iterator[Metric]:
    labels = ("queue",)
    yield gauge(PREFIX + "queue_depth", "Task instances queued and not started, in the active "
                "runs (those held by a limit included).", labels,
                [((q.queue,), q.queued) for q in s.queues])
    yield gauge(PREFIX + "queue_held", "Task instances held back by a concurrency limit.",
                labels, [((q.queue,), q.held) for q in s.queues])
    yield gauge(PREFIX + "queue_running", "Task instances running.", labels,
                [((q.queue,), q.running) for q in s.queues])
    yield gauge(PREFIX + "queue_oldest_waiting_seconds", "How long the task instance queued "
                "longest has waited (0 when none waits).", labels,
                [((q.queue,), max(0.0, s.at - q.oldest_queued_at) if q.oldest_queued_at else 0.0)
                 for q in s.queues])


def _tasks(s: Stats) -> Iterator[Metric]:
    names = ("flow", "task", "queue", "kind")
    yield _counter("tasks_finished", "Task instances that ended, by status. Task is the flow "
                   "task's name; kind is task, instance (of a mapped task) or child.",
                   (*names, "status"), s.tasks_finished)
    yield _counter("task_retries", "Attempts that failed (reason failed, timed_out, or lost "
                   "with their agent) and were followed by another attempt.",
                   (*names, "reason"), s.task_retries)
    yield _histogram("task_wait_seconds", "Queued to started, per attempt.", names,
                     s.bounds_s, s.task_wait_s)
    yield _histogram("task_duration_seconds", "Started to finished, per attempt (a mapped "
                     "task's own record is not timed: its instances are).", names,
                     s.bounds_s, s.task_duration_s)


def _runs(s: Stats) -> Iterator[Metric]:
    yield _gauge("runs_active", "Runs going.", ("flow",), s.runs_active)
    yield _gauge("runs_waiting", "Runs pending behind a flow's max_active_runs or a "
                 "concurrency key.", ("flow",), s.runs_waiting)
    yield _counter("runs_finished", "Runs that ended, by status.", ("flow", "status"),
                   s.runs_finished)


def _agents(s: Stats) -> Iterator[Metric]:
    statuses = {"live": 0, "lost": 0, "stopped": 0}
    for a in s.agents:
        statuses[a.status] = statuses.get(a.status, 0) + 1
    yield gauge(PREFIX + "agents", "Agents the coordinator knows, by status (gone ones are "
                "forgotten after 10 minutes).", ("status",),
                [((k,), n) for k, n in statuses.items()])
    live = [a for a in s.agents if a.status == "live"]
    yield gauge(PREFIX + "agent_slots_busy", "Slots running tasks, per live agent (from its "
                "last heartbeat).", ("agent",), [((a.agent_id,), a.slots_busy) for a in live])
    yield gauge(PREFIX + "agent_slots_total", "Slots, per live agent.", ("agent",),
                [((a.agent_id,), a.slots_total) for a in live])
    yield counter(PREFIX + "agents_lost", "Agents that went silent past --agent-lost-after.",
                  (), [((), s.agents_lost)])


def _counter(name: str, doc: str, labels: Sequence[str], series: list[Series]) -> Metric:
    return counter(PREFIX + name, doc, labels,
                   [([x.labels[k] for k in labels], x.value) for x in series])


def _gauge(name: str, doc: str, labels: Sequence[str], series: list[Series]) -> Metric:
    return gauge(PREFIX + name, doc, labels,
                 [([x.labels[k] for k in labels], x.value) for x in series])


def _histogram(name: str, doc: str, labels: Sequence[str], bounds: Sequence[float],
               series: list[HistogramSeries]) -> Metric:
    return histogram(PREFIX + name, doc, labels, bounds,
                     [([x.labels[k] for k in labels], x.buckets, x.sum) for x in series])
