"""``flowforge schedule ...`` as a user types it, against a real coordinator."""

import asyncio
import json

from flowforge.client import Client
from flowforge.schedule_cli import show_text
from protocol.api import ScheduleDetail
from protocol.schedules import FireOutcome, FireRecord, ScheduleSpec, ScheduleState
from tests import inputflows
from tests.helpers import run_cli


async def _cli(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(run_cli, ["flowforge", "schedule", *args], env)


async def test_a_schedule_is_added_previewed_paused_resumed_triggered_and_deleted(
    coordinator, client: Client, cli_env
) -> None:
    await client.register([inputflows.register_noop()])
    added = await _cli(cli_env, "add", "nightly", "--flow", "noop", "--cron", "30 2 * * *",
                       "--timezone", "Europe/Paris", "--catchup", "none")
    assert added.returncode == 0, added.stderr
    assert "schedule nightly  flow noop  cron '30 2 * * *' Europe/Paris  active" in added.stdout
    assert "next fires" in added.stdout

    preview = await _cli(cli_env, "preview", "nightly", "--from", "2026-03-28T00:00",
                         "--count", "3", "--json")
    times = json.loads(preview.stdout)["times"]
    shown = await _cli(cli_env, "preview", "nightly", "--from", "2026-03-28T00:00", "--count", "3")
    assert [line.split()[0] for line in shown.stdout.splitlines()[1:]] == [
        "2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00",  # 02:30 did not exist
        "2026-03-30T02:30:00+02:00"]
    assert len(times) == 3

    paused = await _cli(cli_env, "pause", "nightly", "--note", "db migration")
    assert paused.returncode == 0 and "PAUSED: db migration" in paused.stdout
    listed = await _cli(cli_env, "list")
    assert "paused: db migration" in listed.stdout
    assert json.loads((await _cli(cli_env, "list", "--json")).stdout)[0]["next_fires"] == []
    resumed = await _cli(cli_env, "resume", "nightly")
    assert "active" in resumed.stdout.splitlines()[0]

    triggered = await _cli(cli_env, "trigger", "nightly", "--json")
    run = json.loads(triggered.stdout)
    assert (run["schedule"], run["source"]) == ("nightly", "schedule")
    assert run["scheduled_for"] is not None

    deleted = await _cli(cli_env, "delete", "nightly")
    assert deleted.returncode == 0
    assert (await _cli(cli_env, "list")).stdout.strip() == "no schedules"


async def test_schedule_mistakes_are_one_line_and_exit_2(coordinator, client: Client,
                                                         cli_env) -> None:
    await client.register([inputflows.register_noop()])
    for args, said in (
        (["show", "nope"], "no schedule named 'nope'"),
        (["add", "x", "--flow", "noop", "--cron", "every day"], "is not valid"),
        (["add", "x", "--flow", "noop", "--every", "soon"], "is not a duration"),
        (["add", "x", "--flow", "noop", "--every", "1h", "--start", "tomorrow"],
         "is not an ISO time"),
        (["add", "x", "--flow", "noop", "--every", "1h", "--timezone", "Mars/Base"],
         "not an IANA time zone"),
        (["add", "x y", "--flow", "noop", "--every", "1h"], "x y"),
    ):
        done = await _cli(cli_env, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert said in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_show_gives_a_range_of_skipped_times_its_first_last_and_count() -> None:
    spec = ScheduleSpec(name="s", flow="f", every_s=60.0, timezone="Europe/Paris")
    fires = [FireRecord(schedule="s", nominal=0.0, last_nominal=0.0, outcome=FireOutcome.STARTED,
                        run_id="r1"),
             FireRecord(schedule="s", nominal=60.0, last_nominal=6000.0, count=100,
                        outcome=FireOutcome.MISSED, reason="outside the catch-up window"),
             FireRecord(schedule="s", nominal=7200.0, last_nominal=86400.0, count=0,
                        outcome=FireOutcome.SKIPPED, reason="catch-up latest")]
    text = show_text(ScheduleDetail(state=ScheduleState(spec=spec, cursor=86400.0), fires=fires,
                                    next_fires=[]))
    assert "1970-01-01T01:01:00+01:00 … 1970-01-01T02:40:00+01:00 (100 times)" in text
    assert "1970-01-01T03:00:00+01:00 … 1970-01-02T01:00:00+01:00 (not counted)" in text
    assert "1970-01-01T01:00:00+01:00 " in text and " started " in text
