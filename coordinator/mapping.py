"""Mapped tasks: one instance per item of a list, created and dispatched a window at a time.

A mapped task ``T`` is one task of its run; while it runs, its instances ``T~0``, ``T~1``...
are task instances of their own (stored, retried, dispatched like any task) that only exist
once dispatched: the items not reached yet are an index, not objects. ``T`` succeeds when
every instance ended and no more failed than it allows; its output is the instances' outputs
in item order (``null`` for a failed one).
"""

import bisect
import math
import random
from dataclasses import dataclass, field

import msgspec

from coordinator.changes import Changes, Dispatch, Timer
from coordinator.runstate import RunState
from protocol.dag import INSTANCE_SEP as SEP
from protocol.dag import PARAM_PREFIX
from protocol.errors import FlowForgeError
from protocol.flows import TaskSpec
from protocol.messages import (
    ItemResult,
    TaskDispatch,
    TaskFailed,
    TaskItems,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
)
from protocol.records import TaskRecord
from protocol.states import TaskStatus
from protocol.untrusted import decode

DEFAULT_WINDOW = 1_000
"""Instances of one mapped task queued or running at once when it sets no max_active."""
MAX_MAP_ITEMS = 1_000_000
_items = msgspec.json.Decoder(list[msgspec.Raw])
_enc = msgspec.json.Encoder()

Report = TaskStarted | TaskSucceeded | TaskFailed | TaskProgress | TaskItems
TOO_MANY = msgspec.Raw(b'{"mapped_outputs":"too many to pass as one value"}')
"""A mapped task's output when its instances' outputs are too many to pass as one value."""


def instance_name(task: str, index: int) -> str:
    return f"{task}{SEP}{index}"


def split_instance(name: str) -> tuple[str, int] | None:
    """``("T", 3)`` for ``"T~3"``; None for a task name."""
    task, sep, index = name.rpartition(SEP)
    ok = sep and index.isascii() and index.isdigit() and len(index) < 8
    return (task, int(index)) if ok else None


class MapError(Exception):
    """The list to map over is not one (or too long): the mapped task fails with this."""


@dataclass(slots=True)
class MapState:
    """One mapped task of an active run: its items, where creation stands, what ended."""

    task: str
    items: list[msgspec.Raw]
    budget: int
    """Outputs kept for the mapped task's own output while their bytes stay under this."""
    next_index: int = 0
    """Instances below this index were created."""
    active: dict[int, TaskRecord] = field(default_factory=dict)
    """Created and not ended: queued, running or waiting for a retry."""
    succeeded: int = 0
    failed: list[int] = field(default_factory=list)
    outputs: list[bytes | None] | None = None
    """Outputs by index (copies: a view would keep its whole report message alive); None
    once they passed ``budget`` (too many to pass as one value)."""
    too_many: bool = False
    open: bool = False
    """Its items still arrive (it maps over a generator that has not ended): not finished."""
    output_bytes: int = 0
    redo: list[TaskRecord] = field(default_factory=list)
    """Instances below ``next_index`` to run again (a retried mapped task's failed ones)."""
    sizes: dict[int, int] = field(default_factory=dict)
    """Items of each active instance of a chunked task, by its first index."""
    attempts: dict[int, int] = field(default_factory=dict)
    """Attempts an index already had in an earlier expansion: a new instance goes on from
    there, so its task messages never repeat an earlier one's id (the stream would drop it)."""

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def finished(self) -> bool:
        return (self.next_index >= self.total and not self.active and not self.redo
                and not self.open)

    def keep_output(self, index: int, output: msgspec.Raw) -> None:
        self.output_bytes += len(output) + 1
        if self.too_many:
            return
        if self.output_bytes > self.budget:
            self.too_many, self.outputs = True, None
            return
        if self.outputs is None:
            self.outputs = []
        if index >= len(self.outputs):  # the items may still be arriving: it grows with them
            self.outputs += [None] * (max(self.total, index + 1) - len(self.outputs))
        self.outputs[index] = bytes(output)

    def joined_output(self) -> msgspec.Raw | None:
        """The outputs in item order as one JSON list, or None when they are too many."""
        if self.too_many:
            return None
        outputs = (self.outputs or []) + [None] * (self.total - len(self.outputs or []))
        return msgspec.Raw(b"[" + b",".join(b"null" if o is None else o for o in outputs) + b"]")

    def note(self) -> str:
        done = self.succeeded + len(self.failed)
        text = f"mapped: {done:,}/{self.total:,} done"
        if self.failed:
            shown = ", ".join(map(str, self.failed[:10]))
            text += f", {len(self.failed):,} failed (index {shown}{'…' if len(self.failed) > 10 else ''})"
        return text

    def allowed_failures(self, spec: TaskSpec) -> int:
        allow = spec.allow_failures
        return int(allow) if allow >= 1 else int(allow * self.total)


def items_to_map(state: RunState, spec: TaskSpec) -> list[msgspec.Raw]:
    """The list a mapped task maps over: an upstream task's output or a run parameter."""
    over = spec.map_over or ""
    if over.startswith(PARAM_PREFIX):
        value = state.run.params.get(over[len(PARAM_PREFIX):])
        if not isinstance(value, list):
            raise MapError(f"run parameter {over[len(PARAM_PREFIX):]!r} is "
                           f"{type(value).__name__}, not a list to map over")
        items = [msgspec.Raw(_enc.encode(v)) for v in value]
    elif state.flow.tasks[over].yields:  # the same list the generator's items go on to
        items = state.streams.setdefault(over, [])
    else:
        try:
            items = decode(_items, bytes(state.tasks[over].output), f"the output of {over!r}")
        except FlowForgeError:
            raise MapError(f"the output of {over!r} is not a JSON list to map over") from None
    if len(items) > MAX_MAP_ITEMS:
        raise MapError(f"{len(items):,} items to map over; the limit is {MAX_MAP_ITEMS:,}")
    return items


MAX_RETRY_DELAY_S = 3600.0


def retry_delay_s(base_s: float, attempt: int, rng: random.Random) -> float:
    """Exponential backoff from ``base_s`` with up to 10% jitter, never over the cap."""
    if base_s <= 0:
        return 0.0
    try:
        delay = min(math.ldexp(base_s, attempt - 1), MAX_RETRY_DELAY_S)
    except OverflowError:  # base_s * 2**(attempt-1) past float range (attempt > ~1024)
        delay = MAX_RETRY_DELAY_S
    return min(delay * (1 + rng.random() * 0.1), MAX_RETRY_DELAY_S)


def inputs_problem(dispatch: TaskDispatch, max_bytes: int) -> str | None:
    """Why a task message cannot carry the upstream outputs it needs (None: it can)."""
    for name, raw in dispatch.inputs.items():
        if raw == TOO_MANY:
            return (f"the outputs of mapped task {name!r} are too many to pass as one value "
                    f"(over {max_bytes:,} bytes): take ctx instead of a parameter named "
                    f"{name!r} and iterate ctx.mapped_outputs({name!r})")
    size = sum(len(raw) for raw in dispatch.inputs.values())
    if size > max_bytes:
        return (f"the upstream outputs this task takes add up to {size:,} bytes, over the "
                f"{max_bytes:,} a task message may carry; have the upstream tasks store large "
                "results (a file, a table) and return a reference instead")
    return None


def instance_dispatch(state: RunState, spec: TaskSpec, rec: TaskRecord, index: int,
                      items: list[msgspec.Raw]) -> TaskDispatch:
    """The task message of one instance: the task's inputs plus its ``item`` and
    ``map_index`` — or, for a chunked task, its items as a chunk."""
    params = state.run.params
    if not spec.accepts_all_params:
        params = {p.name: params[p.name] for p in spec.params if p.name in params}
    inputs = {name: state.tasks[name].output for name in spec.inputs}
    chunk = None
    if spec.chunk > 1:
        chunk = items
    else:
        inputs["item"] = items[0]
        inputs["map_index"] = msgspec.Raw(str(index).encode())
    return TaskDispatch(
        run_id=state.run.run_id, flow=state.run.flow, version=state.flow.version,
        task=rec.task, function=spec.function, attempt=rec.dispatch, params=params,
        inputs=inputs, timeout_s=spec.timeout_s, queued_at=rec.queued_at or 0.0,
        scheduled_for=state.run.scheduled_for, chunk=chunk, first_index=index,
    )


def queue_instance(state: RunState, ms: MapState, rec: TaskRecord, index: int, now: float,
                   ch: Changes) -> None:
    spec = state.flow.tasks[ms.task]
    rec.attempt += 1
    rec.dispatch = rec.attempt
    rec.queued_at = now
    rec.retry_at = rec.started_at = rec.finished_at = None
    rec.status = TaskStatus.QUEUED
    ch.tasks[(state.run.run_id, rec.task)] = rec
    size = ms.sizes.get(index, 1)
    dispatch = instance_dispatch(state, spec, rec, index, ms.items[index:index + size])
    problem = inputs_problem(dispatch, ms.budget)
    if problem is None:
        ch.dispatches.append(Dispatch(rec.queue, dispatch))
        return
    rec.status, rec.finished_at = TaskStatus.FAILED, now  # every item of it: fill sees it
    rec.error_type, rec.error_message = "InputsTooLarge", problem


def fill(state: RunState, ms: MapState, now: float, ch: Changes) -> None:
    """Create and queue instances up to the mapped task's window."""
    spec = state.flow.tasks[ms.task]
    window = spec.max_active or DEFAULT_WINDOW
    while ms.redo and len(ms.active) < window:
        rec = ms.redo.pop()
        index = int(rec.task.rpartition(SEP)[2])
        rec.error_type = rec.error_message = rec.traceback = rec.note = None
        ms.active[index], ms.sizes[index] = rec, 1
        queue_instance(state, ms, rec, index, now, ch)
    while ms.next_index < ms.total and len(ms.active) < window:
        index = ms.next_index
        size = chunk_size(ms, index, spec.chunk)
        ms.next_index += size
        rec = TaskRecord(run_id=state.run.run_id, task=instance_name(ms.task, index),
                         queue=spec.queue, attempt=ms.attempts.get(index, 0))
        ms.active[index], ms.sizes[index] = rec, size
        queue_instance(state, ms, rec, index, now, ch)
        if rec.status is TaskStatus.FAILED:  # its message could not be made
            for offset in range(size):
                item = rec if offset == 0 else item_record(rec, ms.task, index + offset)
                ch.tasks[(state.run.run_id, item.task)] = item
                bisect.insort(ms.failed, index + offset)
            del ms.active[index], ms.sizes[index]


def chunk_size(ms: MapState, index: int, chunk: int) -> int:
    """Items of the chunk from ``index``: up to ``chunk``, and no more than half a task
    message's bytes (at least one)."""
    size, used = 1, len(ms.items[index])
    while size < chunk and index + size < ms.total:
        used += len(ms.items[index + size]) + 1
        if used > ms.budget // 2:
            break
        size += 1
    return size


_results = msgspec.json.Decoder(list[ItemResult])


def results_of(output: msgspec.Raw, size: int) -> list[ItemResult]:
    """A chunk's report: one result per item, in order."""
    try:
        results = decode(_results, bytes(output), "a chunk's report")
    except FlowForgeError:
        raise MapError("the chunk's report is not a list of item results") from None
    if len(results) != size:
        raise MapError(f"the chunk's report has {len(results)} results for {size} items")
    return results


def item_record(chunk: TaskRecord, task: str, index: int) -> TaskRecord:
    """An item of a chunk, as its own record: where and when the chunk ran it."""
    return TaskRecord(run_id=chunk.run_id, task=instance_name(task, index), queue=chunk.queue,
                      status=chunk.status, attempt=chunk.attempt, dispatch=chunk.dispatch,
                      agent_id=chunk.agent_id, queued_at=chunk.queued_at,
                      started_at=chunk.started_at, finished_at=chunk.finished_at,
                      error_type=chunk.error_type, error_message=chunk.error_message,
                      history=list(chunk.history))


def stale(rec: TaskRecord, msg: Report) -> bool:
    """A report from another (older) message or delivery, or a duplicate start."""
    if rec.status not in (TaskStatus.QUEUED, TaskStatus.RUNNING):
        return True
    if msg.attempt - msg.delivery + 1 != rec.dispatch or msg.attempt < rec.attempt:
        return True
    return (isinstance(msg, TaskStarted) and msg.attempt == rec.attempt
            and rec.status is TaskStatus.RUNNING and rec.agent_id == msg.agent_id)


def mark_running(rec: TaskRecord, spec: TaskSpec, agent_id: str, at: float, backstop_s: float,
                 run_id: str, ch: Changes, size: int = 1) -> None:
    """An instance's agent has it; with a timeout, the coordinator's deadline (a chunk's items
    each have the timeout, one after the other)."""
    rec.status = TaskStatus.RUNNING
    if spec.timeout_s is not None and rec.deadline_at is None:
        rec.deadline_at = at + size * spec.timeout_s + backstop_s
        ch.timers.append(Timer(rec.deadline_at, run_id, rec.task))
    rec.agent_id = agent_id
    rec.started_at = at
