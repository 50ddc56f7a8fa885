"""A FlowForge deployment on a three-node NATS cluster: tests.cluster's nodes, a coordinator and
agents as processes, each told the nodes in its own order."""

import asyncio
import contextlib
import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.api import StreamInfo

from bench.stack import Stack, free_port
from flowforge.embedded import EmbeddedNats
from tests.cluster import NatsCluster

COORDINATOR_ORDER = ("n1", "n2", "n3")
AGENT_ORDERS = (("n3", "n2", "n1"), ("n2", "n3", "n1"))
"""Agent ``i`` lists the nodes in order ``AGENT_ORDERS[i % 2]``. The nats client shuffles the
list it is given (flowforge.connection does not ask it not to), so the order does not pin a
process to a node: ``BenchCluster.clients`` says where each one sits."""
INFO_TIMEOUT_S = 0.5
"""Stream info asked while a leader is being elected: a short timeout, asked again often."""
CONNZ_TIMEOUT_S = 2.0
FLOWFORGE_CLIENTS = ("flowforge-coordinator", "flowforge-agent")


class BenchCluster(NatsCluster):
    """tests.cluster's nodes, each with a monitoring port (to see which process is connected
    where); a killed node is reaped and the end of every life's log is written to ``log_dir``
    as ``nats-<node>-<life>.log``."""

    def __init__(self, root: Path, log_dir: Path) -> None:
        super().__init__(root)
        self.log_dir = log_dir
        self.http_ports = [free_port() for _ in self.names]
        self.lives: dict[str, int] = dict.fromkeys(self.names, 0)

    def _node(self, i: int) -> EmbeddedNats:
        node = super()._node(i)
        node.extra_conf += f'http: "127.0.0.1:{self.http_ports[i]}"\n'
        self.lives[self.names[i]] += 1
        return node

    async def kill(self, name: str) -> None:
        """kill -9 one node and reap it; its log is kept."""
        node = self.nodes[name]
        self.kill9(name)
        await node.stop()  # it is dead already: this waits for the exit and the log's end
        self._write_log(name, node)

    async def stop(self) -> None:
        nodes = dict(self.nodes)
        await super().stop()
        for name, node in nodes.items():
            self._write_log(name, node)

    def _write_log(self, name: str, node: EmbeddedNats) -> None:
        path = self.log_dir / f"nats-{name}-{self.lives[name]}.log"
        with contextlib.suppress(OSError):
            path.write_text("\n".join(node.log_tail) + "\n")

    async def clients(self) -> dict[str, str]:
        """FlowForge process (its connection name) -> the node it is connected to now."""
        out: dict[str, str] = {}
        for name in list(self.nodes):
            port = self.http_ports[self.names.index(name)]
            try:
                connz = await asyncio.to_thread(_get_json, f"http://127.0.0.1:{port}/connz?limit=1024")
            except (OSError, ValueError):
                continue  # going down or not up yet: its clients are on their way elsewhere
            for conn in connz.get("connections") or []:
                client = str(conn.get("name") or "")
                if client.startswith(FLOWFORGE_CLIENTS):
                    out[client.removeprefix("flowforge-").replace("agent ", "")] = name
        return dict(sorted(out.items()))


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=CONNZ_TIMEOUT_S) as resp:
        return json.loads(resp.read())


async def stream_info(nc: NATS, stream: str) -> StreamInfo | None:
    """The stream's info, or None when JetStream does not answer in INFO_TIMEOUT_S (no leader)."""
    try:
        return await nc.jetstream(timeout=INFO_TIMEOUT_S).stream_info(stream)
    except Exception:  # noqa: BLE001 - timeout, no responders, "no leader", reconnecting
        return None


def leader_of(info: StreamInfo | None) -> str | None:
    return info.cluster.leader if info is not None and info.cluster is not None else None


def all_current(info: StreamInfo | None, replicas: int) -> bool:
    """A leader, and every other replica listed and current (a node that came back caught up)."""
    peers = info.cluster.replicas if info is not None and info.cluster is not None else None
    return (leader_of(info) is not None and peers is not None and len(peers) == replicas - 1
            and all(p.current for p in peers))


@dataclass(slots=True)
class ClusterStack(Stack):
    """``Stack`` on a three-node cluster run by this process: the coordinator gets ``--nats``
    with every node (n1, n2, n3) and ``--db``; agent ``i`` the nodes in ``AGENT_ORDERS[i % 2]``
    and ``FLOWFORGE_TEST_LEDGER`` (``executions.log``: a line per start and end of a task that
    notes it, e.g. tests.mapflows.slow_item)."""

    cluster: BenchCluster | None = None

    @property
    def executions_path(self) -> Path:
        return self.workdir / "executions.log"

    async def _start_nats(self) -> None:
        self.cluster = BenchCluster(self.workdir / "nats", log_dir=self.workdir)
        await self.cluster.start()
        self.url = self.cluster.url(*COORDINATOR_ORDER)

    def _coordinator_nats_args(self) -> list[str]:
        return ["--nats", self.url, "--db", str(self.workdir / "flowforge.db")]

    def _agent_url(self, agent_id: str) -> str:
        assert self.cluster is not None
        i = int(agent_id.removeprefix("agent") or 0)
        return self.cluster.url(*AGENT_ORDERS[i % len(AGENT_ORDERS)])

    def _agent_env(self) -> dict[str, str] | None:
        return {**os.environ, "FLOWFORGE_TEST_LEDGER": str(self.executions_path)}

    async def _stop_nats(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            await cluster.stop()
