"""What a schedule's fire does while earlier runs of the schedule are still going (the overlap
policy, as Temporal defines it), and when a buffered fire may start: pure decisions."""

from dataclasses import dataclass
from enum import StrEnum

from protocol.schedules import Overlap

MAX_BUFFERED = 1000
"""Fires of one schedule waiting at most (buffer_all); later ones are skipped, as Temporal caps
its buffer."""


class Action(StrEnum):
    START = "start"
    """Start the run now."""
    SKIP = "skip"
    """Do not run this nominal time; it is recorded as skipped with the reason."""
    BUFFER = "buffer"
    """Keep it; it starts when the schedule's running runs have finished."""
    CANCEL_THEN_START = "cancel_then_start"
    """Cancel the schedule's running runs, then start once their tasks have stopped."""


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str = ""


def on_fire(policy: Overlap, running: int, buffered: int) -> Decision:
    """A nominal time is due; ``running`` runs of the schedule are going and ``buffered``
    fires wait for them."""
    if policy is Overlap.ALLOW_ALL or (running == 0 and buffered == 0):
        return Decision(Action.START)
    busy = f"{running} run(s) of the schedule still going"
    match policy:
        case Overlap.SKIP:
            return Decision(Action.SKIP, f"overlap skip: {busy}")
        case Overlap.BUFFER_ONE:
            if buffered == 0:
                return Decision(Action.BUFFER, f"overlap buffer_one: waits, {busy}")
            return Decision(Action.SKIP, "overlap buffer_one: a fire is already waiting")
        case Overlap.BUFFER_ALL:
            if buffered >= MAX_BUFFERED:
                return Decision(Action.SKIP, f"overlap buffer_all: {MAX_BUFFERED} fires already "
                                "wait (the most kept)")
            return Decision(Action.BUFFER, f"overlap buffer_all: waits its turn, {busy}")
        case _:  # CANCEL_OTHER (a newer fire replaces a waiting one: ScheduleClock)
            return Decision(Action.CANCEL_THEN_START, f"overlap cancel_other: {busy} cancelled")


def may_start_buffered(running: int, buffered: int) -> bool:
    """A run of the schedule finished: the oldest waiting fire starts once none is going."""
    return running == 0 and buffered > 0
