"""Progress and checkpoints from inside a task, from any thread, coalesced into few reports."""

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

from protocol.messages import TaskDispatch, TaskProgress

PROGRESS_EVERY_S = 0.2
"""At most one progress report per task this often."""


class ProgressSink:
    """``ctx.progress()``/``checkpoint()`` from any thread, coalesced per PROGRESS_EVERY_S.

    The newest fraction and the newest message win: a tight loop of progress calls costs
    the coordinator a few reports a second, not thousands. ``flush()`` before the result.
    """

    _lock = threading.Lock()
    """One for all sinks: held for a few assignments, and one per task would cost every task."""

    def __init__(self, task: TaskDispatch, delivery: int, agent_id: str,
                 loop: asyncio.AbstractEventLoop, *,
                 send: Callable[[str, TaskProgress], Awaitable[None]],
                 spawn: Callable[[Awaitable[None]], None]) -> None:
        self._task, self._delivery, self._agent_id, self._loop = task, delivery, agent_id, loop
        self._send, self._spawn = send, spawn
        """``send(run_id, report)`` publishes a report; ``spawn`` runs a coroutine on the loop."""
        self._fraction: float | None = None
        self._message: str | None = None
        self._due = False

    def __call__(self, fraction: float | None, message: str | None) -> None:
        with self._lock:
            if fraction is not None:
                self._fraction = fraction
            if message is not None:
                self._message = message
            if self._due:
                return
            self._due = True
        self._loop.call_soon_threadsafe(self._loop.call_later, PROGRESS_EVERY_S, self._send_later)

    def _take(self) -> TaskProgress | None:
        with self._lock:
            if self._fraction is None and self._message is None:
                self._due = False
                return None
            t = self._task
            report = TaskProgress(
                run_id=t.run_id, task=t.task, attempt=t.attempt, agent_id=self._agent_id,
                at=time.time(), fraction=self._fraction, message=self._message,
                delivery=self._delivery,
            )
            self._fraction = self._message = None
            self._due = False
            return report

    def _send_later(self) -> None:
        report = self._take()
        if report is not None:
            self._spawn(self._send(report.run_id, report))

    async def flush(self) -> None:
        report = self._take()
        if report is not None:
            await self._send(report.run_id, report)
