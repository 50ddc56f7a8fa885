"""Updates: what the agent says about a task while it holds it — started, its log, progress.

Best effort: published on core NATS (the reports stream stores them), never awaited for an
ack, lost while NATS is away. Only the terminal report is sure to arrive (agent/finisher.py).
"""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from nats.aio.client import Client as NATS

from agent.inhand import TaskInHand
from agent.logcapture import Capture
from agent.progress import ProgressSink
from protocol.messages import TaskDispatch, TaskLog, TaskStarted, encoder
from protocol.subjects import Subjects

LOG_FLUSH_S = 0.5
"""A running task's log goes out in batches, at most this often."""


class Updates:
    """Publishes an agent's best-effort reports; ``spawn`` runs a coroutine on the loop."""

    def __init__(self, nc: Callable[[], NATS | None], subjects: Subjects, agent_id: str,
                 spawn: Callable[[Awaitable[Any]], None]) -> None:
        self._nc, self._subjects, self._agent_id, self._spawn = nc, subjects, agent_id, spawn

    async def publish(self, run_id: str, report: Any) -> None:
        """Best-effort report (started, progress, log): stored by the stream, not awaited."""
        nc = self._nc()
        assert nc is not None
        with contextlib.suppress(Exception):
            await nc.publish(self._subjects.report(run_id), encoder.encode(report))

    def started(self, task: TaskDispatch, delivery: int, at: float) -> None:
        """Say the task started at ``at`` (from a timer: sent in the background)."""
        self._spawn(self.publish(task.run_id, TaskStarted(
            run_id=task.run_id, task=task.task, attempt=task.attempt, agent_id=self._agent_id,
            at=at, delivery=delivery,
        )))

    async def send_log(self, task: TaskDispatch, capture: Capture) -> None:
        """What the task logged since the last time, if anything."""
        text = capture.take()
        if text:
            await self.publish(task.run_id, TaskLog(
                run_id=task.run_id, task=task.task, attempt=task.attempt,
                agent_id=self._agent_id, at=time.time(), text=text,
            ))

    async def flush_logs(self, items: Iterable[TaskInHand]) -> None:
        """Running tasks' logs go out in small batches, every LOG_FLUSH_S, until cancelled."""
        while True:
            await asyncio.sleep(LOG_FLUSH_S)
            for item in [i for i in items if i.capture is not None]:
                assert item.dispatch is not None and item.capture is not None
                await self.send_log(item.dispatch, item.capture)

    def progress_sink(self, task: TaskDispatch, delivery: int) -> ProgressSink:
        """Where ``ctx.progress()`` and ``ctx.checkpoint()`` of this task go."""
        return ProgressSink(task, delivery, self._agent_id, asyncio.get_running_loop(),
                            send=self.publish, spawn=self._spawn)
