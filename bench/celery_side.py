"""The Celery 5 + Redis side of the benchmark: a real redis-server and ``celery worker`` processes.

``CeleryStack`` is an async context manager like ``bench.stack.Stack``: it starts
``redis-server`` on a free loopback port (no persistence, files in ``workdir``) and ``workers``
``celery -A bench.celery_app worker`` processes from the repository root, waits until every
worker answers ``app.control.ping`` and one warm-up task came back, and stops everything
(SIGTERM, then SIGKILL of the process group) on exit, also when starting failed.

The sample functions — ``wide``, ``singles``, ``fanout``, ``chain``, ``dispatch_latency`` — are
plain **synchronous** functions that block on the Celery client. From asyncio code run them
with ``await stack.run(wide, stack, 1000)``: that runs the call in the stack's one dedicated
client thread, so every sample reuses the same Redis connections (Celery keeps its result
backend per thread), and the event loop stays free. Each returns a dict with ``wall_s`` and
the rate fields ``bench.workloads`` uses (``tasks_per_s``, ``runs_per_s``, ``ms_per_hop``),
or raises ``bench.workloads.WorkloadError``; a stack that does not start raises
``bench.stack.StackError``.

This module imports Celery only when it needs it, so ``redis_available()`` can say that
Celery is missing. ``python -m bench.celery_side --quick`` is a smoke run printing a table.
"""

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import os
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bench import celery_app as capp
from bench.report import percentile
from bench.stack import (
    READY_TIMEOUT_S,
    BaseStack,
    Proc,
    StackError,
    check_running,
    child_pids,
    free_port,
    memory_kib,
    spawn,
    stop_all,
)
from bench.workloads import WorkloadError

if TYPE_CHECKING:
    from celery import Celery
    from celery.canvas import Signature
    from celery.result import AsyncResult

SAMPLE_TIMEOUT_S = 300.0
PING_TIMEOUT_S = 1.0
CLOSE_TIMEOUT_S = 5.0
WAIT_SLICE_S = 1.0
"""How often a sample waiting for results checks that the processes still run."""
STOP_GRACE_S = 5.0
"""SIGTERM (a warm shutdown) to SIGKILL; an idle worker exits in about a second."""
T = TypeVar("T")


def redis_available() -> str | None:
    """None when the Celery side can run here, else why not (for a skip or an error message)."""
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH (Debian/Ubuntu: apt-get install redis-server)"
    missing = [m for m in ("celery", "redis") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"{' and '.join(missing)} not importable in {sys.executable} "
                "(pip install 'celery[redis]>=5.3', or the project's 'bench' extra)")
    return None


async def _redis_pong(port: int) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers ``PING`` right now."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 1.0)).startswith(b"+PONG")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _tree_memory(pid: int) -> dict[str, int]:
    """Current and peak RSS of ``pid`` plus its direct children (the prefork pool), summed."""
    pids = [pid, *child_pids(pid)]
    out = {"rss_kib": 0, "peak_rss_kib": 0, "processes": 0}
    for one in pids:
        mem = memory_kib(one)
        if mem:
            out["processes"] += 1
            out["rss_kib"] += mem.get("rss_kib", 0)
            out["peak_rss_kib"] += mem.get("peak_rss_kib", 0)
    return out


def _settle(future: "asyncio.Future[Any]", value: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting task was cancelled
        return
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)


class ClientThread:
    """One daemon thread running blocking Celery client calls in order.

    One thread, so that Celery's per-thread result backend (its Redis connection and pub/sub
    subscription) is reused from sample to sample; a daemon, so that a sample still blocked
    on a Redis that was stopped under it (after Ctrl-C) cannot keep the interpreter alive.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="celery-client", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    async def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` in the thread; awaits its value or exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            value, error = None, None
            try:
                value = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_settle, future, value, error)

        self._jobs.put(job)
        return await future

    def close(self) -> None:
        """Let the thread end after the call it is running (if any)."""
        self._jobs.put(None)


@dataclass(slots=True)
class CeleryStack(BaseStack):
    """``async with CeleryStack(workdir, workers=1, concurrency=2) as s: await s.run(wide, s, 1000)``.

    Worker ``i`` is named ``worker<i>`` (its ``--hostname worker<i>@%h`` and log file).
    ``pool`` and ``prefetch_multiplier`` override ``bench.celery_app`` (for tuning runs).
    """

    workdir: Path
    workers: int = 1
    concurrency: int = capp.CONCURRENCY
    pool: str = capp.POOL
    prefetch_multiplier: int | None = None
    defaults: bool = False
    """Workers as a user starts them: ``celery -A app worker``, no options, an app that sets
    only its broker, result backend and JSON (``pool``/``concurrency``/prefetch ignored)."""
    url: str = ""
    redis: Proc | None = None
    worker_procs: list[Proc] = field(default_factory=list)
    app: "Celery | None" = None
    stopped: dict[str, Any] = field(default_factory=dict)
    """How long stopping took and the exit codes (filled by ``stop()``)."""
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set by ``stop()``: samples waiting for results raise ``WorkloadError`` within a second."""
    _thread: ClientThread | None = None

    async def start(self) -> None:
        """Start Redis, wait for its PONG, start the workers, wait for their pings and a task."""
        reason = redis_available()
        if reason is not None:
            raise StackError(reason)
        deadline = time.monotonic() + READY_TIMEOUT_S
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        self.redis = self._spawn_redis(port)
        while not await _redis_pong(port):
            self._check(deadline, "redis-server to answer PING")
            await asyncio.sleep(0.05)
        env = os.environ | {capp.REDIS_URL_ENV: self.url,
                            capp.DEFAULTS_ENV: "1" if self.defaults else "0"}
        for i in range(self.workers):
            name = f"worker{i}"
            self.worker_procs.append(spawn(name, self._worker_argv(name), self.workdir / f"{name}.log", env))
        self.app = capp.make_app(self.url, self.defaults)
        self._thread = ClientThread()
        await self.run(self._wait_for_workers, deadline)

    def _spawn_redis(self, port: int) -> Proc:
        binary = shutil.which("redis-server")
        assert binary is not None
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir), "--loglevel", "warning"]
        return spawn("redis-server", argv, self.workdir / "redis-server.log")

    def _worker_argv(self, name: str) -> list[str]:
        argv = [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker",
                "--hostname", f"{name}@%h"]
        if self.defaults:
            return [*argv, "--loglevel", "WARNING"]
        argv += ["--pool", self.pool, "--concurrency", str(self.concurrency), *capp.WORKER_ARGS]
        if self.prefetch_multiplier is not None:
            argv += ["--prefetch-multiplier", str(self.prefetch_multiplier)]
        return argv

    def processes(self) -> list[Proc]:
        """Redis and the workers, those started so far."""
        return [p for p in (self.redis, *self.worker_procs) if p is not None]

    def _check(self, deadline: float, what: str) -> None:
        check_running(self.processes(), deadline, what)

    def _wait_for_workers(self, deadline: float) -> None:
        """Blocking: ping until every worker answered, then one round trip of a no-op task."""
        app = self.client()
        wanted = {f"worker{i}" for i in range(self.workers)}
        while True:
            replies = app.control.ping(timeout=PING_TIMEOUT_S)
            answered = {host.partition("@")[0] for reply in replies for host in reply}
            if wanted <= answered:
                break
            self._check(deadline, f"workers to answer a ping ({sorted(wanted - answered)} silent)")
        try:
            _await_result(self, app.tasks[capp.NOOP].delay(), max(1.0, deadline - time.monotonic()))
        except WorkloadError as exc:
            raise StackError(f"the warm-up task did not come back: {exc}") from None

    def client(self) -> "Celery":
        """The benchmark's Celery app, connected to this stack's Redis."""
        if self.app is None:
            raise StackError("the Celery stack is not started")
        return self.app

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the stack's client thread (Celery's client blocks), e.g. a sample."""
        if self._thread is None:
            raise StackError("the Celery stack is not started")
        return await self._thread.call(functools.partial(fn, *args))

    def memory(self) -> dict[str, dict[str, int]]:
        """Current and peak RSS of redis-server and of each worker with its pool processes."""
        out: dict[str, dict[str, int]] = {}
        if self.redis is not None:
            out["redis-server"] = memory_kib(self.redis.popen.pid)
        for proc in self.worker_procs:
            out[proc.name] = _tree_memory(proc.popen.pid)
        return out

    def log_tails(self) -> str:
        return "\n".join(p.tail() for p in self.processes())

    async def _stop(self) -> None:
        """Close the client, stop the workers, then Redis."""
        thread, self._thread = self._thread, None
        self.stopping.set()  # a sample still running (its caller was cancelled) gives up
        if thread is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(thread.call(self._close_client), CLOSE_TIMEOUT_S)
            thread.close()
        workers_s, codes = await stop_all(self.worker_procs, STOP_GRACE_S)
        self.stopped = {"workers_s": workers_s, "worker_exit_codes": codes}
        if self.redis is not None:
            redis_s, [code] = await stop_all([self.redis], STOP_GRACE_S)
            self.stopped |= {"redis_s": redis_s, "redis_exit_code": code}
        self.app = None

    def _close_client(self) -> None:
        """Close the result-backend and broker connections of the client thread."""
        app = self.app
        if app is None:
            return
        with contextlib.suppress(Exception):
            consumer = app.backend.result_consumer
            consumer.stop()
            consumer.subscribed_to.clear()  # results freed later must not unsubscribe via Redis
            app.backend.client.close()
        with contextlib.suppress(Exception):
            app.pool.force_close_all()
        app.close()


# --- samples: blocking, one measurement each ------------------------------------------------


def _noop(app: "Celery", *, keep_result: bool = True) -> "Signature":
    """An immutable ``noop`` signature; ``keep_result=False`` stores no result for it."""
    sig = app.signature(capp.NOOP, immutable=True)
    return sig if keep_result else sig.set(ignore_result=True)


def _wait(stack: CeleryStack, what: str, get: Callable[[float], T], timeout_s: float) -> T:
    """``get(slice_s)`` until it returns, checking between slices that every process still runs.

    Turns Celery's timeout, and a worker or Redis that exited, into ``WorkloadError``.
    """
    from celery.exceptions import TimeoutError as CeleryTimeout

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return get(min(WAIT_SLICE_S, max(0.01, deadline - time.monotonic())))
        except CeleryTimeout:
            pass
        if stack.stopping.is_set():
            raise WorkloadError(f"celery: {what}: the stack is stopping")
        try:
            for proc in stack.processes():
                proc.check_alive()
        except StackError as exc:
            raise WorkloadError(f"celery: {what}: {exc}") from None
        if time.monotonic() >= deadline:
            raise WorkloadError(f"celery: {what}: not back after {timeout_s:g} s\n{stack.log_tails()}")


def _await_result(stack: CeleryStack, result: "AsyncResult", timeout_s: float) -> Any:
    """The value of the task ``result`` names, through Redis pub/sub.

    Waits on a fresh ``AsyncResult(result.id)``: the one ``apply_async`` returns for a chain
    links its parents, and ``get()`` on it re-reads every parent's state (for a chord, all
    ``width`` header results) each time it wakes up — 15,000 Redis GETs and 2.3 s of client
    CPU for a 1→1000→1 sample, on the same two cores as the worker.
    """
    fresh = stack.client().AsyncResult(result.id)
    return _wait(stack, f"the result of {result.id}", lambda t: fresh.get(timeout=t), timeout_s)


def _await_all(stack: CeleryStack, results: list["AsyncResult"], timeout_s: float) -> list[Any]:
    """All results, in order, collected through Redis pub/sub (``ResultSet.join_native``)."""
    from celery.result import ResultSet

    rs = ResultSet(results, app=stack.client())
    return _wait(stack, f"{len(results)} results", lambda t: list(rs.join_native(timeout=t)), timeout_s)


def wide(stack: CeleryStack, width: int, timeout_s: float = SAMPLE_TIMEOUT_S) -> dict[str, Any]:
    """root → ``width`` no-ops → join: ``chain(noop.si(), chord([noop.si()] * width, noop.si()))``.

    Wall time from the submit to the join's result; ``tasks`` counts root and join too.
    """
    from celery import chain as celery_chain
    from celery import chord

    app = stack.client()
    header = [_noop(app) for _ in range(width)]
    flow = celery_chain(_noop(app, keep_result=False), chord(header, _noop(app)))
    t0 = time.perf_counter()
    result = flow.apply_async()
    submitted = time.perf_counter()
    _await_result(stack, result, timeout_s)
    wall = time.perf_counter() - t0
    tasks = width + 2
    return {"wall_s": wall, "tasks": tasks, "tasks_per_s": tasks / wall, "submit_s": submitted - t0}


def fanout(stack: CeleryStack, width: int = 10_000, timeout_s: float = SAMPLE_TIMEOUT_S) -> dict[str, Any]:
    """FlowForge's 1 → ``width`` → 1 ``fanout`` workload (10,000 by default): the same sample as
    ``wide``, whose ``wall_s`` the comparison reports."""
    return wide(stack, width, timeout_s)


def singles(stack: CeleryStack, count: int, timeout_s: float = SAMPLE_TIMEOUT_S) -> dict[str, Any]:
    """``count`` independent ``noop.delay()`` calls; wall time from the first submit to the last
    result (the counterpart of FlowForge's trigger → single-task run)."""
    task = stack.client().tasks[capp.NOOP]
    t0 = time.perf_counter()
    results = [task.delay() for _ in range(count)]
    published = time.perf_counter()
    _await_all(stack, results, timeout_s)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "tasks": count, "runs": count, "publish_s": published - t0,
            "tasks_per_s": count / wall, "runs_per_s": count / wall}


def chain(stack: CeleryStack, length: int, timeout_s: float = SAMPLE_TIMEOUT_S) -> dict[str, Any]:
    """A chain of ``length`` ``noop.si()``: wall time to the last result, and ms per hop."""
    from celery import chain as celery_chain

    app = stack.client()
    flow = celery_chain(*[_noop(app, keep_result=False) for _ in range(length - 1)], _noop(app))
    t0 = time.perf_counter()
    _await_result(stack, flow.apply_async(), timeout_s)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "tasks": length, "tasks_per_s": length / wall,
            "ms_per_hop": 1000.0 * wall / length}


def dispatch_latency(
    stack: CeleryStack, count: int, interval_s: float = 0.01, timeout_s: float = SAMPLE_TIMEOUT_S
) -> dict[str, Any]:
    """One ``started_at`` task every ``interval_s``; latency = the worker's ``time.time()`` when
    the task body started minus ``time.time()`` just before the submit (same host, same clock)."""
    task = stack.client().tasks[capp.STARTED_AT]
    submitted: list[float] = []
    results: list[AsyncResult] = []
    t0 = time.perf_counter()
    for i in range(count):
        if stack.stopping.is_set():
            raise WorkloadError("celery: dispatch latency: the stack is stopping")
        delay = t0 + i * interval_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        submitted.append(time.time())
        results.append(task.delay())
    started = _await_all(stack, results, timeout_s)
    wall = time.perf_counter() - t0
    ms = sorted(1000.0 * (s - t) for s, t in zip(started, submitted, strict=True))
    return {"wall_s": wall, "samples": count, "p50_ms": percentile(ms, 0.5),
            "p99_ms": percentile(ms, 0.99), "mean_ms": statistics.fmean(ms), "max_ms": ms[-1]}


# --- python -m bench.celery_side -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sizes:
    """Workload sizes of one command-line run."""

    wide: int
    fanout: int
    singles: int
    chain: tuple[int, ...]
    latency: int


QUICK = Sizes(wide=100, fanout=1000, singles=200, chain=(20,), latency=50)
FULL = Sizes(wide=1000, fanout=10_000, singles=5000, chain=(100, 200), latency=500)


def plan(sizes: Sizes) -> list[tuple[str, str, Callable[[CeleryStack], dict[str, Any]]]]:
    """(label, size, sample) per row of the table."""
    rows: list[tuple[str, str, Callable[[CeleryStack], dict[str, Any]]]] = [
        (f"wide 1→{sizes.wide:,}→1", f"{sizes.wide + 2:,} tasks", lambda s: wide(s, sizes.wide)),
        (f"fan-out 1→{sizes.fanout:,}→1", f"{sizes.fanout + 2:,} tasks",
         lambda s: fanout(s, sizes.fanout)),
        ("singles noop.delay()", f"{sizes.singles:,} tasks", lambda s: singles(s, sizes.singles)),
    ]
    rows += [(f"chain of {n}", f"{n} tasks", functools.partial(chain, length=n)) for n in sizes.chain]
    rows.append(("dispatch latency, 1 per 10 ms", f"{sizes.latency} tasks",
                 lambda s: dispatch_latency(s, sizes.latency)))
    return rows


def describe(sample: dict[str, Any]) -> str:
    """The rate columns of one sample, whatever its workload."""
    if "p50_ms" in sample:
        return f"p50 {sample['p50_ms']:.2f} ms  p99 {sample['p99_ms']:.2f} ms"
    text = f"{sample['tasks_per_s']:,.0f} tasks/s"
    if "ms_per_hop" in sample:
        text += f"  {sample['ms_per_hop']:.2f} ms/hop"
    if "publish_s" in sample:
        text += f"  publish {sample['publish_s']:.3f} s"
    return text


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


async def measure(workdir: Path, ns: argparse.Namespace) -> list[list[str]]:
    """One stack, every workload once; rows for ``table``."""
    rows = []
    async with CeleryStack(workdir, ns.workers, ns.concurrency, ns.pool, ns.prefetch) as stack:
        for label, size, sample in plan(QUICK if ns.quick else FULL):
            result = await stack.run(sample, stack)
            print(f"  {label}: {result['wall_s']:.3f} s", file=sys.stderr, flush=True)
            rows.append([label, size, f"{result['wall_s']:.3f}", describe(result)])
        mem = stack.memory()
    workers = [m["peak_rss_kib"] for name, m in mem.items() if name.startswith("worker")]
    rows.append(["peak RSS", "", "", f"workers {_mib(sum(workers))}, "
                 f"redis-server {_mib(mem.get('redis-server', {}).get('peak_rss_kib', 0))}"])
    return rows


def table(rows: list[list[str]]) -> str:
    rows = [["workload", "size", "wall s", "rate"], *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(widths[j]) for j, c in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.celery_side",
                                description="Measure Celery + Redis on the benchmark workloads, once each.")
    p.add_argument("--quick", action="store_true", help="smoke sizes (default: the full sizes)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=capp.CONCURRENCY,
                   help="--concurrency of each worker (default: %(default)s)")
    p.add_argument("--pool", default=capp.POOL, choices=("prefork", "threads", "solo"),
                   help="--pool of each worker (default: %(default)s)")
    p.add_argument("--prefetch", type=int, default=None, metavar="N",
                   help=f"--prefetch-multiplier (default: {capp.PREFETCH_MULTIPLIER})")
    p.add_argument("--workdir", type=Path, help="keep redis and worker logs here (default: a temp dir)")
    return p


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    reason = redis_available()
    if reason is not None:
        print(f"bench.celery_side: {reason}", file=sys.stderr)
        return 3
    with contextlib.ExitStack() as cleanup:
        if ns.workdir is not None:
            ns.workdir.mkdir(parents=True, exist_ok=True)
            workdir = ns.workdir
        else:
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="celery-bench-")))
        try:
            rows = asyncio.run(measure(workdir, ns))
        except (StackError, WorkloadError) as exc:
            print(f"bench.celery_side: {exc}", file=sys.stderr)
            return 1
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
