"""``ctx.mapped_outputs``: a mapped task's outputs in item order, read a page at a time from
the coordinator, for a task downstream of it when they are too many to pass as one value."""

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import msgspec

from protocol.api import GetInstances, MapInstances
from protocol.dag import INSTANCE_SEP
from protocol.states import TaskStatus

PAGE = 500
_any = msgspec.json.Decoder()

Ask = Callable[[GetInstances], MapInstances]
AAsk = Callable[[GetInstances], Awaitable[MapInstances]]


def _request(run_id: str, task: str, after: int) -> GetInstances:
    return GetInstances(run_id=run_id, task=task, after_index=after, limit=PAGE, counts=False)


def _values(page: MapInstances, expect: int) -> tuple[list[Any], int]:
    """The outputs of a page (None for an item that did not succeed, or has no record), and
    the index the next page starts from."""
    out: list[Any] = []
    for rec in page.instances:
        index = int(rec.task.rpartition(INSTANCE_SEP)[2])
        out += [None] * max(0, index - expect)
        out.append(_any.decode(bytes(rec.output)) if rec.status is TaskStatus.SUCCEEDED else None)
        expect = index + 1
    return out, expect


def outputs(ask: Ask, run_id: str, task: str) -> Iterator[Any]:
    after, expect = -1, 0
    while True:
        page = ask(_request(run_id, task, after))
        values, expect = _values(page, expect)
        yield from values
        if page.next_after is None:
            return
        after = page.next_after


async def aoutputs(aask: AAsk, run_id: str, task: str) -> AsyncIterator[Any]:
    after, expect = -1, 0
    while True:
        page = await aask(_request(run_id, task, after))
        values, expect = _values(page, expect)
        for value in values:
            yield value
        if page.next_after is None:
            return
        after = page.next_after
