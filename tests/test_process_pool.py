"""``--pool process``: sync tasks in worker processes, killed at their deadline and retried."""

import os

import pytest

from flowforge.client import Client
from protocol.states import RunStatus, TaskStatus
from tests import taskflows  # noqa: F401 - registers the flows the agent serves

pytestmark = pytest.mark.e2e


async def test_a_stuck_sync_task_is_killed_at_its_timeout_and_retried(
    coordinator, spawn, client: Client
) -> None:
    await client.register()
    agent = spawn("flowforge-agent", "--import", "tests.taskflows", "--pool", "process")
    run = await client.start("stuck_then_fine")
    detail = await client.wait(run.run_id, timeout_s=60)

    task = detail.tasks[0]
    assert detail.run.status is RunStatus.SUCCEEDED, agent.log()
    assert task.attempt == 2
    assert task.output is not None and b"finished on attempt 2" in bytes(task.output)
    worker_pid = int(bytes(task.output).decode().strip('"').rsplit(" ", 1)[1])
    assert worker_pid != agent.pid
    assert [(a.attempt, a.outcome) for a in task.history] == [(1, "timed_out"), (2, "succeeded")]


async def test_a_worker_process_that_dies_fails_its_task_and_the_agent_keeps_serving(
    coordinator, spawn, client: Client
) -> None:
    await client.register()
    spawn("flowforge-agent", "--import", "tests.taskflows", "--pool", "process")
    detail = await client.wait((await client.start("hard_crash")).run_id, timeout_s=60)
    boom = detail.tasks[0]
    assert boom.status is TaskStatus.FAILED
    assert boom.error_type == "WorkerDied"
    assert "code 17" in (boom.error_message or "")

    again = await client.wait((await client.start("progress")).run_id, timeout_s=60)
    assert again.run.status is RunStatus.SUCCEEDED
    assert os.getpid() > 0


async def test_a_task_in_a_worker_process_reads_mapped_outputs_a_page_at_a_time(
    coordinator, spawn, client: Client
) -> None:
    from tests import mapprocflows

    await client.register([mapprocflows.FLOW])
    spawn("flowforge-agent", "--import", "tests.mapprocflows", "--pool", "process")
    run = await client.start("big_join", {"n": 90, "size": 100_000})
    detail = await client.wait(run.run_id, timeout_s=120)
    join = next(t for t in detail.tasks if t.task == "join")
    assert detail.run.status is RunStatus.SUCCEEDED, join.error_message
    assert bytes(join.output) == b'{"n":90,"ordered":true,"missing":[]}'


async def test_a_parent_in_a_worker_process_maps_children_on_an_agent_with_one_slot(
    coordinator, spawn, client: Client
) -> None:
    """The worker process asks its agent to wait; the agent lends the parent's only slot to
    its children (run in other worker processes) meanwhile."""
    from tests import childflows

    await client.register(childflows.register_all())
    spawn("flowforge-agent", "--import", "tests.childflows", "--pool", "process",
          "--concurrency", "1")
    detail = await client.wait((await client.start("nest", {"width": 2})).run_id, timeout_s=120)
    parent = next(t for t in detail.tasks if t.task == "parent")
    assert detail.run.status is RunStatus.SUCCEEDED, parent.error_message
    assert bytes(parent.output) == str(sum(x * 10 + i for x in range(2) for i in range(3))).encode()
