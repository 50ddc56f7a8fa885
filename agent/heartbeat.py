"""Heartbeat: the agent says it is alive, what it serves and how busy it is."""

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS

from agent.config import AgentConfig
from protocol.messages import AgentHeartbeat, encoder
from protocol.subjects import Subjects


class Heartbeat:
    """``run()`` says the agent is alive every ``heartbeat_s``; ``send(stopping=True)`` says
    goodbye."""

    def __init__(self, nc: Callable[[], NATS | None], subjects: Subjects, agent_id: str,
                 config: AgentConfig, busy: Callable[[], int]) -> None:
        self._nc, self._subjects, self._agent_id = nc, subjects, agent_id
        self._config, self._busy = config, busy
        self._started_at = time.time()

    async def run(self) -> None:
        while True:
            await self.send()
            await asyncio.sleep(self._config.heartbeat_s)

    async def send(self, stopping: bool = False) -> None:
        nc = self._nc()
        if nc is None or nc.is_closed:
            return
        c = self._config
        beat = AgentHeartbeat(
            agent_id=self._agent_id, host=socket.gethostname(), pid=os.getpid(),
            queues=c.queues, functions=tuple(sorted(c.functions)), slots_total=c.concurrency,
            slots_busy=self._busy(), started_at=self._started_at, at=time.time(),
            stopping=stopping,
        )
        with contextlib.suppress(Exception):
            await nc.publish(self._subjects.heartbeat(self._agent_id), encoder.encode(beat))
