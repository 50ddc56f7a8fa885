"""TaskContext: what a running task knows about itself and how it talks back."""

import asyncio
import datetime
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

from flowforge import mapped_outputs
from flowforge.children import Child, ChildAsker, Spawner
from flowforge.experiment_log import ExperimentLog
from protocol.api import MapInstances
from protocol.experiments import DEFAULT_MAX_METRIC_POINTS

ProgressSink = Callable[[float | None, str | None], None]
"""Called (from any thread) with a fraction and/or a message; the agent reports it."""


Asker = ChildAsker
"""How a running task asks the coordinator (the agent's connection): blocking from the
task's thread, or awaited in an async task; and how it waits for its children."""


class TaskContext:
    """Passed to a task function that takes a ``ctx`` parameter."""

    def __init__(
        self,
        *,
        run_id: str,
        flow: str,
        task: str,
        attempt: int,
        params: Mapping[str, Any],
        agent_id: str,
        sink: ProgressSink,
        scheduled_for: float | None = None,
        asker: Asker | None = None,
        queue: str = "default",
        max_metric_points: int = DEFAULT_MAX_METRIC_POINTS,
    ) -> None:
        self.run_id = run_id
        self.flow = flow
        self.task = task
        self.attempt = attempt
        self.params = dict(params)
        self.agent_id = agent_id
        self.scheduled_for = (None if scheduled_for is None
                              else datetime.datetime.fromtimestamp(scheduled_for, datetime.UTC))
        """A scheduled run's nominal time (aware, UTC): the hour or day whose data this run
        handles, however late it started; None for a run nobody scheduled."""
        self.queue = queue
        self._sink = sink
        self._asker = asker
        self._spawner: Spawner | None = None
        self._cancelled = False  # set by the agent's loop, read by the task's thread
        self.experiment = ExperimentLog(max_points=max_metric_points,
                                        on_error=lambda text: self.logger.error("%s", text))
        """What this attempt logged with ``log_metric`` and the like, until the agent sends it."""

    @functools.cached_property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """``flowforge.task.<flow>.<task>``; what it logs is kept as the task's log."""
        return logging.LoggerAdapter(
            logging.getLogger(f"flowforge.task.{self.flow}.{self.task}"),
            {"run_id": self.run_id, "task": self.task, "attempt": self.attempt},
        )

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far along the task is, from 0.0 to 1.0."""
        if not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be between 0.0 and 1.0, got {fraction!r}")
        self._sink(float(fraction), message)

    def checkpoint(self, message: str) -> None:
        """Record where the task is (kept as the task's last checkpoint, shown by monitors)."""
        self._sink(None, str(message))

    # -- experiments -----------------------------------------------------------------------

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Record ``value`` of metric ``name`` (an identifier, dotted parts allowed:
        ``val.loss``) at ``step`` (default: this attempt's next step of that name, 0, 1, 2...).
        Stored with the run, task and attempt; ``flowforge experiments`` shows each metric's
        final value. A bad name or value (not finite, not a number) is an error line in the
        task's log, never an exception: the task goes on."""
        self.experiment.metric(name, value, step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """``log_metric`` for each name and value of ``metrics``, all at ``step`` if given."""
        self.experiment.metrics(metrics, step)

    def log_result(self, *, algorithm: str, params: Mapping[str, Any] | None = None,
                   metrics: Mapping[str, float] | None = None, artifact: str | None = None,
                   metadata: Mapping[str, Any] | None = None) -> None:
        """An experiment record: the algorithm, its parameters, its evaluation metrics (also
        logged as metric points), where its result file is (a path or URI: never uploaded) and
        any metadata (JSON values, at most 32 KiB with the params and metrics)."""
        self.experiment.result(algorithm, params, metrics, artifact, metadata)

    def log_artifact(self, uri: str, kind: str | None = None) -> None:
        """Record where a file this task made is (a path or URI; the file is not uploaded),
        with what kind of file it is (``model``, ``plot``...)."""
        self.experiment.artifact(uri, kind)

    def mapped_outputs(self, task: str) -> Iterator[Any]:
        """The outputs of mapped task ``task`` of this run, in item order (None for an item
        that failed), read a page at a time: for outputs too many to pass as one value. In an
        async task use ``async for ... in ctx.amapped_outputs(task)``."""
        asker = self._need_asker()
        return mapped_outputs.outputs(lambda body: asker.ask(body, MapInstances), self.run_id,
                                      task)

    def amapped_outputs(self, task: str) -> AsyncIterator[Any]:
        """``mapped_outputs`` for an async task."""
        asker = self._need_asker()
        return mapped_outputs.aoutputs(lambda body: asker.aask(body, MapInstances),
                                       self.run_id, task)

    # -- child tasks ---------------------------------------------------------------------

    def spawn(self, fn: Callable[..., Any], /, **params: Any) -> Child:
        """Start ``fn(**params)`` as a child task of this one (it runs on the queue
        ``@flowforge.task`` gave it, else on this task's); ``ctx.gather`` gives its output.
        A task ends after its children: those not gathered are waited for when it returns."""
        return self.spawner.spawn(fn, params)

    def map(self, fn: Callable[..., Any], items: Iterable[Any], /, *,
            return_exceptions: bool = False, **common: Any) -> Any:
        """One child task per item, their outputs in item order. In an async task
        ``await ctx.map(...)``; in a sync one it blocks. The item goes to the function's
        ``item`` parameter (its index to ``map_index``) or else to its first one; ``common``
        keyword arguments go to every child. A child that failed raises ``ChildFailed``
        (with ``return_exceptions=True`` it is returned in its place)."""
        return self._gathered(self.spawner.spawn_each(fn, items, common), return_exceptions)

    def gather(self, *children: Child, return_exceptions: bool = False) -> Any:
        """The outputs of spawned children, in the order given (``await`` in an async task)."""
        return self._gathered(list(children), return_exceptions)

    def _gathered(self, children: list[Child], return_exceptions: bool) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a sync task, in its own thread or process: it blocks
            return self.spawner.gather(children, return_exceptions)
        return self.spawner.agather(children, return_exceptions)

    @property
    def spawner(self) -> Spawner:
        if self._spawner is None:
            self._spawner = Spawner(self.run_id, self.task, self.attempt, self.agent_id,
                                    self.queue, self._need_asker())
        return self._spawner

    def _need_asker(self) -> Asker:
        if self._asker is None:
            raise RuntimeError("this task cannot ask the coordinator: it is not run by an agent")
        return self._asker

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled: a long sync task should check it and return."""
        return self._cancelled

    def _cancel(self) -> None:
        self._cancelled = True

    def __repr__(self) -> str:
        return f"TaskContext(run_id={self.run_id!r}, task={self.task!r}, attempt={self.attempt})"
