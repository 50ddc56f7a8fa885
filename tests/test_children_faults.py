"""kill -9 around child tasks, with real console-script processes: the parent's agent dies
while its children run (they keep their results; the parent's next delivery finds the same
children, none runs twice), and the coordinator dies again and again while children run
(each child finalised once, the parent's output whole)."""

import asyncio
import contextlib
import random
import sqlite3
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from flowforge.client import Client
from protocol.children import ChildList, ListChildren
from protocol.errors import FlowForgeError
from protocol.states import RunStatus
from tests import childflows
from tests.helpers import coordinator_answers, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(400)]


async def _done(client: Client, run_id: str) -> int:
    """How many children of the run succeeded (-1 while the coordinator cannot say)."""
    with contextlib.suppress(FlowForgeError, TimeoutError):
        listed = await client.request(ListChildren(run_id=run_id, limit=0), ChildList)
        return sum(c.get("succeeded", 0) for c in listed.counts.values())
    return -1


def _ran(ledger: Path) -> Counter[str]:
    """How often each child ran to its end, from the agents' ledger."""
    return Counter(line.split()[0] for line in ledger.read_text().splitlines())


def _output(detail) -> object:  # type: ignore[no-untyped-def]
    [rec] = [t for t in detail.tasks if t.task == "parent"]
    return msgspec.json.decode(rec.output)


async def test_kill_9_of_the_parents_agent_keeps_the_children_and_repeats_none(
    spawn, nats_server, client: Client, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    env = {"FLOWFORGE_TEST_LEDGER": str(ledger)}
    spawn("flowforge-coordinator", "--db", str(tmp_path / "ff.db"), "--lease", "2")
    await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)
    await client.register(childflows.register_all())
    parents = spawn("flowforge-agent", "--import", "tests.childflows", "--queue", "default",
                    "--lease", "2", env=env)
    spawn("flowforge-agent", "--import", "tests.childflows", "--queue", "kids", "--lease", "2",
          "--concurrency", "3", env=env)
    run = await client.start("kids_elsewhere", {"n": 12, "hold_s": 0.5})
    await wait_for(lambda: _reached(client, run.run_id, 4), timeout_s=60)
    parents.kill9()  # the parent dies waiting; its children go on on the other agent
    spawn("flowforge-agent", "--import", "tests.childflows", "--queue", "default",
          "--lease", "2", env=env)
    detail = await client.wait(run.run_id, timeout_s=120)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert _output(detail) == list(range(12))
    [parent] = [t for t in detail.tasks if t.task == "parent"]
    assert parent.attempt == 2, "the parent's message was delivered again"
    ran = _ran(ledger)
    assert sorted(ran) == sorted(f"parent/{i}" for i in range(12))
    assert set(ran.values()) == {1}, f"a child ran twice: {ran}"


async def _reached(client: Client, run_id: str, target: int) -> bool:
    return await _done(client, run_id) >= target


async def test_kill_9_of_the_coordinator_while_children_run_finalises_each_once(
    spawn, nats_server, client: Client, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    ledger = tmp_path / "ledger.txt"
    n = 120

    def coordinator():  # type: ignore[no-untyped-def]
        return spawn("flowforge-coordinator", "--db", str(tmp_path / "ff.db"), "--lease", "2")

    proc = coordinator()
    await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)
    await client.register(childflows.register_all())
    spawn("flowforge-agent", "--import", "tests.childflows", "--lease", "2",
          "--concurrency", "4", env={"FLOWFORGE_TEST_LEDGER": str(ledger)})
    run = await client.start("slow_kids", {"n": n, "hold_s": 0.15})
    kills = 0
    for _ in range(3):
        target = min(n, max(0, await _done(client, run.run_id)) + rng.randint(3, 8))
        await wait_for(lambda t=target: _reached(client, run.run_id, t), timeout_s=120)
        if await _done(client, run.run_id) >= n - 4:
            break
        await asyncio.sleep(rng.uniform(0.0, 0.2))
        proc.kill9()
        kills += 1
        await asyncio.sleep(rng.uniform(0.0, 1.0))  # down: children go on and end meanwhile
        proc = coordinator()
        await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)
    detail = await client.wait(run.run_id, timeout_s=180)
    assert kills >= 2, f"the run ended after {kills} kills (seed {seed})"
    assert detail.run.status is RunStatus.SUCCEEDED, f"seed {seed}"
    assert _output(detail) == sum(range(n))
    with sqlite3.connect(tmp_path / "ff.db") as db:
        stored = db.execute("SELECT parent || '/' || seq, status FROM child_tasks").fetchall()
    assert sorted(stored) == sorted((f"parent/{i}", "succeeded") for i in range(n)), seed
    ran = _ran(ledger)  # a redelivery may run one again, but every one ran
    assert sorted(ran) == sorted(f"parent/{i}" for i in range(n)), f"seed {seed}"
