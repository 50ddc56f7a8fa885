"""The coordinator's view of agents: live, stopped and lost, listed by `flowforge agents`."""

import asyncio
import json
import subprocess

import pytest

from coordinator import service
from flowforge.client import Client
from tests import taskflows  # noqa: F401 - registers the flows the agents serve
from tests.helpers import REPO, run_cli, script, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _quick_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process coordinator looks for silent agents (and, every fourth look, for tasks
    nobody can take) every 0.1 s instead of 0.5 s; these tests wait for what it finds."""
    monkeypatch.setattr(service, "AGENT_SWEEP_S", 0.1)


async def _status(client: Client, agent_id: str) -> str | None:
    return next((a.status for a in await client.agents() if a.agent_id == agent_id), None)


async def test_a_live_agent_is_listed_with_its_queues_functions_and_slots(
    coordinator, start_agent, client: Client, cli_env
) -> None:
    await start_agent(("default", "gpu"), concurrency=3, agent_id="box-1", heartbeat_s=0.2)
    await wait_for(lambda: _is(client, "box-1", "live"))

    info = next(a for a in await client.agents() if a.agent_id == "box-1")
    assert info.queues == ("default", "gpu")
    assert info.slots_total == 3
    assert "tests.taskflows:timed_step" in info.functions

    listed = await asyncio.to_thread(run_cli, ["flowforge", "agents", "--json"], cli_env)
    assert listed.returncode == 0
    assert json.loads(listed.stdout)[0]["agent_id"] == "box-1"
    table = await asyncio.to_thread(run_cli, ["flowforge", "agents"], cli_env)
    assert "box-1" in table.stdout and "default,gpu" in table.stdout and "0/3" in table.stdout


async def _is(client: Client, agent_id: str, status: str) -> bool:
    return await _status(client, agent_id) == status


async def test_an_agent_that_stops_says_so_and_one_killed_is_marked_lost(
    start_coordinator, spawn, client: Client
) -> None:
    await start_coordinator(agent_lost_after_s=1.0)
    polite = spawn("flowforge-agent", "--import", "tests.taskflows", "--agent-id", "polite",
                   "--heartbeat", "0.2")
    killed = spawn("flowforge-agent", "--import", "tests.taskflows", "--agent-id", "killed",
                   "--heartbeat", "0.2")
    await wait_for(lambda: _is(client, "polite", "live"))
    await wait_for(lambda: _is(client, "killed", "live"))

    polite.stop()
    killed.kill9()

    await wait_for(lambda: _is(client, "polite", "stopped"), timeout_s=10)
    await wait_for(lambda: _is(client, "killed", "lost"), timeout_s=10)
    live = await client.agents(include_gone=False)
    assert live == []


async def test_a_task_on_a_queue_no_agent_serves_is_flagged_as_waiting_and_cleared_when_one_comes(
    start_coordinator, start_agent, client: Client
) -> None:
    await start_coordinator(agent_lost_after_s=0.5)
    await client.register()
    run = await client.start("routing")

    async def note_of(task: str) -> str | None:
        return {t.task: t for t in (await client.get(run.run_id)).tasks}[task].note

    await wait_for(lambda: _is_note(note_of("gpu0"), "waiting: no agent on queue gpu"),
                   timeout_s=15)
    await start_agent(("default", "gpu"), heartbeat_s=0.2)
    detail = await client.wait(run.run_id, timeout_s=20)
    assert {t.status.value for t in detail.tasks} == {"succeeded"}
    assert all(not (t.note or "").startswith("waiting:") for t in detail.tasks)


async def _is_note(note, expected: str) -> bool:
    return await note == expected


async def test_run_wait_says_why_a_task_waits_when_no_agent_serves_its_queue(
    start_coordinator, client: Client, cli_env, nc
) -> None:
    await start_coordinator(agent_lost_after_s=0.5)
    await client.register()
    run = await client.start("routing", idempotency_key="waits-for-gpu")
    await wait_for(lambda: _is_flagged(client, run.run_id), timeout_s=15)
    polls = await nc.subscribe("flowforge.api.runs.get")  # a copy of each request the CLI makes

    shown = await asyncio.to_thread(run_cli, [  # the same key: it waits for the run above
        "flowforge", "run", "routing", "--idempotency-key", "waits-for-gpu", "--wait",
        "--wait-timeout", "3.5"], cli_env)

    assert shown.returncode == 1  # still going after --wait-timeout
    assert f"started run {run.run_id}" in shown.stderr
    assert "waiting: no agent on queue gpu (gpu0, gpu1, gpu2)" in shown.stderr, shown.stderr
    await nc.flush()
    assert polls.pending_msgs >= 2  # it read the run again after saying so...
    assert shown.stderr.count("waiting: no agent on queue gpu") == 1  # ...and said it once


async def _is_flagged(client: Client, run_id: str) -> bool:
    return any((t.note or "").startswith("waiting:") for t in (await client.get(run_id)).tasks)


async def test_batch_wait_says_why_its_runs_wait_when_no_agent_serves_their_queue(
    start_coordinator, client: Client, cli_env, tmp_path
) -> None:
    await start_coordinator(agent_lost_after_s=0.5)
    await client.register()
    params, said = tmp_path / "params.jsonl", tmp_path / "stderr.txt"
    params.write_text("{}\n")
    with said.open("w") as err:
        waiting = subprocess.Popen(script(["flowforge", "batch", "submit", "routing", "--params",
                                           str(params), "--wait"]),
                                   env=cli_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    try:
        await wait_for(lambda: "waiting: no agent" in said.read_text(), timeout_s=30)
    finally:
        waiting.kill()
        waiting.wait()
    assert "waiting: no agent on queue gpu (gpu0, gpu1, gpu2)" in said.read_text()
