"""Ledger: every task and run event of a stack, as one plain nats-py subscriber receives them."""

import collections
import contextlib
import time
from dataclasses import dataclass, field

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from protocol.records import RunRecord, TaskEvents, TaskRecord
from protocol.states import RUN_FINAL, TASK_FINAL, RunStatus, TaskStatus
from protocol.subjects import Subjects

_tasks_dec = msgspec.json.Decoder(TaskEvents)
_run_dec = msgspec.json.Decoder(RunRecord)


@dataclass(slots=True)
class Tally:
    """What the events of one run said, with the monotonic time each one arrived."""

    succeeded: collections.Counter[str] = field(default_factory=collections.Counter)
    """'succeeded' events per task: more than one is a task finalised twice."""
    started: collections.Counter[str] = field(default_factory=collections.Counter)
    """'running' events per task that named a new agent or attempt: more than one is a re-run."""
    running_on: dict[str, str | None] = field(default_factory=dict)
    """The agent each unfinished task was last reported running on."""
    history: dict[str, list[tuple[float, str, str | None, int]]] = field(
        default_factory=lambda: collections.defaultdict(list))
    """Per task: (arrival time, status, agent, attempt) of every event, for the report."""
    finished_at: float | None = None
    final_status: RunStatus | None = None
    victim: str | None = None
    killed_at: float | None = None
    recovered_at: float | None = None
    """When a task last running on ``victim`` was first reported running on another agent."""

    def on_task(self, rec: TaskRecord, at: float) -> None:
        self.history[rec.task].append((at, rec.status.value, rec.agent_id, rec.attempt))
        if rec.status is TaskStatus.SUCCEEDED:
            self.succeeded[rec.task] += 1
        if rec.status is TaskStatus.RUNNING:
            self._on_running(rec, at)
        elif rec.status in TASK_FINAL:
            self.running_on.pop(rec.task, None)

    def _on_running(self, rec: TaskRecord, at: float) -> None:
        before = self.running_on.get(rec.task, "")
        if before != rec.agent_id:
            self.started[rec.task] += 1
        moved_off_victim = (self.killed_at is not None and before == self.victim
                            and rec.agent_id != self.victim)
        if moved_off_victim and self.recovered_at is None:
            self.recovered_at = at
        self.running_on[rec.task] = rec.agent_id

    def on_run(self, run: RunRecord, at: float) -> None:
        if run.status in RUN_FINAL and self.finished_at is None:
            self.finished_at, self.final_status = at, run.status

    def mark_kill(self, victim: str | None, at: float) -> int:
        """Note a kill (of agent ``victim``, or of the coordinator when None); returns how many
        tasks were running on the victim by the events received so far."""
        self.victim, self.killed_at, self.recovered_at = victim, at, None
        return sum(1 for agent in self.running_on.values() if victim is not None and agent == victim)

    @property
    def distinct_succeeded(self) -> int:
        return len(self.succeeded)

    def finalised_twice(self) -> dict[str, int]:
        return {task: n for task, n in sorted(self.succeeded.items()) if n > 1}

    def reruns(self) -> int:
        """Starts beyond the first, over all tasks (a task redelivered after a kill counts once)."""
        return sum(n - 1 for n in self.started.values() if n > 1)


@dataclass(slots=True)
class Ledger:
    """``ledger = await Ledger.follow(url)``: subscribes before the run starts, reconnects forever.

    Events are core NATS, so a message published while this subscriber was disconnected is
    missed; NATS itself is never stopped here, so that does not happen in these scenarios.
    """

    nc: NATS
    runs: dict[str, Tally] = field(default_factory=lambda: collections.defaultdict(Tally))
    undecodable: int = 0

    @classmethod
    async def follow(cls, url: str, subjects: Subjects | None = None) -> "Ledger":
        subjects = subjects or Subjects()
        nc = await nats.connect(url, name="flowforge-bench-ledger", max_reconnect_attempts=-1,
                                reconnect_time_wait=0.2)
        ledger = cls(nc)
        await nc.subscribe(subjects.task_events("*"), cb=ledger._on_task)
        await nc.subscribe(subjects.run_event("*", "*"), cb=ledger._on_run)
        await nc.flush()  # the server has the subscriptions before anything is started
        return ledger

    def tally(self, run_id: str) -> Tally:
        return self.runs[run_id]

    async def _on_task(self, msg: Msg) -> None:
        at = time.monotonic()
        try:
            event = _tasks_dec.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.undecodable += 1
            return
        tally = self.runs[event.run_id]
        for rec in event.tasks:
            tally.on_task(rec, at)

    async def _on_run(self, msg: Msg) -> None:
        at = time.monotonic()
        try:
            run = _run_dec.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.undecodable += 1
            return
        self.runs[run.run_id].on_run(run, at)

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort: the server may already be gone
            await self.nc.close()
