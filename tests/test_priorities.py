"""Priorities on the real stack: within a queue higher goes first, a run's priority is its
flow's unless started with its own, and a priority-9 run started after 1,000 queued
priority-0 tasks starts its task before most of them (the coordinator's release window holds
the rest back, in priority order)."""

from pathlib import Path

import pytest

from flowforge.client import Client
from protocol.states import RunStatus
from tests import limitflows
from tests.test_batch_faults import ledger_spans


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger.txt"
    monkeypatch.setenv("FLOWFORGE_TEST_LEDGER", str(path))
    return path


async def test_a_priority_9_run_started_after_1000_queued_tasks_starts_before_most_of_them(
    coordinator, start_agent, client: Client, ledger: Path
) -> None:
    await client.register([limitflows.register_bulk(1000), limitflows.register_urgent()])
    await start_agent(concurrency=4)
    bulk = await client.start("bulk", {"hold_s": 0.005})
    urgent = await client.start("urgent")
    assert (bulk.priority, urgent.priority) == (0, 9)
    assert (await client.wait(urgent.run_id, timeout_s=60)).run.status is RunStatus.SUCCEEDED
    assert (await client.wait(bulk.run_id, timeout_s=120)).run.status is RunStatus.SUCCEEDED
    starts = {name: start for name, start, _ in ledger_spans(ledger.read_text())}
    urgent_start = starts[f"{urgent.run_id}/u"]
    before = sum(1 for name, at in starts.items() if name.startswith(bulk.run_id)
                 and at < urgent_start)
    assert len(starts) == 1001
    assert before < 500, f"{before} of the 1,000 started before the priority-9 task"


async def test_a_run_started_with_its_own_priority_keeps_it(coordinator, client: Client) -> None:
    await client.register([limitflows.register_urgent()])
    run = await client.start("urgent", priority=-3)
    assert run.priority == -3
    assert (await client.get(run.run_id)).run.priority == -3
