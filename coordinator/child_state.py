"""What the coordinator keeps in memory about the child tasks of one active run."""

import bisect
import hashlib
from dataclasses import dataclass, field

import msgspec

from protocol.children import ChildSpawn, SeqRange, split_child
from protocol.records import TaskRecord
from protocol.states import TaskStatus

_canonical = msgspec.json.Encoder(order="sorted")
OPEN = frozenset({TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.RUNNING,
                  TaskStatus.RETRY_WAIT})
"""The states of a child that has not ended."""


def ident_of(spawn: ChildSpawn) -> int:
    """What makes a spawn the same child on the parent's next attempt: its function and its
    parameters (a signed 64-bit number, as SQLite keeps integers)."""
    digest = hashlib.blake2b(spawn.function.encode() + b"\0" + _canonical.encode(spawn.params),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(slots=True)
class Child:
    """An open child (queued, running or waiting for a retry): all it needs to run again."""

    spec: ChildSpawn
    rec: TaskRecord
    ident: int
    base: int = 0
    """Its attempts before this spawn of it (a failed child spawned again gets its retries
    anew)."""


@dataclass(slots=True, frozen=True)
class Ended:
    """A child that ended: enough to find it again when its parent spawns it once more."""

    ident: int
    status: TaskStatus
    attempt: int


@dataclass(slots=True)
class Waiter:
    """A parent waiting for some of its children: the agent to wake, and how many are open."""

    agent_id: str
    starts: list[int]
    ends: list[int]
    fail_fast: bool
    open: int

    @classmethod
    def of(cls, agent_id: str, ranges: list[SeqRange], fail_fast: bool) -> "Waiter":
        merged = merge_ranges(ranges)
        return cls(agent_id, [a for a, _ in merged], [b for _, b in merged], fail_fast, 0)

    def covers(self, seq: int) -> bool:
        i = bisect.bisect_right(self.starts, seq) - 1
        return i >= 0 and seq <= self.ends[i]

    def asks_like(self, other: "Waiter") -> bool:
        """The same wait asked again (the agent's poll): its new count replaces the old."""
        return (self.agent_id, self.starts, self.ends, self.fail_fast) == (
            other.agent_id, other.starts, other.ends, other.fail_fast)


def merge_ranges(ranges: list[SeqRange]) -> list[tuple[int, int]]:
    """Sorted, with overlapping and touching ranges joined (an empty range is dropped)."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(r for r in ranges if r[0] <= r[1]):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


@dataclass(slots=True)
class RunChildren:
    """The children of one run: open ones whole, ended ones slim, and who waits for which."""

    open: dict[str, Child] = field(default_factory=dict)
    ended: dict[str, Ended] = field(default_factory=dict)
    open_of: dict[str, set[str]] = field(default_factory=dict)
    """Per parent, the names of its open children."""
    failed_of: dict[str, set[int]] = field(default_factory=dict)
    """Per parent, the spawn numbers of its children that failed or were cancelled."""
    waiters: dict[str, list[Waiter]] = field(default_factory=dict)
    """Per parent, its waits under way: several at once when an async task gathers two maps."""

    @property
    def total(self) -> int:
        return len(self.open) + len(self.ended)

    def add_open(self, name: str, child: Child) -> None:
        parent, seq = _split(name)
        self.open[name] = child
        self.open_of.setdefault(parent, set()).add(name)
        failed = self.failed_of.get(parent)
        if failed is not None:
            failed.discard(seq)

    def close(self, name: str, status: TaskStatus) -> Child:
        """An open child ended: it moves to the ended ones."""
        child = self.open.pop(name)
        parent, seq = _split(name)
        siblings = self.open_of[parent]
        siblings.discard(name)
        if not siblings:
            del self.open_of[parent]
        self.ended[name] = Ended(child.ident, status, child.rec.attempt)
        if status is not TaskStatus.SUCCEEDED:
            self.failed_of.setdefault(parent, set()).add(seq)
        return child

    def drop_under(self, task: str) -> None:
        """Forget the ended children of a mapped task's instances (``T~3/0`` and below, for
        task ``T``): it maps again over new items (its open ones are cancelled first)."""
        mine = f"{task}~"
        for name in [n for n in self.ended if n.startswith(mine)]:
            del self.ended[name]
        for parent in [p for p in (*self.failed_of, *self.waiters) if p.startswith(mine)]:
            self.failed_of.pop(parent, None)
            self.waiters.pop(parent, None)

    def add_ended(self, name: str, ended: Ended) -> None:
        parent, seq = _split(name)
        self.ended[name] = ended
        if ended.status is not TaskStatus.SUCCEEDED:
            self.failed_of.setdefault(parent, set()).add(seq)

    def count_in(self, parent: str, waiter: Waiter) -> tuple[int, int]:
        """How many of the parent's children in the waiter's ranges are open, and failed."""
        open_ = sum(1 for name in self.open_of.get(parent, ()) if waiter.covers(_split(name)[1]))
        failed = sum(1 for seq in self.failed_of.get(parent, ()) if waiter.covers(seq))
        return open_, failed


def _split(name: str) -> tuple[str, int]:
    found = split_child(name)
    assert found is not None, name
    return found
