"""Concurrency limits and priorities: a flow's key option, limit names, the ``limits.*`` API
requests and answers, and the key templates over run parameters. Pure: msgspec and stdlib."""

import re
from enum import StrEnum
from typing import Annotated, Any

import msgspec

from protocol.fields import Token
from protocol.limits import NAME_PATTERN

MAX_LIMIT = 1_000_000
"""Largest limit (a slot count)."""
MAX_PRIORITY = 1_000
"""Priorities go from -MAX_PRIORITY to MAX_PRIORITY; higher goes first."""
MAX_KEY_CHARS = 256
"""A rendered concurrency key is cut to this many characters."""
Priority = Annotated[int, msgspec.Meta(ge=-MAX_PRIORITY, le=MAX_PRIORITY)]
Slots = Annotated[int, msgspec.Meta(ge=0, le=MAX_LIMIT)]
"""A limit: 0 holds everything back (a paused queue), N lets N at once."""
LimitName = Annotated[str, msgspec.Meta(pattern=r"^queue:" + NAME_PATTERN[1:])]
"""A limit that can be set over the API: ``queue:<name>``."""


class Strategy(StrEnum):
    """What a new run does when its concurrency key already has ``limit`` runs going."""

    QUEUE = "queue"
    """It waits (pending) and starts when one of them ends."""
    CANCEL_NEWEST = "cancel_newest"
    """It is cancelled at once, with a note naming the runs that hold the key."""
    CANCEL_IN_PROGRESS = "cancel_in_progress"
    """The oldest run going with that key is cancelled; the new one proceeds."""


class ConcurrencySpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``"concurrency": {"key": "{params.customer}", "limit": 1, "strategy": "queue"}``: at
    most ``limit`` runs going at once with the same rendered key (keys are global: two flows
    with the same rendered key share it; put ``{flow}`` in the template to keep them apart)."""

    key: str
    limit: int = 1
    strategy: Strategy = Strategy.QUEUE


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FIELD = re.compile(r"^(flow|params\.[A-Za-z_][A-Za-z0-9_]*)$")


def template_problem(template: str) -> str | None:
    """Why a key template is not valid (None when it is): only ``{flow}`` and
    ``{params.<name>}`` may stand in braces."""
    if not template or len(template) > MAX_KEY_CHARS:
        return f"must be 1 to {MAX_KEY_CHARS} characters"
    for field in _PLACEHOLDER.findall(template):
        if not _FIELD.match(field):
            return f"{{{field}}} is not {{flow}} or {{params.<name>}}"
    if "{" in _PLACEHOLDER.sub("", template) or "}" in _PLACEHOLDER.sub("", template):
        return "has an unmatched brace"
    return None


def template_params(template: str) -> list[str]:
    """The run parameters a key template takes."""
    return [f[len("params."):] for f in _PLACEHOLDER.findall(template) if f.startswith("params.")]


def render_key(template: str, flow: str, params: dict[str, Any]) -> str:
    """The key of one run: each ``{params.x}`` replaced by that parameter (text as it is,
    anything else as JSON; a missing one as ``null``), ``{flow}`` by the flow's name."""

    def value(match: re.Match[str]) -> str:
        field = match.group(1)
        if field == "flow":
            return flow
        found = params.get(field[len("params."):])
        return found if isinstance(found, str) else msgspec.json.encode(found).decode()

    return _PLACEHOLDER.sub(value, template)[:MAX_KEY_CHARS]


def queue_limit(queue: str) -> str:
    """The name of a queue's limit."""
    return f"queue:{queue}"


# -- the API: <ns>.api.limits.<verb> ---------------------------------------------------------


class SetLimit(msgspec.Struct, frozen=True, kw_only=True):
    """At most ``limit`` tasks of the queue queued or running at once (takes effect now:
    raised, it releases waiting tasks; lowered, nothing running is stopped)."""

    name: LimitName
    limit: Slots


class ListLimits(msgspec.Struct, frozen=True, kw_only=True):
    holders: Annotated[int, msgspec.Meta(ge=0, le=1_000)] = 20
    """How many holders and waiters of each limit to name (the rest are counted)."""


class DeleteLimit(msgspec.Struct, frozen=True, kw_only=True):
    name: LimitName


class Slot(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A holder or a waiter of a limit: a task of a run, or a whole run (no task)."""

    run_id: Token
    task: str | None = None
    priority: int = 0


class LimitInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A limit as it stands: who holds it and who waits for it."""

    name: str
    """``queue:<q>``, ``task:<flow>.<task>`` (a task's max_active), ``flow:<flow>`` (its
    max_active_runs) or ``key:<key>`` (a concurrency key)."""
    limit: int | None = None
    """None: not limited (a queue listed for its waiters only)."""
    origin: str = "api"
    """api (``flowforge limit set``) or code (a flow's definition)."""
    holding: int = 0
    waiting: int = 0
    holders: list[Slot] = []
    """The first of them (``ListLimits.holders``)."""
    waiters: list[Slot] = []
    """The first of them, in the order they will go."""


LIMIT_REQUESTS: dict[tuple[str, str], type[msgspec.Struct]] = {
    ("limits", "set"): SetLimit,
    ("limits", "list"): ListLimits,
    ("limits", "delete"): DeleteLimit,
}
