"""``--metrics HOST:PORT``: Prometheus text on ``GET /metrics``, served from the event loop.

Served on the loop (not by prometheus-client's thread server) so that the collectors read the
coordinator's and the agent's in-memory state from the thread that changes it: no locks on
the hot paths, no dict changing size under a scrape. ``flowforge dev`` serves the
coordinator's and the agent's figures from one endpoint.
"""

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from flowforge.connection import env
from protocol.errors import FlowForgeError

log = logging.getLogger("flowforge.metrics")


class MetricsAddressError(FlowForgeError):
    """``--metrics HOST:PORT`` cannot be listened on."""


MAX_REQUEST_HEAD_BYTES = 16 * 1024
REQUEST_TIMEOUT_S = 10.0
PATHS = ("/metrics", "/")


class MetricsServer:
    """``await start()`` → the URL; ``stop()`` is idempotent. Plain HTTP without login, like
    any exporter: listen on 127.0.0.1 or a network only Prometheus reaches."""

    def __init__(self, collectors: Iterable[Collector], host: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        for collector in collectors:
            self.registry.register(collector)
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  limit=MAX_REQUEST_HEAD_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]  # port 0: the one the OS gave
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._clients):
            task.cancel()
        with contextlib.suppress(Exception):
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, ctype, body = await self._answer(reader)
                head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
                writer.write(head.encode("latin-1") + body)
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError) as exc:
            log.debug("metrics request dropped: %r", exc)
        finally:
            if task is not None:
                self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        method, _, rest = request_line.partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
        if path not in PATHS:
            return "404 Not Found", "text/plain", b"the metrics are at /metrics\n"
        headers = dict(line.split(":", 1) for line in lines if ":" in line)
        accept = next((v.strip() for k, v in headers.items() if k.lower() == "accept"), "")
        encode, ctype = choose_encoder(accept)
        body = encode(self.registry)
        return "200 OK", ctype, b"" if method == "HEAD" else body


def metrics_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0: one the OS picks); an argparse type."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (say 127.0.0.1:9464)")
    return host.strip("[]") or "127.0.0.1", int(port)


def add_metrics_arg(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--metrics", default=env("METRICS"), type=metrics_address,
                        metavar="HOST:PORT", help=f"serve {what} to Prometheus on "
                        "http://HOST:PORT/metrics (port 0: any free one) [FLOWFORGE_METRICS] "
                        "(default: off)")


@contextlib.asynccontextmanager
async def serving(address: tuple[str, int] | None,
                  collectors: Iterable[Collector]) -> AsyncIterator[str | None]:
    """Serve the collectors at ``address`` while inside (nothing when it is None); yields the
    URL. Raises MetricsAddressError when the address cannot be listened on."""
    if address is None:
        yield None
        return
    server = MetricsServer(collectors, *address)
    try:
        url = await server.start()
    except OSError as exc:  # taken, or not an address of this host
        raise MetricsAddressError(f"--metrics {address[0]}:{address[1]}: cannot listen there "
                                  f"({exc.strerror or exc})") from None
    log.info("metrics on %s", url)
    try:
        yield url
    finally:
        await server.stop()


def counter(name: str, doc: str, labels: Sequence[str],
            rows: Iterable[tuple[Sequence[str], float]]) -> CounterMetricFamily:
    """A counter family (``name`` without ``_total``: the library adds it)."""
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, n in rows:
        family.add_metric(values, n)
    return family


def gauge(name: str, doc: str, labels: Sequence[str],
          rows: Iterable[tuple[Sequence[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, n in rows:
        family.add_metric(values, n)
    return family


def histogram(name: str, doc: str, labels: Sequence[str], bounds: Sequence[float],
              rows: Iterable[tuple[Sequence[str], Sequence[int], float]]) -> HistogramMetricFamily:
    """A histogram family from cumulative bucket counts (one per bound, then +Inf)."""
    family = HistogramMetricFamily(name, doc, labels=labels)
    edges = [_edge(b) for b in bounds] + ["+Inf"]
    for values, cumulative, total in rows:
        family.add_metric(values, list(zip(edges, cumulative, strict=True)), total)
    return family


def _edge(bound: float) -> str:
    return repr(float(bound))
