"""Operator actions: cancel, retry what failed, mark a task by hand, partial (--only) runs."""

import time
from pathlib import Path

import msgspec

from flowforge import render
from flowforge.client import Client
from protocol.errors import RemoteError
from protocol.states import RunStatus, TaskStatus
from tests import taskflows  # noqa: F401 - registers the flows used here
from tests.helpers import wait_for


def _by_task(detail) -> dict:
    return {t.task: t for t in detail.tasks}


async def test_cancel_stops_running_async_and_sync_tasks_and_nothing_of_the_run_starts_after(
    coordinator, start_agent, client: Client
) -> None:
    await start_agent(concurrency=4)
    await client.register()
    run = await client.start("cancellable")

    async def both_running() -> bool:
        tasks = _by_task(await client.get(run.run_id))
        return all(tasks[n].status is TaskStatus.RUNNING for n in ("async_long", "sync_long"))

    await wait_for(both_running)
    cancelled_at = time.time()
    assert (await client.cancel(run.run_id)).status is RunStatus.CANCELLED

    detail = await client.wait(run.run_id, timeout_s=5)
    tasks = _by_task(detail)
    assert detail.run.status is RunStatus.CANCELLED
    assert {t.status for t in detail.tasks} == {TaskStatus.CANCELLED}
    assert tasks["later"].started_at is None
    # the agent stops both and acks them: nothing is redelivered or left running
    await wait_for(lambda: not start_agent_running(coordinator), timeout_s=5)
    final = _by_task(await client.get(run.run_id))
    assert all((t.started_at or 0) <= cancelled_at for t in final.values())


def start_agent_running(coordinator) -> bool:
    agents = coordinator.agents.listing()
    return any(a.slots_busy for a in agents)


async def test_cancelling_a_finished_run_is_refused_with_invalid_state(
    coordinator, start_agent, client: Client
) -> None:
    await start_agent()
    await client.register()
    done = await client.wait((await client.start("wide")).run_id, timeout_s=20)
    try:
        await client.cancel(done.run.run_id)
    except RemoteError as exc:
        assert exc.code == "invalid_state"
        assert "already succeeded" in exc.message
    else:
        raise AssertionError("cancel of a finished run was accepted")


async def test_retry_reruns_only_what_failed_and_reuses_what_succeeded(
    coordinator, start_agent, client: Client, tmp_path: Path
) -> None:
    await start_agent()
    await client.register()
    marker = tmp_path / "ready"
    first = await client.wait(
        (await client.start("retryable", {"marker": str(marker)})).run_id, timeout_s=20
    )
    tasks = _by_task(first)
    assert first.run.status is RunStatus.FAILED
    assert tasks["after_flaky"].status is TaskStatus.UPSTREAM_FAILED
    steady_finished = tasks["steady"].finished_at

    marker.write_text("now")
    await client.retry(first.run.run_id)
    again = await client.wait(first.run.run_id, timeout_s=20)
    tasks = _by_task(again)
    assert again.run.status is RunStatus.SUCCEEDED
    assert tasks["flaky"].attempt == 2
    assert msgspec.json.decode(tasks["after_flaky"].output) == "after: flaky is fine now"
    assert tasks["steady"].attempt == 1
    assert tasks["steady"].finished_at == steady_finished


async def test_marking_a_failed_task_succeeded_lets_its_dependants_run_with_that_output(
    coordinator, start_agent, client: Client, tmp_path: Path
) -> None:
    await start_agent()
    await client.register()
    run = await client.start("retryable", {"marker": str(tmp_path / "never")})
    await client.wait(run.run_id, timeout_s=20)

    marked = await client.mark(run.run_id, "flaky", "succeeded", "fixed by hand")
    assert marked.status is TaskStatus.SUCCEEDED
    done = await client.wait(run.run_id, timeout_s=20)
    tasks = _by_task(done)
    assert done.run.status is RunStatus.SUCCEEDED
    assert msgspec.json.decode(tasks["after_flaky"].output) == "after: fixed by hand"
    assert tasks["flaky"].note == "marked succeeded by hand"
    # what ran was the failed attempt: the task shows no duration of its own, the attempt its own
    assert tasks["flaky"].started_at is None
    [attempt] = tasks["flaky"].history
    assert attempt.outcome == "failed" and attempt.started_at and attempt.finished_at
    shown = render.show_run(done, None)
    [row] = [line for line in shown.splitlines() if line.startswith("flaky ")]
    status, _, _, started, took = row.split()[1:6]
    assert (status, started, took) == ("succeeded", "-", "-"), row
    assert "attempt 1: failed" in shown


async def test_marking_a_task_failed_fails_its_dependants_and_the_run(
    coordinator, start_agent, client: Client, tmp_path: Path
) -> None:
    await client.register()
    run = await client.start("retryable", {"marker": str(tmp_path / "x")})  # no agent yet
    await client.mark(run.run_id, "flaky", "failed")
    await client.mark(run.run_id, "steady", "succeeded", 1)
    detail = await client.wait(run.run_id, timeout_s=10)
    tasks = _by_task(detail)
    assert detail.run.status is RunStatus.FAILED
    assert tasks["flaky"].error_type == "MarkedFailed"
    assert tasks["after_flaky"].status is TaskStatus.UPSTREAM_FAILED


async def test_only_runs_the_named_tasks_and_reuses_the_last_outputs_of_skipped_ones(
    coordinator, start_agent, client: Client, tmp_path: Path
) -> None:
    await start_agent()
    await client.register()
    marker = tmp_path / "ok"
    marker.write_text("")
    full = await client.wait(
        (await client.start("retryable", {"marker": str(marker)})).run_id, timeout_s=20
    )
    assert full.run.status is RunStatus.SUCCEEDED

    part = await client.start("retryable", {"marker": str(marker)}, only=["after_flaky"])
    detail = await client.wait(part.run_id, timeout_s=20)
    tasks = _by_task(detail)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert detail.run.only == ["after_flaky"]
    assert tasks["flaky"].status is TaskStatus.SKIPPED
    assert full.run.run_id in (tasks["flaky"].note or "")
    assert tasks["steady"].status is TaskStatus.SKIPPED
    assert tasks["after_flaky"].status is TaskStatus.SUCCEEDED
    assert msgspec.json.decode(tasks["after_flaky"].output) == "after: flaky is fine now"


async def test_only_with_an_unknown_task_is_refused(coordinator, client: Client) -> None:
    await client.register()
    try:
        await client.start("retryable", {"marker": "x"}, only=["nope"])
    except RemoteError as exc:
        assert exc.code == "bad_request"
        assert "no task 'nope'" in exc.message
    else:
        raise AssertionError("an unknown --only task was accepted")
