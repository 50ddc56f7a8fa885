"""``flowforge limit set|list|delete`` and ``flowforge run --priority`` as a user types them:
the real console script against a real coordinator (no agent: tasks stay queued or held)."""

import json

from flowforge.client import Client
from tests import limitflows
from tests.helpers import flowforge_cli as cli


async def test_limit_set_list_and_delete_a_queue_s_limit(
    coordinator, client: Client, cli_env: dict[str, str]
) -> None:
    await client.register([limitflows.register_wide(width=3)])
    done = await cli(cli_env, "limit", "set", "queue:gpu", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "queue:gpu: 1 at once (0 holding, 0 waiting)"
    run = await client.start("gpu_fan")

    listed = await cli(cli_env, "limit", "list")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["LIMIT", "SLOTS", "HOLDING", "WAITING", "SET", "BY", "HELD", "BY",
                              "NEXT"]
    assert row.split()[:5] == ["queue:gpu", "1", "1", "2", "api"]
    assert f"run {run.run_id} task t0" in row

    as_json = json.loads((await cli(cli_env, "limit", "list", "--json")).stdout)
    assert as_json == [{"name": "queue:gpu", "limit": 1, "holding": 1, "waiting": 2,
                        "holders": [{"run_id": run.run_id, "task": "t0"}],
                        "waiters": [{"run_id": run.run_id, "task": "t1"},
                                    {"run_id": run.run_id, "task": "t2"}]}]

    shown = await cli(cli_env, "show", run.run_id)
    assert f"waiting: limit queue:gpu 1/1 (held by run {run.run_id} task t0)" in shown.stdout

    deleted = await cli(cli_env, "limit", "delete", "queue:gpu")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == "queue:gpu: no limit (3 running or queued)"
    assert (await cli(cli_env, "limit", "list")).stdout.startswith("no limits")


async def test_limit_refuses_what_it_cannot_set(coordinator, cli_env: dict[str, str]) -> None:
    bad = await cli(cli_env, "limit", "set", "task:etl.load", "1")
    assert bad.returncode == 2
    assert "is not queue:<name>" in bad.stderr and "set in the flow's definition" in bad.stderr
    negative = await cli(cli_env, "limit", "set", "queue:gpu", "-1")
    assert negative.returncode == 2 and "is not from 0 to" in negative.stderr
    gone = await cli(cli_env, "limit", "delete", "queue:nothing")
    assert gone.returncode == 2 and "no limit 'queue:nothing' is set" in gone.stderr


async def test_run_priority_starts_a_run_with_its_own_priority_and_show_prints_it(
    coordinator, client: Client, cli_env: dict[str, str]
) -> None:
    await client.register([limitflows.register_urgent()])
    started = await cli(cli_env, "run", "urgent", "--priority", "5", "--json")
    assert started.returncode == 0, started.stderr
    run = json.loads(started.stdout)
    assert run["priority"] == 5
    shown = await cli(cli_env, "show", run["run_id"])
    assert "priority 5" in shown.stdout.splitlines()[3]
    too_high = await cli(cli_env, "run", "urgent", "--priority", "5000")
    assert too_high.returncode == 2 and "priority" in too_high.stderr


async def test_run_of_a_flow_at_its_max_active_runs_says_it_waits(
    coordinator, client: Client, cli_env: dict[str, str]
) -> None:
    await client.register([limitflows.register_wide(name="solo", width=1, queue="default",
                                                    max_active_runs=1)])
    first = await client.start("solo")
    second = await cli(cli_env, "run", "solo")
    assert second.returncode == 0, second.stderr
    assert "is pending: waiting: flow solo has 1/1 runs going (max_active_runs): run " \
        f"{first.run_id}" in second.stderr
    listed = await cli(cli_env, "limit", "list")
    assert "flow:solo" in listed.stdout
