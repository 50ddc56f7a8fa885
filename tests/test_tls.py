"""TLS end to end: the embedded server serves TLS with certificates made here; the coordinator,
an agent and a client connect with the CA; without it, or with bad files, a clear error."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from agent.worker import Agent, AgentConfig
from coordinator.service import Coordinator, CoordinatorConfig
from flowforge.auth import default_identities, write_auth_dir
from flowforge.client import Client
from flowforge.connection import ConnectOptions
from flowforge.embedded import EmbeddedNats
from flowforge.registry import REGISTRY
from protocol.errors import NotConnected
from protocol.states import RunStatus
from tests import inputflows
from tests.helpers import TEARDOWN_GRACE_S


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "server.pem",
             "key": tmp_path / "server.key"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    return paths


@pytest.fixture
async def tls_server(tmp_path: Path, certs: dict[str, Path]) -> AsyncIterator[EmbeddedNats]:
    auth = write_auth_dir(tmp_path / "auth", "flowforge", default_identities())
    server = EmbeddedNats(tmp_path / "nats", port=-1, auth_conf=auth.server_conf,
                          tls_cert=certs["cert"], tls_key=certs["key"])
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_s=TEARDOWN_GRACE_S)


def _opts(server: EmbeddedNats, tmp_path: Path, identity: str, ca: Path | None) -> ConnectOptions:
    return ConnectOptions(url=server.url, identity=identity, tls_ca=str(ca) if ca else None,
                          nkey_seed_file=str(tmp_path / "auth" / f"{identity}.nk"))


async def test_a_flow_runs_over_tls_with_roles_enforced(
    tls_server: EmbeddedNats, certs: dict[str, Path], tmp_path: Path
) -> None:
    assert tls_server.url.startswith("tls://")
    flow = inputflows.register_noop()
    coordinator = Coordinator(CoordinatorConfig(
        connect=_opts(tls_server, tmp_path, "coordinator", certs["ca"]), db_path=tmp_path / "db"))
    await coordinator.start()
    serving = asyncio.create_task(coordinator.run())
    agent: Agent | None = None
    try:
        async with Client(_opts(tls_server, tmp_path, "operator", certs["ca"])) as client:
            await client.register([flow])
            agent = Agent(AgentConfig(connect=_opts(tls_server, tmp_path, "agent", certs["ca"]),
                                      queues=("default",), functions=dict(REGISTRY.functions)))
            await agent.start()
            agent_task = asyncio.create_task(agent.run())
            run = await client.start("noop")
            detail = await client.wait(run.run_id, timeout_s=30)
            assert detail.run.status is RunStatus.SUCCEEDED
            agent.request_stop()
            await asyncio.wait_for(agent_task, 15)
    finally:
        if agent is not None:
            await agent.shutdown()
        await coordinator.shutdown()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10)


async def test_without_the_ca_the_connection_fails_with_a_clear_error(
    tls_server: EmbeddedNats, tmp_path: Path
) -> None:
    with pytest.raises(NotConnected, match="cannot reach NATS"):
        async with Client(_opts(tls_server, tmp_path, "operator", None)):
            pass


async def test_tls_files_that_cannot_be_read_are_one_clear_error(
    tls_server: EmbeddedNats, tmp_path: Path
) -> None:
    with pytest.raises(NotConnected, match="cannot use the TLS files"):
        async with Client(_opts(tls_server, tmp_path, "operator", tmp_path / "missing.pem")):
            pass


def test_the_embedded_server_warns_when_it_listens_beyond_localhost_unsecured(
    tmp_path: Path, certs: dict[str, Path]
) -> None:
    assert EmbeddedNats(tmp_path, host="127.0.0.1").exposure_warning() is None
    open_one = EmbeddedNats(tmp_path, host="0.0.0.0").exposure_warning()
    assert open_one is not None and "authorization" in open_one and "TLS" in open_one
    secured = EmbeddedNats(tmp_path, host="0.0.0.0", auth_conf=tmp_path / "a.conf",
                           tls_cert=certs["cert"], tls_key=certs["key"])
    assert secured.exposure_warning() is None
