"""The Puller against a real nats-server: messages as they are stored, within capacity, after
requests expire, and after the server restarts."""

from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from flowforge.connection import ConnectOptions, connect
from flowforge.embedded import EmbeddedNats
from flowforge.puller import Puller
from tests.helpers import wait_for


@pytest.fixture
async def nc(nats_opts: ConnectOptions) -> AsyncIterator[NATS]:
    conn = await connect(nats_opts, name="puller-test")
    js = conn.jetstream()
    await js.add_stream(name="WORK", subjects=["work.>"])
    await js.add_consumer("WORK", ConsumerConfig(durable_name="w", ack_policy=AckPolicy.EXPLICIT))
    yield conn
    await conn.close()


async def publish(nc: NATS, n: int, start: int = 0) -> None:
    js = nc.jetstream()
    for i in range(start, start + n):
        await js.publish("work.x", str(i).encode())


async def test_messages_arrive_as_stored_without_a_request_each(nc: NATS) -> None:
    got: list[Msg] = []
    puller = Puller(nc, "WORK", "w", got.append, capacity=lambda: 100 - len(got),
                    min_request=25)
    await puller.start()
    try:
        await publish(nc, 60)
        await wait_for(lambda: len(got) == 60)
        assert [int(m.data) for m in got] == list(range(60))
        assert puller.requests <= 3  # one at start, then top-ups of 25 or more
    finally:
        await puller.stop()


async def test_no_more_than_the_capacity_is_delivered(nc: NATS) -> None:
    got: list[Msg] = []
    taken = 0
    puller = Puller(nc, "WORK", "w", got.append, capacity=lambda: 5 - (len(got) - taken))
    await puller.start()
    try:
        await publish(nc, 20)
        await wait_for(lambda: len(got) == 5)
        await nc.flush()
        assert len(got) == 5 and puller.outstanding == 0
        for m in got:  # the owner finishes them: room for five more
            await m.ack()
        taken = 5
        await puller.top_up()
        await wait_for(lambda: len(got) == 10)
        assert [int(m.data) for m in got] == list(range(10))
    finally:
        await puller.stop()


async def test_expired_requests_are_asked_again(nc: NATS) -> None:
    got: list[Msg] = []
    puller = Puller(nc, "WORK", "w", got.append, capacity=lambda: 10, expires_s=0.3,
                    heartbeat_s=0.1)
    await puller.start()
    try:
        first = puller.requests
        await wait_for(lambda: puller.requests >= first + 2, timeout_s=5)  # expired, re-asked
        await publish(nc, 3)
        await wait_for(lambda: len(got) == 3)
    finally:
        await puller.stop()


async def test_after_a_server_restart_messages_flow_again(nc: NATS, nats_server: EmbeddedNats) -> None:
    got: list[Msg] = []
    puller = Puller(nc, "WORK", "w", got.append, capacity=lambda: 50, heartbeat_s=0.2)
    await puller.start()
    try:
        await publish(nc, 2)
        await wait_for(lambda: len(got) == 2)
        await nats_server.stop()
        await nats_server.start()
        await wait_for(lambda: nc.is_connected, timeout_s=20)
        await publish(nc, 2, start=2)
        await wait_for(lambda: len(got) >= 4, timeout_s=20)  # the server forgot our requests
        assert {int(m.data) for m in got} >= {2, 3}
    finally:
        await puller.stop()

