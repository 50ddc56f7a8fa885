"""When a schedule fires: its nominal times in UTC, from a cron expression in an IANA zone
(cronsim, which follows Debian cron across daylight saving) or an absolute interval, and
which of the times that came due while nothing fired still run (the catch-up policy).

Daylight saving, as Debian/Vixie cron: a job at a fixed local time that does not exist
(clocks spring forward) fires once, right after the gap; one at a local time that occurs
twice (clocks fall back) fires once, at the first. Jobs with ``*`` in the minute or hour
field follow the clock as it is: in a repeated hour they fire in both passes, each pass its
own instant. A nominal time is a UTC instant, so no instant is ever fired twice.
"""

import collections
import hashlib
import itertools
import math
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cronsim import CronSim, CronSimError

from protocol.schedules import Catchup, InvalidSchedule, ScheduleSpec, check_schedule

ON_TIME_S = 60.0
"""A fire this late is still on time: ``catchup=none`` runs it (a busy coordinator is late,
not down)."""
MAX_CATCHUP_RUNS = 1000
"""At most this many missed fires run at once with ``catchup=all``; the older ones are
recorded as skipped."""
MAX_RECORDED = 100
"""Skipped fires recorded one by one per catch-up; beyond, one range says how many."""
PROBE_MAX = 2 * (MAX_CATCHUP_RUNS + 1)
"""Most times one walk of a cron's catch-up looks at (``_cron_tail``)."""


def zone_of(spec: ScheduleSpec) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(spec.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(f"schedule {spec.name!r}: {spec.timezone!r} is not an IANA time "
                              "zone (e.g. UTC, Europe/Paris, America/New_York)") from None


def check_timing(spec: ScheduleSpec) -> None:
    """``check_schedule`` and what it cannot check without I/O: the zone and the cron
    expression (one that can never fire, like ``0 0 30 2 *``, is refused too)."""
    check_schedule(spec)
    zone_of(spec)
    if spec.cron is not None:
        try:
            next(CronSim(spec.cron, datetime(2000, 1, 1, tzinfo=UTC)))
        except (CronSimError, StopIteration, ValueError) as exc:
            raise InvalidSchedule(f"schedule {spec.name!r}: cron {spec.cron!r} is not valid: "
                                  f"{exc or 'it never fires'}") from None


def nominal_times(spec: ScheduleSpec, after: float) -> Iterator[float]:
    """The nominal fire times strictly after ``after`` (UTC epoch seconds), increasing,
    within the schedule's start and end."""
    start = max(after, (spec.start_at - 1e-6) if spec.start_at is not None else after)
    times = _interval_times(spec, start) if spec.every_s is not None else _cron_times(spec, start)
    for t in times:
        if spec.end_at is not None and t > spec.end_at:
            return
        yield t


def next_fires(spec: ScheduleSpec, after: float, count: int) -> list[float]:
    return list(itertools.islice(nominal_times(spec, after), count))


def fire_at(spec: ScheduleSpec, nominal: float) -> float:
    """When a nominal time really fires: later by a jitter fixed by the schedule's name and
    the nominal time (the same after a restart)."""
    if spec.jitter_s <= 0:
        return nominal
    digest = hashlib.blake2b(f"{spec.name}|{nominal!r}".encode(), digest_size=8).digest()
    return nominal + spec.jitter_s * int.from_bytes(digest) / 2.0**64


def _interval_times(spec: ScheduleSpec, after: float) -> Iterator[float]:
    assert spec.every_s is not None
    anchor = spec.start_at or 0.0
    k = max(0, int((after - anchor) // spec.every_s) + 1)
    while True:
        t = anchor + k * spec.every_s
        if t > after:
            yield t
        k += 1


def _cron_times(spec: ScheduleSpec, after: float) -> Iterator[float]:
    assert spec.cron is not None
    zone = zone_of(spec)
    if _follows_clock(spec.cron):
        yield from _clock_times(spec.cron, zone, after)
        return
    last = after
    for local in CronSim(spec.cron, datetime.fromtimestamp(int(after), zone)):
        t = local.timestamp()
        if t > last:  # a fixed-time job restarted in a repeated hour may land before `after`
            last = t
            yield t


def _follows_clock(cron: str) -> bool:
    """A ``*`` in the minute or hour field: the job follows the wall clock as it is (no
    daylight-saving fix-up, as in Debian cron and cronsim)."""
    parts = cron.split()
    return len(parts) != 5 or parts[0].startswith("*") or parts[1].startswith("*")


def _clock_times(cron: str, zone: zoneinfo.ZoneInfo, after: float) -> Iterator[float]:
    """Every instant whose wall clock matches, one stretch of constant UTC offset at a time:
    within a stretch the wall clock is UTC plus a fixed offset, so the expression is matched
    on naive wall times. (cronsim stepped over times repeated by a 30-minute shift.)"""
    t, offset = float(int(after)), _offset(zone, after)
    while True:
        wall = datetime.fromtimestamp(t, UTC).replace(tzinfo=None) + offset
        candidate = (next(CronSim(cron, wall)) - offset).replace(tzinfo=UTC).timestamp()
        if _offset(zone, candidate) == offset:
            if candidate > after:
                yield candidate
            t = candidate
            continue
        shift = _shift_in(zone, t, candidate)  # the clock was set on the way: go on in the
        t, offset = shift - 1, _offset(zone, shift)  # new offset from the moment it was


def _offset(zone: zoneinfo.ZoneInfo, t: float) -> timedelta:
    offset = datetime.fromtimestamp(t, zone).utcoffset()
    assert offset is not None
    return offset


def _shift_in(zone: zoneinfo.ZoneInfo, start: float, end: float) -> float:
    """The first second in (start, end] with another offset than ``start`` (halving)."""
    before = _offset(zone, start)
    low, high = start, end
    while True:
        mid = float((low + high) // 2)
        if not low < mid < high:
            return high
        low, high = (mid, high) if _offset(zone, mid) == before else (low, mid)


@dataclass(frozen=True, slots=True)
class Skipped:
    """Nominal times that did not run, and why: one time, or a range of them."""

    first: float
    last: float
    count: int
    reason: str


@dataclass(slots=True)
class CatchUp:
    """What to do with the nominal times due in (cursor, now]."""

    run: list[float] = field(default_factory=list)
    """Nominal times to run now, oldest first."""
    skipped: list[Skipped] = field(default_factory=list)
    cursor: float = 0.0
    """The newest nominal time dealt with: the next catch-up starts after it."""


def catch_up(spec: ScheduleSpec, cursor: float, now: float) -> CatchUp:
    """Apply the catch-up policy to the times due since ``cursor``: those older than the
    catch-up window are missed; of the rest, ``all`` runs each (at most MAX_CATCHUP_RUNS),
    ``latest`` the newest, ``none`` only one still on time."""
    out = CatchUp(cursor=cursor)
    window_start = now - spec.catchup_window_s - spec.jitter_s  # a fire is up to jitter late
    _missed_before(spec, out, window_start)
    since = max(out.cursor, math.nextafter(window_start, -math.inf))  # the window's start is in
    due = _due(spec, since, now)
    if due.count:
        out.cursor = due.tail[-1]
    last = list(due.tail)[-1:]
    keep = {Catchup.ALL: list(due.tail)[-MAX_CATCHUP_RUNS:], Catchup.LATEST: last,
            Catchup.NONE: [t for t in last if now - fire_at(spec, t) <= ON_TIME_S]}[spec.catchup]
    reason = {Catchup.ALL: f"catch-up runs at most {MAX_CATCHUP_RUNS} at once",
              Catchup.LATEST: "catch-up latest: a newer time ran instead",
              Catchup.NONE: "catch-up none: it came due while no coordinator ran"}[spec.catchup]
    due.record_all_but(out, len(keep), reason)
    out.run = keep
    return out


def _missed_before(spec: ScheduleSpec, out: CatchUp, until: float) -> None:
    """Times due before the window: counted (cheaply for intervals), never run."""
    times = itertools.takewhile(lambda t: t < until, nominal_times(spec, out.cursor))
    missed = list(itertools.islice(times, MAX_RECORDED + 1))
    if not missed:
        return
    reason = "outside the catch-up window"
    if len(missed) <= MAX_RECORDED:
        _record(out, missed, reason)
    elif spec.every_s is not None:
        anchor = spec.start_at or 0.0
        last = anchor + ((until - anchor) // spec.every_s) * spec.every_s
        last = last if last < until else last - spec.every_s
        count = round((last - missed[0]) / spec.every_s) + 1
        out.skipped.append(Skipped(missed[0], last, count, reason))
        out.cursor = last
        return
    else:  # a cron range: its first, and where the window begins (not counted one by one)
        out.skipped.append(Skipped(missed[0], until, 0, reason))
        out.cursor = until - 1e-6
        return
    out.cursor = missed[-1]


def due_span(spec: ScheduleSpec, since: float, now: float) -> tuple[list[float], float, int]:
    """The times in (since, now] without walking them all: the first MAX_RECORDED + 1, the
    last (``since`` when none) and how many (0 when a cron's were not counted)."""
    due = _due(spec, since, now)
    last = due.tail[-1] if due.count else since
    return due.head, last, due.count if due.counted else 0


def _due(spec: ScheduleSpec, since: float, now: float) -> "_Due":
    """The times in (since, now]: past the first few, an interval's are counted and its newest
    computed, and a cron's newest found by looking back from now, not walked one by one (a
    window of days of a per-second or per-minute schedule)."""
    due = _Due()
    times = itertools.takewhile(lambda t: t <= now, nominal_times(spec, since))
    for t in itertools.islice(times, MAX_RECORDED + 1):
        due.add(t)
    if due.count <= MAX_RECORDED:
        return due
    if spec.every_s is None:
        _cron_tail(spec, due, now)
        return due
    every, anchor = spec.every_s, spec.start_at or 0.0
    end = now if spec.end_at is None else min(now, spec.end_at)
    last = int((end - anchor) // every) + 1
    while anchor + last * every > end:  # the same sums as _interval_times, so the same floats
        last -= 1
    first = round((due.head[0] - anchor) / every)
    due.count = last - first + 1
    due.tail.clear()
    due.tail.extend(anchor + k * every for k in range(max(first, last - MAX_CATCHUP_RUNS), last + 1))
    return due


def _cron_tail(spec: ScheduleSpec, due: "_Due", now: float) -> None:
    """The newest MAX_CATCHUP_RUNS + 1 times up to now, found by walking forward from starts
    before now, each walk cut off at PROBE_MAX times: the start moves back (doubling) while it
    has too few after it, and halfway back towards the last start with too few when it has
    too many. Times are a second apart at least, so that ends within about 2 x log2(window)
    walks, however the times bunch. Reaching back to the head, every time was seen and is
    counted; if not, the times between are not (``counted`` is False)."""
    need, seen = MAX_CATCHUP_RUNS + 1, due.head[-1]
    span = max(1.0, (seen - due.head[0]) / MAX_RECORDED * need * 2)  # from the head's density
    start, early, late = max(seen, now - span), None, now
    while True:
        walk = itertools.takewhile(lambda t: t <= now, nominal_times(spec, start))
        times = list(itertools.islice(walk, PROBE_MAX))
        if len(times) < PROBE_MAX and (len(times) >= need or start == seen):
            break
        if len(times) < PROBE_MAX:  # too few after start: look further back
            late = start
            start = max(seen, now - 2 * (now - start)) if early is None else (early + late) / 2
        else:  # too many to walk: halfway towards the last start with too few
            early = start
            start = (early + late) / 2
    due.tail.extend(times)
    if start == seen:
        due.count += len(times)
    else:
        due.counted = False


class _Due:
    """The times due, without keeping them all: the first few (recorded one by one), the
    last MAX_CATCHUP_RUNS (the ones that may run) and how many."""

    def __init__(self) -> None:
        self.head: list[float] = []
        self.tail: collections.deque[float] = collections.deque(maxlen=MAX_CATCHUP_RUNS + 1)
        self.count = 0
        self.counted = True
        """False when the times between head and tail were not counted (``count`` is less)."""

    def add(self, t: float) -> None:
        if len(self.head) <= MAX_RECORDED:
            self.head.append(t)
        self.tail.append(t)
        self.count += 1

    def record_all_but(self, out: CatchUp, kept: int, reason: str) -> None:
        """Record every time but the last ``kept`` as skipped (a range past MAX_RECORDED)."""
        skipped = self.count - kept if self.counted else len(self.head) + len(self.tail)
        for t in self.head[:min(skipped, MAX_RECORDED)]:
            out.skipped.append(Skipped(t, t, 1, reason))
        if skipped > MAX_RECORDED:  # a range; its count 0 when the times were not counted
            out.skipped.append(Skipped(self.head[MAX_RECORDED], self.tail[-(kept + 1)],
                                       skipped - MAX_RECORDED if self.counted else 0, reason))


def _record(out: CatchUp, times: list[float], reason: str) -> None:
    for t in times[:MAX_RECORDED]:
        out.skipped.append(Skipped(t, t, 1, reason))
    if len(times) > MAX_RECORDED:
        rest = times[MAX_RECORDED:]
        out.skipped.append(Skipped(rest[0], rest[-1], len(rest), reason))
