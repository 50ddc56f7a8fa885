"""Concurrency limits on the real stack (NATS, SQLite, an in-process coordinator and agent with
more slots than any limit): per queue, per task, per flow and per concurrency key, never
exceeded as the agent ran the tasks (its ledger), waiting tasks and runs saying why."""

import asyncio
from pathlib import Path

import pytest

from flowforge.client import Client
from protocol.errors import RemoteError
from protocol.records import RunDetail
from protocol.states import RunStatus, TaskStatus
from tests import limitflows, mapflows
from tests.helpers import wait_for
from tests.test_batch_faults import ledger_spans, most_at_once

AGENT_SLOTS = 8
"""Well above every limit here: only the coordinator holds tasks to their limits."""


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger.txt"
    monkeypatch.setenv("FLOWFORGE_TEST_LEDGER", str(path))
    return path


def by_run(spans: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """The ledger's spans (``<run>/<task>``) as the run's."""
    return [(name.split("/")[0], start, end) for name, start, end in spans]


async def _held(client: Client, run_id: str) -> list[str]:
    return [t.note or "" for t in (await client.get(run_id)).tasks if t.held]


async def test_a_queue_limit_is_never_exceeded_and_a_held_task_says_who_holds_it(
    coordinator, start_agent, client: Client, ledger: Path
) -> None:
    flow = limitflows.register_wide()
    await client.register([flow])
    info = await client.set_limit("queue:gpu", 2)
    assert (info.name, info.limit, info.holding) == ("queue:gpu", 2, 0)
    await start_agent(queues=("gpu",), concurrency=AGENT_SLOTS)
    runs = [await client.start("gpu_fan", {"hold_s": 0.15}) for _ in range(2)]
    notes = await _held(client, runs[1].run_id)
    assert notes and notes[0].startswith("waiting: limit queue:gpu 2/2 (held by run ")
    listed = {i.name: i for i in await client.limits()}["queue:gpu"]
    assert (listed.holding, listed.waiting) == (2, 10)
    assert len(listed.holders) == 2 and listed.waiters[0].run_id == runs[0].run_id
    for run in runs:
        detail = await client.wait(run.run_id, timeout_s=30)
        assert detail.run.status is RunStatus.SUCCEEDED
        assert not any(t.held or t.note for t in detail.tasks)
    spans = ledger_spans(ledger.read_text())
    assert len(spans) == 12
    assert most_at_once(spans) == 2
    assert {i.name: i.holding for i in await client.limits()}["queue:gpu"] == 0


async def test_raising_a_limit_releases_waiters_at_once_and_deleting_it_frees_the_queue(
    coordinator, start_agent, client: Client, ledger: Path
) -> None:
    flow = limitflows.register_wide(width=4)
    await client.register([flow])
    await client.set_limit("queue:gpu", 0)  # a paused queue
    await start_agent(queues=("gpu",), concurrency=AGENT_SLOTS)
    run = await client.start("gpu_fan", {"hold_s": 0.5})
    assert len(await _held(client, run.run_id)) == 4
    raised = await client.set_limit("queue:gpu", 3)
    assert (raised.holding, raised.waiting) == (3, 1)
    assert len(await _held(client, run.run_id)) == 1
    deleted = await client.delete_limit("queue:gpu")
    assert deleted.limit is None and deleted.holding == 4
    assert (await client.wait(run.run_id, timeout_s=30)).run.status is RunStatus.SUCCEEDED
    assert most_at_once(ledger_spans(ledger.read_text())) == 4
    with pytest.raises(RemoteError, match="no limit 'queue:gpu'"):
        await client.delete_limit("queue:gpu")
    with pytest.raises(RemoteError, match="name"):
        await client.set_limit("task:x.y", 1)


async def test_a_queue_limit_holds_a_mapped_task_s_instances_too(
    coordinator, start_agent, client: Client, ledger: Path
) -> None:
    await client.register([mapflows.register_slow()])  # no max_active of its own
    await client.set_limit("queue:default", 2)
    await start_agent(concurrency=AGENT_SLOTS)
    run = await client.start("slow_fan", {"n": 10, "hold_s": 0.05})
    detail = await client.wait(run.run_id, timeout_s=30)
    assert detail.run.status is RunStatus.SUCCEEDED
    spans = [s for s in ledger_spans(ledger.read_text()) if "~" in s[0]]
    assert len(spans) == 10
    assert most_at_once(spans) == 2


async def test_a_task_max_active_holds_across_runs(
    coordinator, start_agent, client: Client, ledger: Path
) -> None:
    flow = limitflows.register_capped(max_active=1)
    await client.register([flow])
    await start_agent(concurrency=AGENT_SLOTS)
    runs = [await client.start("capped", {"hold_s": 0.1}) for _ in range(4)]
    for run in runs:
        assert (await client.wait(run.run_id, timeout_s=30)).run.status is RunStatus.SUCCEEDED
    loads = [s for s in ledger_spans(ledger.read_text()) if s[0].endswith("/load")]
    assert len(loads) == 4
    assert most_at_once(loads) == 1


async def test_runs_over_max_active_runs_wait_pending_and_start_in_order(
    coordinator, start_agent, client: Client, ledger: Path
) -> None:
    flow = limitflows.register_wide(name="one_at_a_time", width=2, queue="default",
                                    max_active_runs=1)
    await client.register([flow])
    await start_agent(concurrency=AGENT_SLOTS)
    runs = [await client.start("one_at_a_time", {"hold_s": 0.1}) for _ in range(3)]
    assert runs[0].status is RunStatus.RUNNING
    assert [r.status for r in runs[1:]] == [RunStatus.PENDING, RunStatus.PENDING]
    assert runs[1].note == (f"waiting: flow one_at_a_time has 1/1 runs going "
                            f"(max_active_runs): run {runs[0].run_id}")
    listed = {i.name: i for i in await client.limits()}["flow:one_at_a_time"]
    assert (listed.limit, listed.holding, listed.waiting) == (1, 1, 2)
    details = [await client.wait(r.run_id, timeout_s=30) for r in runs]
    assert all(d.run.status is RunStatus.SUCCEEDED and d.run.note is None for d in details)
    starts = [d.run.started_at or 0 for d in details]
    assert starts == sorted(starts)
    assert most_at_once(by_run(ledger_spans(ledger.read_text()))) == 1


async def test_a_cancelled_waiting_run_never_starts(coordinator, start_agent, client: Client,
                                                   ledger: Path) -> None:
    flow = limitflows.register_wide(name="one_at_a_time", width=1, queue="default",
                                    max_active_runs=1)
    await client.register([flow])
    await start_agent(concurrency=AGENT_SLOTS)
    first = await client.start("one_at_a_time", {"hold_s": 0.3})
    second = await client.start("one_at_a_time")
    cancelled = await client.cancel(second.run_id)
    assert (cancelled.status, cancelled.note) == (RunStatus.CANCELLED, "cancelled while waiting")
    assert (await client.wait(first.run_id, timeout_s=30)).run.status is RunStatus.SUCCEEDED
    assert (await client.get(second.run_id)).run.status is RunStatus.CANCELLED
    assert {s[0].split("/")[0] for s in ledger_spans(ledger.read_text())} == {first.run_id}


async def _all_done(client: Client, run_ids: list[str]) -> list[RunDetail]:
    return [await client.wait(r, timeout_s=30) for r in run_ids]


async def test_a_concurrency_key_queues_runs_of_the_same_customer_only(
    coordinator, start_agent, client: Client, ledger: Path
) -> None:
    await client.register([limitflows.register_keyed("queue")])
    await start_agent(concurrency=AGENT_SLOTS)
    acme = [await client.start("keyed_queue", {"customer": "acme", "hold_s": 0.2})
            for _ in range(3)]
    other = await client.start("keyed_queue", {"customer": "initech", "hold_s": 0.2})
    assert [r.status for r in acme] == [RunStatus.RUNNING, RunStatus.PENDING, RunStatus.PENDING]
    assert acme[1].note == f"waiting: concurrency key 'acme' has 1/1 runs going: run {acme[0].run_id}"
    assert other.status is RunStatus.RUNNING
    details = await _all_done(client, [r.run_id for r in [*acme, other]])
    assert all(d.run.status is RunStatus.SUCCEEDED for d in details)
    spans = by_run(ledger_spans(ledger.read_text()))
    assert most_at_once([s for s in spans if s[0] != other.run_id]) == 1


async def test_cancel_newest_cancels_the_new_run_with_a_note(
    coordinator, start_agent, client: Client, ledger: Path
) -> None:
    await client.register([limitflows.register_keyed("cancel_newest")])
    await start_agent(concurrency=AGENT_SLOTS)
    first = await client.start("keyed_cancel_newest", {"customer": "acme", "hold_s": 0.3})
    second = await client.start("keyed_cancel_newest", {"customer": "acme"})
    assert second.status is RunStatus.CANCELLED
    assert second.note == (f"cancelled: concurrency key 'acme' has 1/1 runs going "
                           f"(cancel_newest): run {first.run_id}")
    assert (await client.wait(first.run_id, timeout_s=30)).run.status is RunStatus.SUCCEEDED
    stored = await client.get(second.run_id)
    assert (stored.run.status, stored.run.note) == (RunStatus.CANCELLED, second.note)


async def test_cancel_in_progress_cancels_the_run_going_and_the_new_one_proceeds(
    coordinator, start_agent, client: Client, ledger: Path
) -> None:
    await client.register([limitflows.register_keyed("cancel_in_progress")])
    await start_agent(concurrency=AGENT_SLOTS)
    first = await client.start("keyed_cancel_in_progress", {"customer": "acme", "hold_s": 5})
    await wait_for(lambda: ledger.exists(), timeout_s=10)  # it runs
    second = await client.start("keyed_cancel_in_progress", {"customer": "acme", "hold_s": 0.1})
    assert second.status is RunStatus.RUNNING
    old = await client.wait(first.run_id, timeout_s=10)
    assert old.run.status is RunStatus.CANCELLED
    assert old.run.note == (f"cancelled: run {second.run_id} started with concurrency key "
                            "'acme' (cancel_in_progress)")
    assert (await client.wait(second.run_id, timeout_s=30)).run.status is RunStatus.SUCCEEDED


async def test_a_restart_keeps_held_tasks_held_and_waiting_runs_waiting(
    start_coordinator, start_agent, client: Client, ledger: Path
) -> None:
    coordinator = await start_coordinator()
    await client.register([limitflows.register_wide(width=4, max_active_runs=1)])
    await client.set_limit("queue:gpu", 1)
    runs = [await client.start("gpu_fan", {"hold_s": 0.1}) for _ in range(2)]
    await coordinator.shutdown()
    await start_coordinator()
    detail = await client.get(runs[0].run_id)
    assert sum(t.held for t in detail.tasks) == 3
    assert sum(t.status is TaskStatus.QUEUED and not t.held for t in detail.tasks) == 1
    assert (await client.get(runs[1].run_id)).run.status is RunStatus.PENDING
    await start_agent(queues=("gpu",), concurrency=AGENT_SLOTS)
    for run in runs:
        assert (await client.wait(run.run_id, timeout_s=30)).run.status is RunStatus.SUCCEEDED
    assert most_at_once(ledger_spans(ledger.read_text())) == 1


async def test_show_prints_why_a_task_waits(coordinator, client: Client, ledger: Path) -> None:
    from flowforge import render

    await client.register([limitflows.register_wide(width=2)])
    await client.set_limit("queue:gpu", 1)
    run = await client.start("gpu_fan", priority=5)
    text = render.show_run(await client.get(run.run_id), None)
    assert "priority 5" in text
    assert f"waiting: limit queue:gpu 1/1 (held by run {run.run_id} task t0)" in text
    await asyncio.sleep(0)


async def test_registering_a_flow_again_with_more_max_active_runs_starts_waiting_runs(
    coordinator, client: Client
) -> None:
    await client.register([limitflows.register_wide(name="grows", width=1, max_active_runs=1)])
    first, second = [await client.start("grows") for _ in range(2)]
    assert (first.status, second.status) == (RunStatus.RUNNING, RunStatus.PENDING)
    await client.register([limitflows.register_wide(name="grows", width=1, max_active_runs=2)])
    detail = await client.get(second.run_id)
    assert (detail.run.status, detail.run.note) == (RunStatus.RUNNING, None)
    assert [t.status for t in detail.tasks] == [TaskStatus.QUEUED]
    await client.cancel(first.run_id)
    assert (await client.get(first.run_id)).run.status is RunStatus.CANCELLED


async def test_cancelling_a_batch_cancels_its_runs_waiting_for_their_turn(
    coordinator, client: Client
) -> None:
    await client.register([limitflows.register_wide(name="solo_batch", width=1,
                                                    max_active_runs=1)])
    sub = await client.submit_batch("solo_batch", [{"hold_s": 0.1 * i} for i in range(3)],
                                    max_active=3)
    assert sub.batch is not None

    async def three_runs() -> bool:
        return len(await client.runs(flow="solo_batch")) == 3

    await wait_for(three_runs, timeout_s=10)
    statuses = sorted(r.status.value for r in await client.runs(flow="solo_batch"))
    assert statuses == ["pending", "pending", "running"]
    await client.cancel_batch(sub.batch.batch_id)
    runs = await client.runs(flow="solo_batch")
    assert {r.status for r in runs} == {RunStatus.CANCELLED}
    assert sorted(r.note or "" for r in runs)[1:] == ["cancelled while waiting"] * 2
