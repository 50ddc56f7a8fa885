"""Task logs: prints and log records captured by the agent, kept by the coordinator, shown by the CLI."""

import asyncio
import json

import pytest

from flowforge.client import Client
from tests import taskflows  # noqa: F401 - registers the flows used here
from tests.helpers import run_cli

pytestmark = pytest.mark.e2e


async def test_what_a_task_prints_and_logs_is_kept_and_shown_by_flowforge_logs(
    coordinator, spawn, client: Client, cli_env
) -> None:
    await client.register()
    spawn("flowforge-agent", "--import", "tests.taskflows", "--agent-id", "talker")
    run = await client.start("chatty")
    await client.wait(run.run_id, timeout_s=30)

    text = await client.task_log(run.run_id, "talk")
    assert "── attempt 1 on talker ──" in text
    assert "hello from print" in text
    assert "INFO flowforge.task.chatty.talk: hello from the task logger" in text
    assert "WARNING user.module: a warning from user code" in text
    assert "tick 2" in await client.task_log(run.run_id, "talk_async")

    shown = await asyncio.to_thread(run_cli, ["flowforge", "logs", run.run_id, "talk"], cli_env)
    assert shown.returncode == 0
    assert "hello from print" in shown.stdout
    as_json = await asyncio.to_thread(run_cli, ["flowforge", "logs", run.run_id, "talk", "--json"],
                                      cli_env)
    assert json.loads(as_json.stdout)["log"] == text


async def test_logs_of_an_unknown_run_or_task_are_an_error_not_an_empty_log(
    coordinator, client: Client, cli_env
) -> None:
    await client.register()
    run = await client.start("chatty")
    for args, said in (([run.run_id, "no_such_task"], "has no task 'no_such_task'"),
                       (["0190000000000000001", "talk"], "0190000000000000001")):
        shown = await asyncio.to_thread(run_cli, ["flowforge", "logs", *args], cli_env)
        assert shown.returncode == 2 and said in shown.stderr, shown.stderr
        assert shown.stdout == ""


async def test_runs_of_a_flow_that_is_not_registered_is_an_error_not_an_empty_list(
    coordinator, client: Client, cli_env
) -> None:
    await client.register()
    listed = await asyncio.to_thread(run_cli, ["flowforge", "runs", "--flow", "chatty"], cli_env)
    assert listed.returncode == 0 and listed.stdout == "no runs\n", listed.stderr
    typo = await asyncio.to_thread(run_cli, ["flowforge", "runs", "--flow", "chaty"], cli_env)
    assert typo.returncode == 2 and "no flow named 'chaty'" in typo.stderr, typo.stderr


@pytest.mark.parametrize("limit", ["5000", "0", "-1", "many"])
async def test_a_list_limit_the_coordinator_would_not_honour_is_a_usage_error(
    cli_env, limit: str
) -> None:
    for command in ("runs", "rejected"):
        shown = await asyncio.to_thread(run_cli, ["flowforge", command, "--limit", limit], cli_env)
        assert shown.returncode == 2 and "--limit" in shown.stderr, shown.stderr


async def test_logs_follow_prints_lines_as_they_come_until_the_run_ends(
    coordinator, spawn, client: Client
) -> None:
    await client.register()
    spawn("flowforge-agent", "--import", "tests.taskflows")
    run = await client.start("chatty")
    chunks = [text async for text in client.follow_log(run.run_id, "talk_async")]
    joined = "".join(chunks)
    assert "async hello" in joined and "tick 0" in joined and "tick 2" in joined
