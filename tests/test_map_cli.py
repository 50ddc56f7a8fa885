"""``flowforge show`` and ``flowforge logs`` of mapped tasks, as subprocesses against the real stack
(NATS, an in-process coordinator and agent): counts by state, failures listed first, one
instance in full, its log, exit 2 for an index that does not exist."""

import json

from flowforge.client import Client
from tests import mapflows
from tests.helpers import flowforge_cli as cli

FAILING = list(range(0, 50, 2))
"""25 of the 50 items fail: more than ``show`` lists."""


async def test_show_counts_a_mapped_task_s_instances_lists_failures_first_and_shows_one(
    coordinator, start_agent, client: Client, cli_env: dict[str, str]
) -> None:
    flow = mapflows.register_fan(allow_failures=25)
    await start_agent(concurrency=8)
    await client.register([flow])
    run_id = (await client.start("fan", {"n": 50, "fail_on": FAILING})).run_id
    await client.wait(run_id, timeout_s=60)

    shown = await cli(cli_env, "show", run_id)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "instances: 25 failed, 25 succeeded of 50 items" in text
    rows = [line.split() for line in text.splitlines() if "ValueError: item" in line]
    assert [int(r[0]) for r in rows] == FAILING[:20], "the first 20 failures, in index order"
    assert rows[0][:3] == ["0", "failed", "1"] and "was asked to fail" in text
    assert "   … 5 more" in text
    assert f"one in full: flowforge show {run_id} --task square --map-index INDEX" in text

    as_json = json.loads((await cli(cli_env, "show", run_id, "--json")).stdout)
    square = as_json["mapped"]["square"]
    assert square["counts"] == {"failed": 25, "succeeded": 25} and square["total"] == 50
    assert len(square["instances"]) == 20 and as_json["run"]["status"] == "succeeded"
    only = json.loads((await cli(cli_env, "show", run_id, "--task", "square", "--json")).stdout)
    assert [t["task"] for t in only["tasks"]] == ["square"] and "square" in only["mapped"]

    one = await cli(cli_env, "show", run_id, "--task", "square", "--map-index", "4")
    assert one.returncode == 0, one.stderr
    lines = one.stdout.splitlines()
    assert lines[0].startswith(f"square~4 of run {run_id}  FAILED  attempt 1")
    assert "attempts:" in lines and any(line.startswith("   1: failed     on ") for line in lines)
    assert "ValueError: item 4 (index 4) was asked to fail" in one.stdout
    assert "Traceback (most recent call last)" in one.stdout
    assert lines[-1] == f"log: flowforge logs {run_id} square~4"
    ok = json.loads((await cli(cli_env, "show", run_id, "--task", "square", "--map-index", "5",
                               "--json")).stdout)
    assert (ok["task"], ok["status"], ok["output"]) == ("square~5", "succeeded", 25)
    log = await cli(cli_env, "logs", run_id, "square~4")
    assert log.returncode == 0 and "squaring item 4 at index 4" in log.stdout


async def test_show_of_an_index_that_does_not_exist_or_a_task_that_is_not_mapped_exits_2(
    coordinator, start_agent, client: Client, cli_env: dict[str, str]
) -> None:
    flow = mapflows.register_fan()
    await start_agent()
    await client.register([flow])
    run_id = (await client.start("fan", {"n": 3})).run_id
    await client.wait(run_id, timeout_s=30)
    shown = await cli(cli_env, "show", run_id)
    assert "instances: 3 succeeded of 3 items" in shown.stdout
    assert "one in full" not in shown.stdout, "nothing needs a look"

    missing = await cli(cli_env, "show", run_id, "--task", "square", "--map-index", "3")
    assert missing.returncode == 2
    assert "maps over 3 items: there is no index 3" in missing.stderr
    plain = await cli(cli_env, "show", run_id, "--task", "total", "--map-index", "0")
    assert plain.returncode == 2 and "'total'" in plain.stderr and "not mapped" in plain.stderr
    alone = await cli(cli_env, "show", run_id, "--map-index", "0")
    assert alone.returncode == 2 and "--map-index needs --task" in alone.stderr
    negative = await cli(cli_env, "show", run_id, "--task", "square", "--map-index", "-1")
    assert negative.returncode == 2 and "not from 0" in negative.stderr
