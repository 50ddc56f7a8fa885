"""The consumer of each queue an agent serves: found, created when allowed, or waited for."""

import asyncio
import logging

from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import Error as JsError
from nats.js.errors import NotFoundError

from flowforge.connection import denied
from flowforge.jetstream import ensure_stream, ensure_task_consumer, replicas_for
from protocol.errors import NotAuthorized
from protocol.subjects import Subjects

log = logging.getLogger("flowforge.agent")

ASK_TIMEOUT_S = 1.0
"""A JetStream API request that gets no answer in this long is asked again, unless NATS said
it refused it (a refused request is dropped by the server and would only time out)."""
WAIT_POLL_S = 1.0


async def queue_lease(nc: NATS, subjects: Subjects, queue: str,
                      lease_s: float, poll_s: float = WAIT_POLL_S) -> float:
    """The lease (ack wait) of ``queue``'s consumer.

    An agent may start before any coordinator, or before a flow of its queue is registered: it
    creates the stream and consumer if its credentials allow (the stream as the coordinator
    would, three copies on a cluster; an existing stream is never changed: its settings are the
    coordinator's), else (least privilege: ``flowforge auth init``'s agent may only read
    them) it says so once and waits for the coordinator to create them. Credentials that do
    not allow this queue at all are a clear ``NotAuthorized``, not a bare timeout.
    """
    stream, name = subjects.tasks_stream, subjects.task_consumer(queue)
    quick = nc.jetstream(timeout=ASK_TIMEOUT_S)
    waiting = False
    while True:
        try:
            info = await quick.consumer_info(stream, name)
            return info.config.ack_wait or lease_s
        except NotFoundError:
            pass
        except (TimeoutError, NatsTimeout):
            if (why := denied(nc, name)) is not None:
                raise NotAuthorized(f"NATS does not let this agent use queue {queue!r}: {why}; "
                                    "its credentials are for other queues") from None
            continue  # a slow server: ask again
        if not waiting:
            try:
                await ensure_stream(quick, stream, subjects.wildcard("task"),
                                    replicas_for(nc._server_info), change_existing=False)
                return await ensure_task_consumer(quick, subjects, queue, lease_s)
            except (TimeoutError, NatsTimeout, JsError):
                if denied(nc, "$JS.API") is None:
                    continue  # a slow server: ask again
            log.warning("waiting for the coordinator to create the consumer %s of %s (this "
                        "agent's credentials do not let it create it)", name, stream)
            waiting = True
        await asyncio.sleep(poll_s)
