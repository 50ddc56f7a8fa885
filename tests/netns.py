"""Hosts on one machine: a network namespace per host, all joined by a bridge (a veth pair
each), and a three-node NATS cluster on three of them.

A partition is a host's link set down: its processes keep running and hear nothing, as when a
cable is pulled (no closed socket, no reset). Needs root and iproute2; ``unavailable()`` says
why not. Names carry the pid of the process that made them, so what a killed test left behind
is removed by the next one.
"""

import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client as NATS

from flowforge.embedded import EmbeddedNats

NATS_PORT, ROUTE_PORT, HTTP_PORT = 4222, 6222, 8222
SERVER_PING = "1s"
"""Servers ping their routes (and clients) this often; the default (2 min) leaves a node cut
off counted as a route for minutes, and the interest of its lost clients with it: requests
routed to a queue subscriber that is gone vanish."""
_OURS = re.compile(r"^ffn(\d+)-([0-9a-f]+)-")


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2 (the ip command)"
    try:
        _ip("netns", "list")
    except OSError as exc:
        return str(exc)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> None:
    """Namespaces and bridges of processes that are gone (a test killed mid-way)."""
    for line in _ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        m = _OURS.match(name)
        if m and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                _ip("netns", "del", name)
            with contextlib.suppress(OSError):
                _ip("link", "del", f"ffb{m.group(2)}")


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    ns: str
    ip: str
    link: str
    """The bridge-side end of its veth pair: set down, the host is cut off."""

    @property
    def prefix(self) -> tuple[str, ...]:
        """Run a command on this host."""
        return ("ip", "netns", "exec", self.ns)


class Network:
    """A bridge in the root namespace (address .1, so the test itself reaches every host) and
    a namespace per host on a /24 of 10.0.0.0/8 picked at random."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.bridge = f"ffb{self.tag}"
        self.net = f"10.{random.randrange(100, 250)}.{random.randrange(256)}"
        self.hosts: dict[str, Host] = {}

    def __enter__(self) -> "Network":
        remove_leftovers()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.net}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def __exit__(self, *exc: object) -> None:
        for host in self.hosts.values():
            with contextlib.suppress(OSError):
                _ip("netns", "del", host.ns)
        with contextlib.suppress(OSError):
            _ip("link", "del", self.bridge)

    def add(self, name: str) -> Host:
        n = len(self.hosts) + 2
        host = Host(name, f"ffn{os.getpid()}-{self.tag}-{name}", f"{self.net}.{n}",
                    f"ff{self.tag}{n}")
        _ip("netns", "add", host.ns)
        self.hosts[name] = host
        _ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.ns)
        _ip("link", "set", host.link, "master", self.bridge, "up")
        _ip("-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        _ip("-n", host.ns, "link", "set", "eth0", "up")
        _ip("-n", host.ns, "link", "set", "lo", "up")
        return host

    def cut(self, name: str) -> None:
        _ip("link", "set", self.hosts[name].link, "down")

    def heal(self, name: str) -> None:
        _ip("link", "set", self.hosts[name].link, "up")


class HostCluster:
    """Three nats-server nodes with JetStream, ``n1``..``n3``, each on its own host, with the
    monitoring port open (``connz``: who is connected where)."""

    def __init__(self, net: Network, root: Path) -> None:
        self.net, self.root = net, root
        self.names = ["n1", "n2", "n3"]
        self.nodes: dict[str, EmbeddedNats] = {}

    def host(self, name: str) -> Host:
        return self.net.hosts[name]

    def url(self, *names: str) -> str:
        return ",".join(f"nats://{self.host(n).ip}:{NATS_PORT}" for n in names or self.names)

    async def start(self) -> None:
        for name in self.names:
            if name not in self.net.hosts:
                self.net.add(name)
        for name in self.names:
            host = self.host(name)
            routes = ", ".join(f"nats-route://{self.host(o).ip}:{ROUTE_PORT}"
                               for o in self.names if o != name)
            conf = (f'server_name: "{name}"\nhttp: "{host.ip}:{HTTP_PORT}"\n'
                    f'ping_interval: "{SERVER_PING}"\nping_max: 3\n'
                    f'cluster {{\n  name: "ff"\n  listen: "{host.ip}:{ROUTE_PORT}"\n'
                    f"  routes: [{routes}]\n}}\n")
            self.nodes[name] = EmbeddedNats(self.root / name, host=host.ip, port=NATS_PORT,
                                            extra_conf=conf, command_prefix=host.prefix)
        await asyncio.gather(*(n.start(ready_timeout_s=60) for n in self.nodes.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop(grace_s=2) for n in self.nodes.values()))

    async def connections(self, name: str) -> list[str]:
        """The names of the clients connected to node ``name`` now ([] if it cannot say)."""
        url = f"http://{self.host(name).ip}:{HTTP_PORT}/connz?limit=1000"

        def fetch() -> list[str]:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return [c.get("name", "") for c in json.load(resp).get("connections") or []]

        try:
            return await asyncio.to_thread(fetch)
        except OSError:
            return []


async def jetstream_ready(nc: NATS) -> bool:
    """A meta leader is elected: JetStream answers."""
    try:
        await nc.jetstream().account_info()
    except Exception:  # noqa: BLE001 - not yet
        return False
    return True
