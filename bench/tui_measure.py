"""Measures the dashboard headless: opening a big run, and memory while following many runs.

``python -m bench.tui_measure`` runs each part in a fresh process (so its peak RSS is its own) and
prints a table:

- open: time from ``open_run`` until the run view has drawn the DAG of a run of a flow of
  ``--tasks`` tasks (1,000 task records), over a MemorySource; "cold" lays the flow out
  again each time, "warm" reuses the layout the dashboard keeps per flow version.
- follow: RSS (``VmRSS``, peak ``VmHWM`` from /proc/self/status) while ``--runs`` concurrent
  runs of a ``--run-tasks`` task flow are fed as events (each task queued, running,
  succeeded; the run's counts after each step), the runs view on screen.
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.tui_layout import random_nodes
from protocol.flows import FlowSpec, TaskSpec
from protocol.records import RunCounts, RunDetail, RunRecord, TaskRecord
from protocol.states import RunStatus, TaskStatus
from tests.memory_source import MemorySource, flow_detail
from tui.app import FLUSH_S, DashboardApp
from tui.dag_view import DagView
from tui.run_view import RunScreen

T0 = 1_767_225_600.0
SIZE = (150, 44)


def clock() -> float:
    return T0 + 3600.0


def big_flow(name: str, n: int) -> FlowSpec:
    """A flow shaped like the layout benchmark's random DAG (each task waits for up to 3)."""
    return FlowSpec(name=name, tasks=tuple(
        TaskSpec(name=node.name, function="bench.tui_measure:noop", depends_on=node.deps, group=node.group)
        for node in random_nodes(n)))


def half_done(spec: FlowSpec, run_id: str) -> RunDetail:
    """A run with every task recorded: the first 40% succeeded, 5% running, the rest pending."""
    n = len(spec.tasks)
    tasks = []
    for i, t in enumerate(spec.tasks):
        if i < n * 0.4:
            rec = TaskRecord(run_id=run_id, task=t.name, status=TaskStatus.SUCCEEDED, attempt=1,
                             started_at=T0 + i, finished_at=T0 + i + 0.5)
        elif i < n * 0.45:
            rec = TaskRecord(run_id=run_id, task=t.name, status=TaskStatus.RUNNING, attempt=1,
                             started_at=T0 + i, progress=(i % 10) / 10)
        else:
            rec = TaskRecord(run_id=run_id, task=t.name)
        tasks.append(rec)
    done = sum(r.status is TaskStatus.SUCCEEDED for r in tasks)
    run = RunRecord(run_id=run_id, flow=spec.name, version=spec.version(), status=RunStatus.RUNNING,
                    created_at=T0, started_at=T0, counts=RunCounts(
                        total=n, done=done, succeeded=done, running=n * 45 // 100 - done))
    return RunDetail(run=run, tasks=tasks)


def vm_kib() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in KiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


async def until(predicate: Callable[[], object], timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.001)


# -- open a big run ---------------------------------------------------------------------------


async def _open_once(app: DashboardApp, run_id: str) -> float:
    t0 = time.perf_counter()
    app.open_run(run_id)
    await until(lambda: isinstance(app.screen, RunScreen) and app.screen.query("#run-dag"))
    dag = app.screen.query_one("#run-dag", DagView)
    await until(lambda: dag.dag is not None and dag.painted_rows > 0)
    elapsed = time.perf_counter() - t0
    app.pop_screen()
    await until(lambda: not isinstance(app.screen, RunScreen))
    return elapsed


async def measure_open(tasks: int, repeat: int) -> dict[str, Any]:
    spec = big_flow("big", tasks)
    detail = half_done(spec, "run-big")
    source = MemorySource(flows=[flow_detail(spec, T0)], runs=[detail], clock=clock)
    app = DashboardApp(source, clock=clock, tick_s=None)
    cold, warm = [], []
    async with app.run_test(size=SIZE):
        await until(lambda: app.follower.syncs == 1)
        for _ in range(repeat):
            app.hub.layouts.clear()
            cold.append(await _open_once(app, "run-big"))
        for _ in range(repeat):
            warm.append(await _open_once(app, "run-big"))
    return {"tasks": tasks, "records": len(detail.tasks), "cold_s": cold, "warm_s": warm,
            **vm_kib()}


# -- follow many runs -------------------------------------------------------------------------


def _events(spec: FlowSpec, runs: int) -> list[list[RunRecord | TaskRecord]]:
    """Waves of events: all runs start, then task by task every run queues it, runs it
    (at 50%) and finishes it, each run's counts following; then all runs succeed."""
    ids = [f"run-{k:04d}" for k in range(runs)]
    n = len(spec.tasks)

    def run(rid: str, status: RunStatus, done: int, running: int) -> RunRecord:
        return RunRecord(run_id=rid, flow=spec.name, version=spec.version(), status=status,
                         created_at=T0 + int(rid[4:]), started_at=T0 + int(rid[4:]),
                         finished_at=T0 + 60 if status is RunStatus.SUCCEEDED else None,
                         counts=RunCounts(total=n, done=done, succeeded=done, running=running))

    waves: list[list[RunRecord | TaskRecord]] = [[run(r, RunStatus.RUNNING, 0, 0) for r in ids]]
    for i, t in enumerate(spec.tasks):
        at = T0 + i
        for status, extra, running in (
                (TaskStatus.QUEUED, {"queued_at": at}, 0),
                (TaskStatus.RUNNING, {"started_at": at, "progress": 0.5}, 1),
                (TaskStatus.SUCCEEDED, {"started_at": at, "finished_at": at + 0.5}, 0)):
            done = i + (status is TaskStatus.SUCCEEDED)
            waves.append([e for r in ids for e in (
                TaskRecord(run_id=r, task=t.name, status=status, attempt=1, **extra),
                run(r, RunStatus.RUNNING, done, running))])
    waves.append([run(r, RunStatus.SUCCEEDED, n, 0) for r in ids])
    return waves


async def measure_follow(runs: int, run_tasks: int) -> dict[str, Any]:
    spec = big_flow("small", run_tasks)
    source = MemorySource(flows=[flow_detail(spec, T0)], clock=clock)
    app = DashboardApp(source, clock=clock, tick_s=None)
    waves = _events(spec, runs)
    samples: dict[str, dict[str, int]] = {}
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.follower.syncs == 1)
        await pilot.press("r")
        samples["idle"] = vm_kib()
        table = app.screen.query_one("#runs-table")
        t0 = time.perf_counter()
        count = 0
        for k, wave in enumerate(waves):
            for event in wave:
                source.push(event)
            count += len(wave)
            seq = app.hub.model.seq + len(wave)
            await until(lambda seq=seq: app.hub.model.seq >= seq)
            if k == len(waves) // 2:
                samples["halfway"] = vm_kib()
        await until(lambda: table.row_count == runs)  # type: ignore[attr-defined]
        await pilot.pause()
        elapsed = time.perf_counter() - t0
        samples["done"] = vm_kib()
    return {"runs": runs, "run_tasks": run_tasks, "events": count, "elapsed_s": elapsed,
            "samples": samples, **vm_kib()}


# -- the table ----------------------------------------------------------------------------------


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def table(open_result: dict[str, Any], follow: dict[str, Any]) -> str:
    o, f = open_result, follow
    s = f["samples"]
    rows = [
        ("open run detail, cold (layout computed)",
         f"{o['tasks']} tasks, {o['records']} records: {_ms(o['cold_s'])}"),
        ("open run detail, warm (layout cached)", _ms(o["warm_s"])),
        ("open run detail, peak RSS (VmHWM)", _mib(o["VmHWM"])),
        ("follow: RSS idle (synced, runs view)", _mib(s["idle"]["VmRSS"])),
        ("follow: RSS halfway", _mib(s["halfway"]["VmRSS"])),
        ("follow: RSS all runs done", _mib(s["done"]["VmRSS"])),
        ("follow: peak RSS (VmHWM)", _mib(f["VmHWM"])),
        ("follow: events applied (fed in bursts)",
         f"{f['events']:,} for {f['runs']} runs x {f['run_tasks']} tasks in "
         f"{f['elapsed_s']:.1f} s ({f['events'] / f['elapsed_s']:,.0f}/s; views redraw every "
         f"{FLUSH_S * 1000:.0f} ms)"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{'what':<{width}}  measured", f"{'-' * width}  {'-' * 40}"]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def _part(ns: argparse.Namespace) -> dict[str, Any]:
    if ns.part == "open":
        return asyncio.run(measure_open(ns.tasks, ns.repeat))
    return asyncio.run(measure_follow(ns.runs, ns.run_tasks))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.tui_measure", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python -m bench.tui_measure --tasks 1000 --runs 100 --run-tasks 20")
    p.add_argument("--tasks", type=int, default=1000, help="tasks of the big flow (default 1000)")
    p.add_argument("--repeat", type=int, default=5, help="opens timed, cold and warm (default 5)")
    p.add_argument("--runs", type=int, default=100, help="concurrent runs followed (default 100)")
    p.add_argument("--run-tasks", type=int, default=20, help="tasks per followed run (default 20)")
    p.add_argument("--part", choices=["open", "follow"], help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.part:
        print(json.dumps(_part(ns)))
        return 0
    results = []
    for part in ("open", "follow"):
        args = [sys.executable, "-m", "bench.tui_measure", "--part", part, "--tasks", str(ns.tasks),
                "--repeat", str(ns.repeat), "--runs", str(ns.runs), "--run-tasks", str(ns.run_tasks)]
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(table(*results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
