"""kill -9 of the coordinator at random moments while runs wait on a queue limit and on their
flow's max_active_runs: every task runs, and never more than the limits at once — as the agent
ran them (its ledger) — however the kills fall; nothing is left held."""

import asyncio
import contextlib
import random
import sqlite3
import time
from pathlib import Path

import pytest

from flowforge.client import Client
from protocol.errors import FlowForgeError
from protocol.states import RunStatus
from tests import limitfaultflows
from tests.helpers import coordinator_answers, wait_for
from tests.test_batch_faults import ledger_spans, most_at_once

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]

KILLS = 4
RUNS = 5
QUEUE_LIMIT = 2
AGENT_SLOTS = 12
"""Well above the limits: only the coordinator holds the tasks to them."""


def _ended(ledger: Path) -> int:
    with contextlib.suppress(FileNotFoundError):
        return sum(1 for line in ledger.read_text().splitlines() if line.startswith("end "))
    return 0


async def _all_ended(client: Client, run_ids: list[str]) -> bool:
    with contextlib.suppress(FlowForgeError, TimeoutError):
        runs = {r.run_id: r.status for r in await client.runs(flow="limited_fan", limit=100)}
        return all(runs.get(r) is RunStatus.SUCCEEDED for r in run_ids)
    return False


async def test_kill_9_of_the_coordinator_never_lets_a_limit_overshoot_or_a_slot_leak(
    spawn, nats_server, client: Client, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    ledger, db = tmp_path / "ledger.txt", tmp_path / "ff.db"

    def coordinator():  # type: ignore[no-untyped-def]
        return spawn("flowforge-coordinator", "--db", str(db), "--lease", "2")

    proc = coordinator()
    await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)
    await client.register([limitfaultflows.FLOW])
    await client.set_limit("queue:gpu", QUEUE_LIMIT)
    spawn("flowforge-agent", "--import", "tests.limitfaultflows", "--queue", "gpu", "--lease", "2",
          "--concurrency", str(AGENT_SLOTS), env={"FLOWFORGE_TEST_LEDGER": str(ledger)})
    runs = [(await client.start("limited_fan", {"hold_s": round(rng.uniform(0.15, 0.3), 3)}))
            for _ in range(RUNS)]
    kills = 0
    for _ in range(KILLS):
        target = min(RUNS * 6, _ended(ledger) + rng.randint(2, 4))
        await wait_for(lambda t=target: _ended(ledger) >= t, timeout_s=120)
        if _ended(ledger) >= RUNS * 6 - 2:
            break
        await asyncio.sleep(rng.uniform(0.0, 0.2))  # a random moment after a task ended
        proc.kill9()
        kills += 1
        await asyncio.sleep(rng.uniform(0.0, 1.0))  # down: the agent's tasks go on and end
        proc = coordinator()
        await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)

    await wait_for(lambda: _all_ended(client, [r.run_id for r in runs]), timeout_s=180,
                   every_s=0.2)
    assert kills >= 3, f"the runs ended after {kills} kills (seed {seed})"
    spans = ledger_spans(ledger.read_text())
    assert {name for name, _, _ in spans} == {f"{r.run_id}/t{i}" for r in runs for i in range(6)}
    assert most_at_once(spans) <= QUEUE_LIMIT, f"queue:gpu overshot (seed {seed})"
    by_run = [(name.split("/")[0], start, end) for name, start, end in spans]
    assert most_at_once(by_run) <= limitfaultflows.MAX_ACTIVE_RUNS, f"runs overshot (seed {seed})"
    with sqlite3.connect(db) as conn:
        left = conn.execute("SELECT COUNT(*) FROM task_instances WHERE held = 1 OR status IN "
                            "('queued', 'running')").fetchone()[0]
    assert left == 0, f"{left} tasks left held, queued or running (seed {seed})"
    listed = {i.name: i for i in await client.limits()}
    assert (listed["queue:gpu"].holding, listed["queue:gpu"].waiting) == (0, 0)
    assert listed["flow:limited_fan"].holding == 0


async def test_an_agent_killed_mid_task_keeps_its_slot_until_the_task_runs_again_elsewhere(
    start_coordinator, spawn, client: Client, tmp_path: Path
) -> None:
    """The lost agent's task still holds queue:gpu (it will run again): nothing else starts in
    its place; once redelivered to the other agent and ended, the held tasks go, one at a time."""
    ledger = tmp_path / "ledger.txt"
    await start_coordinator(lease_s=2.0)
    await client.register([limitfaultflows.FLOW])
    await client.set_limit("queue:gpu", 1)
    env = {"FLOWFORGE_TEST_LEDGER": str(ledger)}
    args = ("flowforge-agent", "--import", "tests.limitfaultflows", "--queue", "gpu",
            "--lease", "2", "--concurrency", "4")
    victim = spawn(*args, "--agent-id", "victim", env=env)
    run = await client.start("limited_fan", {"hold_s": 1.0})
    await wait_for(lambda: ledger.exists() and "start " in ledger.read_text(), timeout_s=30)
    victim.kill9()
    killed_at = time.time()
    spawn(*args, "--agent-id", "rescuer", env=env)
    detail = await client.wait(run.run_id, timeout_s=60)
    assert detail.run.status is RunStatus.SUCCEEDED
    spans, reran = spans_with_a_kill(ledger.read_text(), killed_at)
    assert reran, "the victim's task was not run again"
    assert len({name for name, _, _ in spans}) == 6
    assert most_at_once(spans) == 1


def spans_with_a_kill(text: str, killed_at: float) -> tuple[list[tuple[str, float, float]], bool]:
    """The ledger's executions; one that started before the kill and has no end before it was
    on the killed agent and ended there. Also whether a task started twice (ran again)."""
    starts: dict[str, list[float]] = {}
    ends: dict[str, list[float]] = {}
    for kind, name, at in (line.split() for line in text.splitlines()):
        (starts if kind == "start" else ends).setdefault(name, []).append(float(at))
    spans = []
    for name, begun in starts.items():
        done = sorted(ends.get(name, []))
        for start in sorted(begun):
            end = next((e for e in done if e >= start), None)
            if end is not None and (start > killed_at or end < killed_at):
                done.remove(end)
                spans.append((name, start, end))
            else:
                spans.append((name, start, killed_at))
    return spans, any(len(begun) > 1 for begun in starts.values())
