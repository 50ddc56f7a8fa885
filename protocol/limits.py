"""Size and name limits shared by every part."""

import re

MAX_OUTPUT_BYTES = 256 * 1024
"""Largest JSON-encoded task output; bigger results belong in a file or database."""

MAX_PARAMS_BYTES = 256 * 1024
"""Largest JSON-encoded set of run parameters."""

MAX_TRACEBACK_CHARS = 32 * 1024
"""Tracebacks are cut to this many characters (the end is kept)."""

MAX_LOG_KEPT_CHARS = 64 * 1024
"""The coordinator keeps this much of the end of each task instance's log."""

MAX_LOG_SENT_CHARS = 1024 * 1024
"""An agent sends at most this much log per attempt; the rest is counted, not sent."""

MAX_TASKS_PER_FLOW = 20_000
"""Largest static flow definition."""

MAX_LIST_LIMIT = 1_000
"""Most rows one list request returns."""

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")
"""Flow, task and queue names: they become NATS subject tokens."""

NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME_RE.match(name) is not None


def cut_traceback(text: str) -> str:
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text
    return "…(cut)…\n" + text[-MAX_TRACEBACK_CHARS:]
