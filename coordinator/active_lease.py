"""One active coordinator per namespace: a lease in a NATS KV bucket.

The active coordinator holds key ``active`` of bucket ``<NS>_COORDINATOR`` (its entries
expire ``ttl_s`` after they were written) and writes it again every third of that. A second
coordinator started on the same database waits as a standby, trying to take the key; it
gets it once the holder stopped renewing (it died, or was paused) and its entry expired. One
started on another database refuses, naming the holder: two databases would split the runs.

Fencing: the holder acts only while its lease is surely still its own — until the time of
its last successful write plus the TTL, less a margin. The writer checks that before every
commit (``check``), so a holder that was paused past its lease stops instead of committing
stale state, even before it learns that another took over.

A holder whose lease ran out because it was cut off from NATS (not taken by another) drops
what it had in memory and starts again from the database once JetStream answers
(``acquire(resuming=True)``): it takes the lease back if nobody took it meanwhile, and stops
for good if somebody did.
"""

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import KeyValueConfig
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from protocol.errors import FlowForgeError
from protocol.untrusted import decode

log = logging.getLogger("flowforge.coordinator.lease")

T = TypeVar("T")
WRONG_LAST_SEQUENCE = (10071, 10164)
"""JetStream's error codes for a write whose expected last sequence is not the subject's."""
KEY = "active"
MARGIN = 0.2
"""Of the TTL: the holder stops acting this much before its entry could expire."""


class Holder(msgspec.Struct, frozen=True, kw_only=True):
    host: Annotated[str, msgspec.Meta(max_length=255)]
    pid: Annotated[int, msgspec.Meta(ge=0, le=2**31)]
    database: Annotated[str, msgspec.Meta(max_length=4096)]
    since: float


_holder = msgspec.json.Decoder(Holder)
UNREADABLE = Holder(host="(unreadable)", pid=0, database="", since=0.0)
"""What an entry that is not a holder stands for: someone we cannot name; wait it out."""


def holder_of(value: bytes | None) -> Holder:
    """The lease's holder, read like every message off the bus: with limits, untrusted."""
    try:
        return decode(_holder, value or b"{}", "the coordinator lease", max_bytes=8192)
    except FlowForgeError as exc:
        log.warning("%s", exc.message)
        return UNREADABLE


class CoordinatorElsewhere(FlowForgeError):
    """Another coordinator is active on this namespace with another database."""


class LeaseLost(FlowForgeError):
    """This coordinator no longer holds the lease: it must not act."""


class LeaseTaken(LeaseLost):
    """Another coordinator holds the lease now: this one stops for good."""


TRANSIENT = (NatsTimeout, ServiceUnavailableError, NoRespondersError, NoStreamResponseError)
"""What JetStream answers while a cluster has no quorum or this host is cut off from it."""


class ActiveLease:
    def __init__(self, nc: NATS, bucket: str, database: Path, ttl_s: float,
                 replicas: int = 1) -> None:
        self._nc = nc
        self.bucket = bucket
        self.ttl_s = ttl_s
        self.replicas = replicas
        """As the streams': a bucket on one node would let a coordinator cut off with that
        node alone go on renewing its lease (split brain)."""
        self.me = Holder(host=socket.gethostname(), pid=os.getpid(),
                         database=str(Path(database).resolve()), since=time.time())
        self._kv: KeyValue | None = None
        self._revision = 0
        self._valid_until = 0.0
        self.lost = asyncio.Event()
        self.taken = False
        """The lease was lost to another coordinator (not merely run out while cut off)."""

    async def acquire(self, standby: asyncio.Event | None = None, resuming: bool = False) -> None:
        """Return once this coordinator holds the lease; wait as a standby while another on
        the same database holds it (``standby`` is set meanwhile); refuse on another one.
        ``resuming`` (this one was cut off past its lease): stop if another took over."""
        self._kv = await self._patiently(self._bucket)
        said = False
        while True:
            holder = await self._patiently(self._try_take)
            if holder is None:
                log.info("active coordinator of this namespace (lease %g s)", self.ttl_s)
                return
            if self._gone(holder):  # its process on this host is dead: no need to wait
                log.warning("coordinator pid %d on %s died holding the lease; taking over",
                            holder.pid, holder.host)
                await self._take_from(holder)
                continue
            if resuming:
                raise LeaseTaken(
                    f"coordinator pid {holder.pid} on {holder.host} took over this namespace "
                    "while this one was cut off or paused: stopping")
            if holder.database not in (self.me.database, UNREADABLE.database):
                raise CoordinatorElsewhere(
                    f"another coordinator is active on this namespace: pid {holder.pid} on "
                    f"{holder.host} with database {holder.database} (this one has "
                    f"{self.me.database}); stop it, or use another --namespace")
            if not said:
                log.warning("standby: coordinator pid %d on %s holds this namespace; taking "
                            "over when it stops", holder.pid, holder.host)
                said = True
                if standby is not None:
                    standby.set()
            await asyncio.sleep(self.ttl_s / 6)

    async def _patiently(self, step: Callable[[], Awaitable[T]]) -> T:
        """``step``, again while JetStream cannot answer (no quorum, or cut off from it)."""
        said = False
        while True:
            try:
                return await step()
            except TRANSIENT as exc:
                if not said:
                    log.warning("JetStream cannot answer for the coordinator lease (%r); "
                                "trying again until it does", exc)
                    said = True
                await asyncio.sleep(min(1.0, self.ttl_s / 6))

    async def _bucket(self) -> KeyValue:
        js = self._nc.jetstream()
        try:
            kv = await js.key_value(self.bucket)
        except (BucketNotFoundError, NotFoundError):
            try:
                return await js.create_key_value(KeyValueConfig(
                    bucket=self.bucket, history=1, ttl=self.ttl_s, replicas=self.replicas))
            except BadRequestError:  # made by another coordinator at the same moment
                return await js.key_value(self.bucket)
        stream = f"KV_{self.bucket}"
        config = (await js.stream_info(stream)).config
        if (config.num_replicas, config.max_age) != (self.replicas, self.ttl_s):
            log.warning("lease bucket %s has %s replica(s) and a TTL of %s s; asked %d and "
                        "%g s: updating it", self.bucket, config.num_replicas, config.max_age,
                        self.replicas, self.ttl_s)
            config.num_replicas, config.max_age = self.replicas, self.ttl_s
            await js.update_stream(config)
        return kv

    def _gone(self, holder: Holder) -> bool:
        """Whether the holder was a process of this host that is no longer running (or an
        earlier life of this very pid, as in a restarted container)."""
        if holder.host != self.me.host:
            return False
        if holder.pid == self.me.pid:
            return True
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    async def _take_from(self, holder: Holder) -> None:
        """Delete the dead holder's entry (only if it is still that one)."""
        assert self._kv is not None
        try:
            entry = await self._kv.get(KEY)
            if holder_of(entry.value) == holder:
                await self._kv.delete(KEY, last=entry.revision)
        except (KeyNotFoundError, KeyDeletedError, KeyWrongLastSequenceError, *TRANSIENT):
            pass  # gone or taken meanwhile, or no answer: the next try says which
        except BadRequestError as exc:  # a delete's "wrong last sequence" (nats-py does not
            if exc.err_code not in WRONG_LAST_SEQUENCE:  # map it as it does for update)
                raise

    async def _try_take(self) -> Holder | None:
        """Take the key if nobody holds it; else who does."""
        assert self._kv is not None
        started = time.monotonic()
        try:
            self._revision = await self._kv.create(KEY, msgspec.json.encode(self.me))
        except KeyWrongLastSequenceError:
            try:
                entry = await self._kv.get(KEY)
            except (KeyNotFoundError, KeyDeletedError):  # gone meanwhile: try again
                return await self._try_take()
            return holder_of(entry.value)
        self._valid_until = started + self.ttl_s * (1 - MARGIN)
        return None

    async def keep(self) -> None:
        """Renew every third of the TTL until cancelled; a renewal that fails (another took
        it, or NATS is away past the lease) sets ``lost``."""
        assert self._kv is not None
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            started = time.monotonic()
            try:
                self._revision = await asyncio.wait_for(  # no answer past the lease: lost
                    self._kv.update(KEY, msgspec.json.encode(self.me), last=self._revision),
                    max(0.1, self._valid_until - started))
                self._valid_until = started + self.ttl_s * (1 - MARGIN)
            except KeyWrongLastSequenceError:  # taken, or it expired before this renewal
                self.taken = await self._held_by_another()
                log.error("the coordinator lease %s", "was taken by another coordinator"
                          if self.taken else "expired before it was renewed")
                self.lost.set()
                return
            except Exception as exc:  # noqa: BLE001 - NATS away: try again while it lasts
                log.warning("could not renew the coordinator lease (%r)", exc)
                if time.monotonic() > self._valid_until:
                    self.lost.set()
                    return

    async def _held_by_another(self) -> bool:
        assert self._kv is not None
        try:
            entry = await self._kv.get(KEY)
        except Exception:  # noqa: BLE001 - gone, or cannot tell now: starting again finds out
            return False
        return holder_of(entry.value) != self.me

    def check(self) -> None:
        """Raise LeaseLost unless the lease is surely still this coordinator's."""
        if self.lost.is_set() or time.monotonic() > self._valid_until:
            self.lost.set()
            raise LeaseLost("this coordinator's lease ran out (it was paused, or cut off from "
                            "NATS): another may be active; stopping without committing")

    async def release(self) -> None:
        """At a clean stop: let a standby take over at once."""
        if self._kv is None or self.lost.is_set() or not self._revision:
            return
        try:
            await self._kv.delete(KEY, last=self._revision)
        except Exception as exc:  # noqa: BLE001 - it expires anyway
            log.debug("lease not released (%r)", exc)

