"""Taking in what tasks log (``TaskMetrics`` reports): checked again (a report is untrusted),
held to the per-run cap, and written in the writer's batch transaction — the points, results
and artifacts of every attempt, and each run's final value of each metric.

A report that cannot be applied at all (no such active task, an attempt never sent, another
agent's attempt) is set aside whole like any bad report. Bad points in a good report are
dropped one by one, and the task's log says which.
"""

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import msgspec

from coordinator.database import Database
from coordinator.intake import ReportChecks
from coordinator.scheduler import Scheduler
from protocol.errors import BadRequest
from protocol.experiments import (
    DEFAULT_MAX_METRIC_POINTS,
    MAX_RESULT_BYTES,
    ArtifactRef,
    MetricPoint,
    ResultRecord,
    name_problem,
    value_problem,
)
from protocol.messages import TaskLog, TaskMetrics

MAX_NOTES_PER_REPORT = 5
"""Lines one report's refused points add to the task's log (then a count of the rest)."""
MAX_COUNTS_KEPT = 10_000
"""Runs whose stored count is kept in memory (others are counted again when they log)."""
_enc = msgspec.json.Encoder()


@dataclass(slots=True)
class Final:
    """A run's latest value of one metric, and what decides whether a later point replaces it."""

    flow: str
    value: float
    step: int
    task: str
    attempt: int
    at: float

    def replaced_by(self, other: "Final") -> bool:
        """The latest attempt's value at its highest step; between tasks, the latest logged."""
        if other.task == self.task:
            return (other.attempt, other.step) >= (self.attempt, self.step)
        return other.at >= self.at


@dataclass(slots=True)
class Pending:
    """A report's good parts, before the per-run cap is applied."""

    flow: str
    report: TaskMetrics
    points: list[MetricPoint]
    results: list[ResultRecord]
    artifacts: list[ArtifactRef]


@dataclass(slots=True)
class ExperimentWrites:
    """What a writer batch stores of experiments (in its transaction)."""

    pending: list[Pending] = field(default_factory=list)
    points: list[tuple[Any, ...]] = field(default_factory=list)
    results: list[tuple[Any, ...]] = field(default_factory=list)
    artifacts: list[tuple[Any, ...]] = field(default_factory=list)
    finals: dict[tuple[str, str], Final] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.points or self.results or self.artifacts)

    def add(self, flow: str, r: TaskMetrics, points: list[MetricPoint],
            results: list[ResultRecord], artifacts: list[ArtifactRef]) -> None:
        key = (r.run_id, r.task, r.attempt)
        self.points += [(*key, p.name, p.step, p.value, p.at) for p in points]
        self.results += [(*key, x.seq, x.algorithm, _enc.encode(x.params), _enc.encode(x.metrics),
                          x.artifact, _enc.encode(x.metadata), x.at) for x in results]
        self.artifacts += [(*key, a.seq, a.uri, a.kind, a.at) for a in artifacts]
        for p in points:
            new = Final(flow, p.value, p.step, r.task, r.attempt, p.at)
            old = self.finals.get((r.run_id, p.name))
            if old is None or old.replaced_by(new):
                self.finals[(r.run_id, p.name)] = new

    async def write(self, conn: aiosqlite.Connection) -> None:
        if self.points:
            await conn.executemany(
                "INSERT OR REPLACE INTO metric_points (run_id, task, attempt, name, step, value, "
                "at) VALUES (?, ?, ?, ?, ?, ?, ?)", self.points)
        if self.results:
            await conn.executemany(
                "INSERT OR REPLACE INTO experiment_results (run_id, task, attempt, seq, "
                "algorithm, params, metrics, artifact, metadata, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self.results)
        if self.artifacts:
            await conn.executemany(
                "INSERT OR REPLACE INTO artifacts (run_id, task, attempt, seq, uri, kind, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", self.artifacts)
        if self.finals:
            await conn.executemany(_UPSERT_FINAL, [
                (run_id, name, f.flow, f.value, f.step, f.task, f.attempt, f.at)
                for (run_id, name), f in self.finals.items()])


_UPSERT_FINAL = (
    "INSERT INTO run_metrics (run_id, name, flow, value, step, task, attempt, at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, name) DO UPDATE SET "
    "value = excluded.value, step = excluded.step, task = excluded.task, "
    "attempt = excluded.attempt, at = excluded.at WHERE CASE WHEN excluded.task = run_metrics.task "
    "THEN (excluded.attempt, excluded.step) >= (run_metrics.attempt, run_metrics.step) "
    "ELSE excluded.at >= run_metrics.at END")
"""``Final.replaced_by`` in SQL: a stale attempt's late points never replace a newer value."""


class ExperimentIntake:
    """``take(report, ...)`` as the writer applies a report; ``admit(batch...)`` before the
    batch commits (it may read the stored counts of runs it has not seen yet)."""

    def __init__(self, db: Database, scheduler: Scheduler, checks: ReportChecks,
                 max_points_per_run: int = DEFAULT_MAX_METRIC_POINTS) -> None:
        self._db, self._scheduler, self._checks = db, scheduler, checks
        self.max_points_per_run = max_points_per_run
        """Points, results and artifacts one run may store (``--max-metric-points``)."""
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._capped: set[str] = set()

    def take(self, report: TaskMetrics, writes: ExperimentWrites,
             logs: dict[tuple[str, str], str], log_msgs: list[TaskLog], now: float) -> None:
        """Check the report; its good parts wait for ``admit``. Raises a FlowForgeError when
        it cannot be applied at all (the writer sets it aside)."""
        self._checks.check_holder(report)
        state = self._scheduler.run_state(report.run_id)
        rec = self._scheduler.task_record(report.run_id, report.task)
        if state is None or rec is None:
            raise BadRequest(f"metrics for {report.run_id}/{report.task}, which is no task of "
                             "an active run")
        if report.attempt > rec.attempt and report.attempt - report.delivery + 1 != rec.dispatch:
            raise BadRequest(f"metrics for attempt {report.attempt} of {report.run_id}/"
                             f"{report.task}, which the coordinator never sent (it is on attempt "
                             f"{rec.attempt})")
        notes: list[str] = []
        points = [p for p in report.points if _fine(p.name, p.value, notes)]
        results = [x for x in report.results if _fine_result(x, notes)]
        if notes:
            self._note(report, logs, log_msgs, now, [
                *notes[:MAX_NOTES_PER_REPORT],
                *([f"… and {len(notes) - MAX_NOTES_PER_REPORT} more refused"]
                  if len(notes) > MAX_NOTES_PER_REPORT else [])])
        writes.pending.append(Pending(state.run.flow, report, points, results, report.artifacts))

    async def admit(self, writes: ExperimentWrites, logs: dict[tuple[str, str], str],
                    log_msgs: list[TaskLog], now: float) -> None:
        """The pending parts within each run's cap go to the writes; past it, one line in the
        task's log (once per run) says they were dropped."""
        pending, writes.pending = writes.pending, []
        for p in pending:
            run_id = p.report.run_id
            stored = await self._count(run_id)
            room = max(0, self.max_points_per_run - stored)
            points, results, artifacts = _within(room, p.points, p.results, p.artifacts)
            kept = len(points) + len(results) + len(artifacts)
            dropped = len(p.points) + len(p.results) + len(p.artifacts) - kept
            if dropped and run_id not in self._capped:
                self._capped.add(run_id)
                self._note(p.report, logs, log_msgs, now, [
                    f"the run reached the limit of {self.max_points_per_run:,} metric points, "
                    f"results and artifacts (--max-metric-points of the coordinator): {dropped:,} "
                    "and any later ones are dropped"])
            self._counts[run_id] = stored + kept
            if kept:
                writes.add(p.flow, p.report, points, results, artifacts)

    async def _count(self, run_id: str) -> int:
        """How many points, results and artifacts the run has (stored, or in this batch)."""
        count = self._counts.get(run_id)
        if count is not None:
            self._counts.move_to_end(run_id)
            return count
        row = await self._db.fetchone(
            "SELECT (SELECT count(*) FROM metric_points WHERE run_id = ?1) + "
            "(SELECT count(*) FROM experiment_results WHERE run_id = ?1) + "
            "(SELECT count(*) FROM artifacts WHERE run_id = ?1)", (run_id,))
        self._counts[run_id] = count = int(row[0]) if row else 0
        while len(self._counts) > MAX_COUNTS_KEPT:
            gone, _ = self._counts.popitem(last=False)
            self._capped.discard(gone)
        return count

    @staticmethod
    def _note(r: TaskMetrics, logs: dict[tuple[str, str], str], log_msgs: list[TaskLog],
              now: float, lines: list[str]) -> None:
        """Lines in the task's log (kept, and sent to whoever follows it)."""
        text = "".join(f"[coordinator] metrics of attempt {r.attempt}: {line}\n" for line in lines)
        key = (r.run_id, r.task)
        logs[key] = logs.get(key, "") + text
        log_msgs.append(TaskLog(run_id=r.run_id, task=r.task, attempt=r.attempt,
                                agent_id="coordinator", at=now, text=text))


def _fine(name: str, value: float, notes: list[str]) -> bool:
    problem = name_problem(name) or value_problem(value)
    if problem is not None:
        notes.append(f"point ({name!r}, {value!r}) refused: {problem}")
    return problem is None


def _fine_result(x: ResultRecord, notes: list[str]) -> bool:
    for name, value in x.metrics.items():
        if not _fine(name, value, notes):
            notes.append(f"result {x.algorithm!r} refused: its metrics")
            return False
    size = len(_enc.encode([x.params, x.metrics, x.metadata]))
    if size > MAX_RESULT_BYTES:
        notes.append(f"result {x.algorithm!r} refused: {size:,} bytes of params, metrics and "
                     f"metadata (at most {MAX_RESULT_BYTES:,})")
        return False
    return True


def _within(room: int, points: list[MetricPoint], results: list[ResultRecord],
            artifacts: list[ArtifactRef]) -> tuple[list[MetricPoint], list[ResultRecord],
                                                   list[ArtifactRef]]:
    """The first ``room`` of them: points first, then results, then artifacts."""
    points = points[:room]
    results = results[:room - len(points)]
    return points, results, artifacts[:room - len(points) - len(results)]
