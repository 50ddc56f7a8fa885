"""A coordinator pointed at a NATS that cannot hold its streams says so in one line, exits 3,
and leaves nothing running (its database threads used to keep a failed process alive)."""

import asyncio
import subprocess
from pathlib import Path

from flowforge.embedded import nats_server_binary
from tests.helpers import env_for, free_port, run_cli


async def test_a_nats_without_jetstream_is_one_clear_line_and_exit_3(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen([str(nats_server_binary()), "-a", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"nats://127.0.0.1:{port}"
        done = await asyncio.to_thread(
            run_cli, ["flowforge-coordinator", "--nats", url, "--db", str(tmp_path / "db"),
                      "--log-level", "ERROR"], env_for(url), 30.0)
    finally:
        server.kill()
        server.wait()
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"flowforge-coordinator: NATS at {url} has no JetStream: start nats-server with -js "
        "(JetStream on), or leave out --nats and the coordinator embeds one"]
