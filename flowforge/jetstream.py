"""Idempotent setup of FlowForge's JetStream streams and consumers."""

import logging

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from protocol.subjects import Subjects

log = logging.getLogger("flowforge.jetstream")

DEFAULT_LEASE_S = 30.0
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


async def ensure_streams(js: JetStreamContext, subjects: Subjects) -> None:
    """The three streams and the coordinator's two consumers (safe to call on every start)."""
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
            ack_wait=DEFAULT_LEASE_S,
            max_ack_pending=MAX_ACK_PENDING,
        ))


async def ensure_task_consumer(
    js: JetStreamContext, subjects: Subjects, queue: str, lease_s: float = DEFAULT_LEASE_S
) -> None:
    """The durable pull consumer shared by every agent of ``queue``."""
    await _ensure_consumer(js, subjects.tasks_stream, ConsumerConfig(
        durable_name=subjects.task_consumer(queue),
        filter_subject=subjects.task(queue),
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=lease_s,
        max_ack_pending=MAX_ACK_PENDING,
    ))


async def _ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    assert config.durable_name is not None
    try:
        await js.consumer_info(stream, config.durable_name)
        return
    except NotFoundError:
        pass
    try:
        await js.add_consumer(stream, config)
    except BadRequestError as exc:  # created concurrently by another process
        log.debug("consumer %s on %s: %s", config.durable_name, stream, exc)
