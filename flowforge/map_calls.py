"""The Client's calls about mapped tasks' instances (``flowforge show RUN --task T --map-index I``)."""

from collections.abc import AsyncIterator
from typing import TypeVar, cast

import msgspec

from protocol import api
from protocol.records import TaskRecord
from protocol.states import TaskStatus

T = TypeVar("T")


class MapCalls:
    """Mixed into ``Client``, which provides ``request``."""

    async def request(self, body: msgspec.Struct, result_type: type[T]) -> T:
        raise NotImplementedError

    async def instances(self, run_id: str, task: str, *, status: TaskStatus | str | None = None,
                        after_index: int = -1, limit: int = 100,
                        counts: bool = True) -> api.MapInstances:
        """A mapped task's instances counted by state and a page of them in index order (those
        after ``after_index``, only in ``status`` if given; fewer than ``limit`` when they
        would not fit in one message: go on from ``next_after``). A status that is no
        ``TaskStatus`` goes as it is: the coordinator answers bad_request."""
        body = api.GetInstances(run_id=run_id, task=task, status=cast("TaskStatus | None", status),
                                after_index=after_index, limit=limit, counts=counts)
        return await self.request(body, api.MapInstances)

    async def instance(self, run_id: str, task: str, index: int) -> TaskRecord:
        """One instance of a mapped task in full (``T~index``): attempts, output, error.
        An item not reached yet of a task still mapping is a pending record."""
        found = await self.request(api.GetInstances(run_id=run_id, task=task, index=index),
                                   api.MapInstances)
        return found.instances[0]

    async def all_instances(self, run_id: str, task: str, *,
                            status: TaskStatus | str | None = None,
                            page: int = 1_000) -> AsyncIterator[TaskRecord]:
        """Every instance made so far (in ``status`` if given), in index order, a page at a
        time."""
        after = -1
        while True:
            got = await self.instances(run_id, task, status=status, after_index=after,
                                       limit=page, counts=False)
            for rec in got.instances:
                yield rec
            if got.next_after is None:
                return
            after = got.next_after

