"""Child tasks under faults and corner cases: two waits of one parent at once, the coordinator
killed while parents spawn or wait, an agent killed with parents and children on it, a parent
that fails with its children still running, cancelled runs and the agent's slots, children of
mapped instances and of chunks, parents in worker processes."""

import asyncio
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from coordinator.changes import Changes
from coordinator.graph import CompiledFlow
from coordinator.scheduler import Scheduler
from flowforge.client import Client
from protocol.children import AwaitChildren, ChildSpawn, SpawnChildren
from protocol.dag import validate_flow
from protocol.flows import FlowSpec, TaskSpec
from protocol.messages import TaskStarted, TaskSucceeded
from protocol.records import RunDetail, RunRecord, TaskRecord
from protocol.states import RunStatus
from tests import childreviewflows
from tests.helpers import coordinator_answers, wait_for

# -- the coordinator's state machine -------------------------------------------------------


class Parent:
    """One run of a one-task flow whose task ``p`` is running and spawns children."""

    def __init__(self) -> None:
        spec = FlowSpec(name="f", tasks=(TaskSpec(name="p", function="m:p"),))
        validate_flow(spec)
        self.sched = Scheduler()
        self.now = 1000.0
        run = RunRecord(run_id="r1", flow="f", version=CompiledFlow.compile(spec).version)
        self.sched.start_run(run, CompiledFlow.compile(spec), self.now, Changes())
        self.step(lambda ch: self.sched.on_report(TaskStarted(
            run_id="r1", task="p", attempt=1, delivery=1, agent_id="a1", at=self.now),
            self.now, ch))

    def step(self, fn):  # type: ignore[no-untyped-def]
        self.now += 1.0
        ch = Changes()
        out = fn(ch)
        self.sched.children.sweep(self.now, ch, self.sched.is_active)
        self.last = ch
        return out

    def spawn(self, *seqs: int) -> None:
        state = self.sched.run_state("r1")
        assert state is not None
        req = SpawnChildren(run_id="r1", parent="p", attempt=1, agent_id="a1", children=[
            ChildSpawn(seq=s, function="m:c", params={"x": s}) for s in seqs])
        self.step(lambda ch: self.sched.children.spawn(state, self.sched.task_record("r1", "p"),
                                                       req, self.now, ch))

    def wait(self, first: int, last: int, fail_fast: bool = True, agent: str = "a1") -> int:
        req = AwaitChildren(run_id="r1", parent="p", attempt=1, agent_id=agent,
                            ranges=[(first, last)], fail_fast=fail_fast)
        return self.step(lambda ch: self.sched.children.waiting("r1", req, ch)).open

    def child_done(self, seq: int) -> list[tuple[str, str, str]]:
        rec = self.sched.task_record("r1", f"p/{seq}")
        assert rec is not None
        self.step(lambda ch: self.sched.on_report(TaskSucceeded(
            run_id="r1", task=f"p/{seq}", attempt=rec.attempt, delivery=1, agent_id="a1",
            at=self.now, started_at=self.now, output=msgspec.Raw(b"1")), self.now, ch))
        return self.last.wakes


def test_a_parent_waiting_for_two_sets_of_children_at_once_is_woken_for_each() -> None:
    p = Parent()
    p.spawn(0, 1, 2, 3)
    assert p.wait(0, 1) == 2  # e.g. asyncio.gather(ctx.map(f, a), ctx.map(g, b))
    assert p.wait(2, 3) == 2
    assert p.child_done(0) == []
    assert p.child_done(1) == [("a1", "r1", "p")], "the first wait's wake was lost"
    assert p.child_done(2) == []
    assert p.child_done(3) == [("a1", "r1", "p")]


def test_asking_again_about_the_same_children_does_not_wake_twice() -> None:
    p = Parent()
    p.spawn(0, 1)
    assert p.wait(0, 1) == 2
    assert p.wait(0, 1) == 2  # the agent's poll
    assert p.child_done(0) == []
    assert p.child_done(1) == [("a1", "r1", "p")]


def test_the_waits_of_an_earlier_attempt_on_another_agent_are_dropped() -> None:
    p = Parent()
    p.spawn(0, 1)
    assert p.wait(0, 1, agent="lost") == 2  # its agent died; the next attempt runs on a1
    assert p.wait(0, 1) == 2
    assert p.child_done(0) == []
    assert p.child_done(1) == [("a1", "r1", "p")]


# -- on the real stack -----------------------------------------------------------------------


def _parent(detail: RunDetail) -> TaskRecord:
    return next(t for t in detail.tasks if t.task == "parent")


async def test_an_async_parent_gets_its_quick_map_back_while_a_slow_one_still_runs(
    coordinator, start_agent, client: Client, tmp_path: Path, monkeypatch
) -> None:
    from agent import child_waits

    monkeypatch.setattr(child_waits, "POLL_FIRST_S", 120.0)  # only a wake ends a wait here
    monkeypatch.setattr(child_waits, "POLL_MAX_S", 120.0)
    await client.register(childreviewflows.register_all())
    await start_agent(concurrency=4)  # the two slow children hold two slots meanwhile
    gate = str(tmp_path / "gate")
    run = await client.start("rv_two_maps", {"gate": gate})
    await wait_for(lambda: Path(gate + ".quick").exists(), timeout_s=30)
    Path(gate + ".go").write_text("")
    detail = await client.wait(run.run_id, timeout_s=30)
    assert detail.run.status is RunStatus.SUCCEEDED, _parent(detail).error_message
    assert msgspec.json.decode(_parent(detail).output) == {"quick": [1, 2], "slow": [10, 11]}


async def test_a_map_waits_until_its_children_are_spawned_by_a_map_sending_them_meanwhile(
    coordinator, start_agent, client: Client
) -> None:
    await client.register(childreviewflows.register_all())
    await start_agent(concurrency=4)
    run = await client.start("rv_split_maps", {"n": 1000})
    detail = await client.wait(run.run_id, timeout_s=60)
    assert detail.run.status is RunStatus.SUCCEEDED, _parent(detail).error_message
    assert msgspec.json.decode(_parent(detail).output) == {"big": sum(range(1000)),
                                                           "small": [7, 8]}


# -- kill -9 -----------------------------------------------------------------------------------


def _ledger_runs(path: Path) -> Counter[str]:
    """How often each task ran to its end, from the ledger the flows write."""
    return Counter(line.split()[0] for line in path.read_text().splitlines()) if path.exists() \
        else Counter()


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_parent_spawning_while_the_coordinator_is_down_spawns_once_it_is_back(
    spawn, nats_server, client: Client, tmp_path: Path
) -> None:
    def coordinator():  # type: ignore[no-untyped-def]
        return spawn("flowforge-coordinator", "--db", str(tmp_path / "ff.db"), "--lease", "3")

    proc = coordinator()
    await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)
    await client.register(childreviewflows.register_all())
    agent = spawn("flowforge-agent", "--import", "tests.childreviewflows", "--lease", "3",
                  "--concurrency", "2")
    gate = str(tmp_path / "gate")
    run = await client.start("rv_gated", {"gate": gate, "n": 5})
    await wait_for(lambda: Path(gate + ".ready").exists(), timeout_s=60)
    proc.kill9()
    Path(gate + ".go").write_text("")  # the parent spawns now, with no coordinator to answer
    await asyncio.sleep(3.0)  # down for longer than a request's no-responder retries
    coordinator()
    await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)
    detail = await client.wait(run.run_id, timeout_s=90)
    assert detail.run.status is RunStatus.SUCCEEDED, (_parent(detail).error_message, agent.log())
    assert msgspec.json.decode(_parent(detail).output) == sum(range(5))
    assert _parent(detail).attempt == 1


# -- the agent's slots while parents wait ----------------------------------------------------


class Ledger:
    """A SlotLedger of one queue with ``slots`` slots, no NATS: ``top_up`` may be held."""

    def __init__(self, slots: int) -> None:
        from agent.slots import SlotLedger

        self.started: list[object] = []
        self.hold_top_up = asyncio.Event()
        self.hold_top_up.set()
        self.ledger = SlotLedger(("q",), slots, start=self.started.append, top_up=self._top_up,
                                 spawn=asyncio.ensure_future, stopping=lambda: False)

    async def _top_up(self, queue: str) -> None:
        await self.hold_top_up.wait()

    def admit(self):  # type: ignore[no-untyped-def]
        from agent.inhand import TaskInHand

        item = TaskInHand(msg=None, queue="q", delivery=1)  # type: ignore[arg-type]
        self.ledger.admit(item)
        return item


async def _lend_until(ledger: Ledger, item, done: asyncio.Event) -> None:  # type: ignore[no-untyped-def]
    async with ledger.ledger.lent(item):
        await done.wait()


async def test_a_parent_waiting_for_two_maps_at_once_lends_its_one_slot_once() -> None:
    two = Ledger(slots=2)
    parent = two.admit()
    assert two.ledger.capacity("q") == 1
    done = asyncio.Event()
    waits = [asyncio.create_task(_lend_until(two, parent, done)) for _ in range(2)]
    await wait_for(lambda: parent.lent)
    await asyncio.sleep(0)  # both waits are in
    assert two.ledger.capacity("q") == 2, "the parent's one slot was lent twice"
    done.set()
    await asyncio.gather(*waits)
    assert two.ledger.capacity("q") == 1 and not parent.lent
    await two.ledger.release(parent)
    await two.ledger.let_go(parent)
    assert two.ledger.capacity("q") == 2


async def test_a_parent_cancelled_while_it_lends_its_slot_gives_back_exactly_its_slot() -> None:
    one = Ledger(slots=1)
    parent = one.admit()
    one.hold_top_up.clear()  # the pull request is on its way when the cancel comes
    waiting = asyncio.create_task(_lend_until(one, parent, asyncio.Event()))
    await wait_for(lambda: parent.lent)
    waiting.cancel()
    one.hold_top_up.set()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not parent.lent
    await one.ledger.release(parent)
    await one.ledger.let_go(parent)
    assert one.ledger.capacity("q") == 1, "the slot count went wrong under the cancel"
    second = one.admit()
    assert one.started == [parent, second]
    assert one.ledger.capacity("q") == 0
