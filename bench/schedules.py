"""``python -m bench.schedules``: many schedules loaded in a real coordinator. Measures its
idle CPU, and how late each fire starts its run (p50/p99).

On one fresh stack (embedded nats-server, coordinator, one agent):

1. ``--schedules`` schedules that are never due during the measurement (a cron once a year),
   put through the API, 32 requests at a time;
2. idle: the coordinator's CPU over ``--idle-s`` seconds, as a percentage of one core;
3. firing: ``--firing`` more schedules, every ``--every`` seconds, their times spread evenly
   over the interval, for ``--fire-s`` seconds. The lateness of each of their runs due once
   all of them were put (read from the coordinator's SQLite file):
   - ``created``: from the nominal time to the run being started (committed), ``created_at``;
   - ``task started``: from the nominal time to the agent starting the run's task.
"""

import argparse
import asyncio
import contextlib
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import flows
from bench.report import percentile, write_json
from bench.stack import Stack
from flowforge import runtime
from protocol.schedules import Overlap, ScheduleSpec

PUTS_IN_FLIGHT = 32


async def _put_all(stack: Stack, specs: list[ScheduleSpec]) -> float:
    """Put every schedule, PUTS_IN_FLIGHT at a time; returns the seconds it took."""
    assert stack.client is not None
    client, gate, t0 = stack.client, asyncio.Semaphore(PUTS_IN_FLIGHT), time.perf_counter()

    async def put(spec: ScheduleSpec) -> None:
        async with gate:
            await client.put_schedule(spec)

    await asyncio.gather(*(put(s) for s in specs))
    return time.perf_counter() - t0


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"p50_ms": percentile(values, 0.5) * 1000, "p99_ms": percentile(values, 0.99) * 1000,
            "max_ms": max(values) * 1000, "count": len(values)}


async def _cpu_over(stack: Stack, seconds: float) -> float:
    """The coordinator's CPU over ``seconds``, in percent of one core."""
    before, t0 = stack.cpu()["coordinator"], time.perf_counter()
    await asyncio.sleep(seconds)  # the measurement window itself
    return 100 * (stack.cpu()["coordinator"] - before) / (time.perf_counter() - t0)


def _firing_lateness(db: Path, since: float) -> tuple[list[float], list[float]]:
    """Of every run of the firing schedules due once all of them were in place: how late it
    was created, and how late its task started (read from the coordinator's SQLite file)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT r.created_at - r.scheduled_for, t.started_at - r.scheduled_for FROM runs r "
            "LEFT JOIN task_instances t ON t.run_id = r.run_id WHERE r.schedule LIKE 'often-%' "
            "AND r.scheduled_for >= ?", (since,)).fetchall()
    return [c for c, _ in rows], [s for _, s in rows if s is not None]


async def measure(ns: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    single = flows.single_flow()
    async with Stack(workdir, agents=1, concurrency=None) as stack:
        assert stack.client is not None
        await stack.client.register([single])
        idle = [ScheduleSpec(name=f"yearly-{i}", flow=single.name, cron=f"{i % 60} 3 1 1 *",
                             timezone="Europe/Paris") for i in range(ns.schedules)]
        put_s = await _put_all(stack, idle)
        idle_cpu = await _cpu_over(stack, ns.idle_s)
        base = float(int(time.time()) + 2)
        firing = [ScheduleSpec(name=f"often-{i}", flow=single.name, every_s=ns.every,
                               start_at=base + i * ns.every / ns.firing, overlap=Overlap.ALLOW_ALL)
                  for i in range(ns.firing)]
        await _put_all(stack, firing)
        loaded = time.time()  # a time due before its schedule was put is caught up, not on time
        firing_cpu = await _cpu_over(stack, ns.fire_s)
        rss = stack.memory()["coordinator"]
        created, started = _firing_lateness(workdir / "data" / "flowforge.db", loaded)
    return {"schedules": ns.schedules, "firing": ns.firing, "every_s": ns.every,
            "put_s": put_s, "puts_per_s": ns.schedules / put_s, "idle_cpu_pct": idle_cpu,
            "firing_cpu_pct": firing_cpu, "coordinator_rss_kib": rss,
            "late_created": _percentiles(created), "late_started": _percentiles(started)}


def _spread(p: dict[str, float]) -> str:
    return (f"p50 {p.get('p50_ms', 0):.1f} ms  p99 {p.get('p99_ms', 0):.1f} ms  "
            f"max {p.get('max_ms', 0):.1f} ms")


def render(r: dict[str, Any]) -> str:
    c, s = r["late_created"], r["late_started"]
    rows = [
        ("schedules loaded", f"{r['schedules']:,} (put in {r['put_s']:.1f} s, "
                             f"{r['puts_per_s']:,.0f}/s)"),
        ("coordinator idle CPU", f"{r['idle_cpu_pct']:.2f} % of a core"),
        (f"firing: {r['firing']} schedules every {r['every_s']:g} s",
         f"{c.get('count', 0)} runs, coordinator CPU {r['firing_cpu_pct']:.1f} %"),
        ("nominal → run started (created)", _spread(c)),
        ("nominal → task started (agent)", _spread(s)),
        ("coordinator RSS", f"{r['coordinator_rss_kib'].get('rss_kib', 0) / 1024:.1f} MiB now, "
                            f"{r['coordinator_rss_kib'].get('peak_rss_kib', 0) / 1024:.1f} MiB peak"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.schedules", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schedules", type=int, default=10_000)
    p.add_argument("--firing", type=int, default=100)
    p.add_argument("--every", type=float, default=5.0, metavar="SECONDS")
    p.add_argument("--idle-s", type=float, default=30.0)
    p.add_argument("--fire-s", type=float, default=30.0)
    p.add_argument("--json", type=Path, metavar="PATH")
    ns = p.parse_args(argv)
    if min(ns.schedules, ns.firing) < 1 or min(ns.every, ns.idle_s, ns.fire_s) <= 0:
        print("bench.schedules: sizes and durations must be positive", file=sys.stderr)
        return runtime.EXIT_USAGE
    with tempfile.TemporaryDirectory() as tmp:
        result = runtime.run(measure(ns, Path(tmp)))
    print(render(result))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for path in write_json({"benchmark": "schedules", **result}, f"schedules-{stamp}", ns.json):
        print(f"wrote {path}", file=sys.stderr)
    return runtime.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
