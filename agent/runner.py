"""TaskRunner: one task message in a slot, from its bytes to its terminal report."""

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec

from agent import logcapture
from agent.asker import AgentAsker
from agent.binding import BindPlan
from agent.child_waits import ChildWaits
from agent.chunks import run_chunk
from agent.executor import execute
from agent.experiment_sender import ExperimentSender
from agent.inhand import TaskInHand, TaskState
from agent.procpool import ProcessPool
from agent.progress import ProgressSink
from agent.streams import SendItems
from agent.taskmsg import cancelled, read_task, settle, too_many_deliveries, unknown_function
from agent.threads import TaskThreads
from agent.updates import Updates
from flowforge.client import Client
from flowforge.context import TaskContext
from protocol.errors import FlowForgeError
from protocol.experiments import DEFAULT_MAX_METRIC_POINTS
from protocol.messages import TaskDispatch, TaskFailed, TaskItems, TaskSucceeded, encoder

log = logging.getLogger("flowforge.agent")

MAX_DELIVERIES = 5
"""A task message delivered more often than this is failed instead of run (a poison pill)."""
MAX_CANCELLED_RUNS = 10_000
"""How many cancelled runs the agent remembers (the oldest are forgotten first)."""
STARTED_AFTER_S = 0.02
"""A task still running after this long is reported started; a shorter one goes straight to
its result, which carries its start time (one message, one write and one event less per task,
like Celery's ``task_track_started`` off, but the dashboard still shows longer tasks running)."""


class TaskRunner:
    """``run(item)`` reads a RUNNING task message, runs its function, returns its report.

    Before anything runs: a malformed message is terminated here (never retried: it would fail
    the same way each time); a message delivered more than MAX_DELIVERIES times, a function
    this agent does not have, and a run cancelled lately each become a failure report.
    """

    def __init__(self, agent_id: str, functions: dict[str, Callable[..., Any]],
                 threads: TaskThreads, processes: ProcessPool | None, updates: Updates,
                 stopping: Callable[[], bool],
                 client: Callable[[], Client | None] = lambda: None,
                 store_report: Callable[[str, bytes], Awaitable[None]] | None = None,
                 waits: ChildWaits | None = None,
                 lend: Callable[[TaskInHand], AbstractAsyncContextManager[None]] | None = None,
                 max_metric_points: int = DEFAULT_MAX_METRIC_POINTS,
                 ) -> None:
        self._agent_id, self._functions = agent_id, functions
        self._plans = {ref: BindPlan.of(fn) for ref, fn in functions.items()}
        self._threads, self._processes = threads, processes
        self._updates, self._stopping = updates, stopping
        self._client = client
        self._store_report = store_report
        """Publishes a report and waits until the stream stored it (a generator's items)."""
        self._asker: AgentAsker | None = None
        self._waits = waits
        self._lend = lend or _no_lending
        """How a task waiting for its children lends its slot (and thread) meanwhile."""
        self._max_metric_points = max_metric_points
        """Metric points, results and artifacts one attempt may log."""
        self._cancelled_runs: dict[str, None] = {}
        """Runs cancelled lately (newest last): their tasks are stopped or not started. A
        task cancelled alone (a child whose parent ended) is kept as ``run_id/task``."""

    def note_cancelled(self, run_id: str, tasks: Iterable[str] | None = None) -> None:
        """The run (or only these tasks of it: none, if none is named) was cancelled: none of
        it starts here any more."""
        for key in [run_id] if tasks is None else [f"{run_id}/{t}" for t in tasks]:
            self._cancelled_runs[key] = None
        while len(self._cancelled_runs) > MAX_CANCELLED_RUNS:
            del self._cancelled_runs[next(iter(self._cancelled_runs))]

    def _is_cancelled(self, task: TaskDispatch) -> bool:
        cancelled = self._cancelled_runs
        return task.run_id in cancelled or f"{task.run_id}/{task.task}" in cancelled

    async def run(self, item: TaskInHand) -> TaskSucceeded | TaskFailed | None:
        """The task's terminal report, or None when the message was settled here (malformed)."""
        try:
            task = read_task(item.msg)
        except FlowForgeError as exc:
            log.error("dropping malformed task message on %s: %s", item.msg.subject, exc.message)
            await settle(item.msg.term)
            item.move(TaskState.DONE)
            return None
        count = item.delivery
        if count > 1:  # redelivered: an earlier agent lost it; this is a new attempt
            task = msgspec.structs.replace(task, attempt=task.attempt + count - 1)
        item.dispatch = task
        if count > MAX_DELIVERIES:
            return too_many_deliveries(task, self._agent_id, count)
        sink = self._updates.progress_sink(task, count)
        fn = self._functions.get(task.function)
        if fn is None:
            log.warning("task %s/%s names unknown function %r", task.run_id, task.task,
                        task.function)
            return unknown_function(task, self._agent_id)
        item.ctx = TaskContext(
            run_id=task.run_id, flow=task.flow, task=task.task, attempt=task.attempt,
            params=task.params, agent_id=self._agent_id, sink=sink,
            scheduled_for=task.scheduled_for, queue=item.queue,
            asker=self._asker_here().for_task(functools.partial(self._lend, item)),
            max_metric_points=self._max_metric_points,
        )
        if self._is_cancelled(task):
            return cancelled(task, self._agent_id, time.time())
        metrics = None if self._store_report is None else ExperimentSender(
            item.ctx.experiment, task, count, self._agent_id, self._store_report,
            asyncio.get_running_loop())
        return await self._call(item, task, fn, sink, metrics)

    def _items_sender(self, item: TaskInHand, task: TaskDispatch) -> SendItems | None:
        store = self._store_report
        if store is None:
            return None

        async def send(first: int, items: list[bytes]) -> None:
            report = TaskItems(run_id=task.run_id, task=task.task, attempt=task.attempt,
                               agent_id=self._agent_id, delivery=item.delivery, at=time.time(),
                               first_index=first, items=[msgspec.Raw(b) for b in items])
            await store(task.run_id, encoder.encode(report))

        return send

    def _asker_here(self) -> AgentAsker:
        if self._asker is None:
            self._asker = AgentAsker(self._client, asyncio.get_running_loop(), self._waits)
        return self._asker

    async def _call(self, item: TaskInHand, task: TaskDispatch, fn: Callable[..., Any],
                    sink: ProgressSink, metrics: ExperimentSender | None,
                    ) -> TaskSucceeded | TaskFailed:
        """Call the function with its log captured, reporting it started if it runs a while."""
        assert item.ctx is not None
        started = time.time()
        report_started = asyncio.get_running_loop().call_later(
            STARTED_AFTER_S, self._updates.started, task, item.delivery, started)
        capture = item.capture = logcapture.Capture(
            f"── attempt {task.attempt} on {self._agent_id} ──\n")
        logcapture.current.set(capture)  # this asyncio task's own context
        ctx, plan = item.ctx, self._plans[task.function]

        async def run_one(one: TaskDispatch) -> TaskSucceeded | TaskFailed:
            return await execute(one, fn, plan, ctx, self._threads, self._agent_id,
                                 self._processes, item.lingering, self._items_sender(item, one))

        try:
            report = await (run_one(task) if task.chunk is None else run_chunk(
                task, run_one, self._agent_id, lambda: self._is_cancelled(task)))
        except asyncio.CancelledError:
            if not self._is_cancelled(task) or self._stopping():
                raise  # stopped for shutdown: the message is handed back
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            report = cancelled(task, self._agent_id, started)
        finally:
            report_started.cancel()
        item.capture = None
        await sink.flush()  # progress, metrics and the log go out before the result
        if metrics is not None:
            await metrics.finish()  # stored, not only sent: the run's metrics are complete
        await self._updates.send_log(task, capture)
        return report


@contextlib.asynccontextmanager
async def _no_lending(item: TaskInHand) -> AsyncIterator[None]:
    yield
