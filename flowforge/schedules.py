"""Schedules written next to their flow: ``register_task_pipeline(..., schedules=[...])``."""

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from flowforge.firetimes import check_timing
from protocol.errors import InvalidFlow
from protocol.limits import is_valid_name
from protocol.schedules import (
    Catchup,
    InvalidSchedule,
    Overlap,
    ScheduleSpec,
    parse_duration,
)


def Schedule(
    name: str, *, cron: str | None = None, every: str | float | None = None,
    timezone: str = "UTC", params: Mapping[str, Any] | None = None, overlap: str = "skip",
    catchup: str = "latest", catchup_window: str | float = "1d",
    start: dt.datetime | None = None, end: dt.datetime | None = None,
    jitter: str | float = 0, pause_on_failure: bool = False,
) -> dict[str, Any]:
    """One schedule of a flow, for ``schedules=[...]``: the same options as
    ``flowforge schedule add`` (durations as ``"15m"`` or seconds; aware datetimes)."""
    return {"name": name, "cron": cron, "every": every, "timezone": timezone,
            "params": dict(params or {}), "overlap": overlap, "catchup": catchup,
            "catchup_window": catchup_window, "start": start, "end": end, "jitter": jitter,
            "pause_on_failure": pause_on_failure}


def schedule_specs(flow: str, schedules: Iterable[Mapping[str, Any]] | None) -> list[ScheduleSpec]:
    """Checked specs of a flow's schedules; an InvalidFlow names the flow and the schedule."""
    out: list[ScheduleSpec] = []
    for given in schedules or ():
        if not isinstance(given, Mapping):
            raise InvalidFlow(f"flow {flow!r}: schedules must be Schedule(...) or dicts")
        try:
            spec = _spec(flow, given)
            check_timing(spec)
        except (InvalidSchedule, ValueError, TypeError) as exc:
            raise InvalidFlow(f"flow {flow!r}: {exc}") from None
        if any(s.name == spec.name for s in out):
            raise InvalidFlow(f"flow {flow!r}: two schedules are named {spec.name!r}")
        out.append(spec)
    return out


def _spec(flow: str, given: Mapping[str, Any]) -> ScheduleSpec:
    unknown = set(given) - set(Schedule.__kwdefaults__ or {}) - {"name"}
    if unknown:
        raise InvalidSchedule(f"schedule {given.get('name')!r} has no option "
                              f"{', '.join(sorted(unknown))}")
    if not isinstance(given.get("name"), str) or not is_valid_name(given["name"]):
        raise InvalidSchedule(f"schedule name {given.get('name')!r} is not valid: letters, "
                              "digits, '_' and '-', starting with a letter or '_'")
    every = given.get("every")
    return ScheduleSpec(
        name=given["name"], flow=flow, cron=given.get("cron"), timezone=given.get("timezone", "UTC"),
        every_s=None if every is None else _seconds(every, "every"),
        params=dict(given.get("params") or {}), overlap=Overlap(given.get("overlap", "skip")),
        catchup=Catchup(given.get("catchup", "latest")),
        catchup_window_s=_seconds(given.get("catchup_window", "1d"), "catchup_window"),
        start_at=_instant(given.get("start")), end_at=_instant(given.get("end")),
        jitter_s=_seconds(given.get("jitter", 0), "jitter"),
        pause_on_failure=bool(given.get("pause_on_failure", False)))


def _seconds(value: str | float, what: str) -> float:
    return parse_duration(value, what) if isinstance(value, str) else float(value)


def _instant(value: dt.datetime | None) -> float | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise InvalidSchedule("start and end must be aware datetimes (with a tzinfo)")
    return value.timestamp()
