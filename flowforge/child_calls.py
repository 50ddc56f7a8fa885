"""The Client's calls about child tasks (``flowforge show RUN --children TASK``)."""

from collections.abc import AsyncIterator
from typing import TypeVar, cast

import msgspec

from protocol.children import ChildInfo, ChildList, ListChildren, child_name
from protocol.states import TaskStatus

T = TypeVar("T")


class ChildCalls:
    """Mixed into ``Client``, which provides ``request``."""

    async def request(self, body: msgspec.Struct, result_type: type[T]) -> T:
        raise NotImplementedError

    async def children(self, run_id: str, parent: str | None = None, after: str = "",
                       limit: int = 100, *, status: TaskStatus | str | None = None) -> ChildList:
        """The child tasks of a run (of ``parent`` only, if given: a task ``train``, a child
        ``train/0`` or a mapped instance ``score~7``) counted by state per parent, and a page of
        them in name order after ``after`` (a child's name), only those in ``status`` if given;
        ``limit`` 0 for the counts alone. ``more`` says a next page starts after the last one
        here. A status that is no ``TaskStatus`` goes as it is: the coordinator answers
        bad_request."""
        body = ListChildren(run_id=run_id, parent=parent, after=after, limit=limit,
                            status=cast("TaskStatus | None", status))
        return await self.request(body, ChildList)

    async def all_children(self, run_id: str, parent: str | None = None, *,
                           status: TaskStatus | str | None = None,
                           page: int = 1_000) -> AsyncIterator[ChildInfo]:
        """Every child (of ``parent``, in ``status`` if given) in name order, a page at a time."""
        after = ""
        while True:
            got = await self.children(run_id, parent, after, page, status=status)
            for info in got.children:
                yield info
            if not got.more or not got.children:
                return
            last = got.children[-1]
            after = child_name(last.parent, last.seq)
