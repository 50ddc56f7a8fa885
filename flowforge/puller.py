"""Puller: pull requests kept outstanding on a durable JetStream consumer.

``fetch()`` costs a request (and often a second, no-wait probe) for every batch and
returns only when the batch ends; here the owner says how many messages it can take
(``capacity()``), the puller asks the server for the difference in one long request
(``expires_s``, with idle heartbeats) and the server sends each message as soon as it is
stored. When a request ends the server says how many of it were not delivered
(``Nats-Pending-Messages`` on a 408/409 status) and they are asked for again.

A restarted server forgets waiting requests without a word: when NATS reconnects, or nothing
(message, heartbeat or status) came for three heartbeats while requests are out, the
puller forgets its count and asks again. More messages than ``capacity()`` can then arrive;
owners cope with that (the coordinator takes them in its next batch).
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

log = logging.getLogger("flowforge.puller")

EXPIRES_S = 30.0
HEARTBEAT_S = 2.0
"""The server says it is still there this often while a request waits; three missed (a
consumer leader lost in an election forgets its requests) and the puller asks again."""
WATCH_EVERY_S = 1.0
DRAIN_TIMEOUT_S = 2.0
"""A stop waits this long at most for the server to confirm (a lost one never does)."""


class Puller:
    def __init__(self, nc: NATS, stream: str, consumer: str, on_msg: Callable[[Msg], None],
                 capacity: Callable[[], int], *, api_prefix: str = "$JS.API",
                 expires_s: float = EXPIRES_S, heartbeat_s: float = HEARTBEAT_S,
                 min_request: int = 1) -> None:
        self._nc = nc
        self._next = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._on_msg = on_msg
        self._capacity = capacity
        self._expires_ns = int(expires_s * 1e9)
        self._heartbeat_ns = int(heartbeat_s * 1e9)
        self._silence_s = 3 * heartbeat_s
        self._min_request = min_request
        self.outstanding = 0
        """Messages asked for and not yet delivered or given up by the server."""
        self.requests = 0
        self._inbox = ""
        self._sub: object | None = None
        self._watch: asyncio.Task[None] | None = None
        self._heard_at = time.monotonic()
        self._reconnects = 0

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._deliver)
        self._reconnects = self._nc.stats["reconnects"]
        self._watch = asyncio.create_task(self._watchdog())
        await self.top_up()

    async def stop(self) -> None:
        """No more requests; the inbox is drained (messages already on their way still reach
        ``on_msg``) and unsubscribed, and the server drops requests nobody listens to, so
        new messages go to other consumers at once."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):  # bounded: a lost server never answers
                await asyncio.wait_for(sub.drain(), DRAIN_TIMEOUT_S)  # type: ignore[attr-defined]

    async def top_up(self) -> None:
        """Ask for what the owner can take beyond what is already asked for."""
        if self._sub is None:
            return
        need = self._capacity() - self.outstanding
        if need < self._min_request:
            return
        body = {"batch": need, "expires": self._expires_ns, "idle_heartbeat": self._heartbeat_ns}
        self.outstanding += need
        self.requests += 1
        try:
            await self._nc.publish(self._next, json.dumps(body).encode(), reply=self._inbox)
        except Exception as exc:  # noqa: BLE001 - NATS away: the watchdog asks again later
            log.debug("pull request on %s not sent: %r", self._next, exc)
            self.outstanding -= need

    async def _deliver(self, msg: Msg) -> None:
        self._heard_at = time.monotonic()
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self.outstanding = max(0, self.outstanding - 1)
            self._on_msg(msg)
            return
        if status == "100":  # idle heartbeat: the request is alive
            return
        pending = (msg.headers or {}).get("Nats-Pending-Messages")
        if pending is not None and pending.isdigit():
            self.outstanding = max(0, self.outstanding - int(pending))
        else:  # e.g. 409 consumer deleted: what the server still holds is unknown
            log.debug("pull on %s ended: %s %s", self._next, status, (msg.headers or {}))
            self.outstanding = 0
        await self.top_up()

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            reconnects = self._nc.stats["reconnects"]
            silent = time.monotonic() - self._heard_at > self._silence_s
            if reconnects != self._reconnects or (self.outstanding and silent):
                self._reconnects = reconnects
                self._heard_at = time.monotonic()
                self.outstanding = 0
            await self.top_up()
