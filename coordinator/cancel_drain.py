"""Runs a schedule cancelled (overlap ``cancel_other``) whose tasks agents may still be running.

Temporal starts the new run of a ``CancelOther`` schedule only after the old one has finished
cancelling. Here a cancel is final in the coordinator at once, but an agent may still be inside
the task's function until it hears of the cancel and says so (a thread pool task's report, a
process pool worker killed). So the schedule's new run waits until every task that was in
flight has been reported back by its agent, its agent is lost, or — for a task still queued,
that no agent said it had started — a short grace has passed.
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from protocol.messages import AttemptReport, TaskItems, TaskProgress, TaskStarted
from protocol.records import TaskRecord
from protocol.states import TaskStatus

QUEUED_GRACE_S = 5.0
"""How long a task that was only queued when its run was cancelled is waited for. An agent
that took it says it started within a fraction of a second; one that had not taken it will see
the run cancelled and not run it."""


@dataclass(slots=True)
class Held:
    """A task of a cancelled run that an agent may still be running."""

    agent_id: str | None
    """The agent that has it; None while it was only queued."""
    attempt: int
    """Reports of older attempts (a delivery another agent lost) end nothing."""
    until: float | None
    """When it is waited for no more whatever its agent does (a queued task's grace; after
    a restart, how long a report that may have come before it is waited for); None: as long
    as its agent may be running it."""


class CancelDrains:
    """The tasks in flight of runs cancelled by ``cancel_other``, per schedule."""

    def __init__(self, agent_alive: Callable[[str], bool],
                 queued_grace_s: float = QUEUED_GRACE_S) -> None:
        self._alive = agent_alive
        self._grace_s = queued_grace_s
        self._held: dict[tuple[str, str], tuple[str, Held]] = {}
        """(run id, task) -> (schedule, what holds it); a few tasks of a run or two."""

    def hold(self, schedule: str, run_id: str, records: Iterable[TaskRecord],
             now: float) -> bool:
        """The tasks of ``run_id`` queued or running on an agent, read just before it is
        cancelled (its tasks, mapped instances in flight, open children); True when the
        schedule now has any to wait for. A running task no agent has (a mapped task whose
        instances run) is not waited for itself."""
        for rec in records:
            running = rec.status is TaskStatus.RUNNING and rec.agent_id is not None
            if running or rec.status is TaskStatus.QUEUED:
                self.hold_task(schedule, run_id, rec.task, rec.attempt,
                               rec.agent_id if running else None,
                               None if running else now + self._grace_s)
        return self.draining(schedule)

    def hold_task(self, schedule: str, run_id: str, task: str, attempt: int,
                  agent_id: str | None, until: float | None) -> None:
        """One task to wait for: running on ``agent_id``, or queued (None); ``until``: see
        ``Held``."""
        self._held.setdefault((run_id, task), (schedule, Held(agent_id, attempt, until)))

    def draining(self, schedule: str) -> bool:
        """Whether tasks of runs the schedule cancelled may still be running."""
        return any(name == schedule for name, _ in self._held.values())

    def runs(self) -> set[str]:
        """The cancelled runs whose tasks are waited for."""
        return {run_id for run_id, _ in self._held}

    def __bool__(self) -> bool:
        """Whether any schedule waits."""
        return bool(self._held)

    def report(self, msg: AttemptReport) -> str | None:
        """A report on a task of a run no longer active; the schedule whose wait it ended."""
        found = self._held.get((msg.run_id, msg.task))
        if found is None:
            return None
        schedule, held = found
        if msg.attempt < held.attempt:
            return None  # from a delivery that was lost before
        if isinstance(msg, TaskStarted | TaskProgress | TaskItems):
            if held.agent_id is None or msg.attempt > held.attempt:  # an agent has it (after
                held.agent_id, held.attempt, held.until = msg.agent_id, msg.attempt, None  # all)
            return None
        return self._release((msg.run_id, msg.task), schedule)

    def sweep(self, now: float) -> list[str]:
        """Tasks whose agent is lost, or past their ``until``; the schedules whose wait is
        over."""
        ended = []
        for key, (schedule, held) in list(self._held.items()):
            gone = ((held.until is not None and now >= held.until)
                    or (held.agent_id is not None and not self._alive(held.agent_id)))
            if gone and self._release(key, schedule) is not None:
                ended.append(schedule)
        return ended

    def restored_until(self, until: float) -> None:
        """Tasks held back after a restart (``until`` infinite) wait until ``until`` at most."""
        for _, held in self._held.values():
            if held.until == math.inf:
                held.until = until

    def forget(self, schedule: str) -> None:
        """A deleted schedule waits for nothing."""
        for key, (name, _) in list(self._held.items()):
            if name == schedule:
                del self._held[key]

    def _release(self, key: tuple[str, str], schedule: str) -> str | None:
        """Wait for ``key`` no more; the schedule if that was the last of its tasks."""
        del self._held[key]
        return None if self.draining(schedule) else schedule
