"""Parents waiting for their children, in the agent.

A waiting task lends its slot to the agent (its children, or anything else, may run in it)
and asks the coordinator how many of the children it waits for are open. While some are,
the coordinator wakes the agent on ``<ns>.wake.<agent_id>`` when none is (or, failing fast,
when one failed); the task asks again then — or after a poll interval, in case a wake was
lost (a reconnect, a coordinator restart). Then it takes a slot back and goes on.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from nats.aio.msg import Msg

from flowforge.client import Client
from protocol.children import AwaitChildren, ChildrenState, wake_decoder
from protocol.errors import FlowForgeError, NotConnected, RemoteError
from protocol.untrusted import decode

log = logging.getLogger("flowforge.agent")

POLL_FIRST_S = 1.0
POLL_MAX_S = 10.0
"""Without a wake, a waiting task asks again after this long at the most."""

Lend = Callable[[], AbstractAsyncContextManager[None]]


class ChildWaits:
    def __init__(self, client: Callable[[], Client | None]) -> None:
        self._client = client
        self._events: dict[tuple[str, str], set[asyncio.Event]] = {}
        self.wakes = 0

    async def on_wake(self, msg: Msg) -> None:
        """A wake from the coordinator (untrusted, like every message: a bad one is dropped)."""
        try:
            wake = decode(wake_decoder, msg.data, "a wake message", max_bytes=4096)
        except FlowForgeError as exc:
            log.warning("dropped a wake message: %s", exc.message)
            return
        self.wakes += 1
        for event in self._events.get((wake.run_id, wake.parent), ()):
            event.set()

    async def wait(self, body: AwaitChildren, lend: Lend) -> ChildrenState:
        """Until none of the children asked about is open (or one failed, failing fast)."""
        key = (body.run_id, body.parent)
        event = asyncio.Event()
        self._events.setdefault(key, set()).add(event)
        try:
            async with lend():
                return await self._until_done(body, event)
        finally:
            events = self._events.get(key)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[key]

    async def _until_done(self, body: AwaitChildren, event: asyncio.Event) -> ChildrenState:
        poll_s = POLL_FIRST_S
        while True:
            event.clear()  # before asking: a wake that comes after the answer is kept
            state = await self._ask(body)
            if state is not None and (state.open == 0 or (body.fail_fast and state.failed)):
                return state
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), poll_s)
            poll_s = min(POLL_MAX_S, poll_s * 2)

    async def _ask(self, body: AwaitChildren) -> ChildrenState | None:
        """The coordinator's count; None while it cannot be reached (ask again later)."""
        client = self._client()
        if client is None:
            return None
        try:
            return await client.request(body, ChildrenState)
        except RemoteError:
            raise
        except (NotConnected, TimeoutError, FlowForgeError) as exc:
            log.info("waiting for the children of %s/%s: %s; asking again", body.run_id,
                     body.parent, exc)
            return None
