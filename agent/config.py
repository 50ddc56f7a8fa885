"""How an agent is set up: its options and the id it goes by."""

import os
import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowforge.connection import ConnectOptions
from flowforge.jetstream import DEFAULT_LEASE_S
from protocol.limits import MAX_ID_CHARS
from protocol.subjects import agent_id_fits


@dataclass(frozen=True, slots=True)
class AgentConfig:
    connect: ConnectOptions
    queues: tuple[str, ...]
    functions: dict[str, Callable[..., Any]]
    concurrency: int = 4
    lease_s: float = DEFAULT_LEASE_S
    grace_s: float = 30.0
    heartbeat_s: float = 5.0
    agent_id: str = ""
    pool: str = "thread"
    """Where sync functions run: "thread" (a thread pool) or "process" (killable processes)."""
    imports: tuple[str, ...] = ()
    """What the agent imported; worker processes import the same."""


def default_agent_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(2)}"


def agent_id_for(config: AgentConfig) -> str:
    """The id the agent goes by; under an identity it starts with it (or is it), since the
    coordinator refuses reports from other names."""
    identity = config.connect.identity
    agent_id = config.agent_id or (
        f"{identity}-{default_agent_id()}"[:MAX_ID_CHARS] if identity else default_agent_id())
    if identity and not agent_id_fits(identity, agent_id):
        raise ValueError(f"agent id {agent_id!r} does not fit identity {identity!r}: "
                         f"use {identity!r} or a name starting '{identity}-' (the "
                         "coordinator refuses reports from other names)")
    return agent_id
