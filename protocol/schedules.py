"""A schedule's definition: when a flow runs by itself, and what happens to late or
overlapping fires. Checked here without I/O; the cron expression and the time zone (which
needs the zone database) are checked where fire times are computed (``flowforge.firetimes``)."""

import math
import re
from enum import StrEnum
from typing import Any

import msgspec

from protocol.errors import ErrorCode, FlowForgeError
from protocol.fields import Name, Time

MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 366 * 86400.0
MAX_CATCHUP_WINDOW_S = 366 * 86400.0
DEFAULT_CATCHUP_WINDOW_S = 86400.0
MAX_CRON_CHARS = 200
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


class Overlap(StrEnum):
    """What a fire does while an earlier run of the same schedule is still going (as
    Temporal's schedule overlap policies)."""

    SKIP = "skip"
    """Nothing: the fire is recorded as skipped."""
    BUFFER_ONE = "buffer_one"
    """Wait for the running one; at most one fire waits, later ones are skipped."""
    BUFFER_ALL = "buffer_all"
    """Wait for the running one; every fire waits its turn, in order."""
    CANCEL_OTHER = "cancel_other"
    """Cancel the running one, then start."""
    ALLOW_ALL = "allow_all"
    """Start anyway: runs of the schedule overlap."""


class Catchup(StrEnum):
    """What happens to fires that came due while no coordinator was running."""

    ALL = "all"
    """Run each of them, oldest first (within the catch-up window)."""
    LATEST = "latest"
    """Run the newest one; the others are recorded as skipped."""
    NONE = "none"
    """Run none of them; they are recorded as missed."""


class ScheduleSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One schedule of one flow. Exactly one of ``cron`` (in ``timezone``) or ``every_s``
    (absolute, counted in UTC from ``start_at`` or the epoch)."""

    name: Name
    flow: Name
    cron: str | None = None
    every_s: float | None = None
    timezone: str = "UTC"
    params: dict[str, Any] = {}
    overlap: Overlap = Overlap.SKIP
    catchup: Catchup = Catchup.LATEST
    catchup_window_s: float = DEFAULT_CATCHUP_WINDOW_S
    start_at: Time | None = None
    """No fire before this (UTC epoch seconds)."""
    end_at: Time | None = None
    """No fire after this (UTC epoch seconds)."""
    jitter_s: float = 0.0
    """Each fire starts up to this much after its nominal time (the same delay for the same
    nominal time, so a restart does not move it)."""
    pause_on_failure: bool = False
    """A run of the schedule that fails pauses it."""


class InvalidSchedule(FlowForgeError):
    """A schedule definition is not valid; the message names the schedule and the field."""

    code = ErrorCode.BAD_REQUEST


def parse_duration(text: str, what: str = "duration") -> float:
    """``"15m"``, ``"30s"``, ``"6h"``, ``"2d"``, ``"1w"``, ``"250ms"`` or plain seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise InvalidSchedule(f"{what} {text!r} is not a duration: a number with s, m, h, d "
                              "or w (e.g. 15m, 6h, 30s)")
    return float(match[1]) * _UNIT_S[match[2] or "s"]


def check_schedule(spec: ScheduleSpec) -> None:
    """Raise InvalidSchedule naming what to fix (cron and time zone: ``flowforge.firetimes``)."""
    where = f"schedule {spec.name!r}"
    if (spec.cron is None) == (spec.every_s is None):
        raise InvalidSchedule(f"{where}: give exactly one of cron or every")
    if spec.cron is not None and not 0 < len(spec.cron) <= MAX_CRON_CHARS:
        raise InvalidSchedule(f"{where}: the cron expression must be 1 to {MAX_CRON_CHARS} "
                              "characters")
    if spec.every_s is not None and not MIN_INTERVAL_S <= spec.every_s <= MAX_INTERVAL_S:
        raise InvalidSchedule(f"{where}: every must be from {MIN_INTERVAL_S:g} s to 366 days")
    _check_span(where, "catchup_window", spec.catchup_window_s, 1.0, MAX_CATCHUP_WINDOW_S)
    _check_span(where, "jitter", spec.jitter_s, 0.0, spec.every_s or MAX_INTERVAL_S)
    if spec.start_at is not None and spec.end_at is not None and spec.end_at <= spec.start_at:
        raise InvalidSchedule(f"{where}: end must be after start")


def _check_span(where: str, field: str, value: float, low: float, high: float) -> None:
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidSchedule(f"{where}: {field} must be from {low:g} to {high:g} seconds")


class FireOutcome(StrEnum):
    STARTED = "started"
    """A run was started for the nominal time."""
    SKIPPED = "skipped"
    """Not run, by a policy (overlap, catch-up); the reason says which."""
    MISSED = "missed"
    """Not run: it came due before the catch-up window began."""
    BUFFERED = "buffered"
    """Waits for the schedule's running runs (overlap buffer_one / buffer_all)."""


class ScheduleState(msgspec.Struct, kw_only=True):
    """A stored schedule: its spec and where it is."""

    spec: ScheduleSpec
    paused: bool = False
    note: str | None = None
    """Why it was paused."""
    cursor: float = 0.0
    """The newest nominal time dealt with (run, skipped or missed): it fires after this."""
    origin: str = "cli"
    """Where it was defined: ``code`` (a flow's ``schedules=``) or ``cli`` (the API)."""
    created_at: float = 0.0
    updated_at: float = 0.0


class ScheduleEvent(msgspec.Struct, kw_only=True):
    """On ``<ns>.events.schedule.<name>`` after each commit that changed the schedule."""

    name: str
    state: ScheduleState | None
    """The schedule as it is now; None once deleted."""
    fires: list["FireRecord"] = []
    """The nominal times this commit dealt with."""


class FireRecord(msgspec.Struct, kw_only=True):
    """What became of one nominal time of a schedule (or of a range of them: ``count``)."""

    schedule: str
    nominal: float
    last_nominal: float
    count: int = 1
    outcome: FireOutcome
    reason: str = ""
    run_id: str | None = None
    recorded_at: float = 0.0
