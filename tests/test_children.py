"""Child tasks on the real stack (NATS, SQLite, an in-process coordinator and agents): outputs
in order, sync and async parents, spawn and gather, failures, nesting, the limits — and no
deadlock when the parents hold every slot."""

import msgspec

from agent.inhand import TaskState
from flowforge.client import Client
from protocol.children import ChildList, ListChildren
from protocol.records import RunDetail
from protocol.states import RunStatus, TaskStatus
from tests import childflows
from tests.helpers import wait_for


def _parent(detail: RunDetail):  # type: ignore[no-untyped-def]
    [rec] = [t for t in detail.tasks if t.task == "parent"]
    return rec


def _output(detail: RunDetail) -> object:
    return msgspec.json.decode(_parent(detail).output)


async def _run(client: Client, flow: str, params: dict | None = None,
               timeout_s: float = 60) -> RunDetail:
    run = await client.start(flow, params or {})
    return await client.wait(run.run_id, timeout_s=timeout_s)


async def test_an_agent_with_one_slot_runs_a_parent_that_maps_50_children(
    coordinator, start_agent, client: Client
) -> None:
    await client.register(childflows.register_all())
    await start_agent(concurrency=1)
    detail = await _run(client, "kids", {"n": 50})
    assert detail.run.status is RunStatus.SUCCEEDED, _parent(detail).error_message
    assert _output(detail) == {"sum": 2 * sum(range(50)), "first": [0, 2, 4], "n": 50}
    listed = await client.request(ListChildren(run_id=detail.run.run_id, limit=100),
                                  ChildList)
    assert listed.counts == {"parent": {"succeeded": 50}}
    assert [c.seq for c in listed.children] == list(range(50))
    assert all(c.function == "tests.childflows:double" for c in listed.children)


async def test_an_async_parent_awaits_its_children(coordinator, start_agent,
                                                   client: Client) -> None:
    await client.register(childflows.register_all())
    await start_agent(concurrency=1)
    detail = await _run(client, "kids_async", {"n": 30})
    assert _output(detail) == {"sum": 2 * sum(range(30)), "n": 30}


async def test_three_levels_of_children_on_one_agent_with_two_slots(
    coordinator, start_agent, client: Client
) -> None:
    await client.register(childflows.register_all())
    await start_agent(concurrency=2)
    detail = await _run(client, "nest", {"width": 4})
    assert detail.run.status is RunStatus.SUCCEEDED, _parent(detail).error_message
    assert _output(detail) == sum(x * 10 + i for x in range(4) for i in range(3))


async def test_spawn_and_gather_in_any_order_with_a_retried_child_and_one_never_gathered(
    coordinator, start_agent, client: Client
) -> None:
    await client.register(childflows.register_all())
    await start_agent(concurrency=2)
    detail = await _run(client, "spawn_gather")
    assert detail.run.status is RunStatus.SUCCEEDED, _parent(detail).error_message
    assert _output(detail) == [6, 40]
    listed = await client.request(ListChildren(run_id=detail.run.run_id), ChildList)
    by_seq = {c.seq: c for c in listed.children}
    assert by_seq[1].attempt == 2 and by_seq[1].status is TaskStatus.SUCCEEDED
    assert by_seq[2].status is TaskStatus.SUCCEEDED  # the one never gathered ran too


async def test_failed_children_come_back_as_exceptions_or_fail_the_parent(
    coordinator, start_agent, client: Client
) -> None:
    await client.register(childflows.register_all())
    await start_agent(concurrency=3)
    tolerant = await _run(client, "tolerant", {"n": 10})
    assert _output(tolerant) == {"ok": [0, 1, 2, 4, 5, 6, 7, 9],
                                 "failed": ["parent/3", "parent/8"]}
    strict = await _run(client, "strict", {"n": 10})
    assert strict.run.status is RunStatus.FAILED
    parent = _parent(strict)
    assert parent.error_type == "ChildFailed"
    assert "child task parent/3 (tests.childflows:picky) failed: ValueError" in (
        parent.error_message or "")


async def test_the_depth_and_count_limits_fail_the_parent_with_a_clear_error(
    start_coordinator, start_agent, client: Client, tmp_path
) -> None:
    coordinator = await start_coordinator()
    coordinator.scheduler.children.max_children = 20
    await client.register(childflows.register_all())
    await start_agent(concurrency=2)
    deep = await _run(client, "dive")
    assert deep.run.status is RunStatus.FAILED
    assert "nested 6 deep, over the limit of 5" in (_parent(deep).error_message or "")
    many = await _run(client, "too_many", {"n": 21})
    assert "would have 21 child tasks, over the limit of 20" in (
        _parent(many).error_message or "")


async def test_a_child_function_must_be_registered(coordinator, start_agent,
                                                   client: Client) -> None:
    await client.register(childflows.register_all())
    await start_agent()
    detail = await _run(client, "unregistered")
    assert detail.run.status is RunStatus.FAILED
    assert "not_registered_child is not a registered function" in (
        _parent(detail).error_message or "")


async def test_a_parent_that_spawns_other_children_on_its_next_attempt_gets_a_clear_error(
    coordinator, start_agent, client: Client
) -> None:
    await client.register(childflows.register_all())
    await start_agent()
    detail = await _run(client, "fickle")
    assert detail.run.status is RunStatus.FAILED
    assert "spawned before with another function" in (_parent(detail).error_message or "")


async def test_200_mapped_parents_each_mapping_20_children_on_two_agents_with_4_slots(
    coordinator, start_agent, client: Client
) -> None:
    await client.register(childflows.register_all())
    await start_agent(concurrency=4, agent_id="a1")
    await start_agent(concurrency=4, agent_id="a2")
    detail = await _run(client, "parents", {"xs": list(range(200))}, timeout_s=240)
    assert detail.run.status is RunStatus.SUCCEEDED, _parent(detail).note
    expected = [sum(2 * (x * 100 + i) for i in range(20)) for x in range(200)]
    assert _output(detail) == expected
    listed = await client.request(ListChildren(run_id=detail.run.run_id, limit=0), ChildList)
    assert len(listed.counts) == 200
    assert all(c == {"succeeded": 20} for c in listed.counts.values())


async def test_a_parent_that_fails_for_good_takes_its_running_children_with_it(
    coordinator, start_agent, client: Client
) -> None:
    await client.register(childflows.register_all())
    agent = await start_agent(concurrency=3)
    detail = await _run(client, "abandon", {"n": 5})
    assert detail.run.status is RunStatus.FAILED

    async def all_cancelled() -> bool:
        listed = await client.request(ListChildren(run_id=detail.run.run_id), ChildList)
        return listed.counts == {"parent": {"cancelled": 5}}

    await wait_for(all_cancelled, timeout_s=20)
    listed = await client.request(ListChildren(run_id=detail.run.run_id), ChildList)
    assert {c.note for c in listed.children} == {"cancelled: its parent 'parent' failed"}
    # told to stop, the agent runs none of them (withdrawn, not started, or stopped) long
    # before their 30 s are over
    await wait_for(lambda: not agent._slots.in_state(TaskState.RUNNING), timeout_s=20)


async def test_cancelling_the_run_cancels_its_children_and_stops_the_running_ones(
    coordinator, start_agent, client: Client
) -> None:
    await client.register(childflows.register_all())
    agent = await start_agent(concurrency=2)
    run = await client.start("slow_kids", {"n": 6, "hold_s": 30.0})

    async def two_running() -> bool:
        listed = await client.request(ListChildren(run_id=run.run_id), ChildList)
        return listed.counts.get("parent", {}).get("running", 0) == 2

    await wait_for(two_running, timeout_s=20)
    await client.cancel(run.run_id)
    detail = await client.wait(run.run_id, timeout_s=20)
    assert detail.run.status is RunStatus.CANCELLED
    listed = await client.request(ListChildren(run_id=run.run_id), ChildList)
    assert listed.counts == {"parent": {"cancelled": 6}}
    await wait_for(lambda: agent.completed >= 3, timeout_s=20)  # the parent and both children


async def test_children_have_logs_and_events_even_under_a_mapped_instance(
    coordinator, start_agent, client: Client
) -> None:
    import asyncio

    from protocol.records import TaskRecord

    await client.register(childflows.register_all())
    await start_agent(concurrency=2)
    seen: set[str] = set()

    async def watch() -> None:
        async for event in client.events():
            if isinstance(event, TaskRecord) and event.status is TaskStatus.SUCCEEDED:
                seen.add(event.task)

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.sleep(0)
        mapped = await _run(client, "parents", {"xs": [0, 1]})
        assert mapped.run.status is RunStatus.SUCCEEDED
        await wait_for(lambda: {"parent~0/0", "parent~1/19"} <= seen, timeout_s=10)
    finally:
        watcher.cancel()
    detail = await _run(client, "spawn_gather")
    log = await client.task_log(detail.run.run_id, "parent/1")  # flaky: failed once
    assert "doubling 3 on attempt 1" in log and "doubling 3 on attempt 2" in log


async def test_a_child_on_a_queue_no_agent_serves_says_why_it_waits(
    start_coordinator, start_agent, client: Client
) -> None:
    await start_coordinator(agent_lost_after_s=1.0)  # it says why after agents had time
    await client.register(childflows.register_all())
    await start_agent(concurrency=2)  # serves default only; kid runs on "kids"
    run = await client.start("kids_elsewhere", {"n": 2})

    async def noted() -> bool:
        listed = await client.request(ListChildren(run_id=run.run_id), ChildList)
        return len(listed.children) == 2 and all(
            (c.note or "").startswith("waiting:") and "kids" in (c.note or "")
            for c in listed.children)

    await wait_for(noted, timeout_s=30)
    await client.cancel(run.run_id)


async def test_a_parent_waiting_for_its_children_lends_its_queue_limit_slot_too(
    coordinator, start_agent, client: Client
) -> None:
    """queue:default allows one task at a time; the parent takes it, then waits for children
    on the same queue: without lending the limit's slot they could never start."""
    await client.register(childflows.register_all())
    await client.set_limit("queue:default", 1)
    await start_agent(concurrency=4)
    detail = await _run(client, "nest", {"width": 3})
    assert detail.run.status is RunStatus.SUCCEEDED, _parent(detail).error_message
    assert _output(detail) == sum(x * 10 + i for x in range(3) for i in range(3))
    [limit] = [lim for lim in await client.limits() if lim.name == "queue:default"]
    assert limit.holding == 0 and not limit.waiting
