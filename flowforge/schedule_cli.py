"""``flowforge schedule add|list|show|pause|resume|delete|trigger|preview|backfill``."""

import argparse
import datetime as dt
import zoneinfo
from collections.abc import Callable
from typing import Any

import msgspec

from flowforge import render
from flowforge.batch_cli import reasons_text, whole
from flowforge.connection import DEFAULT_NATS_URL, add_connection_args
from flowforge.firetimes import check_timing, next_fires
from flowforge.params import params_from, parse_param
from flowforge.terminal import out, safe_json
from protocol.api import ScheduleDetail
from protocol.batch_api import MAX_REASONS, BackfillPlan
from protocol.batches import MAX_ACTIVE_LIMIT
from protocol.errors import FlowForgeError
from protocol.limits import is_valid_name
from protocol.schedules import Catchup, FireRecord, Overlap, ScheduleSpec, parse_duration

MAX_PREVIEW = 1000
"""The most skipped times a backfill's answer names (``BackfillPlan.skipped``)."""


def add_schedule_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    s = sub.add_parser("schedule", help="flows that run by themselves, on a cron or every N",
                       description="Schedules: each nominal time runs once, across restarts.")
    verbs = s.add_subparsers(dest="schedule_command", required=True, metavar="VERB")

    def verb(name: str, help_text: str, named: bool = True) -> argparse.ArgumentParser:
        c = verbs.add_parser(name, help=help_text, description=help_text)
        if named:
            c.add_argument("name", help="the schedule's name")
        add_connection_args(c, nats_default=DEFAULT_NATS_URL)
        c.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                       help="how long to wait for each coordinator answer (default: %(default)s)")
        c.add_argument("--json", action="store_true", help="print JSON")
        return c

    _add_add(verb("add", "create a schedule, or change one (it keeps its place)"))
    verb("list", "every schedule, its next fire and whether it is paused", named=False)
    verb("show", "a schedule, its next fires and what became of its last times").add_argument(
        "--fires", type=int, default=20, metavar="N", help="recent times shown (default: 20)")
    verb("pause", "stop firing until resumed").add_argument("--note", metavar="TEXT",
                                                            help="why (shown by list and show)")
    verb("resume", "fire again from now (times due while paused are recorded as skipped)")
    verb("delete", "forget a schedule (its runs stay)")
    verb("trigger", "start a run of the schedule now, outside its times")
    c = verb("preview", "the next fire times, local and UTC, without firing")
    c.add_argument("--from", dest="from_", metavar="ISO",
                   help="from this time; without an offset, in the schedule's time zone "
                   "(default: now)")
    c.add_argument("--count", type=int, default=10, metavar="N", help="how many (default: 10)")
    _add_backfill(verb("backfill", "run the schedule's nominal times from --from to --to (a "
                       "batch); times that already have a run are skipped"))


def _add_backfill(c: argparse.ArgumentParser) -> None:
    for flag, what in (("--from", "the first time, included"),
                       ("--to", "the last time, included (times after now are not run)")):
        c.add_argument(flag, dest=flag[2:] + "_", required=True, metavar="ISO",
                       help=f"{what}; without an offset, in the schedule's time zone "
                       "(e.g. 2026-01-31T06:00)")
    c.add_argument("--max-active", type=whole(1, MAX_ACTIVE_LIMIT), default=1, metavar="N",
                   help="runs at once, started in time order (default: %(default)s)")
    c.add_argument("--name", dest="batch_name", metavar="NAME",
                   help="the batch's name (default: backfill SCHEDULE)")
    c.add_argument("--dry-run", action="store_true",
                   help="say which times would run and which would be skipped; start nothing")


def _add_add(c: argparse.ArgumentParser) -> None:
    c.add_argument("--flow", required=True, help="the flow it runs")
    when = c.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help="a cron expression, e.g. '0 6 * * 1-5'")
    when.add_argument("--every", metavar="DURATION", help="an interval, e.g. 15m, 6h, 30s")
    c.add_argument("--timezone", default="UTC", metavar="ZONE",
                   help="IANA zone of --cron, --start and --end (default: %(default)s)")
    c.add_argument("--param", "-p", action="append", type=parse_param, metavar="KEY=VALUE",
                   help="run parameter; repeatable")
    c.add_argument("--params", metavar="JSON", help="all run parameters as one JSON object")
    c.add_argument("--overlap", choices=[o.value for o in Overlap], default=Overlap.SKIP.value,
                   help="while its previous run is still going (default: %(default)s)")
    c.add_argument("--catchup", choices=[o.value for o in Catchup], default=Catchup.LATEST.value,
                   help="times that came due while no coordinator ran (default: %(default)s)")
    c.add_argument("--catchup-window", default="1d", metavar="DURATION",
                   help="how far back catch-up looks (default: %(default)s)")
    c.add_argument("--start", metavar="ISO", help="no fire before this")
    c.add_argument("--end", metavar="ISO", help="no fire after this")
    c.add_argument("--jitter", default="0s", metavar="DURATION",
                   help="start each fire up to this much later (default: none)")
    c.add_argument("--pause-on-failure", action="store_true",
                   help="a failed run pauses the schedule")


def spec_from_args(ns: argparse.Namespace) -> ScheduleSpec:
    """The schedule ``add`` describes; raises FlowForgeError saying what to fix."""
    zone = _zone(ns.timezone)
    spec = ScheduleSpec(
        name=ns.name, flow=ns.flow, cron=ns.cron, timezone=ns.timezone,
        every_s=parse_duration(ns.every, "--every") if ns.every else None,
        params=_params(ns), overlap=Overlap(ns.overlap), catchup=Catchup(ns.catchup),
        catchup_window_s=parse_duration(ns.catchup_window, "--catchup-window"),
        start_at=_instant(ns.start, zone, "--start"), end_at=_instant(ns.end, zone, "--end"),
        jitter_s=parse_duration(ns.jitter, "--jitter"), pause_on_failure=ns.pause_on_failure)
    for what, name in (("schedule name", spec.name), ("--flow", spec.flow)):
        if not is_valid_name(name):
            raise FlowForgeError(f"{what} {name!r} is not valid: letters, digits, '_' and "
                                 "'-', starting with a letter or '_'")
    check_timing(spec)
    return spec


def _params(ns: argparse.Namespace) -> dict[str, Any]:
    return params_from(ns.params, "--params", ns.param)


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise FlowForgeError(f"--timezone {name!r} is not an IANA time zone (e.g. UTC, "
                             "Europe/Paris)") from None


def _instant(text: str | None, zone: zoneinfo.ZoneInfo, flag: str) -> float | None:
    """An ISO time; without an offset it is read in ``zone``."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise FlowForgeError(f"{flag} {text!r} is not an ISO time (e.g. 2026-01-31T06:00)") from None
    return (when if when.tzinfo else when.replace(tzinfo=zone)).timestamp()


async def run(client: Any, ns: argparse.Namespace) -> int:
    """One ``schedule`` verb; prints its answer (JSON with --json)."""
    actions: dict[str, Callable[[], Any]] = {
        "add": lambda: client.put_schedule(spec_from_args(ns)),
        "list": client.schedules,
        "show": lambda: client.schedule(ns.name, fires=ns.fires),
        "pause": lambda: client.pause_schedule(ns.name, ns.note),
        "resume": lambda: client.resume_schedule(ns.name),
        "delete": lambda: client.delete_schedule(ns.name),
        "trigger": lambda: client.trigger_schedule(ns.name),
        "preview": lambda: _preview(client, ns),
    }
    if ns.schedule_command == "backfill":
        return await _backfill(client, ns)
    answer = await actions[ns.schedule_command]()
    if ns.json:
        out(safe_json(msgspec.json.format(msgspec.json.encode(answer), indent=2).decode()))
    elif ns.schedule_command == "list":
        out(_list_text(answer))
    elif ns.schedule_command == "trigger":
        out(f"run {answer.run_id} started (nominal time {local_time(answer.scheduled_for, 'UTC')})")
    elif ns.schedule_command == "preview":
        out(_times_text(answer["times"], answer["timezone"]))
    else:
        out(show_text(answer))
    return 0


async def _preview(client: Any, ns: argparse.Namespace) -> dict[str, Any]:
    if not 1 <= ns.count <= MAX_PREVIEW:
        raise FlowForgeError(f"--count must be from 1 to {MAX_PREVIEW}")
    spec = (await client.schedule(ns.name, fires=1)).state.spec
    start = _instant(ns.from_, _zone(spec.timezone), "--from")
    after = (dt.datetime.now(dt.UTC).timestamp() if start is None else start - 1e-6)
    return {"schedule": spec.name, "timezone": spec.timezone,
            "times": next_fires(spec, after, ns.count)}


async def _backfill(client: Any, ns: argparse.Namespace) -> int:
    """``--from`` and ``--to`` without an offset are read in the schedule's zone, as by
    ``preview``; its times are shown in that zone."""
    zone = (await client.schedule(ns.name, fires=1)).state.spec.timezone
    start = _instant(ns.from_, _zone(zone), "--from")
    end = _instant(ns.to_, _zone(zone), "--to")
    assert start is not None and end is not None  # both are required
    plan = await client.backfill(ns.name, start, end, max_active=ns.max_active,
                                 name=ns.batch_name, dry_run=ns.dry_run)
    if ns.json:
        out(safe_json(msgspec.json.format(msgspec.json.encode(plan), indent=2).decode()))
    else:
        out(backfill_text(plan, zone))
    return 0


def backfill_text(plan: BackfillPlan, zone: str) -> str:
    """What a backfill started (or would start), and the times it skips (in ``zone``)."""
    skipped = len(plan.skipped)
    at_least = "at least " if skipped >= MAX_REASONS else ""
    at_most = "at most " if at_least else ""
    if plan.batch is None:
        head = (f"dry run: {plan.times} times, would run {at_most}{plan.times - skipped}, "
                f"would skip {at_least}{skipped}")
    else:
        name = f" ({plan.batch.spec.name})" if plan.batch.spec.name else ""
        head = (f"batch {plan.batch.batch_id}{name}: {plan.times} times, {at_most}"
                f"{plan.times - skipped} to run, {at_least}{skipped} skipped")
    more = ("--json lists them all" if not at_least else "--json lists the first 1,000"
            if plan.batch is None else
            f"`flowforge batch show {plan.batch.batch_id} --status skipped` lists them")
    reasons = [(local_time(dt.datetime.fromisoformat(t).timestamp(), zone), why)
               for t, why in plan.skipped.items()]
    return "\n".join([head, *reasons_text(reasons, skipped, more)])


def local_time(ts: float | None, zone: str) -> str:
    """A UTC epoch time as ISO in ``zone``; ``-`` for None."""
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, zoneinfo.ZoneInfo(zone)).isoformat(timespec="seconds")


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(seconds: float) -> str:
    """``1d``, ``6h``, ``15m``, ``30s``: the largest unit that divides it."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def describe_when(spec: ScheduleSpec) -> str:
    if spec.cron is not None:
        return f"cron '{spec.cron}' {spec.timezone}"
    assert spec.every_s is not None
    return f"every {_span(spec.every_s)}"


def _times_text(times: list[float], zone: str) -> str:
    return render.table(["local", "UTC"], [[local_time(t, zone), _utc(t)] for t in times])


def _list_text(details: list[ScheduleDetail]) -> str:
    if not details:
        return "no schedules"
    rows = [[d.state.spec.name, d.state.spec.flow, describe_when(d.state.spec),
             local_time(d.next_fires[0], d.state.spec.timezone) if d.next_fires else "-",
             "paused" + (f": {render.cut(d.state.note, 40)}" if d.state.note else "")
             if d.state.paused else "active"] for d in details]
    return render.table(["schedule", "flow", "when", "next fire", "state"], rows)


def show_text(d: ScheduleDetail) -> str:
    s, spec = d.state, d.state.spec
    lines = [f"schedule {spec.name}  flow {spec.flow}  {describe_when(spec)}  "
             f"{'PAUSED' + (': ' + s.note if s.note else '') if s.paused else 'active'}",
             f"overlap {spec.overlap.value}  catch-up {spec.catchup.value} within "
             f"{_span(spec.catchup_window_s)}  params {msgspec.json.encode(spec.params).decode()}",
             f"dealt with up to {local_time(s.cursor, spec.timezone)}", ""]
    if d.next_fires:
        lines += ["next fires", _times_text(d.next_fires, spec.timezone), ""]
    if d.fires:
        lines.append(render.table(
            ["nominal", "outcome", "run", "reason"],
            [[_nominal_text(f, spec.timezone),
              f.outcome.value, f.run_id or "-", render.cut(f.reason, 60)] for f in d.fires]))
    return "\n".join(lines).rstrip()


def _nominal_text(fire: FireRecord, zone: str) -> str:
    """One time, or a range: its first and last and how many (0: not counted one by one)."""
    if fire.count == 1:
        return local_time(fire.nominal, zone)
    many = f"{fire.count:,} times" if fire.count else "not counted"
    return f"{local_time(fire.nominal, zone)} … {local_time(fire.last_nominal, zone)} ({many})"
