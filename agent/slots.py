"""SlotLedger: each queue's slots, the task messages the agent holds, and how many more it takes.

A queue's share of the agent's concurrency is its slots. A message the agent receives is
in hand until it is settled; it takes a slot (RUNNING) until its function returns — or, for
a sync function abandoned after a timeout or cancel, until its thread really returns — and
then stays in hand while its result is stored (REPORTING). With a prefetch window, a
message may also be held beyond the free slots, WAITING in a local FIFO for one.
"""

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from agent.inhand import TaskInHand, TaskState

REPORTS_AHEAD = 3
"""A slot is free as soon as its function returned; the results still being stored (their
task messages not yet acked) may reach this many times the queue's slots before the agent
stops taking tasks. Holding slots for the store's round trip capped throughput at
slots / round trip."""
SHORT_TASK_S = 0.05
"""The prefetch window opens only while a queue's tasks hold their slot for less than this on
average: then waiting for a pull round trip between two tasks is what limits throughput, and
a message waiting here delays it by at most window / slots short tasks. Longer tasks gain
nothing from waiting here and would keep messages from idle agents, so none wait."""
SEEN_BEFORE_PREFETCH = 8
"""Tasks a queue finishes before its average is trusted (the window stays shut until then)."""
AVERAGE_WEIGHT = 0.1
"""How much each task counts in the moving average of slot time."""


class SlotLedger:
    """Counts per queue; starts a message when it gets a slot; asks for more when one frees.

    ``start(item)`` runs a message that got a slot, ``top_up(queue)`` asks the queue's puller
    for what ``capacity(queue)`` allows now, ``spawn`` runs a background coroutine (kept by
    the agent, so shutdown waits for it) and ``stopping()`` says no more messages are taken.
    """

    def __init__(self, queues: tuple[str, ...], concurrency: int, *,
                 start: Callable[[TaskInHand], None],
                 top_up: Callable[[str], Awaitable[None]],
                 spawn: Callable[[Awaitable[Any]], None],
                 stopping: Callable[[], bool],
                 prefetch: int | Callable[[int], int] = 0) -> None:
        n = len(queues)
        self.share = {q: concurrency // n + (i < concurrency % n) for i, q in enumerate(queues)}
        """Slots of each queue: the agent's concurrency split evenly, at least one each."""
        self.prefetch = {q: prefetch(s) if callable(prefetch) else prefetch
                         for q, s in self.share.items()}
        """Messages each queue may hold beyond its free slots, waiting for one, while its
        tasks are short (0: none ever wait); given as a number or a function of the share."""
        self._slot_time = dict.fromkeys(queues, 0.0)
        """Moving average of how long a task held its slot, per queue."""
        self._seen = dict.fromkeys(queues, 0)
        self._busy = dict.fromkeys(queues, 0)
        """Slots taken per queue: functions running (or their abandoned threads)."""
        self._in_hand = dict.fromkeys(queues, 0)
        """Messages held per queue: waiting, running or reporting."""
        self._waiting: dict[str, deque[TaskInHand]] = {q: deque() for q in queues}
        self._lent = dict.fromkeys(queues, 0)
        """Messages in hand whose tasks lent their slot while they wait for their children."""
        self._resuming: dict[str, deque[asyncio.Future[None]]] = {q: deque() for q in queues}
        """Tasks back from waiting, for a slot: they get one before any message waiting."""
        self._items: set[TaskInHand] = set()
        self._start, self._top_up, self._spawn, self._stopping = start, top_up, spawn, stopping

    def __iter__(self) -> Iterator[TaskInHand]:
        """The messages in hand (a snapshot)."""
        return iter(list(self._items))

    def in_state(self, *states: TaskState) -> list[TaskInHand]:
        return [item for item in self._items if item.state in states]

    def usage(self) -> dict[str, tuple[int, int, int]]:
        """Per queue: slots busy, its share of slots, messages in hand (for ``--metrics``)."""
        return {q: (self._busy[q], share, self._in_hand[q]) for q, share in self.share.items()}

    def capacity(self, queue: str) -> int:
        """How many more task messages this queue can take now (none once stopping)."""
        if self._stopping():
            return 0
        share = self.share[queue]
        free = share + self.window(queue) - self._busy[queue] - len(self._waiting[queue])
        held = self._in_hand[queue] - self._lent[queue]  # a waiting parent holds no slot
        return max(0, min(free, share * (1 + REPORTS_AHEAD) - held))

    def window(self, queue: str) -> int:
        """Messages the queue may hold waiting now: the prefetch while its tasks are short."""
        if not self.prefetch[queue] or self._seen[queue] < SEEN_BEFORE_PREFETCH:
            return 0
        return self.prefetch[queue] if self._slot_time[queue] < SHORT_TASK_S else 0

    def admit(self, item: TaskInHand) -> None:
        """Take a delivered message in hand: into a slot, or to wait for one (prefetch)."""
        queue = item.queue
        self._items.add(item)
        self._in_hand[queue] += 1  # more than capacity() only if the server sent extra
        if self._busy[queue] >= self.share[queue] and (self.window(queue) or self._waiting[queue]):
            item.move(TaskState.WAITING)
            self._waiting[queue].append(item)
            return
        self._take_slot(item)  # without a window, an extra message runs beyond the share

    async def release(self, item: TaskInHand) -> None:
        """Its function returned: the slot is free now, or once its abandoned threads return."""
        self._note_slot_time(item)
        if not item.lingering:
            await self._free(item.queue)
            return
        threads = list(item.lingering)

        async def wait_then_free() -> None:
            await asyncio.wait(threads)
            await self._free(item.queue)

        self._spawn(wait_then_free())

    async def let_go(self, item: TaskInHand) -> None:
        """The message left the agent's hands (settled, or abandoned at shutdown)."""
        self._items.discard(item)
        self._in_hand[item.queue] -= 1
        await self._top_up(item.queue)

    def take_waiting(self) -> list[TaskInHand]:
        """Every waiting message, out of the ledger (at shutdown, to be handed back)."""
        taken = [item for waiting in self._waiting.values() for item in waiting]
        for waiting in self._waiting.values():
            waiting.clear()
        for item in taken:
            self._items.discard(item)
            self._in_hand[item.queue] -= 1
        return taken

    def _take_slot(self, item: TaskInHand) -> None:
        self._busy[item.queue] += 1
        item.slot_since = time.monotonic()
        item.move(TaskState.RUNNING)
        self._start(item)

    def _note_slot_time(self, item: TaskInHand) -> None:
        took = time.monotonic() - item.slot_since
        queue = item.queue
        seen = self._seen[queue] = self._seen[queue] + 1
        weight = max(AVERAGE_WEIGHT, 1.0 / seen)  # the first tasks: a plain mean
        self._slot_time[queue] += weight * (took - self._slot_time[queue])

    @contextlib.asynccontextmanager
    async def lent(self, item: TaskInHand) -> AsyncIterator[None]:
        """While the task waits (for its children) its slot is free for other tasks — its
        children may need it; then it takes a slot back, ahead of the messages waiting. A task
        waiting for several things at once (``asyncio.gather`` of two maps) lends its one slot
        once, until the last of them is over; a cancel at any point gives back what was taken,
        and a cancelled (or timed-out) task does not wait for a slot to end."""
        item.lends += 1
        cancelled = False
        try:  # cancelled while freeing its slot (asking for more tasks): it takes one back
            if item.lends == 1:
                item.lent = True
                self._lent[item.queue] += 1
                await self._free(item.queue)
            yield
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            item.lends -= 1
            if item.lends == 0:
                self._lent[item.queue] -= 1
                item.lent = False
                if cancelled:
                    # cancelled or timed out, it only ends now: it takes its slot back without
                    # waiting for one (its children may hold them all); its release frees it
                    self._busy[item.queue] += 1
                else:
                    await self._reclaim(item.queue)

    async def _reclaim(self, queue: str) -> None:
        if self._busy[queue] < self.share[queue] and not self._resuming[queue]:
            self._busy[queue] += 1
            return
        back: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._resuming[queue].append(back)
        try:
            await back  # a slot that frees passes to it (``_free``)
        except asyncio.CancelledError:
            if not back.done() or back.cancelled():  # it has none: count one all the same,
                with contextlib.suppress(ValueError):  # as its release will give one back
                    self._resuming[queue].remove(back)
                self._busy[queue] += 1
            raise

    async def _free(self, queue: str) -> None:
        resuming = self._resuming[queue]
        while resuming:  # a task back from waiting takes the slot over
            back = resuming.popleft()
            if not back.done():
                back.set_result(None)
                return
        self._busy[queue] -= 1
        if self._waiting[queue] and not self._stopping():  # stopping: they go back
            self._take_slot(self._waiting[queue].popleft())
        await self._top_up(queue)
