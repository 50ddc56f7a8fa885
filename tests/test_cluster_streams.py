"""An agent on a NATS cluster that finds its queue's consumer missing (it started before a flow
of its queue was registered, or before any coordinator) makes what is missing as the
coordinator would, and never changes the coordinator's replicated tasks stream."""


import pytest

from agent.consumers import queue_lease
from flowforge.connection import ConnectOptions, connect
from flowforge.jetstream import ensure_streams
from protocol.subjects import Subjects
from tests.cluster import NatsCluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def _replicas(cluster: NatsCluster, stream: str) -> int:
    nc = await connect(ConnectOptions(url=cluster.url()), name="test")
    try:
        return (await nc.jetstream(timeout=10).stream_info(stream)).config.num_replicas or 1
    finally:
        await nc.close()


async def test_an_agent_before_its_queue_is_known_leaves_the_tasks_stream_replicated(
    cluster: NatsCluster,
) -> None:
    s = Subjects()
    coordinator = await connect(ConnectOptions(url=cluster.url("n1")), name="test-coordinator")
    try:
        await ensure_streams(coordinator.jetstream(), s, replicas=3)  # no queue known yet
    finally:
        await coordinator.close()
    agent = await connect(ConnectOptions(url=cluster.url("n3")), name="test-agent")
    try:
        assert await queue_lease(agent, s, "default", lease_s=5.0) == 5.0
        info = await agent.jetstream(timeout=10).consumer_info(s.tasks_stream,
                                                               s.task_consumer("default"))
        assert info.config.num_replicas in (0, 3)  # 0: as many as its stream
    finally:
        await agent.close()
    assert await _replicas(cluster, s.tasks_stream) == 3


async def test_an_agent_before_any_coordinator_makes_the_tasks_stream_as_it_would(
    cluster: NatsCluster,
) -> None:
    s = Subjects()
    agent = await connect(ConnectOptions(url=cluster.url("n2")), name="test-agent")
    try:
        await queue_lease(agent, s, "default", lease_s=5.0)
    finally:
        await agent.close()
    assert await _replicas(cluster, s.tasks_stream) == 3
