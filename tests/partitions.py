"""Partition scenarios on separate hosts (network namespaces, ``tests/netns.py``): each nats
node, the coordinator and each agent on its own host, a host cut off by setting its link down.

Every scenario runs one ``slow_fan`` run (a mapped task of ``n`` items, each holding its slot
a while), cuts a host off, heals it, and counts from the coordinator's SQLite file — the
source of truth — what became of every item: lost (the run's output misses it), finalised
twice (two succeeded attempts in its history), and how long recovery took. The test suite
runs each once (``tests/test_partitions.py``); ``python -m bench.faults`` runs them in rounds.
"""

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from flowforge.client import Client
from flowforge.connection import ConnectOptions, connect
from protocol.states import RunStatus
from tests import clusterflows
from tests.helpers import REPO, Proc, env_for, script
from tests.netns import HostCluster, Network, jetstream_ready

LEASE_S = 2.0
"""The task lease of the coordinator and agents (redelivery after this long unheard)."""
ACTIVE_LEASE_S = 15.0
"""The coordinator's (the default): more than a JetStream leader election takes, so losing a
node costs it no restart."""
PING_S = 1.0
"""Every process pings its server this often: three unanswered and it moves to another."""
POLL_S = 0.05


class ScenarioError(RuntimeError):
    """A scenario's condition did not come true in time."""


@dataclass(slots=True)
class Outcome:
    """What one scenario did and counted."""

    scenario: str
    expected: int
    succeeded: int | None = None
    lost: int | None = None
    finalised_twice: int | None = None
    recovery_s: float | None = None
    """From the cut (or heal, where the scenario says) until the run moves on again."""
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def bad(self) -> bool:
        return self.error is not None or bool(self.lost) or bool(self.finalised_twice)

    def describe(self) -> str:
        facts = ", ".join(f"{k} {v}" for k, v in self.facts.items())
        rec = "-" if self.recovery_s is None else f"{self.recovery_s:.2f} s"
        line = (f"{self.scenario}: {facts}; lost {self.lost}, finalised twice "
                f"{self.finalised_twice}, recovery {rec}")
        return line + (f"\n  FAILED: {self.error}" if self.error else "")


async def until(cond: Callable[[], Awaitable[bool] | bool], timeout_s: float, what: str,
                watch: Sequence[Proc] = ()) -> float:
    """Poll ``cond``; the time it came true. Fails when a watched process exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = cond()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic()
        for proc in watch:
            if proc.popen.poll() is not None:
                raise ScenarioError(f"{proc.args[4:6]} exited while waiting for {what}:\n"
                                    + "\n".join(proc.log().splitlines()[-15:]))
        if time.monotonic() > deadline:
            raise ScenarioError(f"gave up after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(POLL_S)


class Stage:
    """Three nats nodes (hosts n1-n3), a coordinator (host ``c``, or beside a node) and two
    agents (hosts a1, a2), as real processes; the test itself talks over the bridge."""

    def __init__(self, root: Path, coordinator_host: str = "c", concurrency: int = 4,
                 active_lease_s: float = ACTIVE_LEASE_S) -> None:
        self.root = root
        self.net = Network()
        self.cluster = HostCluster(self.net, root / "nats")
        self.coordinator_host = coordinator_host
        self.active_lease_s = active_lease_s
        self.concurrency = concurrency
        self.db = root / "ff.db"
        self.ledger = root / "ledger.txt"
        self.procs: list[Proc] = []
        self.coordinator: Proc | None = None
        self.agents: dict[str, Proc] = {}

    async def __aenter__(self) -> "Stage":
        self.root.mkdir(parents=True, exist_ok=True)
        self.net.__enter__()
        try:
            await self._start()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _start(self) -> None:
        await self.cluster.start()
        nc = await connect(self.options(), name="test")
        try:
            await until(lambda: jetstream_ready(nc), 60, "JetStream's meta leader")
        finally:
            await nc.close()
        self.coordinator = self.spawn(self.coordinator_host, "flowforge-coordinator",
                                      "--db", str(self.db), "--lease", str(LEASE_S),
                                      "--active-lease", str(self.active_lease_s))
        await until(self._answers, 90, "the coordinator", [self.coordinator])
        for name in ("a1", "a2"):
            self.agents[name] = self.spawn(
                name, "flowforge-agent", "--import", "tests.clusterflows", "--agent-id", name,
                "--lease", str(LEASE_S), "--concurrency", str(self.concurrency))

    async def __aexit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            await asyncio.to_thread(proc.stop, 10)
        await self.cluster.stop()
        self.net.__exit__()

    def options(self) -> ConnectOptions:
        return ConnectOptions(url=self.cluster.url(), ping_interval_s=PING_S)

    def spawn(self, host: str, *args: str) -> Proc:
        h = self.net.hosts.get(host) or self.net.add(host)
        env = {**env_for(self.cluster.url()), "FLOWFORGE_PING_INTERVAL": str(PING_S),
               "FLOWFORGE_TEST_LEDGER": str(self.ledger)}
        proc = Proc([*h.prefix, *script(list(args))],
                    self.root / f"{len(self.procs)}-{host}-{Path(args[0]).name}.log", env, REPO)
        self.procs.append(proc)
        return proc

    async def _answers(self) -> bool:
        try:
            async with Client(self.options(), timeout_s=2.0) as c:
                await c.flows()
        except Exception:  # noqa: BLE001 - not yet
            return False
        return True

    async def start_run(self, n: int, hold_s: float) -> str:
        async with Client(self.options(), timeout_s=30.0) as c:
            await c.register([clusterflows.FLOW])
            return (await c.start("slow_fan", {"n": n, "hold_s": hold_s})).run_id

    # -- what the database says --------------------------------------------------------------

    def rows(self) -> list[tuple[int, str, str | None, int, list[dict[str, Any]]]]:
        """(index, status, agent, attempt, history) of every mapped item."""
        with sqlite3.connect(self.db, timeout=10) as db:
            found = db.execute("SELECT idx, status, agent_id, attempt, history "
                               "FROM map_instances ORDER BY idx").fetchall()
        return [(i, s, a, n, msgspec.json.decode(h or b"[]")) for i, s, a, n, h in found]

    def run_status(self, run_id: str) -> str | None:
        with sqlite3.connect(self.db, timeout=10) as db:
            row = db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def succeeded(self) -> int:
        return sum(1 for r in self.rows() if r[1] == "succeeded")

    def fingerprint(self, run_id: str) -> tuple[object, ...]:
        """Everything a commit about the run would change."""
        with sqlite3.connect(self.db, timeout=10) as db:
            return (db.execute("SELECT status, finished_at FROM runs WHERE run_id = ?",
                               (run_id,)).fetchall(),
                    db.execute("SELECT task, status, attempt, agent_id, started_at, "
                               "finished_at FROM map_instances ORDER BY idx").fetchall(),
                    db.execute("SELECT task, status, attempt FROM task_instances "
                               "WHERE run_id = ? ORDER BY task", (run_id,)).fetchall())

    def ended(self) -> int:
        """Items the agents finished, by their ledger."""
        if not self.ledger.exists():
            return 0
        return sum(1 for line in self.ledger.read_text().splitlines() if line.startswith("end "))

    async def finish(self, run_id: str, outcome: Outcome, timeout_s: float = 120) -> None:
        """Wait for the run to end; count lost and finalised-twice items from the database."""
        watch = [p for p in (self.coordinator, *self.agents.values()) if p is not None]
        await until(lambda: self.run_status(run_id) in ("succeeded", "failed", "cancelled"),
                    timeout_s, "the run to finish", watch)
        with sqlite3.connect(self.db, timeout=10) as db:  # the truth, whoever answers now
            [(raw,)] = db.execute("SELECT output FROM task_instances WHERE run_id = ? AND "
                                  "task = 'slow_item'", (run_id,)).fetchall()
        output = msgspec.json.decode(raw) if raw else []
        rows = self.rows()
        outcome.succeeded = sum(1 for r in rows if r[1] == "succeeded")
        outcome.lost = outcome.expected - len(set(output) & set(range(outcome.expected)))
        outcome.finalised_twice = sum(
            1 for r in rows if sum(a.get("outcome") == "succeeded" for a in r[4]) > 1)
        status = self.run_status(run_id)
        outcome.facts["run"] = status
        if status != RunStatus.SUCCEEDED.value:
            outcome.error = f"the run ended {status}"
