"""Operator actions on runs: cancel, retry what failed, mark a task succeeded or failed."""

from collections.abc import Callable

import msgspec

from coordinator import instance_store
from coordinator.flows import FlowCache
from coordinator.graph import CompiledFlow
from coordinator.recovery import restore_children
from coordinator.scheduler import Scheduler
from coordinator.store import Store
from coordinator.writer import Batch, Writer
from protocol.api import CancelRun, MarkTask, RetryRun
from protocol.errors import BadRequest, InvalidState, TooLarge, UnknownRun
from protocol.limits import MAX_OUTPUT_BYTES, MAX_VALUE_DEPTH
from protocol.messages import encoder
from protocol.records import RunDetail, RunRecord, TaskRecord
from protocol.states import TaskStatus
from protocol.untrusted import check_depth


class Operations:
    """Each action runs inside a writer batch, so it is committed with everything else."""

    def __init__(self, writer: Writer, store: Store, flows: FlowCache, scheduler: Scheduler) -> None:
        self.writer = writer
        self.store = store
        self.flows = flows
        self.scheduler = scheduler
        self.reopen_checks: list[Callable[[RunRecord], None]] = []
        """Asked before a finished run is made active again (retry, mark); one may refuse
        (raise) — a batch that has no room for another active run."""
        self.reopen_claims: list[Callable[[RunRecord, Batch, bool], None]] = []
        """Asked with ``False`` before a finished run is made active again in a writer batch,
        told with ``True`` once it is: a batch item's parameters are then taken for that
        writer batch (another batch may not start them in it too)."""

    async def _detail(self, run_id: str) -> RunDetail:
        detail = await self.store.get_run(run_id)
        if detail is None:
            raise UnknownRun(run_id)
        return detail

    async def _current(self, run_id: str) -> tuple[RunRecord, list[TaskRecord], bool]:
        """The run and its tasks: from memory while active, else from the store."""
        state = self.scheduler.run_state(run_id)
        if state is not None:
            return state.run, list(state.tasks.values()), True
        detail = await self._detail(run_id)
        return detail.run, detail.tasks, False

    async def _hand_over_items(self, run_id: str, flow: CompiledFlow, active: bool) -> None:
        """A finished run made active again gets its generator tasks' items back."""
        if not active and any(t.yields for t in flow.spec.tasks):
            self.scheduler.mapper.streams[run_id] = await instance_store.items_of(
                self.store.database, run_id)

    def _may_reopen(self, run: RunRecord, active: bool, batch: Batch) -> None:
        if not active:
            for check in self.reopen_checks:
                check(run)
            for claim in self.reopen_claims:
                claim(run, batch, False)

    def _reopened(self, run: RunRecord, active: bool, batch: Batch) -> None:
        if not active and self.scheduler.is_active(run.run_id):
            for claim in self.reopen_claims:
                claim(run, batch, True)

    async def cancel(self, req: CancelRun) -> RunRecord:
        async def act(now: float, batch: Batch) -> RunRecord:
            if self.scheduler.cancel(req.run_id, now, batch.changes) is not None:
                return batch.changes.runs[req.run_id]
            run = (await self._detail(req.run_id)).run
            raise InvalidState(f"run {req.run_id} is already {run.status.value}; nothing to cancel")

        return await self.writer.submit(act)

    async def retry(self, req: RetryRun) -> RunRecord:
        return await self.writer.submit(lambda now, batch: self.retry_in(req, now, batch))

    async def retry_in(self, req: RetryRun, now: float, batch: Batch) -> RunRecord:
        """Retry a run inside the writer batch ``batch``."""
        run, records, active = await self._current(req.run_id)
        self._may_reopen(run, active, batch)
        flow = await self.flows.version(run.flow, run.version)
        mapped = any(t.map_over for t in flow.spec.tasks)
        instances = await self.store.instances_of(run.run_id) if mapped else []
        await self._hand_over_items(run.run_id, flow, active)
        again = self.scheduler.retry(run, flow, records, now, batch.changes, instances)
        if not active:  # its children too: the parents' next attempts find them
            await restore_children(self.store, self.scheduler, run.run_id, now, batch.changes)
        if not again:
            raise InvalidState(
                f"run {req.run_id} has no failed, cancelled or upstream_failed task to retry"
            )
        self._reopened(run, active, batch)
        return run

    async def mark(self, req: MarkTask) -> TaskRecord:
        try:
            status = TaskStatus(req.status)
        except ValueError:
            status = None
        if status not in (TaskStatus.SUCCEEDED, TaskStatus.FAILED):
            raise BadRequest(f"status must be 'succeeded' or 'failed', got {req.status!r}")
        output_json = encoder.encode(req.output)
        if len(output_json) > MAX_OUTPUT_BYTES:
            raise TooLarge(f"output is over {MAX_OUTPUT_BYTES:,} bytes; store it and pass a reference")
        check_depth(output_json, "the output", MAX_VALUE_DEPTH)
        output = msgspec.Raw(output_json)

        async def act(now: float, batch: Batch) -> TaskRecord:
            run, records, active = await self._current(req.run_id)
            if req.task not in {r.task for r in records}:
                raise BadRequest(f"run {req.run_id} has no task {req.task!r}")
            self._may_reopen(run, active, batch)
            flow = await self.flows.version(run.flow, run.version)
            await self._hand_over_items(run.run_id, flow, active)
            rec = self.scheduler.mark(run, flow, records, req.task, status, output, now,
                                      batch.changes)
            if active:  # a queued message of it need not run any more
                batch.changes.withdrawn.append(rec)
            self._reopened(run, active, batch)
            return rec

        return await self.writer.submit(act)
