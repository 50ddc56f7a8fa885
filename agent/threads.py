"""TaskThreads: where sync task functions run, with one callback back to the loop per call.

``loop.run_in_executor`` on a ThreadPoolExecutor costs about twice as much CPU per call as
the call needs: a concurrent Future with its condition variable, chained to an asyncio Future
by two callbacks. Here a thread takes ``fn`` from a queue, runs it, and hands the result to
the loop with one ``call_soon_threadsafe``. The bookkeeping (how many calls are out, when to
start another thread) happens on the loop's thread only, so it needs no lock.

Threads are daemons: a sync task that never returns cannot keep the agent from exiting once
its grace period is over (its message goes back to the stream for another agent).
"""

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

Outcome = tuple[Any, BaseException | None]
"""What a call returned, or the exception it raised (any kind: StopIteration cannot be set on
an asyncio Future, so exceptions travel as values and the caller raises them)."""
_Call = tuple[asyncio.AbstractEventLoop, asyncio.Future[Outcome], Callable[[], Any]]


class TaskThreads:
    def __init__(self, size: int, name: str = "flowforge-task") -> None:
        if size < 1:
            raise ValueError("TaskThreads needs at least one thread")
        self._size = size
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._out = 0
        """Calls submitted and not yet come back (counted on the loop's thread)."""
        self._closed = False

    @property
    def threads(self) -> int:
        return len(self._threads)

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Outcome]:
        """Run ``fn()`` on a thread; the future gets its Outcome. Call from the loop.
        Cancelling the future does not stop ``fn``."""
        if self._closed:
            raise RuntimeError("TaskThreads is shut down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._out += 1
        if self._out > len(self._threads) and len(self._threads) < self._size:
            thread = threading.Thread(target=self._work, daemon=True,
                                      name=f"{self._name}-{len(self._threads)}")
            thread.start()
            self._threads.append(thread)
        self._calls.put((loop, future, fn))
        return future

    @contextlib.contextmanager
    def widened(self) -> Iterator[None]:
        """One more thread may start meanwhile: a task's thread is waiting (for its children)
        and its slot is lent to another task, which may need a thread."""
        self._size += 1
        try:
            yield
        finally:
            self._size -= 1

    def shutdown(self) -> None:
        """Threads stop after the call they are in; calls not started are dropped."""
        self._closed = True
        with contextlib.suppress(queue.Empty):
            while True:
                self._calls.get_nowait()
        for _ in self._threads:
            self._calls.put(None)

    def _work(self) -> None:
        get = self._calls.get
        while (call := get()) is not None:
            loop, future, fn = call
            try:
                result, error = fn(), None
            except BaseException as exc:  # noqa: BLE001 - the task's own error is data
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._back, future, result, error)
            del call, future, fn, result, error

    def _back(self, future: asyncio.Future[Outcome], result: Any,
              error: BaseException | None) -> None:
        self._out -= 1
        if not future.cancelled():
            future.set_result((result, error))
