"""The coordinator API's ``runs.instances``: a mapped task's instances counted by state, a page of
them in index order, or one of them in full."""

import re
from collections.abc import Awaitable, Callable
from typing import Any

from coordinator import instance_store
from coordinator.api import REPLY_MARGIN_BYTES
from coordinator.flows import FlowCache
from coordinator.instance_store import Mapped
from coordinator.store import Store
from protocol.api import GetInstances, MapInstances
from protocol.errors import BadRequest, UnknownInstance, UnknownRun
from protocol.flows import TaskSpec
from protocol.messages import encoder
from protocol.records import TaskRecord
from protocol.states import TASK_FINAL, TaskStatus

_TOTAL = re.compile(r"^mapped: [\d,]+/([\d,]+) done")


def total_from_note(note: str | None) -> int | None:
    """How many items a mapped task maps over, from the note its record carries while its
    instances run and after (``mapped: 37/100 done, 2 failed (index 4, 17)``)."""
    found = _TOTAL.match(note or "")
    return int(found.group(1).replace(",", "")) if found else None


class InstancesApi:
    def __init__(self, store: Store, flows: FlowCache, max_reply_bytes: int = 1024 * 1024) -> None:
        self.store = store
        self.flows = flows
        self.max_reply_bytes = max_reply_bytes
        """The NATS server's max_payload: a page stops before the answer would outgrow it."""

    def handlers(self) -> dict[tuple[str, str], Callable[[Any], Awaitable[Any]]]:
        return {("runs", "instances"): self.instances}

    async def instances(self, req: GetInstances) -> MapInstances:
        spec = await self._mapped_spec(req.run_id, req.task)
        db = self.store.database
        mapped = await instance_store.survey(
            db, req.run_id, req.task, counts=req.counts and req.index is None,
            status=req.status, after_index=req.after_index,
            limit=0 if req.index is not None else req.limit)
        if mapped is None:  # stored with its run: only a run being written has none yet
            mapped = Mapped(status=TaskStatus.PENDING, note=None)
        out = MapInstances(run_id=req.run_id, task=req.task, status=mapped.status,
                           total=total_from_note(mapped.note), counts=mapped.counts)
        if req.index is not None:
            out.instances = [await self._one(req.run_id, spec, req.index, mapped, out.total)]
            return out
        out.instances, out.next_after = await self._page(req, mapped)
        return out

    async def _mapped_spec(self, run_id: str, task: str) -> TaskSpec:
        found = await self.store.run_flow(run_id)
        if found is None:
            raise UnknownRun(run_id)
        flow = await self.flows.version(*found)
        spec = flow.tasks.get(task)
        if spec is None:
            raise BadRequest(f"run {run_id} of {found[0]!r} has no task {task!r}; it has "
                             f"{', '.join(sorted(flow.tasks)[:20])}")
        if not spec.map_over:
            raise BadRequest(f"task {task!r} of run {run_id} is not mapped (it has no map_over), "
                             "so it has no instances; `flowforge show` shows the task itself")
        return spec

    async def _page(self, req: GetInstances, mapped: Mapped) -> tuple[list[TaskRecord], int | None]:
        """The instances of the page that fit in one answer (sizes were read first, so none is
        loaded past the budget), and where the next page starts."""
        budget = self.max_reply_bytes - REPLY_MARGIN_BYTES - 64 * len(mapped.counts)
        chosen: list[int] = []
        for index, size in mapped.page:
            budget -= size
            if budget < 0 and chosen:
                break
            chosen.append(index)
        cut = len(chosen) < len(mapped.page)
        # the last index this answer covers: it may skip instances whose state changed
        # between the two reads
        last = chosen[-1] if chosen else None
        page: list[TaskRecord] = []
        budget = self.max_reply_bytes - REPLY_MARGIN_BYTES - 64 * len(mapped.counts)
        for rec in await instance_store.instances(self.store.database, req.run_id, req.task,
                                                  chosen):
            if req.status is not None and rec.status is not req.status:
                continue
            budget -= len(encoder.encode(rec)) + 1
            if budget < 0 and page:
                cut, last = True, _index(page[-1])
                break
            page.append(rec)
        more = cut or (req.limit > 0 and len(mapped.page) == req.limit)
        return page, last if more else None

    async def _one(self, run_id: str, spec: TaskSpec, index: int, mapped: Mapped,
                   total: int | None) -> TaskRecord:
        """The instance, or for an item not reached yet of a task still mapping, a pending one."""
        rec = await instance_store.one(self.store.database, run_id, spec.name, index)
        if rec is not None:
            return rec
        name = f"{spec.name}~{index}"
        if total is not None and index >= total:
            raise UnknownInstance(f"task {spec.name!r} of run {run_id} maps over {total:,} "
                                  f"items: there is no index {index}")
        if total is not None and mapped.status is TaskStatus.RUNNING:
            return TaskRecord(run_id=run_id, task=name, queue=spec.queue,
                              note="not made yet: instances are made a window at a time")
        if mapped.status not in TASK_FINAL:
            raise UnknownInstance(f"task {spec.name!r} of run {run_id} has not started mapping "
                                  f"({mapped.status.value}): it has no instances yet")
        raise UnknownInstance(f"task {spec.name!r} of run {run_id} has no instance {index}: "
                              f"it ended ({mapped.status.value}) before making one")


def _index(rec: TaskRecord) -> int:
    return int(rec.task.rpartition("~")[2])
