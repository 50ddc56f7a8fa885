"""FlowForge's dispatch latency at light load: one single-task run started every 10 ms.

Each run is started through the API (``runs.start``) at its own moment ``t0 + i * interval``,
without waiting for earlier replies, so the cadence holds. Per run, from its one task record
(the coordinator's and the agent's clocks are this machine's clock):

- dispatch = ``started_at - queued_at``: the coordinator committed the task as ready
  (``queued_at``) → the agent began the function (``started_at``);
- submit = ``started_at`` - this process's ``time.time()`` just before the start request:
  what Celery's ``dispatch_latency`` measures (client submit → worker start);
- end to end = start request → the run's succeeded event arrived here (runs whose final state
  came from the fallback listing, not an event, are left out).
"""

import asyncio
import statistics
import time
from typing import Any

from bench.report import percentile
from bench.stack import Stack
from bench.workloads import RunWatcher, WorkloadError
from protocol.states import RunStatus

FETCH_CONCURRENCY = 20
"""``runs.get`` requests in flight at once while collecting the task records (after timing)."""


def summary(prefix: str, ms: list[float]) -> dict[str, float]:
    """``<prefix>_p50_ms``, ``_p99_ms``, ``_mean_ms``, ``_max_ms`` of ``ms``."""
    if not ms:
        return {}
    return {f"{prefix}_p50_ms": percentile(ms, 0.5), f"{prefix}_p99_ms": percentile(ms, 0.99),
            f"{prefix}_mean_ms": statistics.fmean(ms), f"{prefix}_max_ms": max(ms)}


async def _start_at_cadence(
    stack: Stack, flow: str, count: int, interval_s: float
) -> dict[str, tuple[float, float]]:
    """Start ``count`` runs, one per ``interval_s``; run id -> (wall, perf) just before each."""
    client = stack.client
    assert client is not None
    sent: dict[str, tuple[float, float]] = {}

    async def start_one() -> None:
        wall, perf = time.time(), time.perf_counter()
        run = await client.start(flow, {})
        sent[run.run_id] = (wall, perf)

    t0 = time.perf_counter()
    pending: list[asyncio.Task[None]] = []
    for i in range(count):
        delay = t0 + i * interval_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(start_one()))
    await asyncio.gather(*pending)
    return sent


async def dispatch_latency(
    stack: Stack, flow: str, count: int, timeout_s: float, interval_s: float = 0.01
) -> dict[str, Any]:
    """One sample: ``count`` single-task runs at one per ``interval_s``; latency percentiles."""
    client = stack.client
    assert client is not None
    async with RunWatcher(stack, flow) as watcher:
        sent = await _start_at_cadence(stack, flow, count, interval_s)
        await watcher.wait(lambda w: all(r in w.finished for r in sent), timeout_s)
        wall = max(watcher.finished[r][0] for r in sent) - watcher.t0
    bad = [r for r in sent if watcher.finished[r][1] != RunStatus.SUCCEEDED]
    if bad:
        raise WorkloadError(f"{flow}: {len(bad)} of {count} runs did not succeed, e.g. {bad[0]}")
    limit = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def task_of(run_id: str) -> tuple[float | None, float | None]:
        async with limit:
            detail = await client.get(run_id)
        rec = detail.tasks[0]
        return rec.queued_at, rec.started_at

    records = dict(zip(sent, await asyncio.gather(*(task_of(r) for r in sent)), strict=True))
    dispatch = [1000.0 * (s - q) for q, s in records.values() if q is not None and s is not None]
    submit = [1000.0 * (s - sent[r][0]) for r, (_, s) in records.items() if s is not None]
    e2e = [1000.0 * (watcher.finished[r][0] - sent[r][1]) for r in sent if r not in watcher.polled]
    if len(dispatch) < count:
        raise WorkloadError(f"{flow}: {count - len(dispatch)} task records lack queued_at/started_at")
    return {"wall_s": wall, "samples": count, "interval_ms": 1000.0 * interval_s,
            "e2e_samples": len(e2e), **summary("dispatch", dispatch), **summary("submit", submit),
            **summary("e2e", e2e), "p50_ms": percentile(dispatch, 0.5),
            "p99_ms": percentile(dispatch, 0.99)}
