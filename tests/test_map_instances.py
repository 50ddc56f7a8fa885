"""A mapped task's instances through the API on the real stack (NATS, SQLite, an in-process
coordinator and agent): counted by state, paged in index order, failures alone, one in full,
its log, the errors; pages bounded by the size of an answer."""

import msgspec
import pytest

from coordinator.api import REPLY_MARGIN_BYTES
from coordinator.instances_api import InstancesApi, total_from_note
from coordinator.mapping import MapState
from flowforge.client import Client
from protocol.api import GetInstances
from protocol.errors import ErrorCode, RemoteError
from protocol.states import RunStatus, TaskStatus
from tests import mapflows
from tests.helpers import wait_for


def _indexes(recs) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(r.task.split("~")[1]) for r in recs]


def test_the_total_is_read_from_the_note_the_mapped_task_carries() -> None:
    ms = MapState(task="t", items=[msgspec.Raw(b"1")] * 12_345, budget=0, succeeded=1_000,
                  failed=list(range(12)))
    assert total_from_note(ms.note()) == 12_345
    assert total_from_note(ms.note() + "; the outputs (1 bytes and more) are too many") == 12_345
    assert total_from_note("cancelled") is None and total_from_note(None) is None


async def test_instances_are_counted_paged_in_index_order_and_read_one_at_a_time(
    coordinator, start_agent, client: Client
) -> None:
    flow = mapflows.register_fan(allow_failures=2)
    await start_agent(concurrency=8)
    await client.register([flow])
    run = await client.start("fan", {"n": 30, "fail_on": [4, 17]})
    assert (await client.wait(run.run_id, timeout_s=60)).run.status is RunStatus.SUCCEEDED

    got = await client.instances(run.run_id, "square")
    assert (got.status, got.total, got.counts) == (TaskStatus.SUCCEEDED, 30,
                                                    {"succeeded": 28, "failed": 2})
    assert _indexes(got.instances) == list(range(30)) and got.next_after is None
    assert msgspec.json.decode(got.instances[12].output) == 144

    page = await client.instances(run.run_id, "square", limit=7, after_index=9)
    assert _indexes(page.instances) == list(range(10, 17)) and page.next_after == 16
    every = [r async for r in client.all_instances(run.run_id, "square", page=7)]
    assert _indexes(every) == list(range(30))

    failed = await client.instances(run.run_id, "square", status="failed", counts=False)
    assert _indexes(failed.instances) == [4, 17] and failed.counts == {}
    assert "item 17 (index 17) was asked to fail" in (failed.instances[1].error_message or "")

    one = await client.instance(run.run_id, "square", 17)
    assert one.task == "square~17" and one.status is TaskStatus.FAILED
    assert one.error_type == "ValueError" and "Traceback" in (one.traceback or "")
    assert [a.outcome for a in one.history] == ["failed"] and one.history[0].agent_id
    assert "squaring item 17 at index 17" in await client.task_log(run.run_id, "square~17")


async def test_wrong_requests_are_refused_with_a_code_that_says_why(
    coordinator, start_agent, client: Client
) -> None:
    flow = mapflows.register_fan()
    await start_agent()
    await client.register([flow])
    run = await client.start("fan", {"n": 3})
    await client.wait(run.run_id, timeout_s=30)

    async def refused(call, code: ErrorCode, said: str) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(RemoteError, match=said) as caught:
            await call
        assert caught.value.code is code

    await refused(client.instance(run.run_id, "square", 3), ErrorCode.UNKNOWN_INSTANCE,
                  "maps over 3 items: there is no index 3")
    await refused(client.instances("nope", "square"), ErrorCode.UNKNOWN_RUN, "nope")
    await refused(client.instances(run.run_id, "total"), ErrorCode.BAD_REQUEST,
                  "task 'total' of run .* is not mapped")
    await refused(client.instances(run.run_id, "nothing"), ErrorCode.BAD_REQUEST,
                  "has no task 'nothing'")
    await refused(client.instances(run.run_id, "square", status="lost"), ErrorCode.BAD_REQUEST,
                  "status")
    await refused(client.instances(run.run_id, "square", limit=1001), ErrorCode.BAD_REQUEST,
                  "limit")
    await refused(client.task_log(run.run_id, "total~1"), ErrorCode.BAD_REQUEST,
                  "'total' of run .* is not mapped")
    await refused(client.task_log(run.run_id, "square~x"), ErrorCode.BAD_REQUEST, "task")


async def test_while_mapping_an_item_not_reached_is_pending_and_after_a_cancel_it_is_unknown(
    coordinator, start_agent, client: Client
) -> None:
    flow = mapflows.register_slow(max_active=2)
    await start_agent(concurrency=2)
    await client.register([flow])
    run = await client.start("slow_fan", {"n": 200, "hold_s": 0.2})

    async def mapping() -> bool:
        got = await client.instances(run.run_id, "slow_item", limit=0)
        return got.total == 200 and sum(got.counts.values()) >= 2

    await wait_for(mapping, timeout_s=30)
    got = await client.instances(run.run_id, "slow_item", limit=0)
    assert got.status is TaskStatus.RUNNING and got.instances == []
    assert 2 <= sum(got.counts.values()) < 200
    assert sum(n for s, n in got.counts.items() if s in ("queued", "running")) <= 2
    later = await client.instance(run.run_id, "slow_item", 190)
    assert (later.task, later.status) == ("slow_item~190", TaskStatus.PENDING)
    assert "not made yet" in (later.note or "")

    await client.cancel(run.run_id)
    with pytest.raises(RemoteError, match="ended \\(cancelled\\) before making one"):
        await client.instance(run.run_id, "slow_item", 190)
    cancelled = await client.instances(run.run_id, "slow_item", status="cancelled")
    assert cancelled.instances and all(r.note == "cancelled" for r in cancelled.instances)


async def test_a_page_stops_before_the_answer_outgrows_one_message_and_the_next_goes_on(
    coordinator, start_agent, client: Client
) -> None:
    flow = mapflows.register_big()
    await start_agent(concurrency=4)
    await client.register([flow])
    run = await client.start("big_fan", {"n": 12, "size": 20_000})
    await client.wait(run.run_id, timeout_s=60)

    api = InstancesApi(coordinator._store, coordinator._flows,
                       max_reply_bytes=REPLY_MARGIN_BYTES + 70_000)
    seen: list[int] = []
    after = -1
    for _ in range(12):
        page = await api.instances(GetInstances(run_id=run.run_id, task="big_item",
                                                after_index=after, counts=not seen))
        assert 1 <= len(page.instances) <= 3, "each output is ~20 KB: three fit in 70 KB"
        seen += _indexes(page.instances)
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == list(range(12))
    tiny = InstancesApi(coordinator._store, coordinator._flows, max_reply_bytes=REPLY_MARGIN_BYTES)
    one = await tiny.instances(GetInstances(run_id=run.run_id, task="big_item"))
    assert _indexes(one.instances) == [0] and one.next_after == 0, "always one, then go on"
