"""ExperimentLog: what one attempt of a task logs with ``ctx.log_metric`` and the like —
checked, given steps, counted against a cap, and kept until the agent sends it.

Safe from any thread (a sync task's thread, threads it starts). Bad input never raises: it
becomes an error line in the task's log naming the name and value, the point is dropped and
the task goes on. Past the cap, one line says so and later points are dropped quietly.
"""

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from protocol.experiments import (
    DEFAULT_MAX_METRIC_POINTS,
    MAX_LABEL_CHARS,
    MAX_RESULT_BYTES,
    MAX_URI_CHARS,
    ArtifactRef,
    Logged,
    MetricPoint,
    ResultRecord,
    name_problem,
    shown,
    step_problem,
    value_problem,
)

MAX_ERROR_LINES = 20
"""Error lines one attempt writes about bad input; after that, one line says more are not."""
_encode = msgspec.json.Encoder().encode


class ExperimentLog:
    """``metric()``, ``result()``, ``artifact()`` from the task; ``take()`` from the agent.

    ``on_error(text)`` writes a line to the task's log; ``on_ready()`` is called (outside the
    lock, from the logging thread) when something is waiting to be sent and nothing was.
    """

    def __init__(self, *, max_points: int = DEFAULT_MAX_METRIC_POINTS,
                 on_error: Callable[[str], None] = lambda text: None,
                 on_ready: Callable[[], None] = lambda: None) -> None:
        self.max_points = max_points
        self.on_error, self.on_ready = on_error, on_ready
        self._lock = threading.Lock()
        self._waiting = Logged(points=[], results=[], artifacts=[])
        self._next_step: dict[str, int] = {}
        self._seq = 0
        self.accepted = 0
        """Points, results and artifacts kept so far (what the cap counts)."""
        self.dropped = 0
        """... and those refused: bad input, or past the cap."""
        self._errors = 0
        self._capped = False
        self._closed = False

    # -- from the task -----------------------------------------------------------------

    def metric(self, name: str, value: float, step: int | None = None,
               call: str = "log_metric") -> None:
        problem = name_problem(name) or value_problem(value) or (
            None if step is None else step_problem(step))
        if problem is not None:
            self._refuse(f"{call}({shown(name)}, {shown(value)}): {problem}; the point is "
                         "dropped")
            return
        self._keep(lambda w, seq: w.points.append(MetricPoint(
            name, float(value), self._step(name, step), time.time())))

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        if not isinstance(values, Mapping):
            self._refuse(f"log_metrics({shown(values)}): give a dict of name: value; nothing "
                         "was logged")
            return
        for name, value in values.items():
            self.metric(name, value, step, call="log_metrics")

    def result(self, algorithm: str, params: Mapping[str, Any] | None,
               metrics: Mapping[str, float] | None, artifact: str | None,
               metadata: Mapping[str, Any] | None) -> None:
        """The record; and its metrics that this attempt has not logged as points yet, as
        points (so the experiments table shows them, and a series logged epoch by epoch does
        not get one step more)."""
        problem = _result_problem(algorithm, params, metrics, artifact, metadata)
        if problem is not None:
            self._refuse(f"log_result(algorithm={shown(algorithm)}): {problem}; the result is "
                         "dropped")
            return
        self._keep(lambda w, seq: w.results.append(ResultRecord(
            seq=seq, algorithm=algorithm, params=dict(params or {}),
            metrics={k: float(v) for k, v in (metrics or {}).items()}, artifact=artifact,
            metadata=dict(metadata or {}), at=time.time())))
        with self._lock:
            new = [(k, v) for k, v in (metrics or {}).items() if k not in self._next_step]
        for name, value in new:
            self.metric(name, value, call="log_result")

    def artifact(self, uri: str, kind: str | None = None) -> None:
        if not isinstance(uri, str) or not 0 < len(uri) <= MAX_URI_CHARS:
            self._refuse(f"log_artifact({shown(uri)}): the URI must be text of 1 to "
                         f"{MAX_URI_CHARS} characters (a path or URL: files are not uploaded)")
        elif kind is not None and (not isinstance(kind, str) or len(kind) > MAX_LABEL_CHARS):
            self._refuse(f"log_artifact({shown(uri)}, kind={shown(kind)}): the kind must be "
                         f"text of at most {MAX_LABEL_CHARS} characters")
        else:
            self._keep(lambda w, seq: w.artifacts.append(
                ArtifactRef(seq=seq, uri=uri, kind=kind, at=time.time())))

    # -- from the agent ----------------------------------------------------------------

    def take(self) -> Logged:
        """What waits to be sent; it is sent by the caller (or ``put_back`` when it failed)."""
        with self._lock:
            taken, self._waiting = self._waiting, Logged(points=[], results=[], artifacts=[])
            return taken

    def put_back(self, logged: Logged) -> None:
        """Not sent after all: it goes out with the next."""
        with self._lock:
            w = self._waiting
            self._waiting = Logged(points=logged.points + w.points,
                                   results=logged.results + w.results,
                                   artifacts=logged.artifacts + w.artifacts)

    def merge(self, logged: Logged) -> None:
        """What a worker process's own log checked and took (``--pool process``)."""
        if logged:
            self._keep(lambda w, seq: (w.points.extend(logged.points),
                                       w.results.extend(logged.results),
                                       w.artifacts.extend(logged.artifacts)), len(logged))

    def close(self) -> None:
        """The attempt is over: what it logs from now on (a thread that outlived it) is
        dropped."""
        with self._lock:
            self._closed = True

    @property
    def waiting(self) -> bool:
        with self._lock:
            return bool(self._waiting)

    # -- inside ----------------------------------------------------------------------------

    def _step(self, name: str, step: int | None) -> int:
        """The given step, or the next one of ``name`` (0, 1, 2...); called under the lock."""
        if step is None:
            step = self._next_step.get(name, 0)
        self._next_step[name] = max(self._next_step.get(name, 0), int(step) + 1)
        return int(step)

    def _keep(self, add: Callable[[Logged, int], object], count: int = 1) -> None:
        with self._lock:
            if self._closed:
                return
            if self.accepted + count > self.max_points:
                self.dropped += count
                first_over, self._capped = not self._capped, True
                ready = False
            else:
                first_over, ready = False, not self._waiting
                self.accepted += count
                add(self._waiting, self._seq)
                self._seq += 1
        if first_over:
            self.on_error(f"metrics: this attempt reached the limit of {self.max_points:,} "
                           "points, results and artifacts; what it logs from now on is dropped")
        elif ready:
            self.on_ready()

    def _refuse(self, text: str) -> None:
        with self._lock:
            self.dropped += 1
            self._errors += 1
            errors = self._errors
        if errors <= MAX_ERROR_LINES:
            self.on_error(text)
        elif errors == MAX_ERROR_LINES + 1:
            self.on_error(f"metrics: more than {MAX_ERROR_LINES} bad values; the next ones "
                           "are dropped without a line each")


def _result_problem(algorithm: object, params: object, metrics: object, artifact: object,
                    metadata: object) -> str | None:
    if not isinstance(algorithm, str) or len(algorithm) > MAX_LABEL_CHARS:
        return f"algorithm must be text of at most {MAX_LABEL_CHARS} characters"
    for what, value in (("params", params), ("metrics", metrics), ("metadata", metadata)):
        if value is not None and not isinstance(value, Mapping):
            return f"{what} must be a dict, not {type(value).__name__}"
    for name, value in dict(metrics or {}).items():
        problem = name_problem(name) or value_problem(value)
        if problem is not None:
            return f"metrics: {problem}"
    if artifact is not None and (not isinstance(artifact, str)
                                 or not 0 < len(artifact) <= MAX_URI_CHARS):
        return f"artifact must be a path or URI of 1 to {MAX_URI_CHARS} characters"
    try:
        size = len(_encode([params or {}, metrics or {}, metadata or {}]))
    except (TypeError, ValueError, OverflowError) as exc:
        return f"params and metadata must be JSON values ({exc})"
    if size > MAX_RESULT_BYTES:
        return (f"params, metrics and metadata take {size:,} bytes as JSON; the limit is "
                f"{MAX_RESULT_BYTES:,} (store big things elsewhere and log their URI)")
    return None
