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
from protocol.experiments import DEFAULT_MAX_METRIC_POINTS
from protocol.limits import MAX_ID_CHARS
from protocol.subjects import agent_id_fits

THREAD_SLOTS = 16
"""Default slots with the thread pool: task functions mostly wait (on I/O, other services);
a sync no-op fan-out ran at ~2,100 tasks/s with 2 slots and ~7,600 with 16 (bench.run's
defaults workload, 2 cores). CPU-bound functions belong in the process pool."""
PREFETCH_PER_SLOT = 4
"""Default prefetch window per slot (like Celery's prefetch multiplier of 4): with 16 slots,
1 → 2,000 → 1 no-ops ran at ~5,100 tasks/s without a window and ~7,600 with one."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    connect: ConnectOptions
    queues: tuple[str, ...]
    functions: dict[str, Callable[..., Any]]
    concurrency: int = THREAD_SLOTS
    prefetch: int | None = None
    """Task messages each queue may hold beyond its free slots while its tasks are short
    (``agent.slots.SHORT_TASK_S``); None: ``PREFETCH_PER_SLOT`` per slot; 0: none."""
    lease_s: float = DEFAULT_LEASE_S
    grace_s: float = 30.0
    heartbeat_s: float = 5.0
    agent_id: str = ""
    pool: str = "thread"
    """Where sync functions run: "thread" (a thread pool) or "process" (killable processes)."""
    imports: tuple[str, ...] = ()
    """What the agent imported; worker processes import the same."""
    max_metric_points: int = DEFAULT_MAX_METRIC_POINTS
    """Metric points, results and artifacts one attempt may log (``ctx.log_metric``...)."""


def default_concurrency(pool: str) -> int:
    """Slots when none are given: THREAD_SLOTS for threads, one process per core."""
    return THREAD_SLOTS if pool == "thread" else os.cpu_count() or 2


def prefetch_of(config: AgentConfig, share: int) -> int:
    """The prefetch window of a queue with ``share`` slots."""
    return PREFETCH_PER_SLOT * share if config.prefetch is None else config.prefetch


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
