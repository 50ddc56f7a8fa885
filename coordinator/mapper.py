"""The scheduler's part for mapped tasks: expand one when it is due, follow its instances'
reports and timers, and end it when they all ended. Pure, like the scheduler."""

import bisect
from collections.abc import Callable, Iterable

import msgspec

from coordinator import mapping
from coordinator.changes import Changes, Dispatch, Timer
from coordinator.graph import CompiledFlow
from coordinator.mapper_items import ItemsPart
from coordinator.mapping import MapError, MapState, Report
from coordinator.runstate import RunState
from protocol.messages import TaskFailed, TaskProgress, TaskStarted, TaskSucceeded
from protocol.records import RunRecord, TaskRecord
from protocol.states import TASK_FINAL, TaskStatus

Ended = Callable[[RunState, TaskRecord, bool, float, Changes], None]
"""The scheduler's step for a task that ended (succeeded: True) with its fields set."""
RetryDelay = Callable[[float, int], float]


class Mapper(ItemsPart):
    def __init__(self, ended: Ended, retry_delay_s: RetryDelay, budget: int,
                 backstop_s: float) -> None:
        self._ended = ended
        self._retry_delay_s = retry_delay_s
        self.budget = budget
        self.backstop_s = backstop_s
        self._earlier: dict[tuple[str, str], tuple[list[TaskRecord], bool]] = {}
        self.streams: dict[str, dict[str, list[msgspec.Raw]]] = {}
        """Generator items of a finished run about to be made active again, by run id."""

    def remember(self, run_id: str, task: str, instances: Iterable[TaskRecord],
                 reuse: bool) -> None:
        """A retried mapped task's earlier instances, for its next expansion: with ``reuse``
        (its items did not change) those that succeeded are kept and only the others run
        again; either way attempts go on from where they were."""
        prefix = task + mapping.SEP
        self._earlier[(run_id, task)] = ([i for i in instances if i.task.startswith(prefix)],
                                         reuse)

    def expand(self, state: RunState, name: str, now: float, ch: Changes) -> None:
        """The mapped task is due: it runs as its instances, the first window queued now."""
        rec = state.tasks[name]
        rec.attempt += 1
        rec.dispatch = rec.attempt
        rec.queued_at = rec.started_at = now
        rec.retry_at = rec.finished_at = None
        rec.error_type = rec.error_message = rec.traceback = None
        state.set(rec, TaskStatus.RUNNING)
        ch.tasks[(state.run.run_id, name)] = rec
        ch.runs[state.run.run_id] = state.run
        try:
            items = mapping.items_to_map(state, state.flow.tasks[name])
        except MapError as exc:
            self._end(state, rec, None, now, ch, "MapError", str(exc))
            return
        ms = MapState(task=name, items=items, budget=self.budget, open=self._open(state, name))
        state.maps[name] = ms
        earlier, reuse = self._earlier.pop((state.run.run_id, name), ([], False))
        if reuse:
            self._reuse(state, ms, earlier, ch)
        else:  # new items: the earlier instances go, their attempts carry on
            ms.attempts = {found[1]: rec.attempt for rec in earlier
                           if (found := mapping.split_instance(rec.task))}
            if earlier:
                ch.instances_reset.append((state.run.run_id, name))
        mapping.fill(state, ms, now, ch)
        self._progress(state, ms, now, ch)

    @staticmethod
    def _open(state: RunState, name: str) -> bool:
        """Whether the task maps over a generator that has not ended yet."""
        over = state.flow.tasks[name].map_over or ""
        source = state.tasks.get(over)
        return (source is not None and state.flow.tasks[over].yields
                and source.status is not TaskStatus.SUCCEEDED)

    @staticmethod
    def _reuse(state: RunState, ms: MapState, earlier: list[TaskRecord], ch: Changes) -> None:
        """Keep what succeeded; everything else up to where the last expansion got runs again
        (written pending now, so a restart before it runs still knows)."""
        present: set[int] = set()
        for rec in earlier:
            found = mapping.split_instance(rec.task)
            if found is None or found[1] >= ms.total:
                continue
            present.add(found[1])
            ms.next_index = max(ms.next_index, found[1] + 1)
            if rec.status is TaskStatus.SUCCEEDED:
                ms.succeeded += 1
                ms.keep_output(found[1], rec.output)
            else:
                ms.redo.append(rec)
        queue = state.flow.tasks[ms.task].queue
        ms.redo += [TaskRecord(run_id=state.run.run_id, task=mapping.instance_name(ms.task, i),
                               queue=queue) for i in range(ms.next_index) if i not in present]
        for rec in ms.redo:
            rec.status, rec.note = TaskStatus.PENDING, "to run again"
            ch.tasks[(state.run.run_id, rec.task)] = rec
        ms.redo.sort(key=lambda r: -int(r.task.rpartition(mapping.SEP)[2]))  # popped in order

    def restore(self, state: RunState, name: str, instances: Iterable[TaskRecord], now: float,
                ch: Changes) -> None:
        """A running mapped task after a restart, from its stored instances."""
        try:
            items = mapping.items_to_map(state, state.flow.tasks[name])
        except MapError as exc:
            self._end(state, state.tasks[name], None, now, ch, "MapError", str(exc))
            return
        ms = MapState(task=name, items=items, budget=self.budget, open=self._open(state, name))
        state.maps[name] = ms
        rows = sorted((found[1], rec) for rec in instances
                      if (found := mapping.split_instance(rec.task)) and found[1] < ms.total)
        chunk = state.flow.tasks[name].chunk
        for n, (index, rec) in enumerate(rows):
            following = rows[n + 1][0] if n + 1 < len(rows) else ms.total  # without a row
            size = 1  # an unfinished row on a chunk's first item covers its items without rows
            if rec.status in (TaskStatus.QUEUED, TaskStatus.RUNNING) and index % chunk == 0:
                size = min(chunk, following - index)
            ms.next_index = max(ms.next_index, index + size)
            if rec.status is TaskStatus.SUCCEEDED:
                ms.succeeded += 1
                ms.keep_output(index, rec.output)
            elif rec.status in TASK_FINAL:
                ms.failed.append(index)
            elif rec.status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
                ms.active[index], ms.sizes[index] = rec, size
                self._resume(state, ms, rec, index, now, ch)
            else:  # waiting to run again (a retry): queued as the window allows
                ms.redo.append(rec)
        ms.failed.sort()
        ms.redo.sort(key=lambda r: -int(r.task.rpartition(mapping.SEP)[2]))  # popped in order
        mapping.fill(state, ms, now, ch)
        self._progress(state, ms, now, ch)

    def _resume(self, state: RunState, ms: MapState, rec: TaskRecord, index: int, now: float,
                ch: Changes) -> None:
        run_id = state.run.run_id
        if rec.status is TaskStatus.QUEUED:
            size = ms.sizes.get(index, 1)
            ch.dispatches.append(Dispatch(rec.queue, mapping.instance_dispatch(
                state, state.flow.tasks[ms.task], rec, index, ms.items[index:index + size])))
        elif rec.status is TaskStatus.RETRY_WAIT:
            ch.timers.append(Timer(rec.retry_at or now, run_id, rec.task))
        elif rec.status is TaskStatus.RUNNING and rec.deadline_at:
            ch.timers.append(Timer(rec.deadline_at, run_id, rec.task))
        elif rec.status is TaskStatus.PENDING:
            mapping.queue_instance(state, ms, rec, index, now, ch)

    def instance(self, state: RunState, name: str) -> tuple[MapState, int, TaskRecord] | None:
        found = mapping.split_instance(name)
        ms = state.maps.get(found[0]) if found else None
        rec = ms.active.get(found[1]) if ms and found else None
        return None if rec is None or ms is None or found is None else (ms, found[1], rec)

    def on_report(self, state: RunState, msg: Report, now: float, ch: Changes) -> bool:
        """An instance's report; False when stale, duplicate or for no active instance."""
        found = self.instance(state, msg.task)
        if found is None or mapping.stale(found[2], msg):
            return False
        ms, index, rec = found
        spec = state.flow.tasks[ms.task]
        ch.tasks[(msg.run_id, msg.task)] = rec
        RunState.close_lost_attempts(rec, msg.attempt, msg.at)
        match msg:
            case TaskStarted():
                mapping.mark_running(rec, spec, msg.agent_id, msg.at, self.backstop_s,
                                     msg.run_id, ch, ms.sizes.get(index, 1))
            case TaskProgress():
                mapping.mark_running(rec, spec, msg.agent_id, rec.started_at or msg.at,
                                     self.backstop_s, msg.run_id, ch, ms.sizes.get(index, 1))
                rec.progress = msg.fraction if msg.fraction is not None else rec.progress
            case TaskSucceeded() if spec.chunk > 1:
                self._chunk_done(state, ms, index, rec, msg, now, ch)
            case TaskSucceeded():
                self._succeeded(ms, index, rec, msg.agent_id, msg.at, msg.started_at, msg.output)
                self._ended_instance(state, ms, index, now, ch)
            case TaskFailed():
                self._failed(state, ms, index, rec, msg, now, ch)
        return True

    @staticmethod
    def _succeeded(ms: MapState, index: int, rec: TaskRecord, agent_id: str, at: float,
                   started_at: float | None, output: msgspec.Raw) -> None:
        rec.agent_id, rec.finished_at, rec.output = agent_id, at, output
        rec.started_at = started_at or rec.started_at
        rec.error_type = rec.error_message = rec.traceback = None
        RunState.close_attempt(rec, "succeeded", at)
        rec.status = TaskStatus.SUCCEEDED
        ms.succeeded += 1
        ms.keep_output(index, output)

    def _chunk_done(self, state: RunState, ms: MapState, first: int, rec: TaskRecord,
                    msg: TaskSucceeded, now: float, ch: Changes) -> None:
        """A chunk's report: each item gets its own record (the first item's is the chunk's
        record), succeeded, failed, or waiting for its own retry."""
        size = ms.sizes.get(first, 1)
        try:
            results = mapping.results_of(msg.output, size)
        except MapError as exc:
            self._failed(state, ms, first, rec, TaskFailed(
                run_id=msg.run_id, task=msg.task, attempt=msg.attempt, agent_id=msg.agent_id,
                delivery=msg.delivery, at=msg.at, started_at=msg.started_at,
                error_type="ChunkError", message=str(exc)), now, ch)
            return
        del ms.active[first], ms.sizes[first]
        template = mapping.item_record(rec, ms.task, first)  # as the chunk ran: before item 0's end
        for offset, result in enumerate(results):
            index = first + offset
            item = rec if offset == 0 else mapping.item_record(template, ms.task, index)
            ch.tasks[(msg.run_id, item.task)] = item
            if result.ok:
                self._succeeded(ms, index, item, msg.agent_id, msg.at, msg.started_at,
                                result.output)
                continue
            item.agent_id, item.finished_at = msg.agent_id, msg.at
            item.error_type, item.error_message = result.error_type or "Error", result.message
            item.traceback = result.traceback
            RunState.close_attempt(item, "failed", msg.at)
            if item.attempt <= state.flow.tasks[ms.task].retries:  # alone, as the window allows
                item.status = TaskStatus.RETRY_WAIT
                ms.redo.append(item)
            else:
                item.status = TaskStatus.FAILED
                bisect.insort(ms.failed, index)
        ms.redo.sort(key=lambda r: -int(r.task.rpartition(mapping.SEP)[2]))  # popped in order
        mapping.fill(state, ms, now, ch)
        self._progress(state, ms, now, ch)

    def _failed(self, state: RunState, ms: MapState, index: int, rec: TaskRecord,
                msg: TaskFailed, now: float, ch: Changes, settle: bool = True) -> None:
        """An instance's attempt failed: it waits for its retry, or it (every item of its
        chunk) failed; with ``settle``, the mapped task then moves on."""
        RunState.close_failed(rec, msg)
        spec = state.flow.tasks[ms.task]
        if rec.attempt <= spec.retries:
            rec.retry_at = now + self._retry_delay_s(spec.retry_delay_s, rec.attempt)
            rec.status = TaskStatus.RETRY_WAIT
            ch.timers.append(Timer(rec.retry_at, state.run.run_id, rec.task))
            return
        rec.status = TaskStatus.FAILED
        bisect.insort(ms.failed, index)  # in order: the note names the first few
        for offset in range(1, ms.sizes.get(index, 1)):  # a chunk failed as a whole
            item = mapping.item_record(rec, ms.task, index + offset)
            ch.tasks[(state.run.run_id, item.task)] = item
            bisect.insort(ms.failed, index + offset)
        if settle:
            self._ended_instance(state, ms, index, now, ch)
        else:
            del ms.active[index]
            ms.sizes.pop(index, None)

    def on_timer(self, state: RunState, name: str, now: float, ch: Changes) -> bool:
        found = self.instance(state, name)
        if found is None:
            return False
        ms, index, rec = found
        if rec.status is TaskStatus.RETRY_WAIT:
            mapping.queue_instance(state, ms, rec, index, now, ch)
            return True
        if rec.status is TaskStatus.RUNNING and rec.deadline_at and now >= rec.deadline_at - 0.001:
            ch.tasks[(state.run.run_id, name)] = rec
            self._failed(state, ms, index, rec, RunState.lost_past_deadline(
                state.run.run_id, rec, now, self.backstop_s), now, ch)
            return True
        return False

    def _ended_instance(self, state: RunState, ms: MapState, index: int, now: float,
                        ch: Changes) -> None:
        del ms.active[index]
        ms.sizes.pop(index, None)
        mapping.fill(state, ms, now, ch)
        self._progress(state, ms, now, ch)

    def _progress(self, state: RunState, ms: MapState, now: float, ch: Changes) -> None:
        """The mapped task's own record follows its instances; it ends when they all did."""
        rec = state.tasks[ms.task]
        done = ms.succeeded + len(ms.failed)
        rec.progress = done / ms.total if ms.total else 1.0
        rec.note = ms.note()
        ch.tasks[(state.run.run_id, ms.task)] = rec
        if not ms.finished:
            return
        del state.maps[ms.task]
        allowed = ms.allowed_failures(state.flow.tasks[ms.task])
        if len(ms.failed) > allowed:
            self._end(state, rec, None, now, ch, "MappedTaskFailed",
                      f"{len(ms.failed):,} of {ms.total:,} instances failed (allowed "
                      f"{allowed:,}): {ms.note()}")
            return
        output = ms.joined_output()
        if output is None:
            rec.note = (f"{ms.note()}; the outputs ({ms.output_bytes:,} bytes and more) are "
                        "too many to pass as one value")
        self._end(state, rec, mapping.TOO_MANY if output is None else output, now, ch)

    def _end(self, state: RunState, rec: TaskRecord, output: msgspec.Raw | None,
             now: float, ch: Changes, error_type: str = "", message: str = "") -> None:
        rec.finished_at = now
        ch.tasks[(state.run.run_id, rec.task)] = rec
        ch.runs[state.run.run_id] = state.run
        if error_type:
            rec.error_type, rec.error_message = error_type, message
            RunState.close_attempt(rec, "failed", now)
            self._ended(state, rec, False, now, ch)
            return
        rec.output = output if output is not None else msgspec.Raw(b"null")
        RunState.close_attempt(rec, "succeeded", now)
        self._ended(state, rec, True, now, ch)

    def cancel(self, state: RunState, now: float, ch: Changes) -> list[TaskRecord]:
        """Every instance not ended is cancelled; returns those queued or running."""
        in_flight = []
        for ms in state.maps.values():
            for rec in ms.active.values():
                if rec.status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
                    in_flight.append(rec)
                if rec.status is TaskStatus.RUNNING:
                    RunState.close_attempt(rec, "cancelled", now)
                rec.finished_at, rec.note, rec.status = now, "cancelled", TaskStatus.CANCELLED
                ch.tasks[(state.run.run_id, rec.task)] = rec
            for index, size in ms.sizes.items():  # each item of a chunk gets its own row
                for offset in range(1, size):
                    item = mapping.item_record(ms.active[index], ms.task, index + offset)
                    ch.tasks[(state.run.run_id, item.task)] = item
        state.maps.clear()
        return in_flight

    def stop(self, state: RunState, task: str, now: float, ch: Changes) -> None:
        """A mapped task marked by hand while it runs: its instances are cancelled."""
        ms = state.maps.get(task)
        if ms is None:
            return
        others = {name: m for name, m in state.maps.items() if name != task}
        state.maps = {task: ms}
        in_flight = self.cancel(state, now, ch)
        ch.withdrawn += [r for r in in_flight if r.attempt and r.started_at is None]
        state.maps = others

    def rebuild(self, run: RunRecord, flow: CompiledFlow,
                records: Iterable[TaskRecord]) -> RunState:
        """A finished run made active again (retry, mark), with its generator tasks' items
        (``streams``, handed over by the caller, who read them)."""
        state = RunState.from_records(run, flow, {r.task: r for r in records})
        state.streams = self.streams.pop(run.run_id, {})
        return state

    def remember_waiting(self, state: RunState, instances: Iterable[TaskRecord]) -> None:
        """After a restart: a mapped task waiting to expand again keeps its earlier instances'
        attempts (its task messages must not repeat an earlier id)."""
        instances = list(instances)
        for name, rec in state.tasks.items():
            if state.flow.tasks[name].map_over and rec.status is TaskStatus.PENDING and rec.attempt:
                self.remember(state.run.run_id, name, instances, reuse=False)

    def marked(self, state: RunState, task: str, ok: bool, now: float, ch: Changes) -> None:
        """A task marked by hand: a mapped one's instances stop with the mark; a generator's
        mapped task that started early has all the items there will be (or stops)."""
        self.stop(state, task, now, ch)
        self.source_ended(state, task, ok, now, ch)

    def forget(self, run_id: str) -> None:
        """The run left memory (ended or cancelled): what retries kept for it goes too."""
        for key in [k for k in self._earlier if k[0] == run_id]:
            del self._earlier[key]
