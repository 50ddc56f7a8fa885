"""How a running task asks the coordinator: an API request over the agent's own NATS
connection, awaited on the agent's loop (from an async task) or waited for from the task's
thread."""

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from agent.child_waits import ChildWaits, Lend
from flowforge.client import Client
from protocol.children import AwaitChildren
from protocol.errors import NotConnected

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0
"""While the coordinator cannot be reached, a task's request is sent again after these pauses."""
log = logging.getLogger("flowforge.agent")


class AgentAsker:
    def __init__(self, client: Callable[[], Client | None],
                 loop: asyncio.AbstractEventLoop, waits: ChildWaits | None = None,
                 lend: Lend | None = None) -> None:
        self._client = client
        self._loop = loop
        self._loop_thread = threading.get_ident()
        """Created on the loop's thread: a blocking ask from there would never be answered."""
        self._waits, self._lend = waits, lend

    def for_task(self, lend: Lend) -> "AgentAsker":
        """The asker of one task: its waits for children lend its slot with ``lend``."""
        asker = AgentAsker(self._client, self._loop, self._waits, lend)
        asker._loop_thread = self._loop_thread
        return asker

    async def await_children(self, body: AwaitChildren) -> None:
        if self._waits is None or self._lend is None:
            raise RuntimeError("this task cannot wait for children: it is not run by an agent")
        await self._waits.wait(body, self._lend)

    def wait_children(self, body: AwaitChildren) -> None:
        """From a sync task's thread: blocks until the children are done (no time limit: each
        child has its own timeout)."""
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("an async task must `await ctx.map(...)` / `await ctx.gather(...)`")
        asyncio.run_coroutine_threadsafe(self.await_children(body), self._loop).result()

    async def aask(self, body: Any, result_type: type[Any]) -> Any:
        """The coordinator's answer, asked again (less and less often) while it cannot be
        reached — it restarts, say: a task's requests (spawn children, read outputs) may be
        sent twice, so a coordinator that is down holds the task up instead of failing it."""
        pause_s = RETRY_FIRST_S
        while True:
            client = self._client()
            if client is None:
                raise NotConnected("the agent is not connected to NATS")
            try:
                return await client.request(body, result_type)
            except NotConnected as exc:
                log.info("a task's %s request: %s; asking again in %g s",
                         type(body).__name__, exc, pause_s)
            await asyncio.sleep(pause_s)
            pause_s = min(RETRY_MAX_S, pause_s * 2)

    def ask(self, body: Any, result_type: type[Any]) -> Any:
        """From a sync task's thread: ``aask`` on the agent's loop (no time limit of its own:
        the task's timeout bounds it)."""
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("an async task must not wait for the coordinator while it holds "
                               "the agent's loop: use `async for ... in ctx.amapped_outputs()`")
        return asyncio.run_coroutine_threadsafe(self.aask(body, result_type), self._loop).result()
