"""JsPublisher against a real nats-server: stored, no stream, an API error, many in flight."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from flowforge import jspub
from flowforge.connection import ConnectOptions, connect
from flowforge.jspub import JsPublisher, PublishError


@pytest.fixture
async def pub(nats_opts: ConnectOptions) -> AsyncIterator[tuple[NATS, JsPublisher]]:
    nc = await connect(nats_opts, name="jspub-test")
    await nc.jetstream().add_stream(name="STORE", subjects=["store.>"])
    publisher = JsPublisher(nc)
    await publisher.start()
    yield nc, publisher
    await publisher.stop()
    await nc.close()


async def test_a_stored_message_resolves_to_its_stream_sequence(pub: tuple[NATS, JsPublisher]) -> None:
    _, publisher = pub
    first = await (await publisher.publish("store.a", b"1"))
    second = await (await publisher.publish("store.a", b"2"))
    assert (first, second) == (1, 2) and publisher.pending == 0


async def test_many_in_flight_resolve_in_order(pub: tuple[NATS, JsPublisher]) -> None:
    _, publisher = pub
    futures = [await publisher.publish("store.b", str(i).encode()) for i in range(500)]
    assert await asyncio.gather(*futures) == list(range(1, 501))


async def test_a_subject_no_stream_stores_fails_clearly(pub: tuple[NATS, JsPublisher]) -> None:
    _, publisher = pub
    with pytest.raises(PublishError, match="no JetStream stream"):
        await asyncio.wait_for(await publisher.publish("nowhere.x", b"1"), 5)


async def test_an_api_error_is_raised_with_its_description(pub: tuple[NATS, JsPublisher]) -> None:
    _, publisher = pub
    with pytest.raises(PublishError, match="expected stream does not match"):
        await asyncio.wait_for(await publisher.publish(
            "store.c", b"1", headers={"Nats-Expected-Stream": "OTHER"}), 5)


async def test_with_an_ack_timeout_an_ack_that_never_comes_fails_the_future(
    nats_opts: ConnectOptions, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jspub, "SWEEP_EVERY_S", 0.05)  # looked for late acks every 1 s
    nc = await connect(nats_opts, name="jspub-timeout-test")
    publisher = JsPublisher(nc, ack_timeout_s=0.2)
    await publisher.start()
    try:
        await nc.subscribe("silent.x")  # a responder that never answers: no 503, no ack
        stored = await publisher.publish("silent.x", b"1")
        with pytest.raises(PublishError, match=r"no ack from JetStream within 0\.2 s"):
            await asyncio.wait_for(stored, 10)
        assert publisher.pending == 0
    finally:
        await publisher.stop()
        await nc.close()
