"""The agent as a process: start-up errors, graceful shutdown with hand-back, progress."""

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from flowforge.client import Client
from protocol.states import RunStatus, TaskStatus
from tests import taskflows  # noqa: F401 - registers the flows these tests run
from tests.helpers import REPO, run_cli, wait_for

pytestmark = pytest.mark.e2e


async def test_an_agent_that_cannot_import_its_module_exits_2_naming_it(cli_env) -> None:
    result = await asyncio.to_thread(
        run_cli, ["flowforge-agent", "--import", "no_such_module_here"], cli_env
    )
    assert result.returncode == 2
    assert "cannot import 'no_such_module_here'" in result.stderr


@pytest.mark.parametrize(("script", "variable"), [
    ("flowforge-agent", "FLOWFORGE_LEASE"), ("flowforge-agent", "FLOWFORGE_CONCURRENCY"),
    ("flowforge-agent", "FLOWFORGE_PREFETCH"),
    ("flowforge-coordinator", "FLOWFORGE_LEASE"),
    ("flowforge-coordinator", "FLOWFORGE_AGENT_LOST_AFTER"),
])
async def test_a_bad_number_in_the_environment_is_a_usage_error_and_help_still_works(
    cli_env, script: str, variable: str
) -> None:
    env = {**cli_env, variable: "abc"}
    assert (await asyncio.to_thread(run_cli, [script, "--help"], env)).returncode == 0
    result = await asyncio.to_thread(run_cli, [script, "--import", "tests.inputflows"]
                                     if script == "flowforge-agent" else [script], env)
    assert result.returncode == 2, result.stderr
    assert "invalid" in result.stderr and "'abc'" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_project_with_its_own_agent_package_gets_an_error_naming_the_clash(
    cli_env, tmp_path: Path
) -> None:
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "__init__.py").write_text("")
    (tmp_path / "myflows.py").write_text("X = 1\n")
    result = await asyncio.to_thread(
        run_cli, ["flowforge-agent", "--import", "myflows"], cli_env, 60.0, tmp_path
    )
    assert result.returncode == 2
    assert "your project has its own 'agent'" in result.stderr
    assert "rename yours" in result.stderr


async def test_sigterm_lets_running_tasks_finish_and_hands_the_rest_back_for_redelivery(
    coordinator, spawn, client: Client
) -> None:
    await client.register()
    first = spawn("flowforge-agent", "--import", "tests.taskflows", "--grace", "1",
                  "--agent-id", "first", "--concurrency", "2")
    run = await client.start("shutdown_mix", {"seconds": 0.5})

    async def both_running() -> bool:
        tasks = (await client.get(run.run_id)).tasks
        return all(t.status is TaskStatus.RUNNING for t in tasks)

    await wait_for(both_running, timeout_s=20)
    first.popen.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.popen.wait, 30) == 0
    assert "handed back 1 unfinished tasks" in first.log()

    detail = await client.get(run.run_id)
    tasks = {t.task: t for t in detail.tasks}
    assert tasks["short"].status is TaskStatus.SUCCEEDED
    assert tasks["short"].agent_id == "first"
    assert tasks["long"].status is TaskStatus.RUNNING

    spawn("flowforge-agent", "--import", "tests.taskflows", "--agent-id", "second", "--grace", "0.5")

    async def long_taken_over() -> bool:
        t = {x.task: x for x in (await client.get(run.run_id)).tasks}["long"]
        return t.agent_id == "second"

    # redelivered at once (nak), not after the 30 s lease
    await wait_for(long_taken_over, timeout_s=10)
    assert detail.run.status is RunStatus.RUNNING


async def test_progress_and_checkpoints_from_a_task_reach_the_coordinator(
    coordinator, start_agent, client: Client
) -> None:
    await start_agent()
    await client.register()
    seen: list[tuple[float | None, str | None]] = []

    async def follow() -> None:
        async for event in client.events("tasks.>"):
            if getattr(event, "task", None) == "work":
                seen.append((event.progress, event.checkpoint))

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0)
    try:
        detail = await client.wait((await client.start("progress")).run_id, timeout_s=20)
    finally:
        follower.cancel()
    work = detail.tasks[0]
    assert work.status is TaskStatus.SUCCEEDED
    assert work.checkpoint == "all four steps done"
    assert work.progress == 1.0
    assert any(p is not None and 0 < p < 1 for p, _ in seen) or work.checkpoint


async def test_the_example_module_can_be_imported_by_file_path_and_by_module_name() -> None:
    from flowforge.loader import import_target

    by_name = import_target("examples.seed_pipelines")
    by_path = import_target(str(REPO / "examples" / "seed_pipelines.py"))
    assert by_name is by_path
    assert json.dumps(by_name.fetch_data1(3))


async def test_a_storm_of_progress_calls_is_coalesced_into_a_few_reports(
    coordinator, spawn, client: Client
) -> None:
    await client.register()
    spawn("flowforge-agent", "--import", "tests.taskflows")
    reports: list[bytes] = []

    async def keep(msg) -> None:
        if b'"progress.v1"' in msg.data:
            reports.append(msg.data)

    sub = await client.nc.subscribe("flowforge.report.*", cb=keep)
    try:
        detail = await client.wait((await client.start("progress_storm")).run_id, timeout_s=30)
        await client.nc.flush()
    finally:
        await sub.unsubscribe()
    storm = detail.tasks[0]
    assert storm.status is TaskStatus.SUCCEEDED
    assert storm.checkpoint == "item 19999"
    assert 1 <= len(reports) < 100  # 20,000 calls; at most one report per 0.2 s


def test_the_agents_defaults_are_sixteen_thread_slots_or_one_process_per_core_and_a_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent.cli import build_parser, config_from_args
    from agent.config import prefetch_of

    for name in ("FLOWFORGE_CONCURRENCY", "FLOWFORGE_PREFETCH", "FLOWFORGE_POOL"):
        monkeypatch.delenv(name, raising=False)
    threads = config_from_args(build_parser().parse_args(["--import", "tests.inputflows"]))
    assert (threads.concurrency, threads.prefetch, prefetch_of(threads, 16)) == (16, None, 64)
    procs = config_from_args(build_parser().parse_args(
        ["--import", "tests.inputflows", "--pool", "process"]))
    assert procs.concurrency == (os.cpu_count() or 2)
    off = config_from_args(build_parser().parse_args(
        ["--import", "tests.inputflows", "-c", "3", "--prefetch", "0"]))
    assert (off.concurrency, prefetch_of(off, 3)) == (3, 0)
    for bad in ("-1", "10001"):
        with pytest.raises(ValueError, match="--prefetch must be 0 to 10000"):
            config_from_args(build_parser().parse_args(
                ["--import", "tests.inputflows", "--prefetch", bad]))
