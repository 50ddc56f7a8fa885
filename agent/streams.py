"""A generator task: its items taken a batch at a time (in the task's thread, or awaited for
an async generator), each batch sent and stored before the next is taken; its output is how
many it yielded."""

import contextvars
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from agent.outputs import encode_output
from agent.threads import TaskThreads

BATCH_ITEMS = 5_000
BATCH_BYTES = 256 * 1024
"""Items per report: at most this many, or this many bytes of them."""

SendItems = Callable[[int, list[bytes]], Awaitable[None]]
"""Sends items from a first index and waits until they are stored."""


def _take(gen: Iterator[Any]) -> tuple[list[bytes], bool]:
    """The next batch, each item held to an output's limits; True once the generator ended."""
    batch: list[bytes] = []
    size = 0
    for value in gen:
        batch.append(encode_output(value))
        size += len(batch[-1])
        if len(batch) >= BATCH_ITEMS or size >= BATCH_BYTES:
            return batch, False
    return batch, True


async def drain(gen: Iterator[Any], threads: TaskThreads, send: SendItems) -> int:
    count = 0
    done = False
    while not done:
        call = functools.partial(contextvars.copy_context().run, _take, gen)
        (batch, done), error = await threads.submit(call)
        if error is not None:
            raise error
        if batch:
            await send(count, batch)
            count += len(batch)
    return count


async def drain_async(gen: AsyncIterator[Any], send: SendItems) -> int:
    count = 0
    batch: list[bytes] = []
    size = 0
    async for value in gen:
        batch.append(encode_output(value))
        size += len(batch[-1])
        if len(batch) >= BATCH_ITEMS or size >= BATCH_BYTES:
            await send(count, batch)
            count += len(batch)
            batch, size = [], 0
    if batch:
        await send(count, batch)
        count += len(batch)
    return count
