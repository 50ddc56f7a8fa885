"""Idempotent setup of FlowForge's JetStream streams and consumers."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServerError, ServiceUnavailableError

from protocol.errors import FlowForgeError
from protocol.subjects import Subjects

log = logging.getLogger("flowforge.jetstream")

DEFAULT_LEASE_S = 30.0
INBOX_ACK_WAIT_S = 5.0
DUPLICATE_WINDOW_S = 120.0


class StreamMismatch(FlowForgeError):
    """A stream exists with settings this process cannot bring it to."""
MAX_ACK_PENDING = 20_000
JS_READY_S = 60.0
"""How long a start waits for JetStream to answer (a cluster electing its leaders)."""


def replicas_for(server_info: dict[str, Any]) -> int:
    """Copies of each stream when none is asked for: 3 when the server says it is one of a
    cluster, else 1 (a cluster of two fails to make them, with an error that says so)."""
    return 3 if server_info.get("cluster") else 1


async def ensure_stream(js: JetStreamContext, name: str, subject: str, replicas: int = 1,
                        patience_s: float = 0.0, change_existing: bool = True) -> None:
    """Create a work-queue stream, or bring an existing one to this config; an existing one
    that differs is said so (and its replicas changed, which JetStream can do in place).
    With ``change_existing=False`` (an agent: the settings are the coordinator's) an existing
    stream is left as it is. Asked again for up to ``patience_s`` while a cluster elects its
    leaders."""
    await _while_electing(lambda: _ensure_stream(js, name, subject, replicas, change_existing),
                          name, patience_s)


async def _ensure_stream(js: JetStreamContext, name: str, subject: str, replicas: int,
                         change_existing: bool) -> None:
    config = StreamConfig(
        name=name,
        subjects=[subject],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
        num_replicas=replicas,
    )
    try:
        await js.add_stream(config)
        return
    except (BadRequestError, ServerError) as exc:
        try:
            current = (await js.stream_info(name)).config
        except NotFoundError:
            raise StreamMismatch(f"stream {name} cannot be made: {exc}") from None
    if not change_existing:
        return
    differs = [f"{what} {had!r} (asked {want!r})" for what, had, want in (
        ("replicas", current.num_replicas or 1, replicas),
        ("retention", current.retention, config.retention),
        ("storage", current.storage, config.storage)) if had != want]
    if differs:
        log.warning("stream %s exists with other settings: %s; updating it", name,
                    ", ".join(differs))
    try:
        await js.update_stream(config)
    except (BadRequestError, ServerError) as exc:
        raise StreamMismatch(
            f"stream {name} exists with other settings ({', '.join(differs) or exc}) and "
            f"cannot take this coordinator's: {exc}; start it with settings that match, or "
            "move the stream aside") from None


async def ensure_streams(
    js: JetStreamContext, subjects: Subjects, inbox_ack_wait_s: float = INBOX_ACK_WAIT_S,
    replicas: int = 1, patience_s: float = JS_READY_S,
) -> None:
    """The three streams and the coordinator's two consumers (safe to call on every start).

    ``inbox_ack_wait_s`` is how soon reports and triggers that a crashed coordinator had
    fetched but not acknowledged come back to its successor.
    """
    for stream, kind in ((subjects.tasks_stream, "task"), (subjects.reports_stream, "report"),
                         (subjects.triggers_stream, "trigger")):
        await ensure_stream(js, stream, subjects.wildcard(kind), replicas, patience_s)
    for stream, durable in (
        (subjects.reports_stream, subjects.reports_consumer),
        (subjects.triggers_stream, subjects.triggers_consumer),
    ):
        config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
                                ack_wait=inbox_ack_wait_s, max_ack_pending=MAX_ACK_PENDING)
        await _while_electing(lambda s=stream, c=config: _ensure_consumer(js, s, c, update=True),
                              durable, patience_s)


async def _while_electing(step: Callable[[], Awaitable[object]], what: str,
                          patience_s: float) -> None:
    """``step``, again for up to ``patience_s`` while JetStream cannot answer yet: a cluster
    that just started (or lost a node) elects its leaders first, and its API times out or
    says it is unavailable."""
    deadline = time.monotonic() + patience_s
    said = False
    while True:
        try:
            await step()
            return
        except (NatsTimeout, ServiceUnavailableError) as exc:
            not_enabled = "not enabled" in (getattr(exc, "description", "") or "").lower()
            if not_enabled or time.monotonic() > deadline:
                raise
            log.log(logging.DEBUG if said else logging.INFO,
                    "JetStream is not ready for %s yet (%r); trying again", what, exc)
            said = True
            await asyncio.sleep(0.5)


async def ensure_task_consumer(
    js: JetStreamContext, subjects: Subjects, queue: str, lease_s: float = DEFAULT_LEASE_S,
    update: bool = False,
) -> float:
    """The durable pull consumer shared by every agent of ``queue``; returns its lease.

    The coordinator sets the lease (``update=True``); an agent only creates the consumer
    when it is missing and then extends leases by what the consumer really has.
    """
    return await _ensure_consumer(js, subjects.tasks_stream, ConsumerConfig(
        durable_name=subjects.task_consumer(queue),
        filter_subject=subjects.task(queue),
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=lease_s,
        max_ack_pending=MAX_ACK_PENDING,
    ), update=update)


async def _ensure_consumer(
    js: JetStreamContext, stream: str, config: ConsumerConfig, update: bool = False
) -> float:
    """Create (or with ``update``, reconfigure) a durable consumer; returns its ack wait."""
    assert config.durable_name is not None and config.ack_wait is not None
    try:
        info = await js.consumer_info(stream, config.durable_name)
        current = info.config.ack_wait or config.ack_wait
        if not update or abs(current - config.ack_wait) < 0.001:
            return current
    except NotFoundError:
        pass
    try:
        await js.add_consumer(stream, config)  # create, or update an existing one's settings
    except BadRequestError as exc:  # created concurrently with another config
        log.warning("consumer %s on %s: %s", config.durable_name, stream, exc)
        info = await js.consumer_info(stream, config.durable_name)
        return info.config.ack_wait or config.ack_wait
    return config.ack_wait
