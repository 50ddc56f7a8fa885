"""How a running task asks the coordinator: an API request over the agent's own NATS
connection, awaited on the agent's loop (from an async task) or waited for from the task's
thread."""

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from flowforge.client import Client
from protocol.errors import NotConnected

ASK_TIMEOUT_S = 30.0


class AgentAsker:
    def __init__(self, client: Callable[[], Client | None],
                 loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop
        self._loop_thread = threading.get_ident()
        """Created on the loop's thread: a blocking ask from there would never be answered."""

    async def aask(self, body: Any, result_type: type[Any]) -> Any:
        client = self._client()
        if client is None:
            raise NotConnected("the agent is not connected to NATS")
        return await client.request(body, result_type)

    def ask(self, body: Any, result_type: type[Any]) -> Any:
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("an async task must not wait for the coordinator while it holds "
                               "the agent's loop: use `async for ... in ctx.amapped_outputs()`")
        future = asyncio.run_coroutine_threadsafe(self.aask(body, result_type), self._loop)
        return future.result(ASK_TIMEOUT_S)
