"""How long ``stats.flow`` takes over a big store: N finished runs of F flows, each with T
succeeded tasks, all created inside the window (the worst case: every run is counted), read by
the coordinator's own SQL on the read connection, as the verb does.

    python -m bench.insights                      # 100,000 runs of 5 flows, 5 tasks each
    python -m bench.insights --runs 20000 --days 14
    python -m bench.insights --covering     # with the indexes that would make it index-only

The store is written once through ``Store.commit`` (batches of 5,000 runs) in a temporary
directory; each query is timed ``--repeat`` times and its median printed.
"""

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from coordinator.changes import Changes
from coordinator.flow_stats import DAY_S, read_flow_stats
from coordinator.store import Store
from protocol.records import RunRecord, TaskRecord
from protocol.states import RunStatus, TaskStatus
from protocol.stats import GetFlowStats

UNTIL = 1_750_000_000.0
BATCH = 5_000
ENDS = [RunStatus.SUCCEEDED] * 8 + [RunStatus.FAILED, RunStatus.CANCELLED]
COVERING = ("CREATE INDEX runs_by_flow_day ON runs (flow, created_at, status)",
            "CREATE INDEX runs_by_day ON runs (created_at, flow, status)")
"""Not in the schema: what a migration could add for the counts to be read from indexes alone
(the runs' status is read from the table now)."""


async def fill(store: Store, ns: argparse.Namespace) -> None:
    rnd = random.Random(15)
    span_s = (ns.days - 1) * DAY_S  # inside the window, whatever the hour of UNTIL
    for first in range(0, ns.runs, BATCH):
        ch = Changes()
        for i in range(first, min(ns.runs, first + BATCH)):
            run_id, at = f"r{i:08d}", UNTIL - rnd.random() * span_s
            ch.runs[run_id] = RunRecord(run_id=run_id, flow=f"flow{i % ns.flows}", version="v",
                                        status=rnd.choice(ENDS), created_at=at, started_at=at,
                                        finished_at=at + 60)
            ch.new_runs.append(run_id)
            for t in range(ns.tasks):
                ch.tasks[(run_id, f"t{t}")] = TaskRecord(
                    run_id=run_id, task=f"t{t}", status=TaskStatus.SUCCEEDED, attempt=1,
                    started_at=at, finished_at=at + rnd.random() * 10)
        await store.commit(ch)


async def timed(store: Store, req: GetFlowStats, repeat: int) -> tuple[float, int]:
    """Median milliseconds, and the runs counted."""
    spent, counted = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        stats = await read_flow_stats(store.database, req)
        spent.append((time.perf_counter() - t0) * 1000)
        counted = sum(d.total for d in stats.runs_per_day)
    return statistics.median(spent), counted


async def bench(ns: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ff-insights-") as tmp:
        store = await Store.open(Path(tmp) / "ff.db")
        try:
            t0 = time.perf_counter()
            await fill(store, ns)
            print(f"stored {ns.runs:,} runs x {ns.tasks} tasks in {time.perf_counter() - t0:.1f} s")
            if ns.covering:
                for sql in COVERING:
                    await store.database.writer.execute(sql)
                await store.database.writer.commit()
            print("| query | runs counted | median |\n| --- | ---: | ---: |")
            for flow in ("flow0", None):
                req = GetFlowStats(flow=flow, days=ns.days, until=UNTIL)
                ms, counted = await timed(store, req, ns.repeat)
                print(f"| stats.flow {flow or '(every flow)'}, {ns.days} days | {counted:,} | "
                      f"{ms:.0f} ms |")
        finally:
            await store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.insights", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--flows", type=int, default=5)
    p.add_argument("--tasks", type=int, default=5, help="tasks per run")
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--covering", action="store_true", help="add two covering indexes first")
    asyncio.run(bench(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
