"""Mapped tasks on the real stack (NATS, SQLite, an in-process coordinator and agent): one
instance per item with its item and index, outputs in item order to the dependants, failures
allowed or not, a window of instances at a time, retries, cancel, a restart mid-map."""

import msgspec
import pytest

from flowforge.client import Client
from protocol.errors import InvalidOption
from protocol.messages import TaskLog, TaskSucceeded, encoder
from protocol.records import RunDetail
from protocol.states import RunStatus, TaskStatus
from tests import mapflows
from tests.helpers import wait_for


def _task(detail: RunDetail, name: str):  # type: ignore[no-untyped-def]
    [rec] = [t for t in detail.tasks if t.task == name]
    return rec


def _output(detail: RunDetail, name: str) -> object:
    return msgspec.json.decode(_task(detail, name).output)


async def test_a_mapped_task_runs_once_per_item_and_its_dependant_gets_the_outputs_in_order(
    coordinator, start_agent, client: Client
) -> None:
    flow = mapflows.register_fan()
    await start_agent(concurrency=8)
    await client.register([flow])
    run = await client.start("fan", {"n": 50})
    detail = await client.wait(run.run_id, timeout_s=60)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert _output(detail, "square") == [i * i for i in range(50)]
    assert _output(detail, "total") == {"sum": sum(i * i for i in range(50)), "failed": 0}
    square = _task(detail, "square")
    assert square.note == "mapped: 50/50 done" and square.progress == 1.0
    assert all("~" not in t.task for t in detail.tasks), "instances are not tasks of the run"


async def test_a_task_maps_over_a_run_parameter(coordinator, start_agent, client: Client) -> None:
    flow = mapflows.register_param_fan()
    await start_agent()
    await client.register([flow])
    detail = await client.wait((await client.start("param_fan", {"xs": [3, 1, 2]})).run_id,
                               timeout_s=30)
    assert _output(detail, "square") == [9, 1, 4]
    with pytest.raises(Exception, match="xs"):
        await client.start("param_fan", {})


async def test_failed_instances_within_the_allowance_leave_gaps_and_past_it_fail_the_task(
    coordinator, start_agent, client: Client
) -> None:
    flow = mapflows.register_fan(allow_failures=2)  # before the agent: it serves what is there
    await start_agent()
    await client.register([flow])
    allowed = await client.wait((await client.start("fan", {"n": 6, "fail_on": [1, 4]})).run_id,
                                timeout_s=30)
    assert allowed.run.status is RunStatus.SUCCEEDED
    assert _output(allowed, "square") == [0, None, 4, 9, None, 25]
    assert _output(allowed, "total") == {"sum": 38, "failed": 2}
    assert "2 failed (index 1, 4)" in (_task(allowed, "square").note or "")

    await client.register([mapflows.register_fan(allow_failures=0.1)], replace=True)
    failed = await client.wait((await client.start("fan", {"n": 6, "fail_on": [1, 4]})).run_id,
                               timeout_s=30)
    assert failed.run.status is RunStatus.FAILED
    square = _task(failed, "square")
    assert square.status is TaskStatus.FAILED and square.error_type == "MappedTaskFailed"
    assert "2 of 6 instances failed (allowed 0)" in (square.error_message or "")
    assert _task(failed, "total").status is TaskStatus.UPSTREAM_FAILED


async def test_an_empty_list_maps_to_nothing_and_a_value_that_is_no_list_fails_clearly(
    coordinator, start_agent, client: Client
) -> None:
    flow = mapflows.register_fan()
    await start_agent()
    await client.register([flow])
    empty = await client.wait((await client.start("fan", {"n": 0})).run_id, timeout_s=30)
    assert empty.run.status is RunStatus.SUCCEEDED and _output(empty, "square") == []
    await client.register([mapflows.register_fan(fan="not_a_list")], replace=True)
    bad = await client.wait((await client.start("fan", {})).run_id, timeout_s=30)
    square = _task(bad, "square")
    assert square.error_type == "MapError"
    assert "the output of 'not_a_list' is not a JSON list to map over" in (square.error_message or "")


async def test_an_instance_is_retried_like_a_task(coordinator, start_agent, client: Client) -> None:
    flow = mapflows.register_flaky()
    await start_agent(concurrency=4)
    await client.register([flow])
    detail = await client.wait((await client.start("flaky_fan", {"n": 6})).run_id, timeout_s=30)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert _output(detail, "flaky_item") == list(range(6))


def test_a_mapped_task_must_map_over_an_upstream_task_or_a_parameter() -> None:
    with pytest.raises(InvalidOption, match="chunk"):  # max_active limits any task now
        mapflows.register_task_pipeline(flow_name="bad", pipeline={
            "a": {"function": mapflows.numbers, "chunk": 2}})
    with pytest.raises(InvalidOption, match="must be 1 or more"):
        mapflows.register_fan(max_active=0)


def _most_at_once(ledger: str) -> int:
    events = sorted((float(at), 1 if kind == "start" else -1)
                    for kind, _, at in (line.split() for line in ledger.splitlines()))
    at_once = most = 0
    for _, step in events:
        at_once += step
        most = max(most, at_once)
    return most


async def test_max_active_bounds_the_instances_running_at_once(
    coordinator, start_agent, client: Client, tmp_path, monkeypatch
) -> None:
    ledger = tmp_path / "ledger"
    monkeypatch.setenv("FLOWFORGE_TEST_LEDGER", str(ledger))
    flow = mapflows.register_slow(max_active=3)
    await start_agent(concurrency=10)
    await client.register([flow])
    detail = await client.wait((await client.start("slow_fan", {"n": 24})).run_id, timeout_s=60)
    assert _output(detail, "slow_item") == list(range(24))
    text = ledger.read_text()
    assert text.count("start ") == 24 and _most_at_once(text) == 3


async def test_a_restart_mid_map_runs_each_instance_once_and_finishes(
    start_coordinator, start_agent, client: Client, tmp_path, monkeypatch
) -> None:
    ledger = tmp_path / "ledger"
    monkeypatch.setenv("FLOWFORGE_TEST_LEDGER", str(ledger))
    coordinator = await start_coordinator()
    flow = mapflows.register_slow(max_active=4)
    await start_agent(concurrency=4)
    await client.register([flow])
    run = await client.start("slow_fan", {"n": 40})

    async def some_done() -> bool:
        note = _task(await client.get(run.run_id), "slow_item").note or ""
        return note.startswith("mapped: ") and int(note.split()[1].split("/")[0]) >= 8

    await wait_for(some_done, timeout_s=60)
    await coordinator.shutdown()
    await start_coordinator()
    detail = await client.wait(run.run_id, timeout_s=60)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert _output(detail, "slow_item") == list(range(40))
    started = [line.split()[1] for line in ledger.read_text().splitlines()
               if line.startswith("start ")]
    assert sorted(started) == sorted(f"slow_item~{i}" for i in range(40)), "an instance ran twice"


async def test_cancelling_a_run_cancels_its_instances(
    coordinator, start_agent, client: Client
) -> None:
    flow = mapflows.register_slow(max_active=2)
    await start_agent(concurrency=2)
    await client.register([flow])
    run = await client.start("slow_fan", {"n": 200, "hold_s": 0.2})

    async def running() -> bool:
        return (_task(await client.get(run.run_id), "slow_item").note or "").startswith("mapped")

    await wait_for(running, timeout_s=30)
    cancelled = await client.cancel(run.run_id)
    assert cancelled.status is RunStatus.CANCELLED
    detail = await client.get(run.run_id)
    assert _task(detail, "slow_item").status is TaskStatus.CANCELLED
    stored = await coordinator._store.instances_of(run.run_id)
    assert stored and all(i.status in (TaskStatus.SUCCEEDED, TaskStatus.CANCELLED) for i in stored)
    assert len(stored) < 200  # the items not reached were never made


async def test_retrying_a_failed_mapped_task_runs_only_its_failed_instances_again(
    coordinator, start_agent, client: Client, tmp_path, monkeypatch
) -> None:
    ledger, fixed = tmp_path / "ledger", tmp_path / "fixed"
    monkeypatch.setenv("FLOWFORGE_TEST_LEDGER", str(ledger))
    monkeypatch.setenv("FLOWFORGE_TEST_FIXED", str(fixed))
    flow = mapflows.register_picky()
    await start_agent(concurrency=4)
    await client.register([flow])
    run = await client.start("picky_fan", {"n": 6})
    failed = await client.wait(run.run_id, timeout_s=30)
    assert failed.run.status is RunStatus.FAILED
    assert "3 of 6 instances failed" in (_task(failed, "picky_item").error_message or "")
    fixed.touch()
    await client.retry(run.run_id)
    done = await client.wait(run.run_id, timeout_s=30)
    assert done.run.status is RunStatus.SUCCEEDED
    assert _output(done, "picky_item") == [i * 10 for i in range(6)]
    assert _output(done, "total") == {"sum": 150, "failed": 0}
    ran = sorted(line.split() for line in ledger.read_text().splitlines())
    assert ran == sorted([[f"picky_item~{i}", "1"] for i in range(6)]
                         + [[f"picky_item~{i}", "2"] for i in (1, 3, 5)])


async def test_reports_naming_instances_that_do_not_exist_change_nothing(
    coordinator, start_agent, client: Client, nc
) -> None:
    flow = mapflows.register_fan()
    await client.register([flow])
    run = await client.start("fan", {"n": 4})  # no agent yet: nothing runs
    js = nc.jetstream()
    forged = [TaskSucceeded(run_id=run.run_id, task=name, attempt=1, agent_id="forger",
                            at=1.0, started_at=1.0, output=msgspec.Raw(b"666"))
              for name in ("square~99", "square~-1", "square~x", "nosuch~1", "square~",
                           "~1", "square~1~2", "square~00000000001")]
    for report in forged:
        await js.publish(f"flowforge.report.{run.run_id}", encoder.encode(report))
    bad_log = TaskLog(run_id=run.run_id, task="square~1.x", attempt=1, agent_id="forger",
                      at=1.0, text="hi")
    await js.publish(f"flowforge.report.{run.run_id}", encoder.encode(bad_log))
    await wait_for(lambda: _rejected(client), timeout_s=20)
    await start_agent()
    detail = await client.wait(run.run_id, timeout_s=30)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert _output(detail, "square") == [0, 1, 4, 9]


async def _rejected(client: Client) -> bool:
    return any("square~1.x" in r.subject or b"square~1.x" in r.raw
               for r in await client.rejected())


async def test_chunks_carry_several_items_and_each_item_keeps_its_own_record(
    coordinator, start_agent, client: Client
) -> None:
    flow = mapflows.register_chunked(chunk=7, allow_failures=2)
    await start_agent(concurrency=4)
    await client.register([flow])
    run = await client.start("chunked", {"n": 30, "fail_on": [8, 29]})
    detail = await client.wait(run.run_id, timeout_s=60)
    assert detail.run.status is RunStatus.SUCCEEDED
    expected = [None if i in (8, 29) else i * i for i in range(30)]
    assert _output(detail, "square") == expected
    stored = {i.task: i async for i in client.all_instances(run.run_id, "square")}
    assert sorted(stored) == sorted(f"square~{i}" for i in range(30))
    assert stored["square~8"].status is TaskStatus.FAILED
    assert "item 8 (index 8) was asked to fail" in (stored["square~8"].error_message or "")
    assert msgspec.json.decode(stored["square~9"].output) == 81
    assert {stored[f"square~{i}"].agent_id for i in range(7, 14)} == {
        stored["square~7"].agent_id}  # one message carried items 7 to 13


async def test_a_failed_item_of_a_chunk_is_retried_on_its_own(
    coordinator, start_agent, client: Client
) -> None:
    flow = mapflows.register_chunked_flaky(chunk=4)
    await start_agent(concurrency=4)
    await client.register([flow])
    run = await client.start("chunked_flaky", {"n": 10})
    detail = await client.wait(run.run_id, timeout_s=60)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert _output(detail, "flaky_item") == list(range(10))
    stored = {i.task: i async for i in client.all_instances(run.run_id, "flaky_item")}
    assert all(stored[f"flaky_item~{i}"].attempt == (2 if i % 2 else 1) for i in range(10))


def test_chunk_applies_to_a_mapped_task_and_is_bounded() -> None:
    with pytest.raises(InvalidOption, match="chunk"):
        mapflows.register_task_pipeline(flow_name="bad", pipeline={
            "a": {"function": mapflows.numbers, "chunk": 5}})
    with pytest.raises(InvalidOption, match="must be 1 to 10,000 items"):
        mapflows.register_chunked(chunk=0)


@pytest.mark.parametrize("join", ["sync", "async"])
async def test_outputs_too_many_for_one_value_are_read_a_page_at_a_time(
    coordinator, start_agent, client: Client, join: str
) -> None:
    flow = mapflows.register_big_join(join)
    await start_agent(concurrency=4)
    await client.register([flow])
    n = 90  # 90 outputs of 100,000 characters: over the 8 MB one task message may carry
    run = await client.start("big_join", {"n": n, "size": 100_000})
    detail = await client.wait(run.run_id, timeout_s=90)
    assert detail.run.status is RunStatus.SUCCEEDED, _task(detail, "join").error_message
    assert "too many to pass as one value" in (_task(detail, "big_item").note or "")
    if join == "sync":
        assert _output(detail, "join") == {"n": n, "ordered": True, "missing": []}
    else:
        assert _output(detail, "join") == {"n": n, "first": "000000"}


async def test_a_parameter_taking_outputs_too_many_for_one_value_fails_saying_what_to_do(
    coordinator, start_agent, client: Client
) -> None:
    flow = mapflows.register_big_join("param")
    await start_agent(concurrency=4)
    await client.register([flow])
    detail = await client.wait((await client.start("big_join", {"n": 90, "size": 100_000})).run_id,
                               timeout_s=90)
    join = _task(detail, "join")
    assert join.status is TaskStatus.FAILED
    assert "iterate ctx.mapped_outputs('big_item')" in (join.error_message or "")


@pytest.mark.parametrize("source", ["generate", "agenerate"])
async def test_a_mapped_task_maps_over_the_items_a_generator_yields_past_one_outputs_limit(
    coordinator, start_agent, client: Client, source: str
) -> None:
    flow = mapflows.register_streamed(source)
    await start_agent(concurrency=4)
    await client.register([flow])
    n = 40_000  # 40,000 items of 10 characters: over the 256 KB one output may hold
    detail = await client.wait((await client.start("streamed", {"n": n})).run_id, timeout_s=120)
    assert detail.run.status is RunStatus.SUCCEEDED, [t.error_message for t in detail.tasks]
    assert _output(detail, "source") == n
    assert _output(detail, "check_all") == {"n": n, "in_order": True}


async def test_a_generator_that_fails_midway_yields_again_from_the_start_on_its_retry(
    coordinator, start_agent, client: Client
) -> None:
    flow = mapflows.register_streamed()
    await start_agent(concurrency=4)
    await client.register([flow])
    run = await client.start("streamed", {"n": 12_000, "fail_after": 7_000})
    detail = await client.wait(run.run_id, timeout_s=120)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert _task(detail, "source").attempt == 2
    assert _output(detail, "check_all") == {"n": 12_000, "in_order": True}


async def test_a_restart_after_a_generator_ended_maps_over_its_stored_items(
    start_coordinator, start_agent, client: Client
) -> None:
    coordinator = await start_coordinator()
    flow = mapflows.register_streamed_slow()
    await start_agent(concurrency=4)
    await client.register([flow])
    run = await client.start("streamed_slow", {"n": 3_000})

    async def mapping_midway() -> bool:
        note = _task(await client.get(run.run_id), "slow_key").note or ""
        return note.startswith("mapped: ") and int(
            note.split()[1].split("/")[0].replace(",", "")) >= 400

    await wait_for(mapping_midway, timeout_s=60)
    await coordinator.shutdown()
    await start_coordinator()
    detail = await client.wait(run.run_id, timeout_s=120)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert _output(detail, "slow_key") == list(range(3_000))


async def test_a_task_mapped_over_a_generator_starts_on_its_items_before_it_ends(
    coordinator, start_agent, client: Client
) -> None:
    flow = mapflows.register_trickle()
    await start_agent(concurrency=4)
    await client.register([flow])
    run = await client.start("trickle", {"n": 6_000, "pause_at": 5_500, "pause_s": 1.0})
    detail = await client.wait(run.run_id, timeout_s=60)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert _output(detail, "check_all") == {"n": 6_000, "in_order": True}
    source_ended = _task(detail, "source").finished_at
    first = min([i.started_at async for i in client.all_instances(run.run_id, "key_number")
                 if i.started_at is not None])
    assert source_ended is not None and first < source_ended - 0.5  # during the pause


async def test_a_generator_failing_on_its_last_attempt_stops_the_task_mapped_over_it(
    coordinator, start_agent, client: Client
) -> None:
    flow = mapflows.register_trickle()
    await start_agent(concurrency=4)
    await client.register([flow])
    run = await client.start("trickle", {"n": 9_000, "pause_at": 5_500, "pause_s": 1.0,
                                         "fail_at": 7_000})
    detail = await client.wait(run.run_id, timeout_s=60)
    assert detail.run.status is RunStatus.FAILED
    assert _task(detail, "source").status is TaskStatus.FAILED
    mapped = _task(detail, "key_number")
    assert mapped.status is TaskStatus.UPSTREAM_FAILED and "source" in (mapped.note or "")
    assert _task(detail, "check_all").status is TaskStatus.UPSTREAM_FAILED


async def test_a_restart_while_a_generator_still_yields_keeps_mapping_as_its_items_come(
    start_coordinator, start_agent, client: Client
) -> None:
    coordinator = await start_coordinator()
    flow = mapflows.register_trickle()
    await start_agent(concurrency=4)
    await client.register([flow])
    run = await client.start("trickle", {"n": 6_000, "pause_at": 5_500, "pause_s": 2.0})

    async def mapping_early() -> bool:
        detail = await client.get(run.run_id)
        return (_task(detail, "key_number").status is TaskStatus.RUNNING
                and _task(detail, "source").status is TaskStatus.RUNNING)

    await wait_for(mapping_early, timeout_s=30)
    await coordinator.shutdown()
    await start_coordinator()
    detail = await client.wait(run.run_id, timeout_s=60)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert _output(detail, "check_all") == {"n": 6_000, "in_order": True}
