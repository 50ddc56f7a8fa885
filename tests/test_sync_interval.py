"""The embedded nats-server's JetStream ``sync_interval`` is a setting of the coordinator and
of ``flowforge dev``, and reaches the server as asked (read back from its monitoring port)."""

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest

from coordinator.cli import _embedded_nats
from coordinator.cli import build_parser as coordinator_parser
from flowforge.cli import build_parser as dev_parser
from flowforge.embedded import EmbeddedNats
from tests.helpers import free_port


async def _jetstream_config(server: EmbeddedNats, http_port: int) -> dict[str, object]:
    def fetch() -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/varz", timeout=5) as resp:
            return json.load(resp)["jetstream"]["config"]

    return await asyncio.to_thread(fetch)


@pytest.mark.parametrize(("asked", "always", "interval_ns"),
                         [("always", True, None), ("7s", False, 7_000_000_000)])
async def test_the_embedded_server_syncs_as_asked(
    tmp_path: Path, asked: str, always: bool, interval_ns: int | None
) -> None:
    ns = coordinator_parser().parse_args(["--sync-interval", asked, "--data-dir", str(tmp_path),
                                          "--listen", "127.0.0.1:-1"])
    server = _embedded_nats(ns, None)
    http_port = free_port()
    server.extra_conf = f'http: "127.0.0.1:{http_port}"\n'
    async with server:
        config = await _jetstream_config(server, http_port)
    assert config.get("sync_always", False) is always
    if interval_ns is not None:
        assert config["sync_interval"] == interval_ns


def test_a_sync_interval_that_is_not_one_is_refused_clearly(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        coordinator_parser().parse_args(["--sync-interval", "sometimes"])
    assert "'sometimes' is not 'always' or a duration" in capsys.readouterr().err
    ns = dev_parser().parse_args(["dev", "examples/seed_pipelines.py", "--sync-interval", "500ms"])
    assert ns.sync_interval == "500ms"
