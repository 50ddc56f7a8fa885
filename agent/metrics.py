"""What an agent's ``--metrics`` serves: tasks it ran by outcome, how long they took (by
function), and its slots per queue. Counted in plain dicts as each task ends; read per scrape."""

import time
from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import Metric

from flowforge.metrics import Histograms, LabelCap, add
from flowforge.metrics_http import counter, gauge, histogram
from protocol.messages import TaskDispatch, TaskFailed, TaskSucceeded

OUTCOMES = {"TaskTimeout": "timed_out", "Cancelled": "cancelled"}
"""Failures with an outcome of their own; any other is ``failed``."""

Usage = Callable[[], dict[str, tuple[int, int, int]]]
"""Per queue: slots busy, slots, messages in hand."""


class AgentMetrics:
    """``record()`` as each task's report is made; a prometheus-client collector."""

    def __init__(self, agent_id: str, usage: Usage) -> None:
        self.agent_id = agent_id
        self.usage = usage
        self.labels = LabelCap()
        self.tasks: dict[tuple[str, ...], int] = {}
        """(queue, function, outcome) → tasks."""
        self.duration = Histograms()
        """(queue, function): a task message's run, from its start to its report."""
        self.started_at = time.time()

    def record(self, queue: str, task: TaskDispatch | None,
               report: TaskSucceeded | TaskFailed) -> None:
        function = self.labels.value(task.function) if task is not None else "unknown"
        if isinstance(report, TaskSucceeded):
            outcome = "succeeded"
        else:
            outcome = OUTCOMES.get(report.error_type, "failed")
        key = (queue, function)
        add(self.tasks, (*key, outcome))
        if report.started_at:
            self.duration.observe(key, report.at - report.started_at)

    def collect(self) -> Iterator[Metric]:
        prefix = "flowforge_agent_"
        yield gauge(prefix + "info", "This agent (its id changes with each start).",
                    ("agent",), [((self.agent_id,), 1)])
        yield counter(prefix + "tasks", "Task messages this agent ran to a report, by outcome "
                      "(succeeded, failed, timed_out, cancelled).",
                      ("queue", "function", "outcome"), sorted(self.tasks.items()))
        yield histogram(prefix + "task_duration_seconds", "From a task's start on this agent "
                        "to its report (a chunk of a mapped task counts once).",
                        ("queue", "function"), self.duration.bounds,
                        sorted(self.duration.items()))
        usage = sorted(self.usage().items())
        yield gauge(prefix + "queue_slots_busy", "Slots running a task.", ("queue",),
                    [((q,), busy) for q, (busy, _, _) in usage])
        yield gauge(prefix + "queue_slots_total", "Slots (the agent's concurrency split between its "
                    "queues).", ("queue",), [((q,), total) for q, (_, total, _) in usage])
        yield gauge(prefix + "queue_tasks_in_hand", "Task messages held: waiting for a slot, running "
                    "or reporting.", ("queue",), [((q,), n) for q, (_, _, n) in usage])
        yield gauge(prefix + "start_time_seconds", "When this agent started (Unix time).", (),
                    [((), self.started_at)])
