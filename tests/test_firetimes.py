"""Fire times across daylight saving in many zones, against an oracle written from the rules
(not from cronsim): a fixed local time fires once a day — right after a gap it falls in, at
the first of two occurrences — and a ``*`` job fires at every instant whose wall clock
matches. Plus intervals, start/end, jitter and the catch-up policies."""

import itertools
import zoneinfo
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowforge import firetimes
from flowforge.firetimes import (
    MAX_RECORDED,
    ON_TIME_S,
    catch_up,
    check_timing,
    fire_at,
    nominal_times,
)
from protocol.schedules import Catchup, InvalidSchedule, ScheduleSpec, parse_duration

ZONES = [
    "UTC", "Europe/Paris", "America/New_York", "Europe/Dublin",  # Dublin: "negative" DST
    "Australia/Lord_Howe",  # a 30-minute shift
    "Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns", "Pacific/Chatham",  # :30, :45 offsets
    "Antarctica/Troll",  # a 2-hour shift
    "Europe/Moscow", "America/Sao_Paulo", "Pacific/Apia",  # rules changed; Apia skipped a day
    "Africa/Casablanca",  # DST suspended for Ramadan: four shifts a year
    "America/Santiago", "Asia/Tehran",
]
MINUTE = 60.0


def spec(cron: str | None = None, zone: str = "UTC", **kw: object) -> ScheduleSpec:
    return ScheduleSpec(name="s", flow="f", cron=cron, timezone=zone, **kw)  # type: ignore[arg-type]


def between(s: ScheduleSpec, start: float, end: float) -> list[float]:
    return list(itertools.takewhile(lambda t: t <= end, nominal_times(s, start)))


def transitions(zone: zoneinfo.ZoneInfo, year: int) -> list[float]:
    """UTC instants in ``year`` where the zone's offset changes (to the hour)."""
    t = datetime(year, 1, 1, tzinfo=UTC)
    out, before = [], t.astimezone(zone).utcoffset()
    while t.year == year:
        t += timedelta(hours=1)
        now = t.astimezone(zone).utcoffset()
        if now != before:
            out.append(t.timestamp())
        before = now
    return out


def fixed_time_oracle(zone: zoneinfo.ZoneInfo, minutes: set[int], hours: set[int],
                      start: float, end: float) -> list[float]:
    """Every local date and matching local time: the instant it names (the first of two),
    or the first real minute after it when it does not exist."""
    found: set[float] = set()
    day = datetime.fromtimestamp(start, zone).date() - timedelta(days=1)
    last = datetime.fromtimestamp(end, zone).date() + timedelta(days=1)
    while day <= last:
        for h, m in itertools.product(sorted(hours), sorted(minutes)):
            naive = datetime(day.year, day.month, day.day, h, m)
            found.add(_real_instant(naive, zone))
        day += timedelta(days=1)
    return sorted(t for t in found if start < t <= end)


def _real_instant(naive: datetime, zone: zoneinfo.ZoneInfo) -> float:
    while True:
        aware = naive.replace(tzinfo=zone, fold=0)
        back = datetime.fromtimestamp(aware.timestamp(), zone).replace(tzinfo=None)
        if back == naive:  # it exists (fold=0: the first of two)
            return aware.timestamp()
        naive += timedelta(minutes=1)


def wildcard_oracle(zone: zoneinfo.ZoneInfo, minutes: set[int], start: float,
                    end: float) -> list[float]:
    """Every UTC minute whose wall clock shows one of ``minutes``."""
    t = (start // MINUTE + 1) * MINUTE
    out = []
    while t <= end:
        if datetime.fromtimestamp(t, zone).minute in minutes:
            out.append(t)
        t += MINUTE
    return out


windows = st.tuples(st.sampled_from(ZONES), st.integers(2005, 2032), st.integers(0, 10_000))


def window_around_a_shift(zone_name: str, year: int, pick: int) -> tuple[float, float]:
    shifts = transitions(zoneinfo.ZoneInfo(zone_name), year)
    center = (shifts[pick % len(shifts)] if shifts
              else datetime(year, 1, 1, tzinfo=UTC).timestamp() + (pick % 360) * 86400)
    return center - 2 * 86400, center + 2 * 86400


@settings(max_examples=120, deadline=None)
@given(windows, st.sets(st.integers(0, 59), min_size=1, max_size=3),
       st.sets(st.integers(0, 23), min_size=1, max_size=4))
def test_a_fixed_local_time_fires_once_a_day_right_after_a_gap_and_once_when_repeated(
    window: tuple[str, int, int], minutes: set[int], hours: set[int]
) -> None:
    zone_name, year, pick = window
    start, end = window_around_a_shift(zone_name, year, pick)
    cron = f"{','.join(map(str, sorted(minutes)))} {','.join(map(str, sorted(hours)))} * * *"
    got = between(spec(cron, zone_name), start, end)
    assert got == sorted(set(got)), "two fires for one nominal time"
    assert got == fixed_time_oracle(zoneinfo.ZoneInfo(zone_name), minutes, hours, start, end)


@settings(max_examples=60, deadline=None)
@given(windows, st.sets(st.integers(0, 59), min_size=1, max_size=4))
def test_a_wildcard_hour_job_fires_at_every_instant_its_wall_clock_matches(
    window: tuple[str, int, int], minutes: set[int]
) -> None:
    zone_name, year, pick = window
    start, end = window_around_a_shift(zone_name, year, pick)
    cron = f"{','.join(map(str, sorted(minutes)))} * * * *"
    got = between(spec(cron, zone_name), start, end)
    assert got == wildcard_oracle(zoneinfo.ZoneInfo(zone_name), minutes, start, end)


@pytest.mark.parametrize("zone_name", ZONES)
def test_over_a_whole_year_a_daily_job_fires_once_per_local_day(zone_name: str) -> None:
    zone = zoneinfo.ZoneInfo(zone_name)
    start = datetime(2026, 1, 1, tzinfo=zone).timestamp()
    end = datetime(2027, 1, 1, tzinfo=zone).timestamp() - 1
    for cron in ("30 2 * * *", "0 0 * * *", "59 23 * * *"):
        got = between(spec(cron, zone_name), start - 1, end)
        days = [datetime.fromtimestamp(t, zone).date() for t in got]
        assert len(days) == len(set(days)) == 365, (cron, zone_name)


@settings(max_examples=100, deadline=None)
@given(st.floats(1, 7 * 86400), st.floats(0, 2e9), st.floats(0, 1e6))
def test_intervals_are_absolute_steps_from_their_anchor(every: float, anchor: float,
                                                        after: float) -> None:
    s = spec(every_s=every, start_at=anchor)
    first, second = itertools.islice(nominal_times(s, anchor + after), 2)
    assert anchor + after < first <= anchor + after + every + 1e-6 * every
    assert second - first == pytest.approx(every)
    assert (first - anchor) / every == pytest.approx(round((first - anchor) / every))


def test_nothing_fires_before_start_or_after_end_and_jitter_is_fixed_per_nominal_time() -> None:
    s = spec(every_s=60, start_at=600, end_at=900, jitter_s=30)
    assert list(nominal_times(s, 0)) == [600, 660, 720, 780, 840, 900]
    delays = [fire_at(s, t) - t for t in (600, 660, 720)]
    assert all(0 <= d < 30 for d in delays) and len(set(delays)) == 3
    assert [fire_at(s, t) - t for t in (600, 660, 720)] == delays  # the same after a restart


def test_catch_up_all_runs_each_missed_time_within_the_window_and_records_the_older() -> None:
    s = spec(every_s=3600, catchup=Catchup.ALL, catchup_window_s=3 * 3600)
    result = catch_up(s, cursor=0, now=10 * 3600 + 5)  # the window starts at 7:00:05
    assert result.run == [8 * 3600.0, 9 * 3600.0, 10 * 3600.0]
    assert [(k.first, k.last, k.count) for k in result.skipped] == [
        (t * 3600.0, t * 3600.0, 1) for t in range(1, 8)]
    assert {k.reason for k in result.skipped} == {"outside the catch-up window"}
    assert result.cursor == 10 * 3600
    assert catch_up(s, result.cursor, 10 * 3600 + 5).run == []  # nothing twice
    exactly = catch_up(s, cursor=0, now=10 * 3600)  # a time at the window's very start runs
    assert exactly.run == [7 * 3600.0, 8 * 3600.0, 9 * 3600.0, 10 * 3600.0]


def test_catch_up_latest_runs_only_the_newest_and_none_runs_only_one_still_on_time() -> None:
    latest = catch_up(spec(every_s=60, catchup=Catchup.LATEST), cursor=0, now=600 + 1)
    assert latest.run == [600.0] and sum(k.count for k in latest.skipped) == 9
    hourly = spec(every_s=3600, catchup=Catchup.NONE)
    late = catch_up(hourly, cursor=0, now=36000 + ON_TIME_S + 1)
    assert late.run == [] and late.cursor == 36000 and sum(k.count for k in late.skipped) == 10
    on_time = catch_up(hourly, cursor=0, now=36000 + 1)
    assert on_time.run == [36000.0] and sum(k.count for k in on_time.skipped) == 9


def test_a_long_downtime_is_summarised_not_enumerated() -> None:
    s = spec(every_s=1, catchup=Catchup.ALL, catchup_window_s=10)
    result = catch_up(s, cursor=0, now=1_000_000)
    assert result.run == [float(t) for t in range(999_990, 1_000_001)]
    assert len(result.skipped) == 1
    [gap] = result.skipped
    assert (gap.first, gap.last, gap.count) == (1, 999_989, 999_989)
    cron = catch_up(spec("* * * * *", catchup=Catchup.LATEST, catchup_window_s=600),
                    cursor=0, now=86400 * 365)
    assert len(cron.run) == 1 and len(cron.skipped) <= MAX_RECORDED + 2


@pytest.mark.parametrize(("field", "value", "said"), [
    ("cron", "61 * * * *", "is not valid"), ("cron", "0 0 30 2 *", "is not valid"),
    ("timezone", "Mars/Olympus", "not an IANA time zone"),
    ("timezone", "../../etc/passwd", "not an IANA time zone"),
    ("every_s", 0.5, "every must be"), ("jitter_s", -1.0, "jitter must be"),
])
def test_a_schedule_that_cannot_work_is_refused_with_what_to_fix(field: str, value: object,
                                                                  said: str) -> None:
    base: dict[str, object] = {"cron": "0 * * * *"} if field != "every_s" else {}
    with pytest.raises(InvalidSchedule, match=said):
        check_timing(ScheduleSpec(name="s", flow="f", **{**base, field: value}))  # type: ignore[arg-type]


def test_durations_read_as_users_write_them() -> None:
    assert [parse_duration(t) for t in ("15m", "6h", "30s", "2d", "1w", "250ms", "90")] == [
        900, 21600, 30, 172800, 604800, 0.25, 90]
    with pytest.raises(InvalidSchedule, match="is not a duration"):
        parse_duration("soon")


def test_started_in_the_second_pass_of_a_repeated_hour_nothing_fires_back_in_the_first() -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")  # 2026-10-25 03:00 CEST becomes 02:00 CET
    fired = datetime(2026, 10, 25, 2, 30, tzinfo=paris, fold=0).timestamp()  # first pass
    restart = datetime(2026, 10, 25, 2, 10, tzinfo=paris, fold=1).timestamp()  # second pass
    assert restart > fired
    [after_restart] = itertools.islice(nominal_times(spec("30 2 * * *", "Europe/Paris"), restart), 1)
    assert datetime.fromtimestamp(after_restart, paris) == datetime(2026, 10, 26, 2, 30, tzinfo=paris)


def test_a_large_catch_up_runs_the_newest_and_accounts_for_every_other_time() -> None:
    s = spec(every_s=1, catchup=Catchup.ALL, catchup_window_s=5000)
    result = catch_up(s, cursor=0, now=5000)
    assert result.run == [float(t) for t in range(4001, 5001)]  # MAX_CATCHUP_RUNS of them
    singles, [rest] = result.skipped[:MAX_RECORDED], result.skipped[MAX_RECORDED:]
    assert [k.first for k in singles] == [float(t) for t in range(1, MAX_RECORDED + 1)]
    assert (rest.first, rest.last, rest.count) == (MAX_RECORDED + 1, 4000, 4000 - MAX_RECORDED)
    assert sum(k.count for k in result.skipped) + len(result.run) == 5000


def _walked(s: ScheduleSpec, since: float, now: float) -> "firetimes._Due":
    """Every due time visited one by one: what the counted path must agree with."""
    due = firetimes._Due()
    for t in itertools.takewhile(lambda t: t <= now, nominal_times(s, since)):
        due.add(t)
    return due


@settings(max_examples=300, deadline=None)
@given(every=st.sampled_from([1.0, 1.5, 7.0, 60.0, 86400.0]),
       start=st.one_of(st.none(), st.floats(0, 50_000)),
       end=st.one_of(st.none(), st.floats(0, 200_000)),
       cursor=st.floats(0, 100_000), ahead=st.floats(0, 100_000),
       window=st.floats(1, 50_000), policy=st.sampled_from(list(Catchup)))
def test_an_interval_catch_up_counts_what_a_walk_through_every_time_finds(
    every: float, start: float | None, end: float | None, cursor: float, ahead: float,
    window: float, policy: Catchup,
) -> None:
    s = spec(every_s=every, start_at=start, end_at=end, catchup_window_s=window, catchup=policy)
    counted = catch_up(s, cursor, cursor + ahead)
    with mock.patch.object(firetimes, "_due", _walked):
        walked = catch_up(s, cursor, cursor + ahead)
    assert (counted.run, counted.skipped, counted.cursor) == (
        walked.run, walked.skipped, walked.cursor)


@settings(max_examples=60, deadline=None)
@given(cron=st.sampled_from(["* * * * *", "*/7 * * * *", "0 * * * *", "30 2 * * *",
                            "* 0-1 * * *"]),  # bursts: the look back must widen
       zone=st.sampled_from(["UTC", "Europe/Paris", "Australia/Lord_Howe"]),
       cursor=st.floats(1.77e9, 1.80e9), ahead=st.floats(0, 3 * 86400),
       window=st.floats(1, 4 * 86400), policy=st.sampled_from(list(Catchup)))
@example(cron="* 0-1 * * *", zone="UTC", cursor=1.7772e9, ahead=3 * 86400, window=4 * 86400,
         policy=Catchup.ALL)  # the first look back holds too few: it must widen
@example(cron="* * * * *", zone="Europe/Paris", cursor=1.7772e9, ahead=3 * 86400,
         window=4 * 86400, policy=Catchup.LATEST)  # the times between are not counted
def test_a_cron_catch_up_finds_the_newest_times_a_walk_finds_without_walking_them_all(
    cron: str, zone: str, cursor: float, ahead: float, window: float, policy: Catchup,
) -> None:
    s = spec(cron, zone, catchup_window_s=window, catchup=policy)
    looked_back = catch_up(s, cursor, cursor + ahead)
    with mock.patch.object(firetimes, "_due", _walked):
        walked = catch_up(s, cursor, cursor + ahead)
    assert (looked_back.run, looked_back.cursor) == (walked.run, walked.cursor)
    assert len(looked_back.skipped) == len(walked.skipped)
    for mine, theirs in zip(looked_back.skipped, walked.skipped, strict=True):
        assert (mine.first, mine.last, mine.reason) == (theirs.first, theirs.last, theirs.reason)
        assert mine.count in (theirs.count, 0)  # 0: a range whose times were not counted


@pytest.mark.parametrize("cron", ["* * * 1-20 * *",  # every second of days 1-20: bunched
                                  "* * * * * *", "* 0-1 * * *", "* * * * *"])
def test_a_cron_catch_up_walks_a_bounded_number_of_times_however_long_the_window(cron: str) -> None:
    now = datetime(2026, 12, 31, 12, tzinfo=UTC).timestamp()
    s = spec(cron, catchup=Catchup.ALL, catchup_window_s=366 * 86400.0)
    walked = 0
    original = firetimes.nominal_times

    def counted(spec: ScheduleSpec, after: float):  # type: ignore[no-untyped-def]
        nonlocal walked
        for t in original(spec, after):
            walked += 1
            yield t

    with mock.patch.object(firetimes, "nominal_times", counted):
        result = catch_up(s, now - 366 * 86400, now)
    assert len(result.run) == firetimes.MAX_CATCHUP_RUNS and result.run[-1] <= now
    assert walked <= 25 * firetimes.PROBE_MAX, walked  # about 2 x log2(a year / 1,000 s) walks


def test_a_span_of_due_times_is_counted_without_walking_and_says_its_last() -> None:
    head, last, count = firetimes.due_span(spec(every_s=1), 0, 86_400.5)
    assert head[0] == 1 and len(head) == MAX_RECORDED + 1
    assert (last, count) == (86_400, 86_400)
    few, last, count = firetimes.due_span(spec("0 * * * *"), 0, 3 * 3600 + 5)
    assert (few, last, count) == ([3600, 7200, 10800], 10800, 3)
    assert firetimes.due_span(spec(every_s=60), 100, 110) == ([], 100, 0)
