"""kill -9 of the coordinator at random moments while a batch runs: every item runs exactly
once, and never more than the batch's max_active runs are active at once — as the coordinator
recorded them, and as the agent executed them."""

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from flowforge.client import Client
from protocol.batches import BatchRecord, BatchState, ItemStatus
from protocol.errors import FlowForgeError
from protocol.records import RunRecord
from protocol.states import RunStatus
from protocol.subjects import Subjects
from tests import batchfaultflows
from tests.helpers import coordinator_answers, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]

KILLS = 5
ITEMS = 48
MAX_ACTIVE = 3
AGENT_SLOTS = 12
"""Well above MAX_ACTIVE: only the coordinator holds the batch to its limit."""
FINAL = {s.value for s in (ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.CANCELLED,
                           ItemStatus.SKIPPED)}


async def _batch(client: Client, batch_id: str) -> BatchRecord | None:
    """The batch with its counts, or None while the coordinator is down or starting."""
    with contextlib.suppress(FlowForgeError, TimeoutError):
        return (await client.batch(batch_id)).batch
    return None


def _ended(record: BatchRecord | None) -> int:
    return 0 if record is None else sum(n for s, n in record.counts.items() if s in FINAL)


def most_at_once(spans: list[tuple[str, float, float]]) -> int:
    """The most distinct runs active at one moment, from (run id, start, end) spans. Spans of
    one run may overlap (a task redelivered while its first delivery still ran): that is one
    run active, not two. At equal times an end comes before a start."""
    events = sorted([(start, 1, run) for run, start, _ in spans]
                    + [(end, -1, run) for run, _, end in spans])
    live: Counter[str] = Counter()
    most = 0
    for _, step, run in events:
        live[run] += step
        if live[run] == 0:
            del live[run]
        most = max(most, len(live))
    return most


def ledger_spans(text: str) -> list[tuple[str, float, float]]:
    """The agent's executions, from its ``start <run> <t>`` and ``end <run> <t>`` lines; an
    execution still open at the end of the ledger counts as running until then."""
    open_at: dict[str, list[float]] = {}
    spans: list[tuple[str, float, float]] = []
    last = 0.0
    for line in text.splitlines():
        kind, run, t = line.split()
        last = max(last, float(t))
        if kind == "start":
            open_at.setdefault(run, []).append(float(t))
        else:
            spans.append((run, open_at[run].pop(0), float(t)))
    spans += [(run, t, last) for run, starts in open_at.items() for t in starts]
    return spans


def _lines(path: Path, kind: str) -> int:
    with contextlib.suppress(FileNotFoundError):
        return sum(1 for line in path.read_text().splitlines() if line.startswith(f"{kind} "))
    return 0


def test_most_at_once_counts_distinct_runs() -> None:
    assert most_at_once([("a", 0, 2), ("b", 1, 3), ("a", 1.5, 2.5)]) == 2
    assert most_at_once([("a", 0, 1), ("b", 1, 2)]) == 1
    assert most_at_once([("a", 0, 5), ("b", 1, 2), ("c", 1.5, 3)]) == 3


async def _start_stack(spawn: Any, nats_server: Any, client: Client, tmp_path: Path,
                       ledger: Path) -> tuple[Any, Callable[[], Any]]:
    """A coordinator, answering, with the slow_square flow registered, and an agent that writes
    the ledger; returns the coordinator's process and how to start it again (same database)."""

    def coordinator() -> Any:
        return spawn("flowforge-coordinator", "--db", str(tmp_path / "ff.db"), "--lease", "2")

    proc = coordinator()
    await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)
    await client.register([batchfaultflows.FLOW])
    spawn("flowforge-agent", "--import", "tests.batchfaultflows", "--lease", "2",
          "--concurrency", str(AGENT_SLOTS), env={"FLOWFORGE_TEST_LEDGER": str(ledger)})
    return proc, coordinator


async def test_kill_9_of_the_coordinator_during_a_batch_runs_each_item_once_within_max_active(
    spawn, nats_server, client: Client, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    ledger = tmp_path / "ledger.txt"
    proc, coordinator = await _start_stack(spawn, nats_server, client, tmp_path, ledger)
    items = [{"x": i, "hold_s": round(rng.uniform(0.2, 0.5), 3)} for i in range(ITEMS)]
    sub = await client.submit_batch("slow_square", items, max_active=MAX_ACTIVE)
    assert sub.batch is not None and sub.to_run == ITEMS
    batch_id = sub.batch.batch_id
    kills = 0
    for _ in range(KILLS):
        target = _ended(await _batch(client, batch_id)) + rng.randint(1, 2)

        async def moved(target: int = target) -> bool:
            record = await _batch(client, batch_id)
            return _ended(record) >= target or (record is not None and record.state is not
                                                BatchState.ACTIVE)

        await wait_for(moved, timeout_s=120)
        if (await _batch(client, batch_id) or sub.batch).state is not BatchState.ACTIVE:
            break
        await asyncio.sleep(rng.uniform(0.0, 0.25))  # a random moment after an item ended
        proc.kill9()
        kills += 1
        await asyncio.sleep(rng.uniform(0.0, 1.0))  # down: the agent's runs go on and end
        proc = coordinator()
        await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)

    async def done() -> bool:
        record = await _batch(client, batch_id)
        return record is not None and record.state is BatchState.DONE

    await wait_for(done, timeout_s=180, every_s=0.2)
    assert kills >= 4, f"the batch ended after {kills} kills (seed {seed})"
    shown = await client.batch(batch_id, items=ITEMS)
    item_runs = [i.run_id for i in shown.items]
    assert len(shown.items) == ITEMS and None not in item_runs, f"seed {seed}"
    assert shown.batch.counts == {"succeeded": ITEMS}, f"seed {seed}"
    runs: list[RunRecord] = await client.runs(flow="slow_square", limit=1000)
    assert sorted(r.run_id for r in runs) == sorted(item_runs), (
        f"not exactly one run per item (seed {seed}): items {item_runs}, runs "
        f"{[(r.run_id, r.batch, r.params) for r in runs]}")
    assert all(r.status is RunStatus.SUCCEEDED and r.batch == batch_id for r in runs)
    by_item = {i.run_id: i.params for i in shown.items}
    assert all(r.params == by_item[r.run_id] for r in runs), f"seed {seed}"

    recorded = [(r.run_id, r.created_at, r.finished_at or r.created_at) for r in runs]
    assert most_at_once(recorded) <= MAX_ACTIVE, f"the coordinator's runs (seed {seed})"
    executed = ledger_spans(ledger.read_text())
    assert {run for run, _, _ in executed} == set(item_runs), f"seed {seed}"
    assert most_at_once(executed) <= MAX_ACTIVE, (
        f"the agent ran more than {MAX_ACTIVE} of the batch's runs at once (seed {seed}); "
        f"executions per run: {Counter(run for run, _, _ in executed)}")


async def test_items_whose_runs_ended_while_the_coordinator_was_down_take_their_runs_status(
    spawn, nats_server, client: Client, nc: NATS, tmp_path: Path
) -> None:
    ledger, subjects = tmp_path / "ledger.txt", Subjects()
    proc, coordinator = await _start_stack(spawn, nats_server, client, tmp_path, ledger)
    sub = await client.submit_batch("slow_square", [{"x": i, "hold_s": 0.3} for i in range(6)],
                                    max_active=MAX_ACTIVE)
    assert sub.batch is not None
    await wait_for(lambda: _lines(ledger, "start") >= MAX_ACTIVE, timeout_s=60)
    proc.kill9()  # three runs on the agent, none ended

    async def reported() -> bool:
        """The three ended and the agent acked their tasks: their reports wait in the stream."""
        info = await nc.jetstream().consumer_info(subjects.tasks_stream,
                                                  subjects.task_consumer("default"))
        return (_lines(ledger, "end") >= MAX_ACTIVE and info.num_ack_pending == 0
                and info.num_pending == 0)

    await wait_for(reported, timeout_s=60)
    proc = coordinator()
    await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)

    async def done() -> bool:
        record = await _batch(client, sub.batch.batch_id)  # type: ignore[union-attr]
        return record is not None and record.state is BatchState.DONE

    await wait_for(done, timeout_s=120, every_s=0.2)
    shown = await client.batch(sub.batch.batch_id, items=6)
    runs = {r.run_id: r.status for r in await client.runs(flow="slow_square")}
    assert set(runs.values()) == {RunStatus.SUCCEEDED} and len(runs) == 6
    assert [(i.seq, i.status.value) for i in shown.items] == [
        (i.seq, runs[i.run_id or ""].value) for i in shown.items]
    assert shown.batch.counts == {"succeeded": 6}
