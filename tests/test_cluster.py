"""FlowForge on a real three-node NATS cluster (JetStream replicated three times): the
coordinator and the agent on different nodes; the node leading the tasks stream killed with
kill -9 mid-run, then, once it is back, the next leader — the run ends with every task
finalised once."""

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from flowforge.client import Client
from flowforge.connection import ConnectOptions, connect
from protocol.states import RunStatus
from protocol.subjects import Subjects
from tests import clusterflows
from tests.cluster import NatsCluster
from tests.helpers import SCENARIO_LINE, Proc, coordinator_answers, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


async def _stack(cluster: NatsCluster, spawn: Callable[..., Proc], tmp_path: Path,
                 ledger: Path | None = None, concurrency: int = 8) -> None:
    spawn("flowforge-coordinator", "--db", str(tmp_path / "ff.db"), "--lease", "5",
          env={"FLOWFORGE_NATS_URL": cluster.url("n1", "n2", "n3")})
    await wait_for(lambda: coordinator_answers(cluster.url("n1")), timeout_s=90)
    env = {"FLOWFORGE_TEST_LEDGER": str(ledger)} if ledger else {}
    spawn("flowforge-agent", "--import", "tests.clusterflows", "--lease", "5",
          "--concurrency", str(concurrency),
          env={"FLOWFORGE_NATS_URL": cluster.url("n3", "n2", "n1"), **env})


async def test_a_run_on_a_three_node_cluster_with_streams_replicated_three_times(
    cluster: NatsCluster, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    await _stack(cluster, spawn, tmp_path)
    async with Client(ConnectOptions(url=cluster.url("n2"))) as client:
        await client.register([clusterflows.FLOW])
        run = await client.start("slow_fan", {"n": 20, "hold_s": 0.0})
        detail = await client.wait(run.run_id, timeout_s=120)
    assert detail.run.status is RunStatus.SUCCEEDED
    nc = await connect(ConnectOptions(url=cluster.url("n1")), name="test")
    try:
        info = await nc.jetstream().stream_info(Subjects().tasks_stream)
        assert info.config.num_replicas == 3

        async def two_peers() -> bool:  # the leader lists its peers once they answered it
            found = await nc.jetstream().stream_info(Subjects().tasks_stream)
            return found.cluster is not None and len(found.cluster.replicas or []) == 2

        await wait_for(two_peers, timeout_s=30)
    finally:
        await nc.close()


@pytest.mark.slow
async def test_kill_9_of_the_tasks_stream_leader_then_the_next_loses_and_repeats_nothing(
    cluster: NatsCluster, spawn: Callable[..., Proc], tmp_path: Path,
    record_property: Callable[[str, object], None]
) -> None:
    n = 2_000
    ledger = tmp_path / "ledger.txt"
    await _stack(cluster, spawn, tmp_path, ledger)
    stream = Subjects().tasks_stream
    async with Client(ConnectOptions(url=cluster.url())) as client:
        await client.register([clusterflows.FLOW])
        run = await client.start("slow_fan", {"n": n, "hold_s": 0.02})
        killed = []
        for share in (0.2, 0.5):
            await wait_for(lambda s=share: _done(ledger) >= n * s, timeout_s=120)  # noqa: B023
            leader = await _leader(cluster, stream)
            if leader in killed:  # it leads again: "another node" is the next to go
                leader = next(n for n in cluster.names if n not in killed)
            cluster.kill9(leader)
            killed.append(leader)
            await cluster.start(leader)  # back with its store: it catches up as a follower
            await wait_for(lambda: _current(cluster, stream), timeout_s=60)
        detail = await client.wait(run.run_id, timeout_s=240)
    assert len(set(killed)) == 2, killed  # the leader, then another node
    assert detail.run.status is RunStatus.SUCCEEDED, killed
    [rec] = [t for t in detail.tasks if t.task == "slow_item"]
    assert msgspec.json.decode(rec.output) == list(range(n)), "a task was lost"
    with sqlite3.connect(tmp_path / "ff.db") as db:
        rows = db.execute("SELECT idx, status, history FROM map_instances").fetchall()
    assert sorted(r[0] for r in rows) == list(range(n))
    assert {r[1] for r in rows} == {"succeeded"}
    twice = [r[0] for r in rows if sum(a["outcome"] == "succeeded"
                                       for a in msgspec.json.decode(r[2] or b"[]")) > 1]
    assert not twice, f"finalised twice: {twice[:10]}"
    record_property(SCENARIO_LINE, f"cluster-leader-kill: {n:,} tasks, killed {killed[0]} "
                    f"(tasks leader) then {killed[1]}; lost 0, finalised twice 0")


def _done(ledger: Path) -> int:
    if not ledger.exists():
        return 0
    return sum(1 for line in ledger.read_text().splitlines() if line.startswith("end "))


async def _leader(cluster: NatsCluster, stream: str) -> str:
    nc = await connect(ConnectOptions(url=cluster.url()), name="test")
    try:
        for _ in range(200):
            leader = await cluster.leader(nc, stream)
            if leader is not None:
                return leader
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
    raise AssertionError(f"no leader for {stream}")


async def _current(cluster: NatsCluster, stream: str) -> bool:
    """Every replica of the stream is current (the node that came back caught up)."""
    nc = await connect(ConnectOptions(url=cluster.url()), name="test")
    try:
        info = await nc.jetstream().stream_info(stream)
        peers = info.cluster.replicas if info.cluster else None
        return bool(info.cluster and info.cluster.leader and peers and len(peers) == 2
                    and all(p.current for p in peers))
    except Exception:  # noqa: BLE001 - no leader yet
        return False
    finally:
        await nc.close()



async def test_a_stream_with_other_settings_is_said_so_and_changed_or_refused(
    cluster: NatsCluster, nats_server, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from flowforge.jetstream import StreamMismatch, ensure_stream

    caplog.set_level(logging.WARNING, logger="flowforge.jetstream")
    nc = await connect(ConnectOptions(url=cluster.url()), name="test")
    try:
        js = nc.jetstream()
        await ensure_stream(js, "S1", "s1.>", replicas=1, patience_s=60)
        await ensure_stream(js, "S1", "s1.>", replicas=3, patience_s=60)
        assert "stream S1 exists with other settings: replicas 1 (asked 3)" in caplog.text
        assert (await js.stream_info("S1")).config.num_replicas == 3
    finally:
        await nc.close()
    single = await connect(ConnectOptions(url=nats_server.url), name="test")
    try:
        await ensure_stream(single.jetstream(), "S2", "s2.>", replicas=1)
        with pytest.raises(StreamMismatch, match="stream S2 exists with other settings"):
            await ensure_stream(single.jetstream(), "S2", "s2.>", replicas=3)
    finally:
        await single.close()
