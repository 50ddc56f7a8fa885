"""Leases: which task messages the agent keeps from being redelivered, and keeping them.

JetStream redelivers a message that is not acked within the consumer's ack wait (the
lease). The agent extends the lease (``in_progress``) of every message it holds unsettled:
waiting for a slot, running, or with its result still being stored (for as long as the
coordinator's store is away). A message it lets go of simply expires and is redelivered.
"""

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from nats.aio.msg import Msg

from agent.inhand import TaskInHand, TaskState

HELD = frozenset({TaskState.WAITING, TaskState.RUNNING, TaskState.REPORTING})
"""The states whose messages' leases are extended."""


def held(items: Iterable[TaskInHand]) -> list[Msg]:
    """The messages among ``items`` whose leases the agent extends."""
    return [item.msg for item in items if item.state in HELD]


async def keep_leases(lease_s: Callable[[], float], items: Iterable[TaskInHand]) -> None:
    """Extend the lease of every message held, a few times per lease, until cancelled."""
    while True:
        await asyncio.sleep(max(0.2, lease_s() / 3))
        for msg in held(items):
            with contextlib.suppress(Exception):
                await msg.in_progress()
