"""``python -m bench.million [--items 1000000] [--chunk 1000]``: 1 → N mapped no-op items → 1.

One fresh stack (embedded nats-server, coordinator, one agent at its defaults). The root is a
generator yielding 0..N-1 (its items are sent as they are made); the mapped task runs one no-op
instance per item, ``--chunk`` items per task message, each item still recorded on its own;
the join takes every output in item order and checks it. Reports the run time, the
coordinator's CPU and peak RSS (sampled from /proc every 0.2 s), the database's size, and how
long the run's detail takes to read with its instances counted and a first page of them (what
the dashboard asks when it opens the run), and how long the dashboard itself (headless, over
NATS) takes from opening the run until its screen shows the instances counted.
Goal (issue 13): N = 1,000,000 in at most 60 s with the coordinator's peak RSS at most 1 GiB.
"""

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import flows
from bench.report import environment, write_json
from bench.stack import Stack, cpu_seconds, memory_kib
from flowforge import runtime
from protocol.states import RunStatus

RSS_SAMPLE_S = 0.2


async def _peak_rss(pid: int, stop: asyncio.Event) -> int:
    peak = 0
    while not stop.is_set():
        peak = max(peak, memory_kib(pid).get("rss_kib", 0))
        await asyncio.sleep(RSS_SAMPLE_S)
    return peak


async def dashboard_open_s(url: str, run_id: str, items: int, timeout_s: float = 60.0) -> float:
    """The dashboard (headless, over NATS like any user's) from ``open_run`` until the run's
    screen holds the mapped task's instances counted, all ``items`` of them."""
    from flowforge.connection import ConnectOptions
    from tui.app import DashboardApp
    from tui.client_source import ClientSource
    from tui.run_view import RunScreen

    app = DashboardApp(ClientSource(ConnectOptions(url=url)), tick_s=None)
    async with app.run_test(size=(150, 44)):
        started = time.monotonic()
        app.open_run(run_id)
        while True:
            screen = app.screen
            shown = screen.maps.get("each") if isinstance(screen, RunScreen) else None
            if shown is not None and sum(shown.counts.values()) == items:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"the dashboard did not show the run in {timeout_s:g} s")
            await asyncio.sleep(0.01)


async def measure(items: int, chunk: int, timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ff-million-") as tmp:
        async with Stack(Path(tmp), agents=1, concurrency=None) as stack:
            assert stack.client is not None
            await stack.client.register([flows.million_flow(chunk)])
            pid = stack.pids()["coordinator"]
            rss_before = memory_kib(pid).get("rss_kib", 0)
            cpu_before = cpu_seconds(pid) or 0.0
            stop = asyncio.Event()
            watch = asyncio.create_task(_peak_rss(pid, stop))
            started = time.monotonic()
            run = await stack.client.start("bench_million", {"n": items})
            detail = await stack.client.wait(run.run_id, timeout_s=timeout_s)
            wall = time.monotonic() - started
            stop.set()
            peak = await watch
            join = next(t for t in detail.tasks if t.task == "join")
            dashboard_s = await dashboard_open_s(stack.url, run.run_id, items)
            opened = time.monotonic()  # what the dashboard asks to open the run's detail
            await stack.client.get(run.run_id)
            counted = await stack.client.instances(run.run_id, "each", limit=100)
            open_s = time.monotonic() - opened
            db = Path(tmp) / "data" / "flowforge.db"
            return {
                "items": items, "chunk": chunk, "status": detail.run.status.value,
                "join": bytes(join.output).decode(), "wall_s": wall,
                "items_per_s": items / wall if wall else 0.0,
                "coordinator_cpu_s": (cpu_seconds(pid) or 0.0) - cpu_before,
                "coordinator_rss_before_mib": rss_before / 1024,
                "coordinator_rss_peak_mib": peak / 1024,
                "database_mib": db.stat().st_size / 2**20 if db.exists() else None,
                "open_detail_s": open_s, "counted": counted.counts,
                "dashboard_open_s": dashboard_s,
                "ok": detail.run.status is RunStatus.SUCCEEDED and bytes(join.output) == str(
                    items).encode(),
            }


def table(r: dict[str, Any]) -> list[str]:
    return [
        f"1 → {r['items']:,} mapped → 1, chunk {r['chunk']:,}: {r['status']}"
        f" (join saw {r['join']} outputs in order)",
        f"run time                      {r['wall_s']:.1f} s ({r['items_per_s']:,.0f} items/s;"
        " goal ≤ 60 s)",
        f"coordinator CPU               {r['coordinator_cpu_s']:.1f} s",
        f"coordinator RSS before / peak {r['coordinator_rss_before_mib']:.0f} / "
        f"{r['coordinator_rss_peak_mib']:.0f} MiB (goal ≤ 1,024)",
        f"database after                {r['database_mib'] or 0:.0f} MiB",
        f"run detail, instances counted {r['open_detail_s']:.2f} s ({r['counted']}; goal ≤ 1 s)",
        f"dashboard: run open, counted  {r['dashboard_open_s']:.2f} s (goal ≤ 1 s)",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.million", description=__doc__)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=1_000)
    ap.add_argument("--timeout", type=float, default=600.0)
    ns = ap.parse_args()
    result = runtime.run(measure(ns.items, ns.chunk, ns.timeout))
    for line in table(result):
        print(line)
    stamp = "million-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for path in write_json({"environment": environment(), "result": result}, stamp, None):
        print(f"wrote {path}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
