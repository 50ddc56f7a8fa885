"""The coordinator's figures (``stats.get``, and what ``--metrics`` serves): the counts the
``TaskTracker`` keeps, and gauges read when asked for from where the data already is — the
scheduler's active runs (queues), the run gate (waiting runs), the agent registry, the
schedule clock. And the summary charts of the runs kept (``stats.flow``), read from SQLite."""

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from coordinator.agents import LIVE, AgentRegistry
from coordinator.flow_stats import read_flow_stats
from coordinator.flows import FlowCache
from coordinator.run_gate import RunGate
from coordinator.schedule_clock import ScheduleClock
from coordinator.scheduler import Scheduler
from coordinator.task_tracker import TaskTracker
from flowforge.metrics import Histograms
from protocol.states import TaskStatus
from protocol.stats import (
    AgentStats,
    FlowStats,
    GetFlowStats,
    GetStats,
    HistogramSeries,
    QueueStats,
    Series,
    Stats,
)

FLOW, TASK, QUEUE, STATUS, KIND, REASON, OUTCOME = (
    "flow", "task", "queue", "status", "kind", "reason", "outcome")


class StatsApi:
    """``snapshot()`` builds the figures; ``handlers()`` answers ``stats.get`` with them."""

    def __init__(self, tracker: TaskTracker, scheduler: Scheduler, agents: AgentRegistry,
                 flows: FlowCache, runs: RunGate | None = None,
                 schedules: ScheduleClock | None = None) -> None:
        self.tracker = tracker
        self.scheduler = scheduler
        self.agents = agents
        self.flows = flows
        self.runs = runs
        self.schedules = schedules
        self.started_at = time.time()

    def handlers(self) -> dict[tuple[str, str], Callable[[Any], Awaitable[Any]]]:
        return {("stats", "get"): self.get, ("stats", "flow"): self.flow}

    async def get(self, req: GetStats) -> Stats:
        return self.snapshot()

    async def flow(self, req: GetFlowStats) -> FlowStats:
        """Runs per day by status, task durations, failure rates: SQL on the read connection,
        off the writer's path. A flow never registered is an error (an empty chart would look
        like a flow that never ran)."""
        if req.flow is not None:
            await self.flows.current(req.flow)  # raises UnknownFlow
        return await read_flow_stats(self.flows.store.database, req)

    def snapshot(self) -> Stats:
        t = self.tracker
        bounds = list(t.wait.bounds)
        active, queues = self._active()
        waiting = _counted(self.runs.waiting.values() if self.runs else (), t.labels.flow)
        return Stats(
            at=time.time(), started_at=self.started_at, bounds_s=bounds, queues=queues,
            runs_active=_series((FLOW,), active), runs_waiting=_series((FLOW,), waiting),
            runs_finished=_series((FLOW, STATUS), t.runs_finished),
            tasks_finished=_series((FLOW, TASK, QUEUE, KIND, STATUS), t.tasks_finished),
            task_retries=_series((FLOW, TASK, QUEUE, KIND, REASON), t.retries),
            task_wait_s=_histograms(t.wait), task_duration_s=_histograms(t.duration),
            agents=self._agents(), agents_lost=self.agents.lost_total,
            schedules=len(self.schedules.states) if self.schedules else 0,
            schedule_fires=_series((FLOW, OUTCOME), t.fires), labels_folded=t.labels.folded,
        )

    def _active(self) -> tuple[dict[tuple[str, ...], int], list[QueueStats]]:
        """Active runs by flow, and the queues' task instances by state (a pass over every
        task instance the coordinator holds in memory: asked for now and then, it is cheap
        next to keeping the counts on every change)."""
        label = self.tracker.labels.value
        by_queue: dict[str, list[Any]] = {label(q): [0, 0, 0, None] for q in self.flows.queues()}
        runs: dict[tuple[str, ...], int] = {}
        queued, running = TaskStatus.QUEUED, TaskStatus.RUNNING
        for state in self.scheduler.active_runs():
            key = (self.tracker.labels.flow(state.run.flow),)
            runs[key] = runs.get(key, 0) + 1
            specs = state.flow.tasks
            for rec in self.scheduler.records_of(state):
                status = rec.status
                if status is not queued and status is not running:
                    continue
                spec = specs.get(rec.task)
                if spec is not None and spec.map_over:
                    continue  # a mapped task only waits on its instances
                q = label(rec.queue)
                row = by_queue.get(q) or by_queue.setdefault(q, [0, 0, 0, None])
                if status is running:
                    row[2] += 1
                    continue
                row[0] += 1
                row[1] += bool(rec.held)
                at = rec.queued_at
                if at is not None and (row[3] is None or at < row[3]):
                    row[3] = at
        queues = [QueueStats(queue=q, queued=r[0], held=r[1], running=r[2],
                             oldest_queued_at=r[3]) for q, r in sorted(by_queue.items())]
        return runs, queues

    def _agents(self) -> list[AgentStats]:
        return [AgentStats(agent_id=a.agent_id, status=a.status, queues=list(a.queues),
                           slots_busy=a.slots_busy if a.status == LIVE else 0,
                           slots_total=a.slots_total)
                for a in self.agents.listing()]


def _counted(waiting: Iterable[Any], flow: Callable[[str], str]) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {}
    for w in waiting:
        key = (flow(w.run.flow),)
        out[key] = out.get(key, 0) + 1
    return out


def _series(names: tuple[str, ...], counts: dict[tuple[str, ...], int]) -> list[Series]:
    return [Series(labels=dict(zip(names, key, strict=True)), value=n)
            for key, n in sorted(counts.items())]


def _histograms(h: Histograms) -> list[HistogramSeries]:
    return [HistogramSeries(labels=dict(zip((FLOW, TASK, QUEUE, KIND), labels, strict=True)),
                            buckets=cumulative, sum=total)
            for labels, cumulative, total in sorted(h.items())]
