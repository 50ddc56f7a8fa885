"""``--creds``: a server run in operator mode (decentralised JWT auth), the coordinator, an
agent and the CLI log in with ``.creds`` files (by flag and by FLOWFORGE_CREDS); a user of an
account the server does not know, or a file that is not a creds file, is one clear line."""

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.worker import Agent, AgentConfig
from coordinator.service import Coordinator, CoordinatorConfig
from flowforge.client import Client
from flowforge.connection import ConnectOptions
from flowforge.embedded import EmbeddedNats
from flowforge.registry import REGISTRY
from protocol.states import RunStatus
from tests import inputflows
from tests.helpers import TEARDOWN_GRACE_S, run_cli
from tests.natsjwt import Operator, make_operator, stranger_account


@pytest.fixture
def operator() -> Operator:
    return make_operator()


@pytest.fixture
async def jwt_server(tmp_path: Path, operator: Operator) -> AsyncIterator[EmbeddedNats]:
    conf = tmp_path / "operator.conf"
    conf.write_text(operator.server_conf)
    server = EmbeddedNats(tmp_path / "nats", port=-1, auth_conf=conf)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_s=TEARDOWN_GRACE_S)


def _cli_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWFORGE_")}
    return {**env, "FLOWFORGE_NATS_URL": url, **extra}


async def test_every_process_logs_in_with_a_creds_file(
    jwt_server: EmbeddedNats, operator: Operator, tmp_path: Path
) -> None:
    def opts(name: str) -> ConnectOptions:
        return ConnectOptions(url=jwt_server.url,
                              creds_file=str(operator.creds(tmp_path / f"{name}.creds", name)))

    flow = inputflows.register_noop()
    coordinator = Coordinator(CoordinatorConfig(connect=opts("coordinator"),
                                                db_path=tmp_path / "db"))
    await coordinator.start()
    serving = asyncio.create_task(coordinator.run())
    agent = Agent(AgentConfig(connect=opts("agent"), queues=("default",),
                              functions=dict(REGISTRY.functions)))
    try:
        await agent.start()
        agent_task = asyncio.create_task(agent.run())
        async with Client(opts("operator")) as client:
            await client.register([flow])
            run = await client.start("noop")
            detail = await client.wait(run.run_id, timeout_s=30)
        assert detail.run.status is RunStatus.SUCCEEDED

        cli_creds = str(operator.creds(tmp_path / "cli.creds", "cli"))
        by_flag = await asyncio.to_thread(
            run_cli, ["flowforge", "runs", "--json", "--creds", cli_creds], _cli_env(jwt_server.url))
        assert by_flag.returncode == 0, by_flag.stderr
        assert run.run_id in by_flag.stdout
        by_env = await asyncio.to_thread(
            run_cli, ["flowforge", "runs", "--json"],
            _cli_env(jwt_server.url, FLOWFORGE_CREDS=cli_creds))
        assert by_env.returncode == 0, by_env.stderr
        assert run.run_id in by_env.stdout
        agent.request_stop()
        await asyncio.wait_for(agent_task, 15)
    finally:
        await agent.shutdown()
        await coordinator.shutdown()
        await asyncio.wait_for(serving, 10)


async def test_a_user_of_an_unknown_account_is_refused_in_one_line(
    jwt_server: EmbeddedNats, operator: Operator, tmp_path: Path
) -> None:
    stranger = operator.creds(tmp_path / "stranger.creds", "stranger", signer=stranger_account())
    done = await asyncio.to_thread(
        run_cli, ["flowforge", "runs", "--creds", str(stranger)], _cli_env(jwt_server.url))
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "refused this login" in done.stderr and "--creds" in done.stderr


@pytest.mark.parametrize(("flag", "content"), [
    ("--creds", ""), ("--creds", "not a creds file\n"), ("--creds", "-----BEGIN NATS USER JWT-----\n"),
    ("--nkey", ""), ("--nkey", "SUNOTASEED\n"), ("--nkey", "x" * 100_000),
])
async def test_a_file_that_is_not_a_credentials_file_is_one_clear_line(
    jwt_server: EmbeddedNats, tmp_path: Path, flag: str, content: str
) -> None:
    """nats-py looped forever on a creds file without its JWT marker and failed with
    ``'NoneType' has no len()`` on an empty one."""
    bad = tmp_path / "bad.file"
    bad.write_text(content)
    done = await asyncio.to_thread(
        run_cli, ["flowforge", "runs", flag, str(bad)], _cli_env(jwt_server.url), 30.0)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"{flag} {bad}: not " in done.stderr and "Traceback" not in done.stderr
