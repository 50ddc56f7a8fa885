"""A coordinator's first steps on the bus: its streams, then the namespace's lease."""

import asyncio
import logging
import math
from dataclasses import replace
from typing import TYPE_CHECKING

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.js.errors import ServiceUnavailableError

from coordinator.active_lease import ActiveLease
from flowforge.connection import ConnectOptions
from flowforge.jetstream import INBOX_ACK_WAIT_S, JS_READY_S, ensure_streams, replicas_for
from protocol.errors import NotConnected
from protocol.subjects import Subjects

if TYPE_CHECKING:
    from coordinator.service import CoordinatorConfig

log = logging.getLogger("flowforge.coordinator")


def pinging_within_lease(config: "CoordinatorConfig") -> ConnectOptions:
    """The coordinator's connection: a server gone silent is noticed (three unanswered pings)
    well within the lease, and left for another."""
    opts = config.connect
    return replace(opts, ping_interval_s=min(opts.ping_interval_s, config.active_lease_s / 8))


async def take_the_bus(nc: NATS, subjects: Subjects, config: "CoordinatorConfig",
                       standby: asyncio.Event, resuming: bool = False) -> ActiveLease:
    """Make the streams (waiting while a cluster elects its leaders), then hold the lease of
    the active coordinator — as a standby until the active one stops. ``resuming``: this
    coordinator was cut off past its lease; it waits for JetStream as long as it takes, then
    takes the lease again unless another coordinator took over meanwhile."""
    js = nc.jetstream()
    try:
        if not nc._server_info.get("jetstream"):  # else: wait while it elects leaders
            raise ServiceUnavailableError
        replicas = config.replicas or replicas_for(nc._server_info)
        log.info("streams with %d replica(s)%s", replicas, "" if config.replicas
                 else " (--replicas not given: 3 on a NATS cluster, else 1)")
        await ensure_streams(js, subjects, min(config.lease_s, INBOX_ACK_WAIT_S), replicas,
                             patience_s=math.inf if resuming else JS_READY_S)
    except (ServiceUnavailableError, NoRespondersError):
        raise NotConnected(
            f"NATS at {config.connect.url} has no JetStream: start nats-server with -js "
            "(JetStream on), or leave out --nats and the coordinator embeds one") from None
    lease = ActiveLease(nc, subjects.lease_bucket, config.db_path, config.active_lease_s,
                        replicas)
    await lease.acquire(standby, resuming)  # a standby waits here
    return lease

