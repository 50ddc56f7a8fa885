"""Children: the child tasks that running tasks spawn, per active run. Pure, like the scheduler:
each method records its effects in ``Changes``.

A child runs like any task (queued, dispatched on its queue, retried, timed out) but is not
in the flow: it is kept apart from the run's own tasks and counts. A parent that ends — for
good, whatever its outcome — takes its open children with it (``sweep``): they are
cancelled, and theirs too. A parent that will run again leaves them be: its next attempt
spawns the same children and finds them.
"""

from collections.abc import Callable, Iterable

import msgspec

from coordinator.changes import Changes, Dispatch, Timer
from coordinator.child_state import OPEN, Child, Ended, RunChildren, Waiter, ident_of
from coordinator.mapping import stale
from coordinator.runstate import RunState
from protocol.children import (
    AwaitChildren,
    ChildrenState,
    SpawnChildren,
    Spawned,
    child_name,
    depth_of,
    split_child,
)
from protocol.errors import BadRequest, InvalidState, LimitReached
from protocol.limits import MAX_ID_CHARS
from protocol.messages import Report, TaskDispatch, TaskFailed, TaskProgress, TaskStarted, TaskSucceeded
from protocol.records import TaskRecord
from protocol.states import TaskStatus

RetryDelay = Callable[[float, int], float]
_enc = msgspec.json.Encoder()


class Children:
    def __init__(self, retry_delay_s: RetryDelay, backstop_s: float, max_depth: int,
                 max_children: int) -> None:
        self._retry_delay_s = retry_delay_s
        self.backstop_s = backstop_s
        self.max_depth = max_depth
        self.max_children = max_children
        self._runs: dict[str, RunChildren] = {}
        self.lend: Callable[[str, str], None] = lambda run_id, task: None
        """A parent starts waiting for its children: the slots of its limits free meanwhile
        (its children may need them), as its agent lends its own slot."""
        self.reclaim: Callable[[str, str], None] = lambda run_id, task: None
        """Its wait is over: it holds them again."""

    def of(self, run_id: str) -> RunChildren | None:
        return self._runs.get(run_id)

    def record(self, run_id: str, name: str) -> TaskRecord | None:
        """An open child's state (None for an ended child or any other name)."""
        rc = self._runs.get(run_id)
        child = rc.open.get(name) if rc else None
        return child.rec if child else None

    # -- spawning ------------------------------------------------------------------------

    def spawn(self, state: RunState, parent: TaskRecord | None, req: SpawnChildren, now: float,
              ch: Changes) -> Spawned:
        """Queue the children a running task asks for; those its earlier attempts spawned are
        found (the open and the succeeded as they are; the failed run again)."""
        self._check_parent(state, parent, req.parent)
        rc = self._runs.setdefault(state.run.run_id, RunChildren())
        plan: list[tuple[str, int, Child | Ended | None]] = []
        new: set[str] = set()
        for spawn in req.children:
            name = child_name(req.parent, spawn.seq)
            if len(name) > MAX_ID_CHARS:
                raise BadRequest(f"child name {name!r} is longer than {MAX_ID_CHARS} characters; "
                                 "nest children less deeply")
            ident = ident_of(spawn)
            known = rc.open.get(name) or rc.ended.get(name)
            if known is not None and known.ident != ident:
                raise InvalidState(
                    f"child {name!r} was spawned before with another function or other "
                    f"parameters (now {spawn.function}): a task must spawn its children in the "
                    "same order with the same arguments on every attempt")
            if known is None:
                new.add(name)
            plan.append((name, ident, known))
        if rc.total + len(new) > self.max_children:
            raise LimitReached(
                f"run {state.run.run_id} would have {rc.total + len(new):,} child tasks, over the "
                f"limit of {self.max_children:,} (the coordinator's --max-children)")
        started = found = 0
        for spawn, (name, ident, known) in zip(req.children, plan, strict=True):
            known = rc.open.get(name) or rc.ended.get(name)  # an earlier one of this request
            if isinstance(known, Child) or (known is not None
                                            and known.status is TaskStatus.SUCCEEDED):
                found += 1
                continue
            attempt = known.attempt if known is not None else 0
            if known is None:
                ch.child_specs.append((state.run.run_id, req.parent, spawn.seq, spawn.function,
                                       _enc.encode(spawn), ident))
            else:
                del rc.ended[name]
            child = Child(spawn, TaskRecord(run_id=state.run.run_id, task=name,
                                            queue=spawn.queue, attempt=attempt), ident, attempt)
            rc.add_open(name, child)
            self._queue(state, child, now, ch)
            started += 1
        return Spawned(started=started, found=found, total=rc.total)

    def _check_parent(self, state: RunState, parent: TaskRecord | None, name: str) -> None:
        if parent is None or parent.status not in OPEN:
            what = "no such task" if parent is None else f"it is {parent.status.value}"
            raise InvalidState(f"task {name!r} of run {state.run.run_id} is not running "
                               f"({what}); it cannot spawn children")
        depth = depth_of(name) + 1
        if depth > self.max_depth:
            raise LimitReached(
                f"a child of {name!r} would be nested {depth} deep, over the limit of "
                f"{self.max_depth} (the coordinator's --max-child-depth)")

    def _queue(self, state: RunState, child: Child, now: float, ch: Changes) -> None:
        rec = child.rec
        rec.attempt += 1
        rec.dispatch = rec.attempt
        rec.queued_at = now
        rec.retry_at = rec.started_at = rec.finished_at = rec.deadline_at = None
        rec.status = TaskStatus.QUEUED
        ch.tasks[(state.run.run_id, rec.task)] = rec
        ch.dispatches.append(self._dispatch(state, child))

    @staticmethod
    def _dispatch(state: RunState, child: Child) -> Dispatch:
        """The task message of a child's current attempt."""
        rec, spec = child.rec, child.spec
        return Dispatch(spec.queue, TaskDispatch(
            run_id=state.run.run_id, flow=state.run.flow, version=state.flow.version,
            task=rec.task, function=spec.function, attempt=rec.dispatch, params=spec.params,
            timeout_s=spec.timeout_s, queued_at=rec.queued_at or 0.0,
            scheduled_for=state.run.scheduled_for))

    # -- waiting -------------------------------------------------------------------------

    def waiting(self, run_id: str, req: AwaitChildren, ch: Changes) -> ChildrenState:
        """How many of the children asked about are open (and failed); while some are open,
        the parent's agent is woken when its wait may be over."""
        rc = self._runs.get(run_id)
        if rc is None:  # the run ended: every child it had ended with it
            return ChildrenState(open=0, failed=0)
        waiter = Waiter.of(req.agent_id, list(req.ranges), req.fail_fast)
        open_, failed = rc.count_in(req.parent, waiter)
        # a parent runs on one agent at a time: the waits of another are of an earlier attempt
        waiters = [w for w in rc.waiters.get(req.parent, ())
                   if w.agent_id == req.agent_id and not w.asks_like(waiter)]
        if open_ and not (failed and req.fail_fast):
            waiter.open = open_
            waiters.append(waiter)
        if waiters:
            if req.parent not in rc.waiters:
                self.lend(run_id, req.parent)
            rc.waiters[req.parent] = waiters
        elif rc.waiters.pop(req.parent, None) is not None:
            self.reclaim(run_id, req.parent)
        return ChildrenState(open=open_, failed=failed)

    def _ended(self, run_id: str, rc: RunChildren, name: str, status: TaskStatus,
               ch: Changes) -> None:
        rc.close(name, status)
        parent, seq = split_child(name) or ("", 0)
        waiters = rc.waiters.get(parent)
        if not waiters:
            return
        kept, woken = [], set()
        for waiter in waiters:
            if waiter.covers(seq):
                waiter.open -= 1
                if waiter.open <= 0 or (waiter.fail_fast and status is not TaskStatus.SUCCEEDED):
                    woken.add(waiter.agent_id)  # one wake wakes each of the parent's waits
                    continue
            kept.append(waiter)
        ch.wakes += [(agent_id, run_id, parent) for agent_id in sorted(woken)]
        if kept:
            rc.waiters[parent] = kept
        else:
            del rc.waiters[parent]
            self.reclaim(run_id, parent)

    # -- reports and timers --------------------------------------------------------------

    def on_report(self, state: RunState, msg: Report, now: float, ch: Changes) -> bool:
        """A child's report; False when stale, duplicate or for no open child."""
        rc = self._runs.get(state.run.run_id)
        child = rc.open.get(msg.task) if rc else None
        if rc is None or child is None or stale(child.rec, msg):
            return False
        rec = child.rec
        ch.tasks[(msg.run_id, msg.task)] = rec
        RunState.close_lost_attempts(rec, msg.attempt, msg.at)
        if rec.note and rec.note.startswith("waiting:"):
            rec.note = None  # an agent has it
        match msg:
            case TaskStarted() | TaskProgress():
                self._running(state, child, msg.agent_id, rec.started_at or msg.at, ch)
                if isinstance(msg, TaskProgress) and msg.fraction is not None:
                    rec.progress = msg.fraction
            case TaskSucceeded():
                rec.agent_id, rec.finished_at, rec.output = msg.agent_id, msg.at, msg.output
                rec.started_at = msg.started_at or rec.started_at
                rec.error_type = rec.error_message = rec.traceback = None
                RunState.close_attempt(rec, "succeeded", msg.at)
                rec.status = TaskStatus.SUCCEEDED
                self._ended(state.run.run_id, rc, rec.task, rec.status, ch)
            case TaskFailed():
                self._failed(state, rc, child, msg, now, ch)
            case _:
                return False  # a generator's items: children do not yield
        return True

    def _running(self, state: RunState, child: Child, agent_id: str, at: float,
                 ch: Changes) -> None:
        rec = child.rec
        rec.status, rec.agent_id, rec.started_at = TaskStatus.RUNNING, agent_id, at
        timeout_s = child.spec.timeout_s
        if timeout_s is not None and rec.deadline_at is None:
            rec.deadline_at = at + timeout_s + self.backstop_s
            ch.timers.append(Timer(rec.deadline_at, state.run.run_id, rec.task))

    def _failed(self, state: RunState, rc: RunChildren, child: Child, msg: TaskFailed,
                now: float, ch: Changes) -> None:
        rec = child.rec
        RunState.close_failed(rec, msg)
        if rec.attempt - child.base <= child.spec.retries:
            rec.retry_at = now + self._retry_delay_s(child.spec.retry_delay_s, rec.attempt)
            rec.status = TaskStatus.RETRY_WAIT
            ch.timers.append(Timer(rec.retry_at, state.run.run_id, rec.task))
            return
        rec.status = TaskStatus.FAILED
        self._ended(state.run.run_id, rc, rec.task, rec.status, ch)

    def on_timer(self, state: RunState, name: str, now: float, ch: Changes) -> bool:
        """A child's retry is due, or its deadline passed."""
        rc = self._runs.get(state.run.run_id)
        child = rc.open.get(name) if rc else None
        if rc is None or child is None:
            return False
        rec = child.rec
        if rec.status is TaskStatus.RETRY_WAIT:
            self._queue(state, child, now, ch)
            return True
        if rec.status is TaskStatus.RUNNING and rec.deadline_at and now >= rec.deadline_at - 0.001:
            ch.tasks[(state.run.run_id, name)] = rec
            self._failed(state, rc, child, RunState.lost_past_deadline(
                state.run.run_id, rec, now, self.backstop_s), now, ch)
            return True
        return False

    def flag_waiting(self, why: Callable[[str, str], str | None], ch: Changes) -> int:
        """Note on each queued child why no agent can take it (or clear the note)."""
        changed = 0
        for run_id, rc in self._runs.items():
            for child in rc.open.values():
                rec = child.rec
                if rec.status is not TaskStatus.QUEUED:
                    continue
                reason = why(rec.queue, child.spec.function)
                old = rec.note if rec.note and rec.note.startswith("waiting:") else None
                if reason != old:
                    rec.note = reason
                    ch.tasks[(run_id, rec.task)] = rec
                    changed += 1
        return changed

    # -- parents that end, runs that end -------------------------------------------------

    def sweep(self, now: float, ch: Changes, active: Callable[[str], bool]) -> None:
        """After a batch's events: the open children of tasks that ended in it are cancelled
        (and theirs); so are those of runs no longer active, which are then forgotten."""
        if not self._runs:
            return
        for run_id, task in ch.instances_reset:  # mapped again: its instances' children go
            rc = self._runs.get(run_id)
            if rc is None:
                continue
            for name in [n for n in rc.open if n.startswith(f"{task}~")]:
                if name in rc.open:  # not cancelled with its parent meanwhile
                    self._cancel(run_id, rc, name, f"{task!r} maps over new items", now, ch)
            rc.drop_under(task)
        for (run_id, name), rec in list(ch.tasks.items()):
            rc = self._runs.get(run_id)
            if rc is not None and name in rc.open_of and rec.status not in OPEN:
                self._cancel_below(run_id, rc, name, f"its parent {name!r} {rec.status.value}",
                                   now, ch)
        for run_id in [r for r in self._runs if not active(r)]:
            rc = self._runs.pop(run_id)
            for name in list(rc.open):
                if name not in rc.open:  # cancelled with its parent meanwhile
                    continue
                self._cancel(run_id, rc, name, "its run ended", now, ch)

    def _cancel_below(self, run_id: str, rc: RunChildren, parent: str, why: str, now: float,
                      ch: Changes) -> None:
        for name in sorted(rc.open_of.get(parent, ())):
            if name in rc.open:
                self._cancel(run_id, rc, name, why, now, ch)

    def _cancel(self, run_id: str, rc: RunChildren, name: str, why: str, now: float,
                ch: Changes) -> None:
        rec = rc.open[name].rec
        if rec.status is TaskStatus.QUEUED and rec.started_at is None:
            ch.withdrawn.append(rec)  # and an agent that holds it already does not start it:
        if rec.status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
            ch.stop_tasks.setdefault(run_id, []).append(name)
        if rec.status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
            RunState.close_attempt(rec, "cancelled", now)
        rec.status, rec.finished_at, rec.note = TaskStatus.CANCELLED, now, f"cancelled: {why}"
        rec.retry_at = rec.deadline_at = None
        ch.tasks[(run_id, name)] = rec
        self._ended(run_id, rc, name, rec.status, ch)
        self._cancel_below(run_id, rc, name, f"its parent {name!r} was cancelled", now, ch)

    # -- after a restart, or a retry of a finished run -----------------------------------

    def restore(self, state: RunState, open_children: Iterable[Child],
                ended: Iterable[tuple[str, Ended]], now: float, ch: Changes) -> None:
        """The run's stored children: the open ones go on (queued ones published again)."""
        rc = self._runs.setdefault(state.run.run_id, RunChildren())
        for name, done in ended:
            rc.add_ended(name, done)
        for child in open_children:
            rec = child.rec
            rc.add_open(rec.task, child)
            if rec.status is TaskStatus.QUEUED:
                ch.dispatches.append(self._dispatch(state, child))
            elif rec.status is TaskStatus.RETRY_WAIT:
                ch.timers.append(Timer(rec.retry_at or now, state.run.run_id, rec.task))
            elif rec.status is TaskStatus.RUNNING and rec.deadline_at:
                ch.timers.append(Timer(rec.deadline_at, state.run.run_id, rec.task))
            elif rec.status is TaskStatus.PENDING:
                self._queue(state, child, now, ch)
