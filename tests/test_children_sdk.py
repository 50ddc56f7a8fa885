"""The SDK side of child tasks without a coordinator: how items bind, which functions may be
children, how spawns are numbered, batched and waited for, and how outcomes come back."""

import itertools
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import flowforge
from flowforge.children import ChildFailed, Spawner, ranges_of
from protocol.children import (
    MAX_SPAWN_AT_ONCE,
    AwaitChildren,
    ChildOutcome,
    ChildResults,
    GetChildResults,
    SpawnChildren,
    Spawned,
)
from protocol.states import TaskStatus
from tests import childflows


class FakeAsker:
    """Answers like a coordinator whose children all ended: each with output 10 * seq, but
    the seqs in ``fail`` failed."""

    def __init__(self, fail: frozenset[int] = frozenset()) -> None:
        self.spawned: list[SpawnChildren] = []
        self.waits: list[AwaitChildren] = []
        self.fail = fail

    def ask(self, body: Any, result_type: type[Any]) -> Any:
        if isinstance(body, SpawnChildren):
            self.spawned.append(body)
            return Spawned(started=len(body.children), found=0, total=0)
        assert isinstance(body, GetChildResults)
        seqs = [c.seq for req in self.spawned for c in req.children
                if body.after < c.seq <= body.upto]
        return ChildResults(outcomes=[self._outcome(s) for s in sorted(seqs)])

    def _outcome(self, seq: int) -> ChildOutcome:
        if seq in self.fail:
            return ChildOutcome(seq=seq, status=TaskStatus.FAILED, function="f",
                                error_type="ValueError", message=f"no {seq}")
        return ChildOutcome(seq=seq, status=TaskStatus.SUCCEEDED, function="f",
                            output=msgspec.Raw(str(10 * seq).encode()))

    async def aask(self, body: Any, result_type: type[Any]) -> Any:
        return self.ask(body, result_type)

    def wait_children(self, body: AwaitChildren) -> None:
        self.waits.append(body)

    async def await_children(self, body: AwaitChildren) -> None:
        self.waits.append(body)


def _spawner(asker: FakeAsker) -> Spawner:
    childflows.register_all()
    return Spawner("r1", "parent", 1, "agent-1", "default", asker)


def test_an_item_binds_to_item_and_map_index_or_to_the_first_parameter_not_given() -> None:
    asker = FakeAsker()
    spawner = _spawner(asker)
    spawner.spawn_each(childflows.picky, ["a", "b"], {})
    spawner.spawn_each(childflows.slow_item, [7], {"hold_s": 0.5})
    spawner.spawn_each(childflows.kid, [3], {"item": 1})  # item given: the next one takes it
    spawner.gather([], return_exceptions=False)
    params = [c.params for req in asker.spawned for c in req.children]
    assert params == [{"item": "a", "map_index": 0}, {"item": "b", "map_index": 1},
                      {"hold_s": 0.5, "item": 7}, {"item": 1, "hold_s": 3}]
    assert [c.queue for req in asker.spawned for c in req.children] == [
        "default", "default", "default", "kids"]  # kid's @flowforge.task(queue="kids")


def test_only_registered_plain_functions_may_be_children() -> None:
    spawner = _spawner(FakeAsker())
    with pytest.raises(TypeError, match="is not a registered function"):
        spawner.spawn(childflows.not_registered_child, {"x": 1})
    with pytest.raises(Exception, match="lambda"):
        spawner.spawn(lambda: 1, {})

    def gen() -> Any:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        spawner.spawn(gen, {})
    with pytest.raises(TypeError, match="must be JSON values"):
        spawner.spawn(childflows.double, {"x": object()})
    with pytest.raises(ValueError, match="generator"):
        flowforge.task(gen)
    with pytest.raises(ValueError, match="queue"):
        flowforge.task(queue="no spaces")


def test_spawns_go_in_batches_numbered_in_order_and_come_back_in_the_order_asked() -> None:
    asker = FakeAsker()
    spawner = _spawner(asker)
    children = spawner.spawn_each(childflows.double, range(2_500), {})
    assert spawner.gather(children[::-1][:3], return_exceptions=False) == [24_990, 24_980,
                                                                            24_970]
    assert [len(r.children) for r in asker.spawned] == [MAX_SPAWN_AT_ONCE, MAX_SPAWN_AT_ONCE,
                                                        500]
    assert [c.seq for r in asker.spawned for c in r.children] == list(range(2_500))
    assert asker.waits[0].ranges == [(2_497, 2_499)]
    assert spawner.unsettled  # the other 2,497 were never gathered
    spawner.settle()
    assert not spawner.unsettled


def test_a_failed_child_raises_or_comes_back_in_its_place() -> None:
    spawner = _spawner(FakeAsker(fail=frozenset({1})))
    children = spawner.spawn_each(childflows.double, range(3), {})
    out = spawner.gather(children, return_exceptions=True)
    assert out[0] == 0 and out[2] == 20 and isinstance(out[1], ChildFailed)
    assert "child task parent/1 (f) failed: ValueError: no 1" in str(out[1])
    with pytest.raises(ChildFailed, match="parent/1"):
        spawner.gather(children, return_exceptions=False)


@given(st.sets(st.integers(0, 5_000), max_size=300))
def test_ranges_cover_exactly_the_spawn_numbers(seqs: set[int]) -> None:
    ranges = ranges_of(seqs)
    covered = {s for first, last in ranges for s in range(first, last + 1)}
    assert covered == seqs
    assert all(b[0] > a[1] + 1 for a, b in itertools.pairwise(ranges))
