"""JsPublisher: JetStream publishes whose acks come back to one inbox, matched by a counter.

Like nats-py's ``publish_async`` without what it costs on every message (a random token from
``os.urandom``, stdlib ``json`` and a dataclass per ack): the ack is decoded by msgspec.
``publish`` returns a future of the stored message's stream sequence. An ack lost with a
dropped connection never comes: with ``ack_timeout_s`` the future fails after about that long
(one sweep a second for all of them, not a timer per message); without, the caller decides.
"""

import asyncio
import contextlib
import time
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from protocol.errors import NotConnected

NO_RESPONDERS = "503"


class PublishError(NotConnected):
    """JetStream did not store the message (no stream for the subject, an API error, or no
    ack in time)."""


class _Ack(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict[str, Any] | None = None


_ack_dec = msgspec.json.Decoder(_Ack)


SWEEP_EVERY_S = 1.0


class JsPublisher:
    def __init__(self, nc: NATS, ack_timeout_s: float | None = None) -> None:
        self._nc = nc
        self._prefix = ""
        self._next = 0
        self._waiting: dict[str, tuple[asyncio.Future[int], float, str]] = {}
        """Futures by token, oldest first, with when they were sent and where to."""
        self._sub: Any = None
        self._ack_timeout_s = ack_timeout_s
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._prefix = f"{self._nc.new_inbox()}."
        self._sub = await self._nc.subscribe(f"{self._prefix}*", cb=self._on_ack)
        if self._ack_timeout_s is not None:
            self._sweeper = asyncio.create_task(self._sweep(self._ack_timeout_s))

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        for future, _, _ in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    async def _sweep(self, timeout_s: float) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            cutoff = time.monotonic() - timeout_s
            late = []
            for future, sent_at, _ in self._waiting.values():
                if sent_at > cutoff:
                    break
                late.append(future)
            for future in late:
                if not future.done():
                    future.set_exception(PublishError(f"no ack from JetStream within {timeout_s:g} s"))

    @property
    def pending(self) -> int:
        return len(self._waiting)

    async def wait_idle(self, timeout_s: float) -> None:
        """Until every message sent so far is acked or failed (or ``timeout_s``)."""
        futures = [future for future, _, _ in self._waiting.values()]
        if futures:
            await asyncio.wait(futures, timeout=timeout_s)

    async def publish(self, subject: str, data: bytes,
                      headers: dict[str, str] | None = None) -> asyncio.Future[int]:
        """Send; the future gets the stream sequence once JetStream stored the message."""
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _: self._waiting.pop(token, None))
        self._waiting[token] = (future, time.monotonic(), subject)
        try:
            await self._nc.publish(subject, data, reply=self._prefix + token, headers=headers)
        except BaseException:
            future.cancel()
            raise
        return future

    async def _on_ack(self, msg: Msg) -> None:
        waiting = self._waiting.get(msg.subject[len(self._prefix):])
        if waiting is None or waiting[0].done():
            return
        future, _, subject = waiting
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            future.set_exception(PublishError(
                f"no JetStream stream stores {subject} now: on a cluster, its stream may be "
                "electing a leader; else, is a coordinator set up for this namespace? (it "
                "creates the streams)"))
            return
        try:
            ack = _ack_dec.decode(msg.data)
        except msgspec.DecodeError as exc:
            future.set_exception(PublishError(f"unreadable ack: {exc}"))
            return
        if ack.error is not None:
            future.set_exception(PublishError(str(ack.error.get("description", ack.error))))
        else:
            future.set_result(ack.seq)
