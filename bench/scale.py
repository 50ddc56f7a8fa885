"""FlowForge only: the coordinator with a growing history, and whether starting a run slows down.

One sample on one fresh stack:

1. one warm-up start of the ``start_tasks``-task fan-out (not counted), then ``starts`` timed
   starts of it, one at a time, each waited for until it succeeded ("before");
2. the history: ``history_runs`` runs of a ``history_tasks``-task fan-out, at most
   ``IN_FLIGHT`` at a time (so the memory measured afterwards is that of a coordinator with
   a stored history, not of one holding 100,000 tasks in flight);
3. the coordinator's RSS (now and peak) and CPU seconds, then ``starts`` timed starts again
   ("after").

A timed start measures, from ``time.time()`` just before the ``runs.start`` request (the
coordinator's and the agents' clocks are this machine's):

- ``reply_ms``: the API reply arrived (the run and its tasks are committed by then);
- ``first_queued_ms``: the root task's queued event arrived here. The coordinator publishes
  it after the commit, right after the root's task message, so this is when the first task
  was really on its way to an agent;
- ``queued_stamp_ms``: the root's ``queued_at`` stamp, taken by the coordinator when it
  decides to queue the root, before the commit (so it is near 0 however big the run);
- ``first_started_ms``: the root's ``started_at`` (the agent began it), from its later event.
"""

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.aio.msg import Msg

from bench.stack import Stack
from bench.workloads import EventWatch, RunWatcher, WorkloadError
from protocol.records import TaskEvents
from protocol.states import RunStatus

IN_FLIGHT = 4
"""History runs running at once."""
EVENT_WAIT_S = 10.0
"""How long to wait for the root's queued event before asking ``runs.get`` instead."""

_tasks_dec = msgspec.json.Decoder(TaskEvents)


@dataclass(frozen=True, slots=True)
class ScaleSizes:
    """What one scale sample builds."""

    start_flow: str
    start_tasks: int
    history_flow: str
    history_runs: int
    history_tasks: int
    starts: int


@dataclass(slots=True)
class RootWatch(EventWatch):
    """Each run's ``root`` task, from ``events.tasks.*``: when its queued event arrived
    (``time.time()``), its ``queued_at`` and ``started_at`` stamps."""

    seen: dict[str, float] = field(default_factory=dict)
    queued: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)

    def subject(self) -> str:
        return self.stack.subjects.task_events("*")

    async def _on_event(self, msg: Msg) -> None:
        now = time.time()
        if b'"task":"root"' not in msg.data:  # most messages: other tasks of big runs
            return
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            for rec in _tasks_dec.decode(msg.data).tasks:
                if rec.task != "root":
                    continue
                if rec.queued_at is not None and rec.run_id not in self.queued:
                    self.seen[rec.run_id], self.queued[rec.run_id] = now, rec.queued_at
                if rec.started_at is not None:
                    self.started.setdefault(rec.run_id, rec.started_at)

    async def queued_seen(self, run_id: str) -> float | None:
        """When the root's queued event arrived; None when it did not within ``EVENT_WAIT_S``
        (events are best effort)."""
        deadline = time.monotonic() + EVENT_WAIT_S
        while run_id not in self.seen and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        return self.seen.get(run_id)


async def timed_start(stack: Stack, flow: str, roots: RootWatch, timeout_s: float) -> dict[str, float]:
    """Start one run, time its reply and its root's queueing, wait until it succeeded."""
    client = stack.client
    assert client is not None
    async with RunWatcher(stack, flow) as watcher:
        run = await client.start(flow, {})
        reply_ms = 1000.0 * (time.perf_counter() - watcher.t0)
        seen = await roots.queued_seen(run.run_id)
        t1, status = await watcher.finish(run.run_id, timeout_s)
    if status != RunStatus.SUCCEEDED:
        raise WorkloadError(f"{flow}: run {run.run_id} did not succeed")
    if seen is None:
        raise WorkloadError(f"{flow}: run {run.run_id}: no queued event of its root arrived")
    since, t0 = watcher.since, watcher.t0
    out = {"reply_ms": reply_ms, "first_queued_ms": 1000.0 * (seen - since), "wall_s": t1 - t0,
           "queued_stamp_ms": 1000.0 * (roots.queued[run.run_id] - since)}
    if run.run_id in roots.started:
        out["first_started_ms"] = 1000.0 * (roots.started[run.run_id] - since)
    return out


async def _history(stack: Stack, sizes: ScaleSizes, timeout_s: float) -> float:
    """Run the history, ``IN_FLIGHT`` runs at a time; returns its wall time."""
    client = stack.client
    assert client is not None
    limit = asyncio.Semaphore(IN_FLIGHT)
    failed: list[str] = []

    async def one(watcher: RunWatcher) -> None:
        async with limit:
            run = await client.start(sizes.history_flow, {})
            _, status = await watcher.finish(run.run_id, timeout_s)
            if status != RunStatus.SUCCEEDED:
                failed.append(run.run_id)

    async with RunWatcher(stack, sizes.history_flow) as watcher:
        await asyncio.gather(*(one(watcher) for _ in range(sizes.history_runs)))
        wall = time.perf_counter() - watcher.t0
    if failed:
        raise WorkloadError(f"{sizes.history_flow}: {len(failed)} history runs did not succeed")
    return wall


def _phase(starts: list[dict[str, float]], name: str) -> dict[str, Any]:
    """Medians of the timed starts of one phase ("before" or "after"), and the starts."""
    out: dict[str, Any] = {}
    for key in ("reply_ms", "first_queued_ms", "queued_stamp_ms", "first_started_ms"):
        values = [s[key] for s in starts if key in s]
        if values:
            out[f"{name}_{key}"] = statistics.median(values)
    return out | {f"{name}_starts": starts}


async def scale(stack: Stack, sizes: ScaleSizes, timeout_s: float) -> dict[str, Any]:
    """One sample (see the module docstring); returns medians of the timed starts and usage."""
    async with RootWatch(stack) as roots:
        await timed_start(stack, sizes.start_flow, roots, timeout_s)  # warm-up
        before = [await timed_start(stack, sizes.start_flow, roots, timeout_s)
                  for _ in range(sizes.starts)]
        cpu0 = stack.cpu()
        history_s = await _history(stack, sizes, timeout_s)
        cpu1, mem = stack.cpu(), stack.memory().get("coordinator", {})
        after = [await timed_start(stack, sizes.start_flow, roots, timeout_s)
                 for _ in range(sizes.starts)]
    history = sizes.history_runs * sizes.history_tasks
    stored = history + (1 + 2 * sizes.starts) * sizes.start_tasks
    return {
        "wall_s": history_s, "history_tasks": history, "history_tasks_per_s": history / history_s,
        "stored_tasks_at_memory": stored - sizes.starts * sizes.start_tasks,
        "stored_tasks": stored,
        "coordinator_rss_kib": mem.get("rss_kib", 0),
        "coordinator_peak_rss_kib": mem.get("peak_rss_kib", 0),
        "coordinator_cpu_s": cpu1.get("coordinator", 0.0),
        "history_cpu_coordinator_s": cpu1.get("coordinator", 0.0) - cpu0.get("coordinator", 0.0),
        "history_cpu_nats_s": cpu1.get("nats-server", 0.0) - cpu0.get("nats-server", 0.0),
        **_phase(before, "before"), **_phase(after, "after"),
    }
