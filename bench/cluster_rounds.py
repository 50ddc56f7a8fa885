"""One round of ``cluster-leader-kill``: a fresh three-node NATS cluster, one run of 2,000 tasks,
the node leading the tasks stream killed with kill -9 and restarted, then the next one."""

import asyncio
import contextlib
import math
import random
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from nats.errors import Error as NatsError

from bench.cluster_stack import ClusterStack, all_current, leader_of, stream_info
from bench.rounds import (
    PROBE_TIMEOUT_S,
    ROUND_ERRORS,
    Round,
    Scenario,
    count_or_say_why,
    keep,
    live_procs,
    wait_until,
)
from flowforge.client import Client
from flowforge.connection import ConnectOptions
from protocol.errors import FlowForgeError
from protocol.states import RUN_FINAL, TASK_FINAL
from protocol.subjects import Subjects
from tests import clusterflows

SCENARIO = Scenario("cluster-leader-kill", "slow_fan", 2_000, agents=2, concurrency=4)
"""tests.clusterflows' ``slow_fan``: ``numbers`` → ``slow_item`` mapped over ``n`` items."""
MAPPED = "slow_item"
HOLD_S = 0.02
"""How long each ``slow_item`` holds its slot."""
KILLS_AT = ((0.05, 0.45), (0.50, 0.85))
"""The first kill comes when this fraction of the tasks (uniform in the range) have succeeded,
the second when that one does."""
REPLICAS = 3
TASKS_STREAM = Subjects().tasks_stream


@dataclass(slots=True)
class NodeKill:
    """One node killed with kill -9 (and restarted at once), and how the run got over it."""

    node: str
    was_leader: bool
    """It led the tasks stream (else: the first node killed led it again, and this one had not
    been killed yet)."""
    target: int
    """Killed once this many tasks had succeeded..."""
    at_succeeded: int
    """... and this many had when the count was taken."""
    after_s: float
    """Seconds into the run."""
    clients: list[str] = field(default_factory=list)
    """The FlowForge processes that were connected to it."""
    leader_s: float | None = None
    """From the kill until the tasks stream had a leader again."""
    new_leader: str | None = None
    recovery_s: float | None = None
    """From the kill until, after the leader was back, the succeeded count grew (or the run
    finished)."""
    recovered_by: str | None = None
    current_s: float | None = None
    """From the kill until every replica of the tasks stream was current again."""

    def describe(self, expected: int) -> str:
        what = "tasks leader" if self.was_leader else "not leading"
        if self.clients:
            what += f"; {', '.join(self.clients)} on it"
        out = f"killed {self.node} ({what}) at {self.at_succeeded}/{expected} succeeded"
        if self.leader_s is not None:
            out += f": leader {self.new_leader} after {self.leader_s:.2f} s"
        if self.recovery_s is not None:
            out += f", recovery {self.recovery_s:.2f} s ({self.recovered_by})"
        if self.current_s is not None:
            out += f", replicas current after {self.current_s:.2f} s"
        return out


@dataclass(slots=True)
class ClusterRound(Round):
    """A round with two node kills: each one's recovery is a sample of the recovery columns."""

    node_kills: list[NodeKill] = field(default_factory=list)
    placement: dict[str, str] = field(default_factory=dict)
    """FlowForge process -> the node it was connected to once the stack was up."""
    note: str | None = None

    @property
    def recoveries(self) -> list[float]:
        return [k.recovery_s for k in self.node_kills if k.recovery_s is not None]

    def describe(self) -> str:
        where = ", ".join(f"{proc} on {node}" for proc, node in self.placement.items())
        out = f"{self.scenario} [{self.index}] ({where or 'placement unknown'})"
        for kill in self.node_kills:
            out += f"\n  {kill.describe(self.expected)}"
        if self.note:
            out += f"\n  {self.note}"
        out += (f"\n  lost {self.lost}, finalised twice {self.duplicates}, "
                f"re-runs {self.reruns}")
        return out + self.footer()


class MapProgress:
    """The coordinator's count of the run's succeeded ``slow_item`` instances, and whether the
    run is final; asked through whichever client is given (one off the killed node)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.finished = False

    async def succeeded(self, client: Client) -> int | None:
        """The count, or None when the coordinator does not answer in time."""
        try:
            mapped = await client.instances(self.run_id, MAPPED, limit=0)
            if mapped.status in TASK_FINAL and not self.finished:
                self.finished = (await client.get(self.run_id)).run.status in RUN_FINAL
        except (FlowForgeError, NatsError):
            return None
        return mapped.counts.get("succeeded", 0)


# -- the kills ------------------------------------------------------------------------------


async def reach(stack: ClusterStack, client: Client, progress: MapProgress, target: int,
                timeout_s: float) -> int | None:
    """Wait until ``target`` tasks succeeded: the count then, or None if the run finished."""
    seen = [0]

    async def reached() -> bool:
        got = await progress.succeeded(client)
        if got is not None:
            seen[0] = got
        return progress.finished or seen[0] >= target

    await wait_until(reached, timeout_s, f"{target} tasks to succeed", live_procs(stack))
    return None if progress.finished else seen[0]


async def pick_victim(stack: ClusterStack, client: Client, killed: list[str],
                      rng: random.Random, timeout_s: float) -> tuple[str, bool]:
    """The node leading the tasks stream, unless it was killed already: then one that was not."""
    assert stack.cluster is not None
    leaders: list[str] = []

    async def found() -> bool:
        leader = leader_of(await stream_info(client.nc, TASKS_STREAM))
        if leader is not None:
            leaders.append(leader)
        return leader is not None

    await wait_until(found, timeout_s, "the tasks stream's leader", live_procs(stack))
    if leaders[-1] not in killed:
        return leaders[-1], True
    return rng.choice([n for n in stack.cluster.names if n not in killed]), False


async def kill_and_recover(stack: ClusterStack, progress: MapProgress, nk: NodeKill,
                           timeout_s: float) -> None:
    """kill -9 ``nk.node`` and start it again at once; wait for the recovery, then until every
    replica is current. Watched through a client of the other nodes, so that the watcher's
    own reconnection is not part of what is measured."""
    cluster = stack.cluster
    assert cluster is not None
    nk.clients = [proc for proc, node in (await cluster.clients()).items() if node == nk.node]
    others = cluster.url(*(n for n in cluster.names if n != nk.node))
    async with Client(ConnectOptions(url=others), timeout_s=PROBE_TIMEOUT_S) as watcher:
        killed_at = time.monotonic()
        await cluster.kill(nk.node)
        restart = asyncio.ensure_future(cluster.start(nk.node))
        try:
            await recover(stack, watcher, progress, nk, killed_at, restart, timeout_s)
        finally:
            await restart  # bounded by the node's ready timeout
        await wait_until(lambda: replicas_current(watcher), timeout_s,
                         "every replica of the tasks stream to be current", live_procs(stack))
        nk.current_s = time.monotonic() - killed_at


async def replicas_current(watcher: Client) -> bool:
    return all_current(await stream_info(watcher.nc, TASKS_STREAM), REPLICAS)


async def recover(stack: ClusterStack, watcher: Client, progress: MapProgress, nk: NodeKill,
                  killed_at: float, restart: asyncio.Future[Any], timeout_s: float) -> None:
    """Until the tasks stream has a leader again and, after that, the succeeded count grows."""
    assert stack.cluster is not None
    cluster = stack.cluster

    async def leader_back() -> bool:
        if restart.done():
            restart.result()  # the node could not start again: say why
        leader = leader_of(await stream_info(watcher.nc, TASKS_STREAM))
        if leader is None or (leader == nk.node and nk.node not in cluster.nodes):
            return False
        nk.new_leader = leader
        return True

    await wait_until(leader_back, timeout_s, "the tasks stream to have a leader again",
                     live_procs(stack))
    nk.leader_s = time.monotonic() - killed_at
    base: list[int] = []

    async def progressed() -> bool:
        got = await progress.succeeded(watcher)
        if got is None:
            return False
        base.extend([] if base else [got])
        return got > base[0] or progress.finished

    await wait_until(progressed, timeout_s, "the succeeded count to grow again",
                     live_procs(stack))
    nk.recovery_s = time.monotonic() - killed_at
    nk.recovered_by = "run finished" if progress.finished else "progress"


# -- one round ------------------------------------------------------------------------------


async def play(stack: ClusterStack, sc: Scenario, rnd: ClusterRound, rng: random.Random,
               timeout_s: float) -> None:
    """Start the run, kill twice at random points, wait for the run to finish, count."""
    assert stack.client is not None and stack.cluster is not None
    setup = stack.client
    await setup.register([clusterflows.FLOW])
    await wait_until(lambda: replicas_current(setup), timeout_s,
                     f"the tasks stream to have {REPLICAS} current replicas", live_procs(stack))
    rnd.placement = await stack.cluster.clients()
    targets = [rng.randint(math.ceil(sc.tasks * lo), int(sc.tasks * hi)) for lo, hi in KILLS_AT]
    started_at = time.monotonic()
    run = await setup.start(sc.flow, {"n": sc.tasks, "hold_s": HOLD_S})
    rnd.run_id, progress = run.run_id, MapProgress(run.run_id)
    try:
        async with Client(ConnectOptions(url=stack.url), timeout_s=PROBE_TIMEOUT_S) as client:
            for target in targets:
                at = await reach(stack, client, progress, target, timeout_s)
                if at is None:
                    rnd.note = f"the run finished before {target} tasks succeeded: no more kills"
                    break
                killed = [k.node for k in rnd.node_kills]
                node, was_leader = await pick_victim(stack, client, killed, rng, timeout_s)
                rnd.node_kills.append(NodeKill(node, was_leader, target, at,
                                               time.monotonic() - started_at))
                rnd.kills += 1
                await kill_and_recover(stack, progress, rnd.node_kills[-1], timeout_s)
            await wait_until(lambda: finished(client, progress), timeout_s, "the run to finish",
                             live_procs(stack))
        rnd.wall_s = time.monotonic() - started_at
    finally:
        await count_or_say_why(stack, rnd, lambda client: count(client, rnd))
        count_from_db(stack.workdir / "flowforge.db", rnd)
        rnd.reruns = reruns(stack.executions_path)


async def finished(client: Client, progress: MapProgress) -> bool:
    await progress.succeeded(client)
    return progress.finished


async def count(client: Client, rnd: Round) -> None:
    """Succeeded tasks and the run's state, from the coordinator."""
    assert rnd.run_id is not None
    run = (await client.get(rnd.run_id)).run
    mapped = await client.instances(rnd.run_id, MAPPED, limit=0)
    rnd.run_status = run.status.value
    rnd.succeeded = mapped.counts.get("succeeded", 0)
    missing = rnd.expected - rnd.succeeded
    if run.status in RUN_FINAL:
        rnd.lost = missing
    else:  # a timed-out round: not finished is not (yet) lost
        rnd.unfinished = missing


def count_from_db(db: Path, rnd: Round) -> None:
    """Tasks finalised twice and tasks not succeeded, from the coordinator's own record of each
    instance (``map_instances``: its state and every finished attempt with its outcome) —
    events are core NATS and a subscriber on a killed node would miss some."""
    if rnd.run_id is None or not db.exists():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT idx, status, history FROM map_instances "
                                "WHERE run_id = ? AND task = ?", (rnd.run_id, MAPPED)).fetchall()
    except sqlite3.Error as exc:
        rnd.error = rnd.error or f"the database could not be read: {exc}"
        return
    made = {idx for idx, _, _ in rows}
    rnd.lost_tasks = {f"{MAPPED}~{i}": status for i, status, _ in rows if status != "succeeded"}
    rnd.lost_tasks |= {f"{MAPPED}~{i}": "never made" for i in range(rnd.expected)
                       if i not in made}
    twice: dict[str, Any] = {}
    for idx, _, history in rows:
        wins = [a for a in msgspec.json.decode(history or b"[]")
                if a.get("outcome") == "succeeded"]
        if len(wins) > 1:
            twice[f"{MAPPED}~{idx}"] = wins
    rnd.duplicates, rnd.finalised_twice = len(twice), twice


def reruns(executions: Path) -> int:
    """Executions beyond each task's first, from the agents' ``start`` lines."""
    try:
        lines = executions.read_text().splitlines()
    except OSError:
        return 0
    starts = Counter(line.split()[1] for line in lines if line.startswith("start "))
    return sum(n - 1 for n in starts.values())


async def run_cluster_round(sc: Scenario, index: int, rng: random.Random, *, lease_s: float,
                            timeout_s: float, keep_dir: Path, keep_all: bool = False) -> Round:
    """One round on a fresh cluster; any error is recorded, the processes are always stopped.

    The logs (coordinator, agents, each life of each node, the agents' executions) and the
    database of a bad round (or of every round with ``keep_all``) are copied to
    ``keep_dir/<scenario>-<index>``.
    """
    rnd = ClusterRound(sc.name, index, expected=sc.tasks)
    with tempfile.TemporaryDirectory(prefix=f"flowforge-faults-{sc.name}-") as tmp:
        stack = ClusterStack(Path(tmp), agents=sc.agents, concurrency=sc.concurrency,
                             lease_s=lease_s, imports=("tests.clusterflows",))
        try:
            async with stack:
                await play(stack, sc, rnd, rng, timeout_s)
        except ROUND_ERRORS as exc:
            rnd.error = f"{type(exc).__name__}: {exc}"
        if rnd.bad or keep_all:
            rnd.kept = str(keep(Path(tmp), keep_dir / f"{sc.name}-{index:02d}"))
    return rnd
