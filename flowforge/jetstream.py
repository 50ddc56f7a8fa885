"""Idempotent setup of FlowForge's JetStream streams and consumers."""

import logging

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from protocol.subjects import Subjects

log = logging.getLogger("flowforge.jetstream")

DEFAULT_LEASE_S = 30.0
INBOX_ACK_WAIT_S = 5.0
DUPLICATE_WINDOW_S = 120.0
MAX_ACK_PENDING = 20_000


async def ensure_stream(js: JetStreamContext, name: str, subject: str) -> None:
    """Create a work-queue stream, or bring an existing one to this config."""
    config = StreamConfig(
        name=name,
        subjects=[subject],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


async def ensure_streams(
    js: JetStreamContext, subjects: Subjects, inbox_ack_wait_s: float = INBOX_ACK_WAIT_S
) -> None:
    """The three streams and the coordinator's two consumers (safe to call on every start).

    ``inbox_ack_wait_s`` is how soon reports and triggers that a crashed coordinator had
    fetched but not acknowledged come back to its successor.
    """
    await ensure_stream(js, subjects.tasks_stream, subjects.wildcard("task"))
    await ensure_stream(js, subjects.reports_stream, subjects.wildcard("report"))
    await ensure_stream(js, subjects.triggers_stream, subjects.wildcard("trigger"))
    for stream, durable in (
        (subjects.reports_stream, subjects.reports_consumer),
        (subjects.triggers_stream, subjects.triggers_consumer),
    ):
        await _ensure_consumer(js, stream, ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=inbox_ack_wait_s,
            max_ack_pending=MAX_ACK_PENDING,
        ), update=True)


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
