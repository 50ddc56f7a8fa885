"""The summary charts' figures (``stats.flow``), read from SQLite on the read connection: runs
per UTC day by status, task durations over the recent finished runs, failure rates per flow.

Two statements in one read transaction (one commit's data). The runs of the window are found
through ``runs_by_flow`` (one flow) or ``runs_by_created`` (every flow); a recent run's tasks
and a mapped task's instances through their primary keys. Nothing here writes.
"""

import time
from collections.abc import Sequence
from typing import Any

from coordinator.database import Database, Row
from protocol.states import RunStatus
from protocol.stats import (
    INSTANCES_PER_TASK,
    MAX_STATS_FLOWS,
    MAX_STATS_TASKS,
    RECENT_RUNS,
    DayRuns,
    FlowFailures,
    FlowStats,
    GetFlowStats,
    TaskDurations,
)

DAY_S = 86_400
_FINAL = (RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value)

_COUNTS = """
SELECT flow, CAST((created_at - :since) / 86400 AS INTEGER) AS day, status, COUNT(*)
FROM runs WHERE {where} created_at >= :since AND created_at < :until
GROUP BY flow, day, status
"""

_RECENT = """
WITH recent AS (
    SELECT run_id, flow FROM runs
    WHERE {where} created_at >= :since AND created_at < :until
      AND status IN ('succeeded', 'failed', 'cancelled')
    ORDER BY created_at DESC LIMIT :recent
)"""
"""The newest finished runs of the window: the durations' sample."""

_DURATIONS = _RECENT + """, samples AS (
    SELECT r.flow, t.task, t.finished_at - t.started_at AS d
    FROM recent r CROSS JOIN task_instances t ON t.run_id = r.run_id
    WHERE t.status = 'succeeded' AND t.started_at IS NOT NULL AND t.finished_at IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM map_instances m WHERE m.run_id = t.run_id AND m.task = t.task)
    UNION ALL
    SELECT r.flow, m.task, m.finished_at - m.started_at
    FROM recent r CROSS JOIN task_instances t ON t.run_id = r.run_id
    CROSS JOIN map_instances m ON m.run_id = t.run_id AND m.task = t.task AND m.idx < :per_task
    WHERE m.status = 'succeeded' AND m.started_at IS NOT NULL AND m.finished_at IS NOT NULL
), ranked AS (
    SELECT flow, task, d, ROW_NUMBER() OVER (PARTITION BY flow, task ORDER BY d) AS k,
           COUNT(*) OVER (PARTITION BY flow, task) AS n
    FROM samples
)
SELECT flow, task, n,
       MAX(CASE WHEN k = (n + 1) / 2 THEN d END),
       MAX(CASE WHEN k = (95 * n + 99) / 100 THEN d END),
       MAX(d)
FROM ranked GROUP BY flow, task ORDER BY flow, task LIMIT :tasks
"""
"""Succeeded attempts of the sample's tasks (a mapped task's own record, which spans all its
instances, gives way to its instances), and their nearest-rank percentiles: the k-th smallest
of n with k = ceil(p * n), in integers."""

_SAMPLED = _RECENT + " SELECT COUNT(*) FROM recent"


def window(days: int, until: float | None) -> tuple[float, float]:
    """``days`` whole UTC days, the last one the day of ``until`` (default now)."""
    end_day = int((time.time() if until is None else until) // DAY_S) + 1
    return float((end_day - days) * DAY_S), float(end_day * DAY_S)


async def read_flow_stats(db: Database, req: GetFlowStats) -> FlowStats:
    """The figures of ``req``'s flow (or of every flow) over its window."""
    since, until = window(req.days, req.until)
    args: dict[str, Any] = {"since": since, "until": until, "recent": RECENT_RUNS,
                            "per_task": INSTANCES_PER_TASK, "tasks": MAX_STATS_TASKS + 1}
    where = ""
    if req.flow is not None:
        where, args["flow"] = "flow = :flow AND", req.flow
    counts, durations, sampled = await db.fetch_together(
        *((sql.format(where=where), args) for sql in (_COUNTS, _DURATIONS, _SAMPLED)))
    failures = _failures(counts)
    return FlowStats(
        flow=req.flow, days=req.days, since=since, until=until,
        runs_per_day=_per_day(counts, since, req.days), sample_runs=sampled[0][0],
        durations=[TaskDurations(flow=r[0], task=r[1], count=r[2], p50_s=r[3], p95_s=r[4],
                                 max_s=r[5]) for r in durations[:MAX_STATS_TASKS]],
        failures=failures[:MAX_STATS_FLOWS],
        truncated=len(durations) > MAX_STATS_TASKS or len(failures) > MAX_STATS_FLOWS)


def _per_day(counts: Sequence[Row], since: float, days: int) -> list[DayRuns]:
    """Every day of the window, each with every run status (0 where none)."""
    by_day = [dict.fromkeys((s.value for s in RunStatus), 0) for _ in range(days)]
    for _flow, day, status, n in counts:
        if 0 <= day < days and status in by_day[day]:
            by_day[day][status] += n
    return [DayRuns(day=time.strftime("%Y-%m-%d", time.gmtime(since + i * DAY_S)),
                    start=since + i * DAY_S, counts=c) for i, c in enumerate(by_day)]


def _failures(counts: Sequence[Row]) -> list[FlowFailures]:
    """Per flow with runs in the window: its runs by how they ended, and its failure rate."""
    flows: dict[str, dict[str, int]] = {}
    for flow, _day, status, n in counts:
        ends = flows.setdefault(flow, {})
        ends[status] = ends.get(status, 0) + n
    out = []
    for flow, ends in sorted(flows.items()):
        finished = sum(ends.get(s, 0) for s in _FINAL)
        failed = ends.get(RunStatus.FAILED.value, 0)
        out.append(FlowFailures(
            flow=flow, runs=sum(ends.values()), succeeded=ends.get(RunStatus.SUCCEEDED.value, 0),
            failed=failed, cancelled=ends.get(RunStatus.CANCELLED.value, 0),
            failure_rate=failed / finished if finished else None))
    return out
