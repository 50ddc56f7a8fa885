"""``python -m bench.experiments``: the experiments table at scale — 10,000 runs of one flow
with 10 metrics each — from the CLI and over the API, against the issue's targets (the table
opens in at most 1 s, sorts in at most 200 ms).

1. Fill: a fresh SQLite file through the coordinator's own store path (``Store.commit`` with
   the writer's ``ExperimentWrites``, the SQL a running coordinator executes), in batches of
   ``--batch`` runs: each run a finished run row with five parameters, ``--steps`` points of
   each metric for one task, and each metric's final value in ``run_metrics``.
2. A real coordinator process on that file (its nats-server in this process, no agents).
3. Timed, ``--repeat`` times each (the first is reported apart: the coordinator's first read
   of the file is cold):
   - ``flowforge experiments FLOW`` as a new process (interpreter start, connect, ask, print);
   - the same for the whole table (``--limit 10000 --sort -accuracy``);
   - ``experiments.list`` over the API, sorted by a metric: the first page (50 rows) and every
     row (the client pages); filtered with ``--where``; and ``experiments.compare`` of 10 runs;
   - the dashboard's Experiments view, headless (``bench/experiments_tui.py``): opened on the
     flow (every row asked for, the table filled and drawn), sorted by a metric and by a
     parameter (until drawn).
"""

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import flows
from bench.experiments_tui import measure_view, view_results
from bench.report import environment, percentile, write_json
from bench.stack import Stack, console_script
from coordinator.changes import Changes
from coordinator.experiment_intake import ExperimentWrites
from coordinator.store import Store
from flowforge import runtime
from protocol.experiments import MetricPoint
from protocol.messages import TaskMetrics
from protocol.records import RunCounts, RunRecord
from protocol.states import RunStatus
from tui.experiments_view import MAX_ROWS

FLOW = "bench_experiments"
METRICS = ("accuracy", "loss", "val.accuracy", "val.loss", "f1", "precision", "recall", "auc",
           "train_time_s", "memory_mb")
TABLE_TARGET_S = 1.0
SORT_TARGET_S = 0.2


def _run(i: int, rng: random.Random, version: str, now: float) -> RunRecord:
    params = {"lr": rng.choice((0.1, 0.03, 0.01, 0.003, 0.001)), "depth": rng.randint(1, 12),
              "batch_size": rng.choice((16, 32, 64, 128)),
              "optimizer": rng.choice(("adam", "sgd", "rmsprop")), "seed": i}
    at = now - 86_400 + i
    return RunRecord(run_id=f"{int(at * 1000):011x}{i:08x}", flow=FLOW, version=version,
                     status=RunStatus.SUCCEEDED if i % 10 else RunStatus.FAILED, params=params,
                     created_at=at, started_at=at, finished_at=at + 5, source="api",
                     counts=RunCounts(total=1, done=1))


def _points(run: RunRecord, steps: int, rng: random.Random) -> list[MetricPoint]:
    skill = rng.random()
    return [MetricPoint(name, round(skill * (step + 1) / steps + rng.random() / 10, 6), step,
                        run.created_at + step) for name in METRICS for step in range(steps)]


async def fill(db_path: Path, runs: int, steps: int, batch: int) -> dict[str, Any]:
    """The runs and their metrics, written as the coordinator writes them."""
    spec = flows.experiments_flow()
    store = await Store.open(db_path)
    rng, now, t0 = random.Random(15), time.time(), time.perf_counter()
    try:
        version, _ = await store.register_flow(spec, replace=True)
        for first in range(0, runs, batch):
            ch, writes = Changes(), ExperimentWrites()
            for i in range(first, min(runs, first + batch)):
                run = _run(i, rng, version, now)
                ch.runs[run.run_id] = run
                ch.new_runs.append(run.run_id)
                points = _points(run, steps, rng)
                report = TaskMetrics(run_id=run.run_id, task="train", attempt=1, agent_id="bench",
                                     at=run.created_at, points=points)
                writes.add(FLOW, report, points, [], [])
            await store.commit(ch, side=[writes])
    finally:
        await store.close()
    fill_s = time.perf_counter() - t0
    return {"runs": runs, "metrics": len(METRICS), "steps": steps, "points": runs * len(METRICS)
            * steps, "fill_s": fill_s, "db_mib": db_path.stat().st_size / 2**20}


def _cli(url: str, *args: str) -> float:
    """Seconds for one ``flowforge`` process, start to exit."""
    t0 = time.perf_counter()
    done = subprocess.run([*console_script("flowforge", "flowforge.cli"), *args, "--nats", url],
                          capture_output=True, text=True, timeout=120, check=False)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"flowforge {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return took


async def _timed(repeat: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t0)
    return samples


def _summary(samples: list[float], target_s: float | None) -> dict[str, Any]:
    rest = samples[1:] or samples
    return {"first_s": samples[0], "median_s": statistics.median(rest),
            "p90_s": percentile(rest, 0.9), "max_s": max(rest), "target_s": target_s,
            "samples_s": samples}


async def measure(ns: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    filled = await fill(workdir / "flowforge.db", ns.runs, ns.steps, ns.batch)
    print(f"filled {filled['runs']:,} runs, {filled['points']:,} points in "
          f"{filled['fill_s']:.1f} s", file=sys.stderr)
    async with Stack(workdir, agents=0, nats_in_process=True, log_level="WARNING") as stack:
        client, url, r = stack.client, stack.url, ns.repeat
        assert client is not None
        results: dict[str, Any] = {}
        cli = [("cli_table", ("experiments", FLOW), TABLE_TARGET_S),
               ("cli_full_table", ("experiments", FLOW, "--limit", str(ns.runs), "--sort",
                                   "-accuracy"), TABLE_TARGET_S)]
        for key, args, target in cli:
            results[key] = _summary([await asyncio.to_thread(_cli, url, *args)
                                     for _ in range(r)], target)
        calls: list[tuple[str, Callable[[], Awaitable[Any]], float | None]] = [
            ("api_sort_page", lambda: client.experiments(FLOW, sort="-accuracy", limit=50),
             SORT_TARGET_S),
            ("api_sort_all", lambda: client.experiments(FLOW, sort="-accuracy", limit=ns.runs),
             None),
            ("api_sort_param", lambda: client.experiments(FLOW, sort="params.lr", limit=50),
             SORT_TARGET_S),
            ("api_where", lambda: client.experiments(
                FLOW, where="params.lr<=0.01 and metrics.accuracy>=0.5 and status=succeeded",
                sort="-val.loss", limit=50), SORT_TARGET_S),
        ]
        for key, call, target in calls:
            results[key] = _summary(await _timed(r, call), target)
        page = await client.experiments(FLOW, limit=10)
        ten = [row.run_id for row in page.rows]
        results["api_compare_10"] = _summary(await _timed(r, lambda: client.compare(ten)), None)
        rows = await client.experiments(FLOW, sort="-accuracy", limit=ns.runs)
        results["rows_all"] = len(rows.rows)
        if not ns.no_dashboard:
            samples = await measure_view(url, FLOW, min(ns.runs, MAX_ROWS), r)
            results.update(view_results(samples, TABLE_TARGET_S, SORT_TARGET_S, _summary))
    return {"fill": filled, "repeat": r, "results": results}


LABELS = {
    "cli_table": "CLI `flowforge experiments F` (50 rows, new process)",
    "cli_full_table": "CLI `... --limit <every run> --sort -accuracy` (new process)",
    "api_sort_page": "API experiments.list --sort -accuracy, 50 rows",
    "api_sort_param": "API experiments.list --sort params.lr, 50 rows",
    "api_where": "API experiments.list --where (3 conditions) --sort, 50 rows",
    "api_sort_all": "API experiments.list --sort -accuracy, all rows (paged)",
    "api_compare_10": "API experiments.compare, 10 runs with their series",
    "tui_open": "dashboard: open the Experiments view (every row asked for, drawn)",
    "tui_open_fetch": "  of which: the rows asked for (ClientSource, paged)",
    "tui_open_table": "  of which: the table filled",
    "tui_sort_metric": "dashboard: sort the table by a metric (drawn)",
    "tui_sort_param": "dashboard: sort the table by a parameter (drawn)",
}


def render(result: dict[str, Any]) -> str:
    f = result["fill"]
    lines = [f"experiments: {f['runs']:,} runs x {f['metrics']} metrics x {f['steps']} steps "
             f"({f['points']:,} points, {f['db_mib']:.0f} MiB) filled through Store.commit in "
             f"{f['fill_s']:.1f} s; {result['repeat']} samples each (median, p90 and max of all "
             "but the first)"]
    rows = [["measure", "first", "median", "p90", "max", "target"]]
    for key, label in LABELS.items():
        if key not in result["results"]:
            continue
        s = result["results"][key]
        target = s["target_s"]
        verdict = "" if target is None else (
            f"≤ {_ms(target)} {'ok' if s['median_s'] <= target else 'MISSED'}")
        rows.append([label, _ms(s["first_s"]), _ms(s["median_s"]), _ms(s["p90_s"]),
                     _ms(s["max_s"]), verdict])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(r, widths, strict=True))).rstrip() for r in rows]
    lines.insert(2, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.experiments", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=5, help="points of each metric per run")
    p.add_argument("--batch", type=int, default=250, help="runs per committed batch")
    p.add_argument("--repeat", type=int, default=6)
    p.add_argument("--no-dashboard", action="store_true",
                   help="leave out the dashboard's Experiments view")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    ns = p.parse_args(argv)
    if min(ns.runs, ns.steps, ns.batch, ns.repeat) < 1:
        print("bench.experiments: sizes must be positive", file=sys.stderr)
        return runtime.EXIT_USAGE
    with tempfile.TemporaryDirectory() as tmp:
        result = runtime.run(measure(ns, Path(tmp)))
    print(render(result))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for path in write_json({"benchmark": "experiments", "environment": environment(), **result},
                           f"experiments-{stamp}", ns.json):
        print(f"wrote {path}", file=sys.stderr)
    return runtime.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
