"""A task message as the agent reads it, and the failures it reports without running it."""

import contextlib
import time
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

from protocol.limits import is_token
from protocol.messages import TaskDispatch, TaskFailed, dispatch_decoder
from protocol.untrusted import Malformed, decode


def read_task(msg: Msg) -> TaskDispatch:
    """The task a message carries, or Malformed (never worth retrying)."""
    task = decode(dispatch_decoder, msg.data, "task message")
    if not is_token(task.run_id):  # it becomes the subject of the reports
        raise Malformed("invalid task message: the run id must be letters, digits, '_' or '-'")
    return task


def deliveries(msg: Msg) -> int:
    """How often JetStream delivered this message: 1 the first time."""
    parts = msg.reply.split(".") if msg.reply else ()
    try:
        if len(parts) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<left>
            return max(1, int(parts[4]))  # (nats-py's metadata also builds a datetime)
        return max(1, msg.metadata.num_delivered or 1)
    except Exception:  # noqa: BLE001 - not a JetStream message (tests, hand-made)
        return 1


async def settle(action: Callable[[], Any]) -> None:
    """Ack, nak or term; a failure (NATS away) means a redelivery later, which is fine."""
    with contextlib.suppress(Exception):
        await action()


def failed(task: TaskDispatch, agent_id: str, error_type: str, message: str,
           started_at: float | None = None) -> TaskFailed:
    """A failure the agent reports itself (cancelled, unknown function, too many deliveries)."""
    return TaskFailed(run_id=task.run_id, task=task.task, attempt=task.attempt, agent_id=agent_id,
                      at=time.time(), started_at=started_at, error_type=error_type,
                      message=message)


def too_many_deliveries(task: TaskDispatch, agent_id: str, count: int) -> TaskFailed:
    return failed(task, agent_id, "TooManyDeliveries",
                  f"the task was delivered {count} times and every agent running it vanished "
                  "(killed, out of memory, crashed?); not running it again")


def unknown_function(task: TaskDispatch, agent_id: str) -> TaskFailed:
    return failed(task, agent_id, "UnknownFunction",
                  f"agent {agent_id} has no function {task.function!r}: it runs only functions "
                  "registered by the modules it imported (--import); nothing was imported for "
                  "this message")


def cancelled(task: TaskDispatch, agent_id: str, started_at: float) -> TaskFailed:
    return failed(task, agent_id, "Cancelled", "the run was cancelled", started_at)
