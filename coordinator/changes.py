"""What one batch of events changed: the scheduler fills it, the store persists it, the writer
publishes it."""

from dataclasses import dataclass, field

from protocol.messages import TaskDispatch
from protocol.records import RunRecord, TaskRecord


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A task message to publish on a queue (after its ``queued`` state is committed)."""

    queue: str
    message: TaskDispatch


@dataclass(frozen=True, slots=True)
class Timer:
    """At ``at`` (epoch seconds) look at a task again: a retry delay ran out, or a running
    task's deadline passed."""

    at: float
    run_id: str
    task: str


@dataclass(slots=True)
class Changes:
    """What one batch of events changed: persisted in one transaction, then published."""

    tasks: dict[tuple[str, str], TaskRecord] = field(default_factory=dict)
    runs: dict[str, RunRecord] = field(default_factory=dict)
    new_runs: list[str] = field(default_factory=list)
    dispatches: list[Dispatch] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    withdrawn: list[TaskRecord] = field(default_factory=list)
    """Queued tasks whose messages should be taken back from the stream."""
    cancelled_runs: list[str] = field(default_factory=list)
    items: list[tuple[str, str, int, bytes]] = field(default_factory=list)
    """Items generator tasks yielded: (run, task, index, JSON)."""
    items_reset: list[tuple[str, str]] = field(default_factory=list)
    """Generator tasks running again: their stored items go."""
    instances_reset: list[tuple[str, str]] = field(default_factory=list)
    """Mapped tasks expanded again over new items: their stored instances go."""
    child_specs: list[tuple[str, str, int, str, bytes, int]] = field(default_factory=list)
    """Children spawned for the first time: (run, parent, seq, function, spawn JSON, ident)."""
    wakes: list[tuple[str, str, str]] = field(default_factory=list)
    """Parents whose wait for their children may be over: (agent, run, parent)."""
    stop_tasks: dict[str, list[str]] = field(default_factory=dict)
    """Per run, running tasks whose agents should stop them (children of a parent that ended)."""

    def __bool__(self) -> bool:
        return bool(self.tasks or self.runs or self.items or self.items_reset
                    or self.instances_reset or self.child_specs)
