"""Runs with known outcomes and exact timestamps, written through the store before a coordinator
opens it: the figures of ``stats.flow`` (and of ``flowforge stats --flow``, and the dashboard's
Insights screen) are known to the second.

The window ends on 2025-06-15 (UTC). ``nightly`` (extract → fanout, mapped over extract's list
→ load) ran seven times over three days, ``hourly`` (ping) four times on the last one
(n7's fanout waits for an agent, as no agent serves the queue in the tests: it stays running):

=====  ==========  =========  ===========  ==========================  =============
run    created     status     extract      fanout (5 instances)        load
=====  ==========  =========  ===========  ==========================  =============
n1     06-13 01:00 succeeded  1 s          0.1 … 0.5 s                 10 s
n2     06-13 02:00 succeeded  2 s          0.1 … 0.5 s                 20 s
n3     06-13 03:00 failed     3 s          failed (instance 0: 50 s)   upstream_failed
n4     06-14 01:00 succeeded  4 s          0.1 … 0.5 s                 30 s
n5     06-14 02:00 cancelled  5 s          cancelled                   cancelled
n6     06-15 01:00 succeeded  6 s          0.1 … 0.5 s                 40 s
n7     06-15 02:00 running    100 s        pending                     pending
=====  ==========  =========  ===========  ==========================  =============

``hourly``: h1-h3 succeeded (ping 0.5, 1.5, 2.5 s), h4 failed. Outside the window: ``n0`` on
06-12 (succeeded, extract 7.5 s, load 45 s) and ``n8`` on 06-16. Each mapped task's own record spans its
instances (1,000 s): only the instances count.
"""

from pathlib import Path

import msgspec

from coordinator.changes import Changes
from coordinator.flow_stats import read_flow_stats
from coordinator.store import Store
from protocol.flows import FlowSpec, TaskSpec
from protocol.records import RunRecord, TaskRecord
from protocol.states import RunStatus, TaskStatus
from protocol.stats import FlowStats, GetFlowStats

DAY_S = 86_400.0
LAST_DAY = 1_749_945_600.0
"""2025-06-15 00:00 UTC."""
UNTIL = LAST_DAY + 12 * 3600
"""A moment of the last day of the window (``until``)."""

NIGHTLY = FlowSpec(name="nightly", tasks=(
    TaskSpec(name="extract", function="tests.stats_seed:extract"),
    TaskSpec(name="fanout", function="tests.stats_seed:fanout", depends_on=("extract",),
             map_over="extract"),
    TaskSpec(name="load", function="tests.stats_seed:load", depends_on=("fanout",)),
))
HOURLY = FlowSpec(name="hourly", tasks=(TaskSpec(name="ping", function="tests.stats_seed:ping"),))

S, F, C, P = TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.PENDING
_NIGHTLY_RUNS = [  # run, day (0 = 06-15), hour, status, extract s, fanout, load (status, s)
    ("n0", -3, 1, RunStatus.SUCCEEDED, 7.5, S, (S, 45.0)),
    ("n1", -2, 1, RunStatus.SUCCEEDED, 1.0, S, (S, 10.0)),
    ("n2", -2, 2, RunStatus.SUCCEEDED, 2.0, S, (S, 20.0)),
    ("n3", -2, 3, RunStatus.FAILED, 3.0, F, (TaskStatus.UPSTREAM_FAILED, None)),
    ("n4", -1, 1, RunStatus.SUCCEEDED, 4.0, S, (S, 30.0)),
    ("n5", -1, 2, RunStatus.CANCELLED, 5.0, C, (C, None)),
    ("n6", 0, 1, RunStatus.SUCCEEDED, 6.0, S, (S, 40.0)),
    ("n7", 0, 2, RunStatus.RUNNING, 100.0, P, (P, None)),
    ("n8", 1, 1, RunStatus.SUCCEEDED, 999.0, S, (S, 999.0)),
]
_HOURLY_RUNS = [("h1", 4, S, 0.5), ("h2", 5, S, 1.5), ("h3", 6, S, 2.5), ("h4", 7, F, 9.0)]


def _task(run_id: str, task: str, status: TaskStatus, start: float,
          seconds: float | None) -> TaskRecord:
    ran = status not in (P, TaskStatus.UPSTREAM_FAILED)
    end = start + seconds if seconds is not None and ran else None
    return TaskRecord(run_id=run_id, task=task, status=status, attempt=1 if ran else 0,
                      queued_at=start if ran else None, started_at=start if ran else None,
                      finished_at=end)


def _run(ch: Changes, run_id: str, flow: FlowSpec, at: float, status: RunStatus) -> None:
    final = status not in (RunStatus.RUNNING, RunStatus.PENDING)
    ch.runs[run_id] = RunRecord(run_id=run_id, flow=flow.name, version=flow.version(),
                                status=status, created_at=at, started_at=at,
                                finished_at=at + 3000 if final else None)
    ch.new_runs.append(run_id)


def _fanout(ch: Changes, run_id: str, status: TaskStatus, start: float) -> None:
    """The mapped task's own record (1,000 s) and its five instances."""
    ch.tasks[(run_id, "fanout")] = _task(run_id, "fanout", status, start, 1000.0)
    if status is P:
        return
    for i in range(5):
        name = f"fanout~{i}"
        if status is F and i == 0:
            rec = _task(run_id, name, F, start, 50.0)
        elif status in (S, F):
            rec = _task(run_id, name, S, start, 0.1 * (i + 1))
        else:
            rec = _task(run_id, name, status, start, 0.1 * (i + 1))
        ch.tasks[(run_id, name)] = rec


def changes() -> Changes:
    ch = Changes()
    for run_id, day, hour, status, extract_s, fanout, (load, load_s) in _NIGHTLY_RUNS:
        at = LAST_DAY + day * DAY_S + hour * 3600
        _run(ch, run_id, NIGHTLY, at, status)
        extract = _task(run_id, "extract", S, at + 1, extract_s)
        extract.output = msgspec.Raw(b"[1, 2]")
        ch.tasks[(run_id, "extract")] = extract
        _fanout(ch, run_id, fanout, at + 1000)
        ch.tasks[(run_id, "load")] = _task(run_id, "load", load, at + 2000, load_s)
    for run_id, hour, status, ping_s in _HOURLY_RUNS:
        at = LAST_DAY + hour * 3600
        _run(ch, run_id, HOURLY, at, RunStatus.SUCCEEDED if status is S else RunStatus.FAILED)
        ch.tasks[(run_id, "ping")] = _task(run_id, "ping", status, at + 1, ping_s)
    return ch


async def seed(db_path: Path) -> None:
    """The flows and their runs into the SQLite file at ``db_path`` (no coordinator has it open)."""
    store = await Store.open(db_path)
    try:
        for spec in (NIGHTLY, HOURLY):
            await store.register_flow(spec, replace=True)
        await store.commit(changes())
    finally:
        await store.close()


async def figures(db_path: Path, *flows: str | None, days: int = 14) -> dict[str | None, FlowStats]:
    """The seeded runs' figures per flow (None: every flow), by the coordinator's own SQL over a
    seeded file (for a dashboard over a MemorySource: the same figures, with no coordinator)."""
    await seed(db_path)
    store = await Store.open(db_path)
    try:
        return {flow: await read_flow_stats(store.database, GetFlowStats(
            flow=flow, days=days, until=UNTIL)) for flow in flows}
    finally:
        await store.close()
