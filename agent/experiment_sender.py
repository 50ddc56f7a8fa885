"""ExperimentSender: what one attempt logs (``ctx.log_metric`` and the like) goes to the reports
stream as ``TaskMetrics`` — at most every FLUSH_EVERY_S while the task runs, and the rest before
its result, stored by the stream (awaited, retried), so a run's metrics are complete when it
ends. A send that fails puts its part back to go with the next: nothing is lost quietly."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator

import msgspec

from flowforge.experiment_log import ExperimentLog
from protocol.experiments import (
    MAX_ARTIFACTS_PER_MESSAGE,
    MAX_POINTS_PER_MESSAGE,
    MAX_RESULTS_PER_MESSAGE,
    Logged,
)
from protocol.messages import TaskDispatch, TaskMetrics, encoder

log = logging.getLogger("flowforge.agent")

FLUSH_EVERY_S = 0.5
"""A running task's metrics go out at most this often."""
RETRY_MAX_S = 5.0
"""The longest pause between two tries to store the last of them."""
MAX_MESSAGE_BYTES = 256 * 1024
"""One TaskMetrics message at most (a stock nats-server takes 1 MB)."""

StoreReport = Callable[[str, bytes], Awaitable[None]]
"""Publishes a report and returns once the reports stream stored it."""
_LIMITS = {"points": MAX_POINTS_PER_MESSAGE, "results": MAX_RESULTS_PER_MESSAGE,
           "artifacts": MAX_ARTIFACTS_PER_MESSAGE}


class ExperimentSender:
    """Takes over ``log.on_ready``: the first thing logged after a send arms a timer."""

    def __init__(self, experiment: ExperimentLog, task: TaskDispatch, delivery: int,
                 agent_id: str, store: StoreReport, loop: asyncio.AbstractEventLoop,
                 max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._log, self._task, self._delivery, self._agent_id = experiment, task, delivery, agent_id
        self._store, self._loop, self._max_bytes = store, loop, max_bytes
        self._sending = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[bool] | None = None
        self._finishing = False
        self.messages = 0
        experiment.on_ready = self.due

    def due(self) -> None:
        """Something waits to be sent (from any thread)."""
        with contextlib.suppress(RuntimeError):  # closed: a thread outlived its agent
            self._loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        if self._timer is None and not self._finishing:
            self._timer = self._loop.call_later(FLUSH_EVERY_S, self._flush_now)

    def _flush_now(self) -> None:
        self._timer = None
        self._flushing = asyncio.ensure_future(self.flush())

    async def flush(self) -> bool:
        """Send what waits; False when a part could not be stored (it waits for the next)."""
        async with self._sending:
            parts = list(packed(self._log.take(), self._max_bytes))
            for i, part in enumerate(parts):
                t = self._task
                report = TaskMetrics(run_id=t.run_id, task=t.task, attempt=t.attempt,
                                     agent_id=self._agent_id, delivery=self._delivery,
                                     at=time.time(), points=part.points, results=part.results,
                                     artifacts=part.artifacts)
                try:
                    await self._store(t.run_id, encoder.encode(report))
                except asyncio.CancelledError:
                    self._log.put_back(_joined(parts[i:]))
                    raise
                except Exception as exc:  # noqa: BLE001 - kept, and sent with the next
                    log.warning("metrics of %s/%s not stored yet (%r); they go with the next "
                                "send", t.run_id, t.task, exc)
                    self._log.put_back(_joined(parts[i:]))
                    self._arm()
                    return False
                self.messages += 1
            return True

    async def finish(self) -> None:
        """The attempt is over: all it logged is stored before its result goes (retrying,
        backing off up to RETRY_MAX_S, while NATS or the stream is away)."""
        self._finishing = True
        self._log.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._log.accepted:
            return  # it logged nothing (most tasks): nothing to wait for
        delay = 0.1
        while not await self.flush():
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)


def packed(logged: Logged, max_bytes: int) -> Iterator[Logged]:
    """``logged`` in parts that each fit one message: under ``max_bytes`` of JSON and the
    per-message counts of ``TaskMetrics``."""
    part, size = Logged(points=[], results=[], artifacts=[]), 0
    for kind in ("points", "results", "artifacts"):
        for item in getattr(logged, kind):
            n = len(msgspec.json.encode(item)) + 1
            if part and (size + n > max_bytes or len(getattr(part, kind)) >= _LIMITS[kind]):
                yield part
                part, size = Logged(points=[], results=[], artifacts=[]), 0
            getattr(part, kind).append(item)
            size += n
    if part:
        yield part


def _joined(parts: list[Logged]) -> Logged:
    return Logged(points=[p for part in parts for p in part.points],
                  results=[r for part in parts for r in part.results],
                  artifacts=[a for part in parts for a in part.artifacts])
