"""Task logs: prints and log records captured by the agent, kept by the coordinator, shown by the CLI."""

import asyncio

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


async def test_logs_follow_prints_lines_as_they_come_until_the_run_ends(
    coordinator, spawn, client: Client
) -> None:
    await client.register()
    spawn("flowforge-agent", "--import", "tests.taskflows")
    run = await client.start("chatty")
    chunks = [text async for text in client.follow_log(run.run_id, "talk_async")]
    joined = "".join(chunks)
    assert "async hello" in joined and "tick 0" in joined and "tick 2" in joined
