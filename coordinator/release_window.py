"""Each queue's release window: how many task messages may be out and not started at once, and
the tasks waiting for room, best first. The room is at least ``release_window`` and grows to
about ``release_window_s`` of work at the pace the queue's agents take tasks, so a busy queue is
never starved for messages (the pipeline stays full) while a task of higher priority still
waits behind at most that much. Pure; the gate moves its holders through it."""

import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count

from coordinator.changes import Dispatch

Key = tuple[str, str]
PACE_EVERY_S = 0.25
"""How often a queue's pace is measured again (while tasks leave its window)."""


@dataclass(frozen=True, slots=True)
class GateSettings:
    release_window: int = 256
    """Task messages of one queue out at once and not started, at the least; more wait, best
    first."""
    release_window_s: float = 0.5
    """... or as many as the queue's agents take in this long at their pace, if more."""
    aging_s: float = 30.0
    """A waiting task or run gains one priority per this many seconds waited."""

    def __post_init__(self) -> None:
        if self.release_window < 1 or self.aging_s <= 0 or self.release_window_s < 0:
            raise ValueError("release_window must be 1 or more, aging_s more than 0 and "
                             "release_window_s 0 or more")


class Windows:
    def __init__(self, settings: GateSettings) -> None:
        self.settings = settings
        self.outstanding: Counter[str] = Counter()
        """Messages out and not started, per queue."""
        self.unsent: Counter[str] = Counter()
        """Tasks waiting for room, per queue."""
        self.heaps: dict[str, list[tuple[float, int, Key, Dispatch]]] = {}
        self.touched: set[str] = set()
        """Queues where room may have opened (or tasks started to wait)."""
        self.size: dict[str, int] = {}
        self._left: Counter[str] = Counter()
        self._since: dict[str, float] = {}
        self._pace: dict[str, float] = {}
        self._seq = count()

    def room(self, queue: str) -> bool:
        """A new task may go at once: nothing waits and the window is not full."""
        return not self.unsent.get(queue) and \
            self.outstanding.get(queue, 0) < self.size.get(queue, self.settings.release_window)

    def sent(self, queue: str, now: float) -> None:
        if not self.outstanding.get(queue):  # busy again: its pace is measured from now (the last
            self._since[queue] = now     # one is kept while it was idle)
            self._left.pop(queue, None)
        self.outstanding[queue] += 1

    def wait(self, queue: str, rank: float, key: Key, item: Dispatch) -> None:
        self.unsent[queue] += 1
        heapq.heappush(self.heaps.setdefault(queue, []), (rank, next(self._seq), key, item))
        self.touched.add(queue)

    def left(self, queue: str, waiting: bool) -> None:
        """A task left the window: it waited (``waiting``), or was out and started or ended."""
        if waiting:
            self.unsent[queue] -= 1
        else:
            self.outstanding[queue] -= 1
            self._left[queue] += 1
        if self.unsent.get(queue):
            self.touched.add(queue)

    def measure(self, now: float) -> None:
        """Each queue's pace (tasks taken per second, smoothed) and the window it gives."""
        for queue in list(self._left):
            elapsed = now - self._since.get(queue, now)
            if elapsed < PACE_EVERY_S and self._left[queue] < self.settings.release_window:
                continue
            pace = self._left.pop(queue) / max(elapsed, PACE_EVERY_S / 10)
            self._pace[queue] = pace = (self._pace.get(queue, pace) + pace) / 2
            self._since[queue] = now
            self.size[queue] = max(self.settings.release_window,
                                   int(pace * self.settings.release_window_s))
            if self.unsent[queue]:
                self.touched.add(queue)

    def fill(self, released: list[Dispatch], still_waiting: Callable[[Key, Dispatch], bool],
             now: float) -> None:
        """Send the best waiting tasks of the touched queues while their windows have room
        (``still_waiting`` says whether an entry is still current, and takes it out)."""
        for queue in sorted(self.touched):
            heap = self.heaps.get(queue)
            size = self.size.get(queue, self.settings.release_window)
            while heap and self.unsent[queue] and self.outstanding[queue] < size:
                _, _, key, item = heapq.heappop(heap)
                if not still_waiting(key, item):
                    continue  # ended or started while it waited
                self.unsent[queue] -= 1
                self.sent(queue, now)
                released.append(item)
            if not heap:
                self.heaps.pop(queue, None)
        self.touched.clear()
