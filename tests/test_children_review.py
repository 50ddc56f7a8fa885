"""Child tasks under faults and corner cases: two waits of one parent at once, the coordinator
killed while parents spawn or wait, an agent killed with parents and children on it, a parent
that fails with its children still running, cancelled runs and the agent's slots, children of
mapped instances and of chunks, parents in worker processes."""

import asyncio

import pytest

from tests.helpers import wait_for

# -- the agent's slots while parents wait ----------------------------------------------------


class Ledger:
    """A SlotLedger of one queue with ``slots`` slots, no NATS: ``top_up`` may be held."""

    def __init__(self, slots: int) -> None:
        from agent.slots import SlotLedger

        self.started: list[object] = []
        self.hold_top_up = asyncio.Event()
        self.hold_top_up.set()
        self.ledger = SlotLedger(("q",), slots, start=self.started.append, top_up=self._top_up,
                                 spawn=asyncio.ensure_future, stopping=lambda: False)

    async def _top_up(self, queue: str) -> None:
        await self.hold_top_up.wait()

    def admit(self):  # type: ignore[no-untyped-def]
        from agent.inhand import TaskInHand

        item = TaskInHand(msg=None, queue="q", delivery=1)  # type: ignore[arg-type]
        self.ledger.admit(item)
        return item


async def _lend_until(ledger: Ledger, item, done: asyncio.Event) -> None:  # type: ignore[no-untyped-def]
    async with ledger.ledger.lent(item):
        await done.wait()


async def test_a_parent_waiting_for_two_maps_at_once_lends_its_one_slot_once() -> None:
    two = Ledger(slots=2)
    parent = two.admit()
    assert two.ledger.capacity("q") == 1
    done = asyncio.Event()
    waits = [asyncio.create_task(_lend_until(two, parent, done)) for _ in range(2)]
    await wait_for(lambda: parent.lent)
    await asyncio.sleep(0)  # both waits are in
    assert two.ledger.capacity("q") == 2, "the parent's one slot was lent twice"
    done.set()
    await asyncio.gather(*waits)
    assert two.ledger.capacity("q") == 1 and not parent.lent
    await two.ledger.release(parent)
    await two.ledger.let_go(parent)
    assert two.ledger.capacity("q") == 2


async def test_a_parent_cancelled_while_it_lends_its_slot_gives_back_exactly_its_slot() -> None:
    one = Ledger(slots=1)
    parent = one.admit()
    one.hold_top_up.clear()  # the pull request is on its way when the cancel comes
    waiting = asyncio.create_task(_lend_until(one, parent, asyncio.Event()))
    await wait_for(lambda: parent.lent)
    waiting.cancel()
    one.hold_top_up.set()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not parent.lent
    await one.ledger.release(parent)
    await one.ledger.let_go(parent)
    assert one.ledger.capacity("q") == 1, "the slot count went wrong under the cancel"
    second = one.admit()
    assert one.started == [parent, second]
    assert one.ledger.capacity("q") == 0
