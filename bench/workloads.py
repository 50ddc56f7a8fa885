"""The measured workloads: a fan-out, a burst of trigger messages, a chain — one sample each."""

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Self

import msgspec
from nats.aio.msg import Msg

from bench.stack import Stack
from flowforge import Client
from protocol.errors import FlowForgeError
from protocol.records import RunRecord
from protocol.states import RUN_FINAL, RunStatus

POLL_S = 2.0
"""Run events are core NATS (at most once); a listing every POLL_S catches any that were lost."""

_run_dec = msgspec.json.Decoder(RunRecord)


class WorkloadError(RuntimeError):
    """A run failed, or did not finish before the deadline."""


@dataclass(slots=True)
class EventWatch:
    """Inside ``async with``: subscribed to ``subject()`` on the stack's NATS connection, each
    event handled by ``_on_event``."""

    stack: Stack
    since: float = field(default=0.0, kw_only=True)
    """``time.time()`` once subscribed: when watching began (``RunWatcher`` lists runs since)."""
    t0: float = field(default=0.0, kw_only=True)
    """``time.perf_counter()`` once subscribed: where the wall time of a sample starts."""
    _sub: Any = field(default=None, kw_only=True)

    def subject(self) -> str:
        raise NotImplementedError

    async def _on_event(self, msg: Msg) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        assert self.stack.nc is not None
        self._sub = await self.stack.nc.subscribe(self.subject(), cb=self._on_event)
        self.since, self.t0 = time.time(), time.perf_counter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


@dataclass(slots=True)
class RunWatcher(EventWatch):
    """Records, from run events and a periodic listing, when each run of a flow finished."""

    flow: str
    finished: dict[str, tuple[float, RunStatus]] = field(default_factory=dict)
    """Run id -> (``perf_counter()`` when its final state arrived, that state)."""
    records: dict[str, RunRecord] = field(default_factory=dict)
    """Run id -> its final record (with its task counts)."""
    polled: set[str] = field(default_factory=set)
    """Runs whose final state came from the listing, not an event: their time is late."""
    from_poll: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def subject(self) -> str:
        return self.stack.subjects.run_event(self.flow, "*")

    async def _on_event(self, msg: Msg) -> None:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            self._record(_run_dec.decode(msg.data), time.perf_counter())

    def _record(self, run: RunRecord, at: float) -> None:
        if run.status in RUN_FINAL and run.run_id not in self.finished:
            self.finished[run.run_id] = (at, run.status)
            self.records[run.run_id] = run
            self._changed.set()

    async def wait(self, done: Any, timeout_s: float) -> None:
        """Wait until ``done(self)`` is true; re-list the runs created since ``since`` meanwhile."""
        client = self.stack.client
        assert client is not None
        try:
            async with asyncio.timeout(timeout_s):
                polled = time.monotonic()
                while not done(self):
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(POLL_S):
                            await self._changed.wait()
                    if not done(self) and time.monotonic() - polled >= POLL_S:
                        await self._poll(client)
                        polled = time.monotonic()
        except TimeoutError:
            raise WorkloadError(
                f"{self.flow}: gave up after {timeout_s:g} s with {len(self.finished)} runs "
                f"finished\n{self.stack.log_tails()}"
            ) from None

    async def _poll(self, client: Client) -> None:
        now = time.perf_counter()
        for run in await client.runs(flow=self.flow, limit=1000):
            fresh = run.created_at >= self.since and run.run_id not in self.finished
            if fresh and run.status in RUN_FINAL:
                self._record(run, now)
                self.polled.add(run.run_id)
                self.from_poll += 1

    async def finish(self, run_id: str, timeout_s: float) -> tuple[float, RunStatus]:
        """Wait until run ``run_id`` is final: ``perf_counter()`` when it was, and its state."""
        await self.wait(lambda w: run_id in w.finished, timeout_s)
        return self.finished[run_id]

    def failures(self) -> list[str]:
        return [rid for rid, (_, status) in self.finished.items() if status != RunStatus.SUCCEEDED]


async def _explain_failure(client: Client, run_id: str) -> str:
    try:
        detail = await client.get(run_id)
    except FlowForgeError as exc:  # e.g. the coordinator did not answer in time
        return f"run {run_id} did not succeed (and runs.get failed: {exc})"
    bad = [t for t in detail.tasks if t.status.value not in ("succeeded", "pending")]
    first = bad[0] if bad else None
    why = f"{first.task}: {first.error_type}: {first.error_message}" if first else "no task failed"
    return f"run {run_id} ended {detail.run.status.value} ({why})"


async def one_run(stack: Stack, flow: str, timeout_s: float,
                  params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start one run through the API and time it until its succeeded event arrives."""
    client = stack.client
    assert client is not None
    async with RunWatcher(stack, flow) as watcher:
        run = await client.start(flow, params or {})
        t1, status = await watcher.finish(run.run_id, timeout_s)
    if status != RunStatus.SUCCEEDED:
        raise WorkloadError(await _explain_failure(client, run.run_id))
    rec = watcher.records[run.run_id]  # counts, not runs.get: no 20,000 task records to fetch
    done = rec.counts.succeeded
    if done != rec.counts.total or done == 0:
        raise WorkloadError(f"run {run.run_id} succeeded with {done}/{rec.counts.total} tasks")
    coordinator_s = (rec.finished_at or 0.0) - rec.created_at
    return {"wall_s": t1 - watcher.t0, "tasks": done, "coordinator_s": coordinator_s,
            "from_poll": watcher.from_poll, "run_id": run.run_id}


async def fanout(stack: Stack, flow: str, timeout_s: float) -> dict[str, Any]:
    """1 → N → 1: wall time from the start request to the run's succeeded event; tasks/s."""
    sample = await one_run(stack, flow, timeout_s)
    sample["tasks_per_s"] = sample["tasks"] / sample["wall_s"]
    return sample


async def chain(stack: Stack, flow: str, timeout_s: float) -> dict[str, Any]:
    """t0 → … → tN-1: wall time, and per hop (one dispatch-run-report cycle per task)."""
    sample = await one_run(stack, flow, timeout_s)
    sample["ms_per_hop"] = 1000.0 * sample["wall_s"] / sample["tasks"]
    return sample


async def triggers(
    stack: Stack, flow: str, count: int, timeout_s: float, window: int = 1000
) -> dict[str, Any]:
    """``count`` trigger messages sent by the SDK (``Client.send_trigger``: JetStream
    publishes, at most ``window`` unacknowledged); time until all succeeded."""
    client = stack.client
    assert client is not None
    async with RunWatcher(stack, flow) as watcher:
        acks: list[asyncio.Future[int]] = []
        for i in range(count):
            if i >= window:
                await acks[i - window]
            acks.append(await client.send_trigger(flow))
        await asyncio.gather(*acks)
        published = time.perf_counter()
        await watcher.wait(lambda w: len(w.finished) >= count, timeout_s)
        t1 = max(at for at, _ in watcher.finished.values())
    if watcher.failures():
        raise WorkloadError(await _explain_failure(client, watcher.failures()[0]))
    listed = await client.runs(flow=flow, status="succeeded", limit=1000)
    succeeded = sum(r.created_at >= watcher.since and r.source == "trigger" for r in listed)
    if succeeded < min(count, 1000):
        raise WorkloadError(f"{flow}: events said {count} runs succeeded, the listing {succeeded}")
    wall = t1 - watcher.t0
    return {"wall_s": wall, "runs": len(watcher.finished), "publish_s": published - watcher.t0,
            "runs_per_s": len(watcher.finished) / wall, "from_poll": watcher.from_poll}
