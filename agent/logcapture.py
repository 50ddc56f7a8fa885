"""Capturing what a running task logs or prints, to send it in small batches."""

import contextvars
import io
import logging
import sys
import threading
from typing import Any

from protocol.limits import MAX_LOG_SENT_CHARS

current: contextvars.ContextVar["Capture | None"] = contextvars.ContextVar(
    "flowforge_log_capture", default=None
)
"""The capture of the task running in this context (asyncio task or its worker thread)."""


class Capture:
    """Text written by one task attempt, waiting to be sent; bounded per attempt."""

    def __init__(self, header: str) -> None:
        self._header = header
        self._parts: list[str] = []
        self._lock = threading.Lock()
        self._size = len(header)
        self.dropped = 0

    def write(self, text: str) -> None:
        with self._lock:
            if self._size + len(text) > MAX_LOG_SENT_CHARS:
                self.dropped += len(text)
                return
            self._parts.append(text)
            self._size += len(text)

    def take(self) -> str:
        """What was written since the last call (and a note of what was dropped)."""
        with self._lock:
            if not self._parts and not self.dropped:
                return ""  # a task that wrote nothing sends nothing
            text = self._header + "".join(self._parts)
            self._header = ""
            self._parts.clear()
            if self.dropped:
                text += f"\n[… {self.dropped:,} more characters not sent: the log limit is " \
                        f"{MAX_LOG_SENT_CHARS:,} per attempt]\n"
                self.dropped = 0
                self._size = MAX_LOG_SENT_CHARS + 1  # nothing more from now on
            return text


class _Stdout(io.TextIOBase):
    """``sys.stdout`` that also hands a task's prints to its capture."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def write(self, text: str) -> int:
        capture = current.get()
        if capture is not None:
            capture.write(text)
        return self._real.write(text)

    def flush(self) -> None:
        self._real.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._real, "isatty", lambda: False)())


class _Handler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        capture = current.get()
        if capture is not None:
            try:
                capture.write(self.format(record) + "\n")
            except Exception:  # noqa: BLE001 - logging must never break a task
                self.handleError(record)


_installed = False


def install() -> None:
    """Route prints and log records of running tasks to their captures (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    sys.stdout = _Stdout(sys.stdout)
    handler = _Handler(level=logging.DEBUG)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    ))
    logging.getLogger().addHandler(handler)
    task_logger = logging.getLogger("flowforge.task")
    if task_logger.level == logging.NOTSET:
        task_logger.setLevel(logging.INFO)
