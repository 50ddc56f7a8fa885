"""Running a service from a console script: uvloop, signals, logging, exit codes."""

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from flowforge.terminal import safe

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_NATS = 3
EXIT_INTERRUPTED = 130

GC_THRESHOLD = (10_000, 20, 20)
"""The cycle collector's young generation runs every 10,000 allocations, not every 700: a
busy coordinator or agent allocates thousands of short-lived objects per batch (freed by
reference counting anyway), and with the default it spent about a sixth of its CPU
collecting them (`python -m bench.run`: coordinator CPU per 20,000 tasks 1.47 → 1.23 s)."""


class TerminalSafeFormatter(logging.Formatter):
    """Log lines with control characters made visible: they quote subjects, ids and reasons
    that came off the bus."""

    def format(self, record: logging.LogRecord) -> str:
        return safe(super().format(record))


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TerminalSafeFormatter(
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])


def install_stop_signals(stop: Callable[[], None]) -> None:
    """First SIGINT/SIGTERM asks for a graceful stop; a second one exits at once."""
    loop = asyncio.get_running_loop()
    seen = {"count": 0}

    def on_signal(signame: str) -> None:
        seen["count"] += 1
        if seen["count"] > 1:
            print(f"\n{signame} again: exiting now", file=sys.stderr)
            os._exit(EXIT_INTERRUPTED)
        print(f"\n{signame}: stopping (again to force)", file=sys.stderr)
        stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not main thread; Windows
            loop.add_signal_handler(sig, on_signal, sig.name)


def tune_gc() -> None:
    """What exists at start (modules, classes, functions) is never scanned again; young
    objects are collected less often (GC_THRESHOLD)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop where available (with GC tuned for a service) and return its
    exit code."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def start_or_close(start: Callable[[], Awaitable[None]],
                         close: Callable[[], Awaitable[None]]) -> None:
    """``start()``; when it fails, ``close()`` what it opened (best effort), then raise."""
    try:
        await start()
    except BaseException:
        with contextlib.suppress(Exception):
            await close()
        raise
