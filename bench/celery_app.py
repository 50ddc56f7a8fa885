"""The Celery 5 + Redis side of the benchmark: the app the workers import (``-A bench.celery_app``).

Broker and result backend are the same Redis, ``FLOWFORGE_BENCH_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``). ``bench.celery_side`` starts the workers with ``WORKER_ARGS``,
``--pool POOL --concurrency CONCURRENCY``, and builds its own client app with ``make_app(url)``
for the Redis it started. Both sides get the same ``settings(url)``.

Worker configuration, chosen by measurement on the 2-core benchmark machine (Celery 5.7,
redis-py 8.1, Redis 7.0, Python 3.11; one worker; tasks/s, median of 3 interleaved rounds of
1→1000→1 twice, 1→10,000→1, 5,000 ``noop.delay()``, a 100-chain twice, 200 latency samples; the
machine was shared with another test run, load average ~2.5, so differences under ~15 % are
noise)::

    pool      conc  prefetch  1→1000→1  1→10k→1  singles  chain100  p50 ms  peak RSS
    prefork   2     4           553       534      666      506      1.53    237 MiB
    prefork   2     16          539       560      779      504      1.54    237 MiB
    prefork   2     64          452       525      754      538      1.51    236 MiB
    threads   4     16          437       470      632      407      1.32    132 MiB
    solo      1     16          491       545      805      523      1.15    132 MiB
    solo x2   1     16          708       651      639      481      1.32    190 MiB

- ``prefork`` with ``--concurrency 2`` (one process per core) and a prefetch multiplier of 16
  (32 messages reserved per worker): at or near the top on every workload, tied with
  ``solo`` within the noise, and it is Celery's default pool, the one that runs two tasks at
  once on two cores. ``solo`` is as fast on no-ops (no pipe to a pool process; half the
  memory) but runs one task at a time. ``threads`` was 15-20 % slower everywhere, most
  likely the GIL: the worker's messaging thread competes with the task threads.
  gevent/eventlet are not part of ``celery[redis]`` and were not measured.
  Two ``solo`` workers (``CeleryStack(workers=2, pool="solo")``) are faster on the fan-outs
  and slower on the singles — a caller's choice, not a per-worker setting.
- The multiplier matters little here (1, 4, 16, 64 within noise on the chord; 16 best on
  singles): with ``task_acks_late=False`` (the default, kept) a message is acked when
  received, and the worker's main process, not the prefetch, is the bottleneck.
- Results are kept (``task_ignore_result=False``): the chord's join counts its header's
  results, and the samples wait for results. ``bench.celery_side`` passes
  ``ignore_result=True`` per call where nothing reads a result (the fan-out's root, all but
  the last task of a chain).
- JSON serialisation, no task events (``worker_send_task_events``/``task_send_sent_event``
  off), rate limits disabled; ``--without-gossip --without-mingle --without-heartbeat``
  drop the worker-to-worker chatter (start-up sync, event heartbeats), none of which is on
  a task's path.
"""

import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

REDIS_URL_ENV = "FLOWFORGE_BENCH_REDIS_URL"
DEFAULTS_ENV = "FLOWFORGE_BENCH_CELERY_DEFAULTS"
"""Set to 1: the workers run as a user starts them (``bench.run``'s defaults workload)."""
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

NOOP = "bench.noop"
STARTED_AT = "bench.started_at"
CHILD_NOOP = "bench.child_noop"
GROUP_PARENT = "bench.group_parent"

POOL = "prefork"
CONCURRENCY = 2
"""Per worker: one pool process per core of the 2-core benchmark machine."""
PREFETCH_MULTIPLIER = 16

WORKER_ARGS: tuple[str, ...] = (
    "--loglevel", "WARNING",
    "--without-gossip", "--without-mingle", "--without-heartbeat",
)
"""Command-line options of every ``celery worker`` (the pool and concurrency come from the caller)."""


def settings(url: str, defaults: bool = False) -> dict[str, object]:
    """The Celery configuration of both the workers and the benchmark's client; with
    ``defaults`` only what a user must write (broker, result backend, JSON)."""
    if defaults:
        return {"broker_url": url, "result_backend": url, "task_serializer": "json",
                "result_serializer": "json", "accept_content": ["json"],
                "worker_hijack_root_logger": False, "broker_connection_retry_on_startup": True}
    return {
        "broker_url": url,
        "result_backend": url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": False,
        "task_ignore_result": False,
        "worker_prefetch_multiplier": PREFETCH_MULTIPLIER,
        "worker_pool": POOL,
        "worker_concurrency": CONCURRENCY,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_disable_rate_limits": True,
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
        "result_expires": 3600,
    }


def _noop(*args: object) -> None:
    """Do nothing: the benchmark measures the task system, not the task."""
    return None


def _started_at(*args: object) -> float:
    """The worker's wall clock (``time.time()``) when the task body started."""
    return time.time()


def _child_noop(item: int) -> int:
    """One child of ``group_parent``: return its item."""
    return item


def _group_parent(task: Any, children: int, timeout_s: float) -> int:
    """A parent task: a group of ``children`` ``child_noop`` calls, waited for inside the task
    (``allow_join_result``, the documented way to let a task block on others' results)."""
    from celery import group
    from celery.result import allow_join_result

    result = group(task.app.signature(CHILD_NOOP, args=(i,)) for i in range(children)).apply_async()
    with allow_join_result():
        outputs = result.get(timeout=timeout_s)
    if outputs != list(range(children)):
        raise ValueError("the children's outputs came back wrong")
    return len(outputs)


def make_app(url: str, defaults: bool = False) -> "Celery":
    """A Celery app on Redis ``url`` with the benchmark's tasks registered by name."""
    from celery import Celery

    app = Celery("flowforge_bench", set_as_current=False)
    app.conf.update(settings(url, defaults))
    app.task(name=NOOP)(_noop)
    app.task(name=STARTED_AT)(_started_at)
    app.task(name=CHILD_NOOP)(_child_noop)
    app.task(name=GROUP_PARENT, bind=True)(_group_parent)
    return app


_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """``app`` (what ``celery -A bench.celery_app`` finds), ``noop``, ``started_at``: built on
    first use from ``FLOWFORGE_BENCH_REDIS_URL``, so that the constants and ``settings`` above
    import where Celery is not installed (``bench.celery_side.redis_available()`` says so).

    ``noop(*args) -> None`` and ``started_at(*args) -> float`` (the worker's ``time.time()``
    when the body started) are tasks of ``app``: ``noop.delay()``, ``noop.si()``.
    """
    if name in ("app", "noop", "started_at"):
        if not _built:
            app = make_app(os.environ.get(REDIS_URL_ENV, DEFAULT_REDIS_URL),
                           defaults=os.environ.get(DEFAULTS_ENV) == "1")
            _built.update(app=app, noop=app.tasks[NOOP], started_at=app.tasks[STARTED_AT])
        return _built[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
