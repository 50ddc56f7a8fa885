"""``flowforge schedule ...`` as a user types it, against a real coordinator."""

import asyncio
import json

from flowforge.client import Client
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
