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


# -- what any message on the bus may hold (checked before anything else touches it) -------

MAX_JSON_DEPTH = 64
"""Deepest nesting of objects and arrays in any message, parameters and outputs included.
Deeper JSON is refused before it is decoded: decoding or encoding it again could exhaust the
stack (a 20 KB message nested 10,000 deep used to stop the coordinator for good)."""

MAX_VALUE_DEPTH = 48
"""Deepest nesting of a value FlowForge carries (run parameters, task outputs): the envelope
of any message that holds one stays under MAX_JSON_DEPTH."""

MAX_ID_CHARS = 128
"""Run ids, agent ids and other identifiers: they become NATS subject tokens, and a subject
over the server's 4,096-byte control line makes it close the connection."""

TOKEN_PATTERN = rf"^[A-Za-z0-9_-]{{1,{MAX_ID_CHARS}}}$"
"""An identifier that is safe as one subject token (no '.', '*', '>' or white space)."""

NAME_PATTERN = NAME_RE.pattern

MAX_DELIVERY = 1_000
"""Largest delivery count a report may claim: each claimed delivery beyond the last known
one closes an attempt, so an unbounded count let one forged report write gigabytes."""

MAX_ATTEMPT = 1_000_000
MAX_TIMESTAMP = 32_503_680_000.0
"""Timestamps are seconds since 1970, before the year 3000 (a later one cannot be shown)."""

MAX_TEXT_CHARS = 64 * 1024
"""Free text in a message (error messages, checkpoints, hosts)."""

MAX_KEY_CHARS = 256
"""Longest idempotency key."""

MAX_REJECTED_RAW_BYTES = 4 * 1024
"""How much of a refused message is kept for `flowforge rejected` (the rest is counted)."""

MAX_REJECTED_KEPT = 10_000
"""Refused messages kept; older ones are deleted as new ones come."""

MAX_AGENTS_KEPT = 1_000
"""Agents the coordinator remembers; gone ones are forgotten first to make room."""


_TOKEN_RE = re.compile(TOKEN_PATTERN)


def is_token(text: str) -> bool:
    """True when ``text`` is safe as one subject token (see TOKEN_PATTERN)."""
    return _TOKEN_RE.match(text) is not None
