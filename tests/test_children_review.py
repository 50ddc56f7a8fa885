"""Child tasks under faults and corner cases: two waits of one parent at once, the coordinator
killed while parents spawn or wait, an agent killed with parents and children on it, a parent
that fails with its children still running, cancelled runs and the agent's slots, children of
mapped instances and of chunks, parents in worker processes."""

import asyncio
import random
import sqlite3
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
from protocol.states import RunStatus, TaskStatus
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


async def test_a_parent_that_fails_with_retries_left_finds_its_running_children_again(
    coordinator, start_agent, client: Client, tmp_path: Path, monkeypatch
) -> None:
    ledger = tmp_path / "ledger.txt"
    monkeypatch.setenv("FLOWFORGE_TEST_LEDGER", str(ledger))
    await client.register(childreviewflows.register_all())
    await start_agent(concurrency=4)
    run = await client.start("rv_retried", {"n": 3, "hold_s": 1.0})
    detail = await client.wait(run.run_id, timeout_s=60)
    parent = _parent(detail)
    assert detail.run.status is RunStatus.SUCCEEDED, parent.error_message
    assert msgspec.json.decode(parent.output) == [-1, 0, 1, 2]
    assert [(a.attempt, a.outcome) for a in parent.history] == [(1, "failed"), (2, "succeeded")]
    ran = _ledger_runs(ledger)
    assert ran == Counter({"parent/0": 2, "parent/1": 1, "parent/2": 1, "parent/3": 1,
                           "parent": 1}), "a child that was still running ran again"


async def test_retrying_a_failed_run_runs_its_failed_and_cancelled_children_again(
    coordinator, start_agent, client: Client
) -> None:
    from protocol.children import ChildList, ListChildren

    await client.register(childreviewflows.register_all())
    await start_agent(concurrency=2)
    run = await client.start("rv_flaky_children", {"n": 3})
    failed = await client.wait(run.run_id, timeout_s=60)
    assert failed.run.status is RunStatus.FAILED
    assert _parent(failed).error_type == "ChildFailed"
    await client.retry(run.run_id)
    detail = await client.wait(run.run_id, timeout_s=60)
    assert detail.run.status is RunStatus.SUCCEEDED, _parent(detail).error_message
    assert msgspec.json.decode(_parent(detail).output) == [0, 1, 2]
    listed = await client.request(ListChildren(run_id=run.run_id), ChildList)
    assert {c.status for c in listed.children} == {TaskStatus.SUCCEEDED}


async def test_mapped_instances_and_chunks_of_them_are_parents(
    coordinator, start_agent, client: Client
) -> None:
    await client.register(childreviewflows.register_all())
    await start_agent(concurrency=3)
    for flow in ("rv_mapped", "rv_chunked"):
        run = await client.start(flow, {"n": 5, "children": 3})
        detail = await client.wait(run.run_id, timeout_s=60)
        parent = _parent(detail)
        assert detail.run.status is RunStatus.SUCCEEDED, (flow, parent.error_message)
        assert msgspec.json.decode(parent.output) == [
            [i * 100 + j for j in range(3)] for i in range(5)], flow


async def test_cancelling_a_run_whose_parents_wait_gives_every_slot_back(
    coordinator, start_agent, client: Client
) -> None:
    from agent.inhand import TaskState
    from protocol.children import ChildList, ListChildren

    await client.register(childreviewflows.register_all())
    agent = await start_agent(concurrency=2)
    slots = agent._slots
    run = await client.start("rv_mapped_slow", {"n": 3, "children": 4, "hold_s": 30.0})

    async def running_children() -> int:
        listed = await client.request(ListChildren(run_id=run.run_id), ChildList)
        return sum(c.status is TaskStatus.RUNNING for c in listed.children)

    await wait_for(lambda: _at_least(running_children(), 2), timeout_s=30)
    await client.cancel(run.run_id)
    detail = await client.wait(run.run_id, timeout_s=30)
    assert detail.run.status is RunStatus.CANCELLED
    await wait_for(lambda: not list(slots), timeout_s=30)  # every message settled
    assert slots._busy["default"] == 0 and slots._lent["default"] == 0
    assert not slots.in_state(TaskState.RUNNING)
    listed = await client.request(ListChildren(run_id=run.run_id), ChildList)
    assert {c.status for c in listed.children} <= {TaskStatus.CANCELLED}


async def test_a_parent_times_out_while_its_child_holds_the_only_slot(
    coordinator, start_agent, client: Client
) -> None:
    from protocol.children import ChildList, ListChildren

    await client.register(childreviewflows.register_all())
    slots = (await start_agent(concurrency=1))._slots
    for flow in ("rv_async_timeout", "rv_sync_timeout"):
        run = await client.start(flow, {"n": 1, "hold_s": 60.0})
        detail = await client.wait(run.run_id, timeout_s=30)  # not after the child's minute
        parent = _parent(detail)
        assert detail.run.status is RunStatus.FAILED, flow
        assert parent.error_type == "TaskTimeout", (flow, parent.error_message)
        listed = await client.request(ListChildren(run_id=run.run_id), ChildList)
        assert [c.status for c in listed.children] == [TaskStatus.CANCELLED], flow
        # the child stopped, the parent's thread returned
        await wait_for(lambda: not list(slots) and slots._busy["default"] == 0, timeout_s=30)
        assert slots._lent["default"] == 0, flow


async def _at_least(count, n: int) -> bool:  # type: ignore[no-untyped-def]
    return await count >= n


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
    # down until the parent's spawn gave up on its no-responder retries and waits to ask again
    await wait_for(lambda: "asking again" in agent.log(), timeout_s=60)
    coordinator()
    await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)
    detail = await client.wait(run.run_id, timeout_s=90)
    assert detail.run.status is RunStatus.SUCCEEDED, (_parent(detail).error_message, agent.log())
    assert msgspec.json.decode(_parent(detail).output) == sum(range(5))
    assert _parent(detail).attempt == 1


@pytest.mark.e2e
async def test_parents_in_worker_processes_map_children_on_one_slot(
    coordinator, spawn, client: Client
) -> None:
    await client.register(childreviewflows.register_all())
    agent = spawn("flowforge-agent", "--import", "tests.childreviewflows", "--pool", "process",
                  "--concurrency", "1")
    for flow, params, output in (("rv_slow", {"n": 6, "hold_s": 0.0}, sum(range(6))),
                                 ("rv_mapped", {"n": 3, "children": 2},
                                  [[0, 1], [100, 101], [200, 201]])):
        detail = await client.wait((await client.start(flow, params)).run_id, timeout_s=90)
        assert detail.run.status is RunStatus.SUCCEEDED, (_parent(detail).error_message,
                                                          agent.log())
        assert msgspec.json.decode(_parent(detail).output) == output


@pytest.mark.e2e
async def test_a_cancelled_run_of_parents_in_worker_processes_leaves_the_slots_free(
    coordinator, spawn, client: Client
) -> None:
    from protocol.children import ChildList, ListChildren

    await client.register(childreviewflows.register_all())
    agent = spawn("flowforge-agent", "--import", "tests.childreviewflows", "--pool", "process",
                  "--concurrency", "2")
    run = await client.start("rv_mapped_slow", {"n": 3, "children": 4, "hold_s": 60.0})

    async def running_children() -> int:
        listed = await client.request(ListChildren(run_id=run.run_id), ChildList)
        return sum(c.status is TaskStatus.RUNNING for c in listed.children)

    await wait_for(lambda: _at_least(running_children(), 2), timeout_s=60)
    await client.cancel(run.run_id)
    assert (await client.wait(run.run_id, timeout_s=30)).run.status is RunStatus.CANCELLED
    again = await client.wait((await client.start("rv_slow", {"n": 4, "hold_s": 0.0})).run_id,
                              timeout_s=30)
    assert again.run.status is RunStatus.SUCCEEDED, agent.log()


CHILDREN = 40
"""Children of each of the four parents: about five seconds of them, for three kills."""


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kill_9_of_the_coordinator_while_parents_wait_loses_and_repeats_nothing(
    spawn, nats_server, client: Client, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    ledger = tmp_path / "ledger.txt"

    def coordinator():  # type: ignore[no-untyped-def]
        return spawn("flowforge-coordinator", "--db", str(tmp_path / "ff.db"), "--lease", "2")

    proc = coordinator()
    await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)
    await client.register(childreviewflows.register_all())
    spawn("flowforge-agent", "--import", "tests.childreviewflows", "--lease", "2",
          "--concurrency", "4", env={"FLOWFORGE_TEST_LEDGER": str(ledger)})
    run = await client.start("rv_mapped_slow", {"n": 4, "children": CHILDREN, "hold_s": 0.1})
    kills = 0
    for _ in range(3):
        target = min(4 * CHILDREN, len(_ledger_runs(ledger)) + rng.randint(3, 8))
        await wait_for(lambda t=target: len(_ledger_runs(ledger)) >= t, timeout_s=120)
        if len(_ledger_runs(ledger)) >= 4 * CHILDREN:
            break
        proc.kill9()
        kills += 1
        await asyncio.sleep(rng.uniform(0.0, 1.5))  # down: children go on and end meanwhile
        proc = coordinator()
        await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)
    assert kills >= 2, f"the children were done after {kills} kills (seed {seed})"
    detail = await client.wait(run.run_id, timeout_s=120)
    assert detail.run.status is RunStatus.SUCCEEDED, (f"seed {seed}", _parent(detail).note)
    assert msgspec.json.decode(_parent(detail).output) == [sum(range(CHILDREN))] * 4, f"seed {seed}"
    ran = _ledger_runs(ledger)
    names = {f"parent~{i}/{j}" for i in range(4) for j in range(CHILDREN)}
    assert set(ran) == names, f"seed {seed}"  # each child ran (a redelivery may run one again)
    with sqlite3.connect(tmp_path / "ff.db") as db:
        stored = db.execute("SELECT parent || '/' || seq, status, attempt FROM child_tasks")
        rows = stored.fetchall()
    assert {name for name, _, _ in rows} == names, f"seed {seed}"
    assert {status for _, status, _ in rows} == {"succeeded"}, f"seed {seed}"


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kill_9_of_the_agent_running_a_parent_hands_it_to_another_that_finds_its_children(
    start_coordinator, spawn, client: Client, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    await start_coordinator(lease_s=2.0)  # its messages come back 2 s after the agent died
    await client.register(childreviewflows.register_all())
    agents = {name: spawn("flowforge-agent", "--import", "tests.childreviewflows", "--lease", "2",
                          "--concurrency", "3", "--agent-id", name,
                          env={"FLOWFORGE_TEST_LEDGER": str(ledger)})
              for name in ("one", "two")}
    run = await client.start("rv_slow", {"n": 30, "hold_s": 0.3})

    async def parent_agent() -> str | None:
        rec = _parent(await client.get(run.run_id))
        return rec.agent_id if rec.status is TaskStatus.RUNNING else None

    await wait_for(lambda: _at_least(_count(ledger), 6), timeout_s=60)
    holder = await parent_agent()
    assert holder in agents
    agents[holder].kill9()  # the parent and whatever children it ran go with it
    detail = await client.wait(run.run_id, timeout_s=120)
    parent = _parent(detail)
    assert detail.run.status is RunStatus.SUCCEEDED, parent.error_message
    assert msgspec.json.decode(parent.output) == sum(range(30))
    assert parent.agent_id != holder and parent.attempt == 2
    ran = _ledger_runs(ledger)
    assert set(ran) == {f"parent/{i}" for i in range(30)} | {"parent"}
    assert ran["parent"] == 1


async def _count(path: Path) -> int:
    return sum(_ledger_runs(path).values())


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


async def test_a_cancel_naming_no_task_cancels_nothing() -> None:
    from types import SimpleNamespace

    from agent.worker import Agent, AgentConfig
    from flowforge.connection import ConnectOptions
    from protocol.messages import TaskDispatch

    agent = Agent(AgentConfig(connect=ConnectOptions(), queues=("default",), functions={}))
    task = TaskDispatch(run_id="r1", flow="f", version="v", task="later", function="m:f",
                        attempt=1, queued_at=0.0)
    await agent._on_cancel(SimpleNamespace(subject="flowforge.cancel.r1", data=b"[]"))
    assert not agent._runner._is_cancelled(task), "an empty list of names cancelled the run"
    await agent._on_cancel(SimpleNamespace(subject="flowforge.cancel.r1", data=b'["p/0"]'))
    assert not agent._runner._is_cancelled(task)
    assert agent._runner._is_cancelled(msgspec.structs.replace(task, task="p/0"))
    await agent._on_cancel(SimpleNamespace(subject="flowforge.cancel.r1", data=b""))
    assert agent._runner._is_cancelled(task)
