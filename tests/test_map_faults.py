"""kill -9 of the coordinator at random moments while a mapped task runs: the run ends with
every item's output in order, each instance finalised once, and never more than the task's
max_active instances running at once (as the agent ran them)."""

import asyncio
import contextlib
import random
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from flowforge.client import Client
from protocol.errors import FlowForgeError
from protocol.states import RunStatus
from tests import mapfaultflows
from tests.helpers import coordinator_answers, wait_for
from tests.test_batch_faults import ledger_spans, most_at_once

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]

KILLS = 4
ITEMS = 200  # 50 rounds of max_active: long enough for every kill to land mid-map


async def _done_count(client: Client, run_id: str) -> int:
    """How many instances ended, from the mapped task's note (-1 while it cannot be read)."""
    with contextlib.suppress(FlowForgeError, TimeoutError):
        detail = await client.get(run_id)
        [rec] = [t for t in detail.tasks if t.task == "slow_item"]
        if detail.run.status is not RunStatus.RUNNING:
            return ITEMS
        note = rec.note or ""
        return int(note.split()[1].split("/")[0].replace(",", "")) if note.startswith(
            "mapped:") else 0
    return -1


async def test_kill_9_of_the_coordinator_during_a_map_loses_and_repeats_nothing(
    spawn, nats_server, client: Client, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    ledger = tmp_path / "ledger.txt"

    def coordinator():  # type: ignore[no-untyped-def]
        return spawn("flowforge-coordinator", "--db", str(tmp_path / "ff.db"), "--lease", "2")

    proc = coordinator()
    await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)
    await client.register([mapfaultflows.FLOW])
    spawn("flowforge-agent", "--import", "tests.mapfaultflows", "--lease", "2",
          "--concurrency", "12", env={"FLOWFORGE_TEST_LEDGER": str(ledger)})
    run = await client.start("slow_fan", {"n": ITEMS, "hold_s": 0.15})
    kills = 0
    for _ in range(KILLS):
        target = min(ITEMS, max(0, await _done_count(client, run.run_id)) + rng.randint(2, 6))
        await wait_for(lambda t=target: _reached(client, run.run_id, t), timeout_s=120)
        if await _done_count(client, run.run_id) >= ITEMS:
            break
        await asyncio.sleep(rng.uniform(0.0, 0.2))
        proc.kill9()
        kills += 1
        await asyncio.sleep(rng.uniform(0.0, 1.0))  # down: the agent's instances go on and end
        proc = coordinator()
        await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)

    detail = await client.wait(run.run_id, timeout_s=180)
    assert kills >= 3, f"the run ended after {kills} kills (seed {seed})"
    assert detail.run.status is RunStatus.SUCCEEDED, f"seed {seed}"
    [rec] = [t for t in detail.tasks if t.task == "slow_item"]
    assert bytes(rec.output) == ("[" + ",".join(map(str, range(ITEMS))) + "]").encode()
    spans = ledger_spans(ledger.read_text())
    runs_of = Counter(name for name, _, _ in spans)  # a redelivery may run one again
    assert sorted(runs_of) == sorted(f"slow_item~{i}" for i in range(ITEMS)), f"seed {seed}"
    with sqlite3.connect(tmp_path / "ff.db") as db:  # each finalised once, as succeeded
        stored = db.execute("SELECT task || '~' || idx, status FROM map_instances").fetchall()
    assert sorted(stored) == sorted((f"slow_item~{i}", "succeeded") for i in range(ITEMS))
    assert most_at_once(spans) <= mapfaultflows.MAX_ACTIVE, f"seed {seed}"


async def _reached(client: Client, run_id: str, target: int) -> bool:
    return await _done_count(client, run_id) >= target
