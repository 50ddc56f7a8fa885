"""The coordinator's child tasks as a pure state machine (no I/O): spawns found again or run
again, retries and deadlines, parents that end take their children, waiters woken exactly
when their wait is over, and a restart from what the store holds — with hypothesis driving
random interleavings."""

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from coordinator.changes import Changes
from coordinator.child_state import Child, Ended, ident_of
from coordinator.children import OPEN
from coordinator.scheduler import Scheduler, SchedulerSettings
from protocol.children import AwaitChildren, ChildSpawn, SpawnChildren, split_child
from protocol.errors import InvalidState, LimitReached
from protocol.states import TaskStatus
from tests.map_harness import RUN_ID, H, copy, flow, t


class CH(H):
    """The map harness, with children: spawns and waits go through the scheduler's
    ``children`` like the API's, and every step ends with the writer's sweep."""

    def __init__(self, **kw) -> None:  # type: ignore[no-untyped-def]
        self.specs: dict[str, ChildSpawn] = {}
        self.wakes: list[tuple[str, str, str]] = []
        super().__init__(flow(t("p", timeout_s=None), t("q")), settings=SchedulerSettings(**kw))

    def _take(self, ch):  # type: ignore[no-untyped-def]
        if hasattr(self, "sched"):
            self.sched.children.sweep(self.now, ch, self.sched.is_active)
            self.wakes += ch.wakes
        super()._take(ch)

    def spawn(self, parent: str, seqs: list[int], fn: str = "m:f", retries: int = 0,
              timeout_s: float | None = None) -> object:
        specs = [ChildSpawn(seq=s, function=fn, params={"s": s}, retries=retries,
                            timeout_s=timeout_s) for s in seqs]
        ch = Changes()
        self.now += 1
        try:
            return self.sched.children.spawn(self.sched.run_state(RUN_ID),
                                             self.rec(parent), SpawnChildren(
                                                 run_id=RUN_ID, parent=parent, attempt=1,
                                                 agent_id="a1", children=specs), self.now, ch)
        finally:
            for spec in specs:
                self.specs.setdefault(f"{parent}/{spec.seq}", spec)
            self._take(ch)

    def wait(self, parent: str, ranges: list[tuple[int, int]], fail_fast: bool = True):  # type: ignore[no-untyped-def]
        ch = Changes()
        state = self.sched.children.waiting(RUN_ID, AwaitChildren(
            run_id=RUN_ID, parent=parent, attempt=1, agent_id="a1", ranges=ranges,
            fail_fast=fail_fast), ch)
        self._take(ch)
        return state

    def tasks(self):  # type: ignore[no-untyped-def]
        return [r for r in super().tasks() if "/" not in r.task]  # as the store keeps them

    def children(self) -> dict[str, TaskStatus]:
        return {n: r.status for n, r in self.db.items() if "/" in n}

    def restart(self):  # type: ignore[no-untyped-def]
        ch = super().restart()
        opened = [Child(self.specs[n], copy(r), ident_of(self.specs[n]))
                  for n, r in self.db.items() if "/" in n and r.status in OPEN]
        ended = [(n, Ended(ident_of(self.specs[n]), r.status, r.attempt))
                 for n, r in self.db.items() if "/" in n and r.status not in OPEN]
        ch = Changes()
        self.sched.children.restore(self.sched.run_state(RUN_ID), opened, ended, self.now, ch)
        self._take(ch)


def test_children_run_and_wake_their_parent_when_the_last_one_ends() -> None:
    h = CH()
    h.start("p")
    assert h.spawn("p", [0, 1, 2]).started == 3
    assert h.wait("p", [(0, 2)]).open == 3
    h.succeed("p/0", b"10")
    h.succeed("p/1", b"11")
    assert h.wakes == []
    h.succeed("p/2", b"12")
    assert h.wakes == [("a1", RUN_ID, "p")]
    assert h.children() == dict.fromkeys(["p/0", "p/1", "p/2"], TaskStatus.SUCCEEDED)
    assert h.wait("p", [(0, 2)]).open == 0


def test_a_failed_child_wakes_a_fail_fast_waiter_at_once_and_others_at_the_end() -> None:
    h = CH()
    h.start("p")
    h.spawn("p", [0, 1])
    h.wait("p", [(0, 1)], fail_fast=True)
    h.fail("p/0")
    assert h.wakes == [("a1", RUN_ID, "p")]
    h.wakes.clear()
    assert h.wait("p", [(0, 1)], fail_fast=False).failed == 1
    h.succeed("p/1")
    assert h.wakes == [("a1", RUN_ID, "p")]


def test_the_next_attempt_finds_open_and_succeeded_children_and_runs_failed_ones_again() -> None:
    h = CH()
    h.start("p")
    h.spawn("p", [0, 1, 2])
    h.succeed("p/0")
    h.fail("p/1")
    again = h.spawn("p", [0, 1, 2])
    assert (again.started, again.found) == (1, 2)
    assert h.rec("p/1").status is TaskStatus.QUEUED and h.rec("p/1").attempt == 2
    with pytest.raises(InvalidState, match="spawned before with another function"):
        h.spawn("p", [0], fn="m:g")


def test_retries_deadlines_and_limits() -> None:
    h = CH(max_children=4, max_child_depth=2)
    h.start("p")
    h.spawn("p", [0], retries=1, timeout_s=5)
    h.fail("p/0")
    assert h.rec("p/0").status is TaskStatus.RETRY_WAIT
    h.fire_all()
    h.start("p/0")
    h.fire("p/0")  # its deadline: the agent is lost, and it had one retry
    assert h.children()["p/0"] is TaskStatus.FAILED
    assert h.db["p/0"].error_type == "AgentLost"
    h.spawn("p", [1])
    h.start("p/1")
    h.spawn("p/1", [0])
    h.start("p/1/0")
    with pytest.raises(LimitReached, match="nested 3 deep, over the limit of 2"):
        h.spawn("p/1/0", [0])
    with pytest.raises(LimitReached, match="would have 5 child tasks, over the limit of 4"):
        h.spawn("p", [2, 3])
    h.succeed("p/1/0")
    with pytest.raises(InvalidState, match="is not running"):
        h.spawn("p/1/0", [0])


def test_a_parent_that_ends_cancels_its_children_and_theirs() -> None:
    h = CH()
    h.start("p")
    h.spawn("p", [0, 1])
    h.start("p/0")
    h.spawn("p/0", [0, 1])
    h.succeed("p/0/1")
    h.fail("p")
    assert h.children() == {"p/0": TaskStatus.CANCELLED, "p/1": TaskStatus.CANCELLED,
                            "p/0/0": TaskStatus.CANCELLED, "p/0/1": TaskStatus.SUCCEEDED}
    assert sorted(h.last.stop_tasks[RUN_ID]) == ["p/0", "p/0/0", "p/1"]
    assert not h.sched.children.of(RUN_ID).open


def test_cancelling_the_run_cancels_its_children_and_forgets_them() -> None:
    h = CH()
    h.start("p")
    h.spawn("p", [0])
    h.cancel()
    assert h.children() == {"p/0": TaskStatus.CANCELLED}
    assert h.sched.children.of(RUN_ID) is None


def test_a_restart_goes_on_with_the_open_children_and_knows_the_ended() -> None:
    h = CH()
    h.start("p")
    h.spawn("p", [0, 1, 2])
    h.succeed("p/0")
    h.start("p/1")
    h.restart()
    assert {d.message.task for d in h.last.dispatches} == {"p/2"}  # queued: sent again
    again = h.spawn("p", [0, 1, 2])
    assert (again.started, again.found) == (0, 3)
    h.succeed("p/1")
    h.succeed("p/2")
    assert h.wait("p", [(0, 2)]).open == 0


@settings(max_examples=300, deadline=None)
@example(steps=[("spawn", 0), ("wait", 3), ("ok", 0)], rng=random.Random(1))
@example(steps=[("spawn", 2), ("wait", 7), ("start", 0), ("ok", 0), ("ok", 1), ("ok", 2)],
         rng=random.Random(3))
@given(st.lists(st.tuples(st.sampled_from(["spawn", "ok", "fail", "start", "wait", "end",
                                            "restart", "timer"]),
                          st.integers(0, 7)), max_size=40), st.randoms())
def test_random_interleavings_keep_children_consistent(steps, rng: random.Random) -> None:  # type: ignore[no-untyped-def]
    walk = Walk()
    for op, n in steps:
        before = len(walk.h.wakes)
        walk.step(op, n, rng)
        walk.check(len(walk.h.wakes) > before)
    for name, rec in walk.h.db.items():  # every ended child's history ends with its outcome
        if "/" in name and rec.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED):
            assert rec.history and rec.history[-1].outcome in ("succeeded", "failed", "lost",
                                                               "timed_out")


class Walk:
    """One random walk: its harness, whether the parent ended, and the waits in force (an
    async parent may wait for several sets of children at once)."""

    def __init__(self) -> None:
        self.h = CH()
        self.h.start("p")
        self.ended = False
        self.waits: set[tuple[int, bool]] = set()
        """(last spawn number waited for from 0, fail fast) of each wait under way."""
        self.unsure = False
        """A child was spawned into a range already waited for (the SDK never does): the
        coordinator's count for that wait left it out, so its wakes are not checked."""

    def step(self, op: str, n: int, rng: random.Random) -> None:
        h = self.h
        names = sorted(name for name, s in h.children().items() if s in OPEN)
        if op == "spawn" and not self.ended:
            seqs = sorted(rng.sample(range(8), k=1 + n % 3))
            new = [s for s in seqs if f"p/{s}" not in h.db]
            h.spawn("p", seqs, retries=n % 2)
            # a wait counts the children there were when it was asked: not these
            self.unsure |= any(s <= w[0] for s in new for w in self.waits)
        elif op in ("ok", "fail", "start") and names:
            name = names[n % len(names)]
            if h.rec(name).status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
                {"ok": h.succeed, "fail": h.fail, "start": h.start}[op](name)
        elif op == "timer":
            h.fire_all()
        elif op == "wait" and not self.ended:
            state = h.wait("p", [(0, n)], fail_fast=n % 2 == 0)
            if state.open and not (state.failed and n % 2 == 0):
                self.waits.add((n, n % 2 == 0))
        elif op == "end" and not self.ended:
            h.fail("p")
            self.ended = True  # its children are cancelled: the waits are over, woken
        elif op == "restart":
            h.restart()
            self.waits, self.unsure = set(), False  # a restart forgets waiters: agents ask again

    def _over(self, wait: tuple[int, bool]) -> bool:
        covered = [s for name, s in self.h.children().items()
                   if (split_child(name) or ("", -1))[1] <= wait[0]]
        failed = TaskStatus.FAILED in covered or TaskStatus.CANCELLED in covered
        return all(s not in OPEN for s in covered) or (wait[1] and failed)

    def check(self, woken: bool) -> None:
        if self.ended:  # a parent that ended leaves no child open
            assert all(s not in OPEN for s in self.h.children().values())
        over = {w for w in self.waits if self._over(w)}
        if self.unsure:
            pass
        elif woken:  # a wake: some wait is over (each one that is over is dropped)
            assert over, (self.waits, self.h.children())
        else:  # no wake: none of the waits is over
            assert not over, (over, self.h.children())
        self.waits -= over


def test_a_mapped_task_mapping_again_forgets_its_instances_children() -> None:
    h = CH()
    h.start("p")
    h.spawn("p", [0])
    rc = h.sched.children.of(RUN_ID)
    assert rc is not None
    rc.add_ended("m~0/0", Ended(1, TaskStatus.SUCCEEDED, 1))
    rc.add_ended("m~1/0/2", Ended(2, TaskStatus.FAILED, 1))
    rc.add_ended("mm~0/0", Ended(3, TaskStatus.SUCCEEDED, 1))
    ch = Changes()
    ch.instances_reset.append((RUN_ID, "m"))
    h.sched.children.sweep(h.now, ch, h.sched.is_active)
    assert set(rc.ended) == {"mm~0/0"} and "m~1/0" not in rc.failed_of
    assert set(rc.open) == {"p/0"}  # another task's children are left alone


def test_unknown_task_cannot_spawn() -> None:
    h = CH()
    with pytest.raises(InvalidState, match="no such task"):
        h.spawn("nope", [0])
    assert isinstance(Scheduler().children.max_children, int)
