"""TaskInHand: one task message from its delivery until it is settled, and the state it is in."""

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nats.aio.msg import Msg

from agent import logcapture
from agent.taskmsg import deliveries
from flowforge.context import TaskContext
from protocol.messages import TaskDispatch


class TaskState(StrEnum):
    RECEIVED = "received"
    """Just delivered; no slot yet."""
    WAITING = "waiting"
    """In hand, waiting locally for a slot of its queue (the prefetch window)."""
    RUNNING = "running"
    """Holds a slot: its message is read, then its function runs."""
    REPORTING = "reporting"
    """Its function returned (its slot is given back); its terminal report is being stored."""
    DONE = "done"
    """Settled for good: acked once its report was stored, or terminated as malformed."""
    HANDED_BACK = "handed_back"
    """Given back unfinished (nak) at shutdown, for another agent to run."""


NEXT: dict[TaskState, frozenset[TaskState]] = {
    TaskState.RECEIVED: frozenset({TaskState.WAITING, TaskState.RUNNING}),
    TaskState.WAITING: frozenset({TaskState.RUNNING, TaskState.HANDED_BACK}),
    TaskState.RUNNING: frozenset({TaskState.REPORTING, TaskState.DONE, TaskState.HANDED_BACK}),
    TaskState.REPORTING: frozenset({TaskState.DONE, TaskState.HANDED_BACK}),
}
"""The states each state may move to; DONE and HANDED_BACK are final."""


@dataclass(slots=True, eq=False)
class TaskInHand:
    """Everything the agent knows about one task message it holds (compared by identity)."""

    msg: Msg
    queue: str
    delivery: int
    """How often JetStream delivered the message: 1 the first time."""
    state: TaskState = TaskState.RECEIVED
    dispatch: TaskDispatch | None = None
    """The task the message carries, once read (its attempt counts redeliveries)."""
    ctx: TaskContext | None = None
    task: asyncio.Task[None] | None = None
    """The asyncio task that runs it and reports it."""
    capture: logcapture.Capture | None = None
    """Its log, while its function runs."""
    lingering: list[asyncio.Future[Any]] = field(default_factory=list)
    """Threads still running a function that timed out or was cancelled (they keep the slot)."""
    slot_since: float = 0.0
    """``time.monotonic()`` when it took its slot."""
    lent: bool = False
    """Its task waits for its children and lent its slot meanwhile."""
    lends: int = 0
    """Waits for children under way at once (its slot is lent while there is any)."""
    cancelled: bool = False
    """Its run (or it) was cancelled and its function told to stop."""

    @classmethod
    def of(cls, msg: Msg, queue: str) -> "TaskInHand":
        return cls(msg, queue, deliveries(msg))

    def move(self, state: TaskState) -> None:
        """Go to ``state``; a move the lifecycle does not allow is a bug in the agent."""
        if state not in NEXT.get(self.state, frozenset()):
            raise RuntimeError(f"task message in state {self.state} cannot become {state}")
        self.state = state

    def cancel(self) -> None:
        """Stop its function: its context says cancelled and its asyncio task is cancelled.
        Once: a cancel heard again (a coordinator tells it again after a restart) must not
        interrupt the cleanup the function does on the first."""
        if self.cancelled:
            return
        self.cancelled = True
        if self.ctx is not None:
            self.ctx._cancel()
        if self.task is not None:
            self.task.cancel()
