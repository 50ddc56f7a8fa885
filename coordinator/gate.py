"""The gate between the scheduler and the publisher: each task message of a batch is sent, held
back by a concurrency limit (committed ``held``, so a restart knows it was never sent), or kept
in memory until its queue's release window has room; slots free as tasks end, and the best
waiting ones go in the same batch. A waiting task's rank is when it was queued less
``priority * aging_s``: priority first, and nothing starves. Pure (docs/limits.md)."""

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import count, islice
from typing import Any, Protocol

from coordinator.changes import Changes, Dispatch
from coordinator.release_window import GateSettings, Windows
from coordinator.runstate import RunState
from protocol.concurrency import queue_limit
from protocol.flows import TaskSpec
from protocol.records import TaskRecord
from protocol.states import TaskStatus

Key = tuple[str, str]  # (run id, task) of a task instance
NOTE_PREFIX = "waiting: limit "
EXAMINED_MAX = 1_000
"""Waiters looked at per limit per batch (the rest wait for the next batch)."""
NOTED_MAX = 20
"""Waiters of a limit whose note is kept up to date (who holds it now) in a batch."""

NOT_SENT, IN_WINDOW, SENT, STARTED = range(4)
"""A holder's message: not known yet (restored), waiting for the window, out, started."""


def holds_slot(rec: Any, spec: TaskSpec | None = None) -> bool:
    """Whether a task instance takes the slots of its limits: queued and let through, or
    running — but not while it only waits for others (a mapped task for its instances, which
    hold their own). The one place that decides it (``spec``: the task's, None for an
    instance)."""
    return (rec.status in _HOLDING and not getattr(rec, "held", False)
            and (spec is None or spec.map_over is None))


_HOLDING = frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING})


class Lookup(Protocol):
    """What the gate asks of the scheduler."""

    def run_state(self, run_id: str) -> RunState | None: ...

    def task_record(self, run_id: str, task: str) -> TaskRecord | None: ...


@dataclass(slots=True)
class Holder:
    queue: str
    dispatch: int
    keys: tuple[str, ...]
    state: int = NOT_SENT
    priority: int = 0


@dataclass(slots=True)
class Waiter:
    """A task held by a limit."""

    rec: TaskRecord
    queue: str
    keys: tuple[str, ...]
    rank: float
    priority: int
    item: Dispatch | None = None
    heaps: set[str] = field(default_factory=set)


class Gate:
    def __init__(self, lookup: Lookup, settings: GateSettings | None = None) -> None:
        self.lookup = lookup
        self.settings = settings or GateSettings()
        self.limits: dict[str, int] = {}
        """Slots of each limited key: queues' from the API, tasks' from their max_active."""
        self.holders: dict[Key, Holder] = {}
        self.members: dict[str, dict[Key, None]] = {}
        """The holders of each limited key, oldest first (only limited keys are counted: the
        hot path of an unlimited queue touches no counter)."""
        self.blocked: dict[Key, Waiter] = {}
        self.blocked_by: dict[str, list[tuple[float, int, Key]]] = {}
        self.windows = Windows(self.settings)
        self._seq = count()
        self._touched_keys: set[str] = set()
        self._restored: list[TaskRecord] = []
        self._orphans: list[Key] = []
        self._lent: dict[Key, Holder] = {}  # tasks waiting for their children: slots free
        self._queue_keys: dict[str, str] = {}

    # -- limits -------------------------------------------------------------------------

    def set_limit(self, name: str, slots: int | None) -> None:
        """A limit set, changed or (None) removed; waiters go at the next ``apply`` if room."""
        if slots is None:
            self.limits.pop(name, None)
            self.members.pop(name, None)
        else:
            self.limits[name] = slots
            if name not in self.members:
                self.members[name] = {k: None for k, h in self.holders.items() if name in h.keys}
        self._touched_keys.add(name)

    def room(self, key: str) -> bool:
        slots = self.limits.get(key)
        return slots is None or len(self.members[key]) < slots

    def holding(self, key: str) -> int:
        """How many hold ``key`` (counted for a key that is not limited)."""
        members = self.members.get(key)
        if members is not None:
            return len(members)
        return sum(1 for h in self.holders.values() if key in h.keys)

    # -- a batch ------------------------------------------------------------------------

    def remember(self, records: Iterable[Any]) -> None:
        """After a restart, before the scheduler restores the runs: their stored task
        instances (queued, running, held) are taken in at the next ``apply``."""
        self._restored += [r for r in records if isinstance(r, TaskRecord)
                           and r.status in _HOLDING]

    def apply(self, now: float, ch: Changes) -> None:
        """The writer's hook before a batch commits: decide each task message of ``ch`` and
        release what the batch's changes make room for; held tasks' records go in ``ch``."""
        if self._restored:
            self._take_restored(now)
        if self.holders or self.blocked:
            self._follow(ch)
            self.windows.measure(now)
        released: list[Dispatch] = []
        for item in ch.dispatches:
            self._admit(item, now, ch, released)
        if self._orphans:
            self._drop_orphans()
        if self._touched_keys:
            self._release_blocked(now, ch, released)
        if self.windows.touched:
            self.windows.fill(released, self._still_in_window, now)
        ch.dispatches = released

    def _follow(self, ch: Changes) -> None:
        """Slots of holders that ended (or went back to wait) free; a start leaves the window."""
        blocked, lent = self.blocked, self._lent
        for key, rec in ch.tasks.items():
            if lent and key in lent and (rec.dispatch != lent[key].dispatch
                                         or not holds_slot(rec)):
                del lent[key]  # it ended (or runs again) while it waited: nothing to take back
            holder = self.holders.get(key)
            if holder is not None:
                if rec.dispatch != holder.dispatch or not holds_slot(rec):
                    self._free(key, holder)
                elif rec.status is TaskStatus.RUNNING and holder.state != STARTED:
                    self._leave_window(holder)
                    holder.state = STARTED
            if blocked and key in blocked:
                waiter = blocked[key]
                if rec.status is not TaskStatus.QUEUED or rec.dispatch != waiter.rec.dispatch:
                    self._drop(key, waiter)
                    if rec.status is TaskStatus.RUNNING:  # ran all the same (a forged report?)
                        self.take(rec, waiter.queue, waiter.keys)

    def lend(self, run_id: str, task: str) -> None:
        """A task waits for its children: its slots free until ``reclaim`` (or it deadlocks)."""
        key = (run_id, task)
        holder = self.holders.get(key)
        if holder is not None:
            self._free(key, holder)
            self._lent[key] = holder

    def reclaim(self, run_id: str, task: str) -> None:
        """Its wait is over: it holds its slots again (no check: it runs, maybe over a limit)."""
        key = (run_id, task)
        holder = self._lent.pop(key, None)
        if holder is not None and key not in self.holders:
            holder.state = STARTED
            self._hold(key, holder)

    def take(self, rec: TaskRecord, queue: str, keys: tuple[str, ...]) -> None:
        """A running task that did not hold its slots holds them again (no check: it runs)."""
        rec.held = False
        key = (rec.run_id, rec.task)
        if key not in self.holders:
            self._hold(key, Holder(queue, rec.dispatch, keys, STARTED))

    def _admit(self, item: Dispatch, now: float, ch: Changes, released: list[Dispatch]) -> None:
        msg = item.message
        key = (msg.run_id, msg.task)
        holder = self.holders.get(key)
        if holder is not None and holder.dispatch == msg.attempt:  # sent again (a restart)
            if holder.state == NOT_SENT:
                self._to_window(key, holder, item, holder.priority, now, released)
            elif holder.state != IN_WINDOW:
                released.append(item)
            return
        waiter = self.blocked.get(key)
        if waiter is not None and waiter.rec.dispatch == msg.attempt:
            waiter.item = item  # its message, made again by a restart
            return
        rec = ch.tasks.get(key) or self.lookup.task_record(*key)
        if rec is None or rec.status is not TaskStatus.QUEUED or rec.dispatch != msg.attempt:
            return  # no longer queued (cancelled in the same batch): nothing to send
        keys, priority = self._keys(msg.run_id, msg.task, item.queue)
        limits, members = self.limits, self.members
        full = [k for k in keys if k in limits and len(members[k]) >= limits[k]] if limits else ()
        if full:
            self._block(key, Waiter(rec, item.queue, keys, self._rank(rec, priority, now),
                                    priority, item), full, ch)
            return
        holder = Holder(item.queue, msg.attempt, keys, priority=priority)
        self._hold(key, holder)
        self._to_window(key, holder, item, priority, now, released, rec)

    def _keys(self, run_id: str, task: str, queue: str) -> tuple[tuple[str, ...], int]:
        """The keys a task instance holds (its queue's always; its task's when the task has a
        max_active and is not mapped) and its priority (its run's and its own)."""
        qkey = self._queue_keys.get(queue) or self._queue_keys.setdefault(queue, queue_limit(queue))
        state = self.lookup.run_state(run_id)
        if state is None:
            return (qkey,), 0
        spec = state.flow.tasks.get(task)
        if spec is None:  # an instance of a mapped task: its max_active is the mapper's
            spec = state.flow.tasks.get(task.rpartition("~")[0])
            return (qkey,), state.run.priority + (spec.priority if spec else 0)
        if spec.max_active is None:
            return (qkey,), state.run.priority + spec.priority
        name = f"task:{state.run.flow}.{task}"
        if self.limits.get(name) != spec.max_active:
            self.set_limit(name, spec.max_active)
        return (qkey, name), state.run.priority + spec.priority

    def _rank(self, rec: TaskRecord, priority: int, now: float) -> float:
        return (rec.queued_at or now) - priority * self.settings.aging_s

    # -- holders ------------------------------------------------------------------------

    def _hold(self, key: Key, holder: Holder) -> None:
        self.holders[key] = holder
        if self.members:
            for k in holder.keys:
                members = self.members.get(k)
                if members is not None:
                    members[key] = None

    def _free(self, key: Key, holder: Holder) -> None:
        del self.holders[key]
        self._leave_window(holder)
        if self.members:
            for k in holder.keys:
                members = self.members.get(k)
                if members is not None:
                    members.pop(key, None)
                    if k in self.blocked_by:
                        self._touched_keys.add(k)

    def _leave_window(self, holder: Holder) -> None:
        if holder.state in (IN_WINDOW, SENT):
            self.windows.left(holder.queue, holder.state == IN_WINDOW)

    def _to_window(self, key: Key, holder: Holder, item: Dispatch, priority: int, now: float,
                   released: list[Dispatch], rec: TaskRecord | None = None) -> None:
        """Send now while the queue's window has room and nothing waits there; else wait."""
        if self.windows.room(holder.queue):
            holder.state = SENT
            self.windows.sent(holder.queue, now)
            released.append(item)
            return
        holder.state = IN_WINDOW
        rec = rec or self.lookup.task_record(*key)
        self.windows.wait(holder.queue, self._rank(rec, priority, now) if rec else now, key, item)

    def _still_in_window(self, key: Key, item: Dispatch) -> bool:
        """Whether a task the window let go still waited (and is now out)."""
        holder = self.holders.get(key)
        if holder is None or holder.state != IN_WINDOW or holder.dispatch != item.message.attempt:
            return False
        holder.state = SENT
        return True

    # -- held by a limit ----------------------------------------------------------------

    def _block(self, key: Key, waiter: Waiter, full: list[str], ch: Changes) -> None:
        rec = waiter.rec
        rec.held = True
        rec.note = self.note(full[0])
        ch.tasks[key] = rec
        self.blocked[key] = waiter
        for k in full:
            self._push(key, waiter, k)

    def _push(self, key: Key, waiter: Waiter, limit: str) -> None:
        waiter.heaps.add(limit)
        heapq.heappush(self.blocked_by.setdefault(limit, []), (waiter.rank, next(self._seq), key))

    def _drop(self, key: Key, waiter: Waiter) -> None:
        """No longer held (its heap entries go stale)."""
        del self.blocked[key]
        waiter.rec.held = False
        if waiter.rec.note and waiter.rec.note.startswith(NOTE_PREFIX):
            waiter.rec.note = None

    def note(self, limit: str) -> str:
        """``waiting: limit queue:gpu 2/2 (held by run R task T, ...)``."""
        members = list(islice(self.members.get(limit, {}), 3))
        held = ", ".join(f"run {r} task {t}" for r, t in members)
        more = self.holding(limit) - len(members)
        held += f" and {more} more" if more > 0 else ""
        return (f"{NOTE_PREFIX}{limit} {self.holding(limit)}/{self.limits.get(limit, 0)}"
                + (f" (held by {held})" if held else ""))

    def _release_blocked(self, now: float, ch: Changes, released: list[Dispatch]) -> None:
        touched, self._touched_keys = sorted(self._touched_keys), set()
        for limit in touched:
            heap = self.blocked_by.get(limit, [])
            aside: list[tuple[float, int, Key]] = []
            while heap and self.room(limit) and len(aside) < EXAMINED_MAX:
                entry = heapq.heappop(heap)
                waiter = self.blocked.get(entry[2])
                if waiter is None or limit not in waiter.heaps:
                    continue  # released or gone since
                if not self._release(entry[2], waiter, now, ch, released):
                    aside.append(entry)  # another of its limits is full
            for entry in aside:
                heapq.heappush(heap, entry)
            if heap:
                self._renote(limit, ch)
            else:
                self.blocked_by.pop(limit, None)

    def _release(self, key: Key, waiter: Waiter, now: float, ch: Changes,
                 released: list[Dispatch]) -> bool:
        """Let a held task through if all its limits have room (else it waits on the full
        ones too)."""
        full = [k for k in waiter.keys if not self.room(k)]
        for k in full:
            if k not in waiter.heaps:
                self._push(key, waiter, k)
        if full or waiter.item is None:
            return False
        self._drop(key, waiter)
        ch.tasks[key] = waiter.rec
        holder = Holder(waiter.queue, waiter.rec.dispatch, waiter.keys, priority=waiter.priority)
        self._hold(key, holder)
        self._to_window(key, holder, waiter.item, waiter.priority, now, released, waiter.rec)
        return True

    def _renote(self, limit: str, ch: Changes) -> None:
        """The first waiters of a limit say who holds it now (those it holds back)."""
        for _, _, key in heapq.nsmallest(NOTED_MAX, self.blocked_by.get(limit, [])):
            waiter = self.blocked.get(key)
            if waiter is None:
                continue
            full = [k for k in waiter.keys if not self.room(k)]
            if full and full[0] == limit and waiter.rec.note != (text := self.note(limit)):
                waiter.rec.note = text
                ch.tasks[key] = waiter.rec

    # -- a restart ----------------------------------------------------------------------

    def _take_restored(self, now: float) -> None:
        """The stored queued and running tasks, once the scheduler has their runs again:
        holders first (so the counts are right), then the held ones, waiting again."""
        restored, self._restored = self._restored, []
        held = []
        for rec in restored:
            keys, priority = self._keys(rec.run_id, rec.task, rec.queue)
            state = self.lookup.run_state(rec.run_id)
            if state is None:
                continue  # ended as it was restored
            spec = state.flow.tasks.get(rec.task)
            if spec is not None and spec.map_over is not None:
                continue  # a mapped task: its instances hold
            if rec.status is TaskStatus.RUNNING or holds_slot(rec, spec):
                rec.held = False  # a running task holds, whatever it said before
                sent = STARTED if rec.status is TaskStatus.RUNNING else NOT_SENT
                self._hold((rec.run_id, rec.task), Holder(rec.queue, rec.dispatch, keys, sent,
                                                          priority))
            else:
                held.append((rec, keys, priority))
        for rec, keys, priority in held:
            key = (rec.run_id, rec.task)
            waiter = Waiter(rec, rec.queue, keys, self._rank(rec, priority, now), priority)
            self.blocked[key] = waiter
            self._orphans.append(key)
            for k in keys:
                if k in self.limits:
                    self._push(key, waiter, k)
                    self._touched_keys.add(k)

    def _drop_orphans(self) -> None:
        """Restored held tasks whose message was not made again (their mapped task ended
        while restored) wait for nothing."""
        orphans, self._orphans = self._orphans, []
        for key in orphans:
            waiter = self.blocked.get(key)
            if waiter is not None and waiter.item is None:
                self._drop(key, waiter)
