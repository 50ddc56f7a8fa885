"""Overlap policies: what a due fire does while the schedule's earlier runs are going."""

import pytest

from coordinator.firing import Action, may_start_buffered, on_fire
from protocol.schedules import Overlap


@pytest.mark.parametrize("policy", list(Overlap))
def test_with_nothing_going_every_policy_starts(policy: Overlap) -> None:
    assert on_fire(policy, running=0, buffered=0).action is Action.START


@pytest.mark.parametrize(("policy", "buffered", "action"), [
    (Overlap.SKIP, 0, Action.SKIP),
    (Overlap.BUFFER_ONE, 0, Action.BUFFER),
    (Overlap.BUFFER_ONE, 1, Action.SKIP),
    (Overlap.BUFFER_ALL, 0, Action.BUFFER),
    (Overlap.BUFFER_ALL, 5, Action.BUFFER),
    (Overlap.CANCEL_OTHER, 0, Action.CANCEL_THEN_START),
    (Overlap.ALLOW_ALL, 0, Action.START),
    (Overlap.ALLOW_ALL, 3, Action.START),
])
def test_while_a_run_is_going_each_policy_does_what_temporal_defines(
    policy: Overlap, buffered: int, action: Action
) -> None:
    decision = on_fire(policy, running=1, buffered=buffered)
    assert decision.action is action
    assert (decision.reason == "") is (action is Action.START)


def test_buffered_fires_keep_their_order_and_start_only_when_nothing_is_going() -> None:
    assert on_fire(Overlap.BUFFER_ALL, running=0, buffered=2).action is Action.BUFFER
    assert not may_start_buffered(running=1, buffered=2)
    assert may_start_buffered(running=0, buffered=2)
    assert not may_start_buffered(running=0, buffered=0)
