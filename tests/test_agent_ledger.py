"""SlotLedger and TaskInHand on their own: slots, messages in hand, waiting, leases held."""

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import pytest
from nats.aio.msg import Msg

from agent.inhand import TaskInHand, TaskState
from agent.leases import held
from agent.slots import REPORTS_AHEAD, SEEN_BEFORE_PREFETCH, SHORT_TASK_S, SlotLedger


class Owner:
    """What the agent gives a ledger: it records starts and top-ups, and keeps spawned work."""

    def __init__(self) -> None:
        self.started: list[TaskInHand] = []
        self.top_ups: list[str] = []
        self.spawned: list[asyncio.Future[Any]] = []
        self.stopping = False

    def ledger(self, queues: tuple[str, ...] = ("q",), concurrency: int = 1,
               prefetch: int = 0) -> SlotLedger:
        return SlotLedger(queues, concurrency, start=self.started.append, top_up=self.top_up,
                          spawn=self.spawn, stopping=lambda: self.stopping, prefetch=prefetch)

    async def top_up(self, queue: str) -> None:
        self.top_ups.append(queue)

    def spawn(self, coro: Awaitable[Any]) -> None:
        self.spawned.append(asyncio.ensure_future(coro))


def message(queue: str = "q") -> TaskInHand:
    return TaskInHand.of(Msg(_client=None, subject=f"flowforge.task.{queue}"), queue)  # type: ignore[arg-type]


async def run_tasks(ledger: SlotLedger, n: int, took_s: float, queue: str = "q") -> None:
    """``n`` tasks through the ledger, each as if it held its slot for ``took_s``."""
    for _ in range(n):
        item = message(queue)
        ledger.admit(item)
        assert item.state is TaskState.RUNNING
        item.slot_since = time.monotonic() - took_s
        item.move(TaskState.REPORTING)
        await ledger.release(item)
        item.move(TaskState.DONE)
        await ledger.let_go(item)


def test_the_concurrency_is_split_evenly_and_each_queue_gets_at_least_one_slot() -> None:
    ledger = Owner().ledger(("a", "b", "c"), concurrency=5)
    assert ledger.share == {"a": 2, "b": 2, "c": 1}
    assert [ledger.capacity(q) for q in "abc"] == [2, 2, 1]


async def test_a_message_takes_a_slot_and_the_slot_is_free_again_when_its_function_returned() -> None:
    owner = Owner()
    ledger = owner.ledger()
    item = message()
    ledger.admit(item)
    assert owner.started == [item] and item.state is TaskState.RUNNING
    assert ledger.capacity("q") == 0
    item.move(TaskState.REPORTING)
    await ledger.release(item)
    assert ledger.capacity("q") == 1 and owner.top_ups == ["q"]
    item.move(TaskState.DONE)
    await ledger.let_go(item)
    assert list(ledger) == [] and ledger.capacity("q") == 1


async def test_results_being_stored_stop_the_taking_at_the_reports_ahead_bound() -> None:
    ledger = Owner().ledger()
    for _ in range(1 + REPORTS_AHEAD):
        item = message()
        ledger.admit(item)
        assert ledger.capacity("q") == 0  # the slot is taken
        item.move(TaskState.REPORTING)
        await ledger.release(item)
    assert ledger.capacity("q") == 0  # the slot is free, but the reports are not stored yet
    assert len(ledger.in_state(TaskState.REPORTING)) == 1 + REPORTS_AHEAD


async def test_an_abandoned_thread_keeps_its_slot_until_it_really_returns() -> None:
    owner = Owner()
    ledger = owner.ledger()
    item = message()
    ledger.admit(item)
    thread: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    item.lingering.append(thread)
    item.move(TaskState.REPORTING)
    await ledger.release(item)
    assert ledger.capacity("q") == 0
    thread.set_result(None)
    await asyncio.wait_for(asyncio.gather(*owner.spawned), 5)
    assert ledger.capacity("q") == 1


async def test_without_a_prefetch_window_a_message_beyond_the_slots_runs_at_once() -> None:
    owner = Owner()
    ledger = owner.ledger()
    first, extra = message(), message()  # the server may send extra (after a reconnect)
    ledger.admit(first)
    ledger.admit(extra)
    assert owner.started == [first, extra]
    assert ledger.in_state(TaskState.WAITING) == []


async def test_within_a_prefetch_window_messages_wait_for_a_slot_in_arrival_order() -> None:
    owner = Owner()
    ledger = owner.ledger(prefetch=2)
    await run_tasks(ledger, SEEN_BEFORE_PREFETCH, took_s=0.001)
    owner.started.clear()
    assert ledger.capacity("q") == 3  # one slot and two waiting
    running, second, third = message(), message(), message()
    for item in (running, second, third):
        ledger.admit(item)
    assert owner.started == [running] and ledger.capacity("q") == 0
    assert [i.state for i in (second, third)] == [TaskState.WAITING] * 2
    held_ids = {id(m) for m in held(ledger)}  # waiting messages keep their leases too
    assert held_ids == {id(m.msg) for m in (running, second, third)}
    running.move(TaskState.REPORTING)
    await ledger.release(running)
    assert owner.started == [running, second] and second.state is TaskState.RUNNING


async def test_at_shutdown_waiting_messages_leave_the_ledger_and_none_starts() -> None:
    owner = Owner()
    ledger = owner.ledger(prefetch=1)
    await run_tasks(ledger, SEEN_BEFORE_PREFETCH, took_s=0.001)
    owner.started.clear()
    running, waiting = message(), message()
    ledger.admit(running)
    ledger.admit(waiting)
    owner.stopping = True
    assert ledger.capacity("q") == 0
    running.move(TaskState.REPORTING)
    await ledger.release(running)
    assert owner.started == [running]  # stopping: the waiting one is not started
    assert ledger.take_waiting() == [waiting]
    assert list(ledger) == [running]


def test_a_message_moves_only_along_its_lifecycle() -> None:
    item = message()
    item.move(TaskState.RUNNING)
    item.move(TaskState.DONE)
    with pytest.raises(RuntimeError, match="cannot become running"):
        item.move(TaskState.RUNNING)


async def test_the_prefetch_window_opens_only_while_the_queues_tasks_are_short() -> None:
    owner = Owner()
    ledger = owner.ledger(("fast", "slow"), concurrency=4, prefetch=lambda share: 4 * share)
    assert ledger.prefetch == {"fast": 8, "slow": 8}
    await run_tasks(ledger, SEEN_BEFORE_PREFETCH - 1, took_s=0.001, queue="fast")
    assert ledger.window("fast") == 0 and ledger.capacity("fast") == 2  # not trusted yet
    await run_tasks(ledger, 1, took_s=0.001, queue="fast")
    assert ledger.window("fast") == 8  # messages in hand still stay under the reports bound
    assert ledger.capacity("fast") == min(2 + 8, 2 * (1 + REPORTS_AHEAD))
    await run_tasks(ledger, SEEN_BEFORE_PREFETCH, took_s=SHORT_TASK_S * 4, queue="slow")
    assert ledger.window("slow") == 0 and ledger.capacity("slow") == 2  # long tasks: none wait
    await run_tasks(ledger, 20, took_s=SHORT_TASK_S * 4, queue="fast")  # the fast got slow
    assert ledger.window("fast") == 0
    await run_tasks(ledger, 40, took_s=0.001, queue="fast")  # and fast again
    assert ledger.window("fast") == 8


async def test_a_message_arriving_while_others_wait_queues_behind_them_even_if_the_window_shut(
) -> None:
    owner = Owner()
    ledger = owner.ledger(prefetch=1)
    await run_tasks(ledger, SEEN_BEFORE_PREFETCH, took_s=0.001)
    owner.started.clear()
    running, waiting = message(), message()
    ledger.admit(running)
    ledger.admit(waiting)
    ledger.prefetch["q"] = 0  # as if the tasks had become long
    late = message()
    ledger.admit(late)  # the server sent extra: it does not jump the queue
    assert owner.started == [running] and late.state is TaskState.WAITING
    running.move(TaskState.REPORTING)
    await ledger.release(running)
    assert owner.started == [running, waiting]


async def test_a_cancel_heard_twice_does_not_interrupt_the_cleanup_of_the_first() -> None:
    cleaned = asyncio.Event()

    async def cleans_up() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # its cleanup, which a second cancel would cut short
            cleaned.set()
            raise

    item = TaskInHand(msg=None, queue="q", delivery=1)  # type: ignore[arg-type]
    item.task = asyncio.ensure_future(cleans_up())
    await asyncio.sleep(0)  # it runs up to its first await
    item.cancel()
    await asyncio.sleep(0)  # the cancel reaches it: it is cleaning up
    item.cancel()  # a coordinator tells it again, after a restart
    with pytest.raises(asyncio.CancelledError):
        await item.task
    assert cleaned.is_set()
