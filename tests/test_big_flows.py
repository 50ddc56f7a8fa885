"""Flows and runs larger than one NATS message: registration, paged run detail, clear errors."""

from collections.abc import Awaitable, Callable

import pytest

from coordinator.service import Coordinator
from flowforge import register_task_pipeline
from flowforge.client import Client
from protocol import api
from protocol.errors import TooLarge
from protocol.limits import MAX_TASKS_PER_FLOW
from tests.taskflows import ok_task


def fan(name: str, width: int) -> dict[str, dict[str, object]]:
    middle = [f"m{i:05d}" for i in range(width)]
    pipeline: dict[str, dict[str, object]] = {"root": {"function": ok_task}}
    pipeline |= {m: {"function": ok_task, "depends_on": ["root"]} for m in middle}
    pipeline["join"] = {"function": ok_task, "depends_on": middle}
    return pipeline


def test_a_function_s_source_travels_once_however_many_tasks_use_it() -> None:
    spec = register_task_pipeline(flow_name="big_fan_source", pipeline=fan("s", 50))
    carrying = [t.name for t in spec.tasks if t.source]
    assert carrying == ["root"]
    m7 = next(t for t in spec.tasks if t.name == "m00007")
    doc, source = spec.described(m7)
    assert "def ok_task" in source and (doc, source) == spec.described(spec.tasks[0])


async def test_a_flow_of_the_largest_size_registers_and_reads_back(
    coordinator: Coordinator, client: Client
) -> None:
    spec = register_task_pipeline(flow_name="big_fan_max",
                                  pipeline=fan("max", MAX_TASKS_PER_FLOW - 2))
    assert len(spec.tasks) == MAX_TASKS_PER_FLOW
    [registered] = await client.register([spec])
    detail = await client.flow("big_fan_max")
    assert detail.version == registered.version and len(detail.spec.tasks) == MAX_TASKS_PER_FLOW


async def test_a_run_too_big_for_one_answer_is_read_in_pages(
    coordinator: Coordinator, client: Client, start_agent: Callable[..., Awaitable[object]]
) -> None:
    coordinator._api.max_reply_bytes = 40_000  # about a hundred task instances an answer
    spec = register_task_pipeline(flow_name="big_fan_paged", pipeline=fan("paged", 400))
    await client.register([spec])
    await start_agent(concurrency=8)
    run = await client.start("big_fan_paged")
    detail = await client.wait(run.run_id, timeout_s=60)
    assert detail.run.status == "succeeded" and detail.next_task is None
    assert sorted(t.task for t in detail.tasks) == sorted(t.name for t in spec.tasks)
    first = await client.request(api.GetRun(run_id=run.run_id), type(detail))
    assert first.next_task is not None and 0 < len(first.tasks) < len(spec.tasks)


async def test_a_request_over_the_server_s_max_payload_is_refused_before_it_is_sent(
    coordinator: Coordinator, client: Client
) -> None:
    with pytest.raises(TooLarge, match="over the NATS server's max_payload"):
        await client.start("wide", {"blob": "x" * (client.nc.max_payload + 1)})
