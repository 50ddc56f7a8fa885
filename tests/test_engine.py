"""The engine end to end in one process: real NATS, real SQLite, in-process coordinator and agents."""

import itertools
from dataclasses import replace

import msgspec

from flowforge.client import Client
from protocol.states import RunStatus, TaskStatus
from tests import taskflows
from tests.inputflows import load_seed_pipelines


def _outputs(detail) -> dict[str, dict]:
    return {
        t.task: msgspec.json.decode(t.output) for t in detail.tasks
        if t.status is TaskStatus.SUCCEEDED
    }


async def test_no_task_starts_before_its_dependencies_succeeded_in_a_random_dag(
    coordinator, start_agent, client: Client
) -> None:
    await start_agent(concurrency=4)
    await client.register()
    run = await client.start("random_dag")
    detail = await client.wait(run.run_id, timeout_s=60)

    assert detail.run.status is RunStatus.SUCCEEDED
    out = _outputs(detail)
    assert len(out) == taskflows.RANDOM_DAG_SIZE
    spec = (await client.flow("random_dag")).spec
    edges = [(dep, t.name) for t in spec.tasks for dep in t.depends_on]
    assert len(edges) > 50
    for dep, task in edges:
        assert out[task]["start"] >= out[dep]["end"], f"{task} started before {dep} ended"


async def test_independent_ready_tasks_overlap_on_an_agent_with_several_slots(
    coordinator, start_agent, client: Client
) -> None:
    await start_agent(concurrency=4)
    await client.register()
    detail = await client.wait((await client.start("wide")).run_id, timeout_s=30)

    spans = sorted((o["start"], o["end"]) for o in _outputs(detail).values())
    overlapping = sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    assert overlapping >= 1


async def test_gpu_tasks_run_only_on_the_gpu_agent_and_two_agents_share_a_queue(
    coordinator, start_agent, client: Client
) -> None:
    await start_agent(("default",), concurrency=1, agent_id="cpu-a")
    await start_agent(("default",), concurrency=1, agent_id="cpu-b")
    await start_agent(("gpu",), concurrency=1, agent_id="gpu-a")
    await client.register()
    detail = await client.wait((await client.start("routing")).run_id, timeout_s=30)

    assert detail.run.status is RunStatus.SUCCEEDED
    by_task = {t.task: t.agent_id for t in detail.tasks}
    assert {by_task[f"gpu{i}"] for i in range(3)} == {"gpu-a"}
    assert {by_task[f"cpu{i}"] for i in range(6)} == {"cpu-a", "cpu-b"}


async def test_outputs_that_are_not_json_or_too_big_fail_with_advice_and_the_agent_keeps_serving(
    coordinator, start_agent, client: Client
) -> None:
    await start_agent()
    await client.register()
    detail = await client.wait((await client.start("bad_outputs")).run_id, timeout_s=30)
    tasks = {t.task: t for t in detail.tasks}

    assert tasks["not_json"].status is TaskStatus.FAILED
    assert tasks["not_json"].error_type == "OutputError"
    assert "not JSON-serialisable" in (tasks["not_json"].error_message or "")
    assert "returning a reference" in (tasks["not_json"].error_message or "")
    assert tasks["too_big"].status is TaskStatus.FAILED
    assert "over the limit" in (tasks["too_big"].error_message or "")
    assert tasks["fine"].status is TaskStatus.SUCCEEDED
    again = await client.wait((await client.start("bad_outputs")).run_id, timeout_s=30)
    assert {t.task: t.status for t in again.tasks}["fine"] is TaskStatus.SUCCEEDED


async def test_a_task_whose_inputs_exceed_the_message_limit_fails_with_advice_not_a_hang(
    start_coordinator, start_agent, client: Client
) -> None:
    coordinator = await start_coordinator()
    coordinator.scheduler.settings = replace(  # a stock nats-server's limit
        coordinator.scheduler.settings, max_dispatch_bytes=1024 * 1024)
    await start_agent()
    await client.register()
    detail = await client.wait((await client.start("fan_in_too_big")).run_id, timeout_s=30)
    join = {t.task: t for t in detail.tasks}["join"]
    assert detail.run.status is RunStatus.FAILED
    assert join.error_type == "InputsTooLarge"
    assert "return a reference" in (join.error_message or "")


async def test_a_timed_out_sync_task_keeps_its_slot_so_the_next_task_is_not_starved(
    coordinator, start_agent, client: Client
) -> None:
    await start_agent(concurrency=1)
    await client.register()
    detail = await client.wait((await client.start("timeout_then_quick")).run_id, timeout_s=30)
    tasks = {t.task: t for t in detail.tasks}
    assert tasks["slow"].status is TaskStatus.FAILED
    assert tasks["slow"].error_type == "TaskTimeout"
    assert "--pool process" in (tasks["slow"].error_message or "")
    assert tasks["quick"].status is TaskStatus.SUCCEEDED


async def test_recorded_times_are_ordered_for_quick_tasks_that_report_progress(
    coordinator, start_agent, client: Client
) -> None:
    """A task shorter than the started report's delay that checkpoints: its progress report
    comes after its work, yet its start is the agent's own stamp, before its end."""
    load_seed_pipelines()  # analyze_data checkpoints and returns at once
    await start_agent()
    await client.register()
    run = await client.start("pipeline_simple")
    detail = await client.wait(run.run_id, timeout_s=30)
    assert detail.run.status is RunStatus.SUCCEEDED
    for t in detail.tasks:
        assert t.queued_at and t.started_at and t.finished_at, t.task
        assert t.queued_at <= t.started_at <= t.finished_at, t.task
    analyze = next(t for t in detail.tasks if t.task == "analyze_data")
    assert analyze.checkpoint and analyze.checkpoint.startswith("analysing")
