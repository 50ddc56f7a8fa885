"""One round of a fault scenario: a fresh stack, one run, one kill -9, the counts."""

import asyncio
import contextlib
import math
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.errors import Error as NatsError

from bench.ledger import Ledger, Tally
from bench.stack import Proc, Stack, StackError
from flowforge.client import Client
from flowforge.connection import ConnectOptions
from protocol.errors import FlowForgeError
from protocol.states import RUN_FINAL, TaskStatus
from tests import faultflows  # noqa: F401 - registers faults_200 and faults_500

POLL_S = 0.02
"""How often a waited-for condition is checked (and the restarted coordinator asked)."""
STATUS_POLL_S = 0.5
"""Run events are core NATS: the run's status is also asked this often, in case one was missed."""
PROBE_TIMEOUT_S = 2.0
COUNT_TIMEOUT_S = 10.0
KILL_AT = (0.05, 0.85)
"""The kill comes when this fraction of the tasks (uniform in the range) have succeeded."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """What to run and what to kill."""

    name: str
    flow: str
    tasks: int
    agents: int
    concurrency: int


SCENARIOS = {
    "agent-kill": Scenario("agent-kill", "faults_200", 200, agents=2, concurrency=8),
    "coordinator-kill": Scenario("coordinator-kill", "faults_500", 500, agents=1, concurrency=16),
}


class RoundError(RuntimeError):
    """A round's condition did not come true in time."""


ROUND_ERRORS = (RoundError, StackError, FlowForgeError, NatsError, OSError, TimeoutError,
                subprocess.SubprocessError)
"""What fails a round (recorded in it) instead of the whole benchmark."""


@dataclass(slots=True)
class Round:
    """One fresh stack, one run, one kill: what happened, for the table and the JSON."""

    scenario: str
    index: int
    expected: int
    run_id: str | None = None
    error: str | None = None
    run_status: str | None = None
    succeeded: int | None = None
    lost: int | None = None
    """Tasks that did not succeed, once the run was final."""
    unfinished: int | None = None
    """Tasks that had not succeeded when the round gave up on a run still going."""
    lost_tasks: dict[str, str] = field(default_factory=dict)
    """Task -> final status, for every task that did not succeed."""
    duplicates: int | None = None
    finalised_twice: dict[str, Any] = field(default_factory=dict)
    """Task -> its events (seconds since the kill, status, agent, attempt)."""
    reruns: int | None = None
    kills: int = 0
    kill_target: int | None = None
    kill_at_succeeded: int | None = None
    kill_after_s: float | None = None
    victim: str | None = None
    victim_running: int | None = None
    api_s: float | None = None
    recovery_s: float | None = None
    recovered_by: str | None = None
    wall_s: float | None = None
    kept: str | None = None

    @property
    def bad(self) -> bool:
        return self.error is not None or bool(self.lost) or bool(self.duplicates)

    @property
    def recoveries(self) -> list[float]:
        """This round's samples of the recovery columns: one per kill it measured."""
        return [] if self.recovery_s is None else [self.recovery_s]

    def describe(self) -> str:
        """One progress line for stderr."""
        head = f"{self.scenario} [{self.index}]"
        if self.kills:
            who = self.victim or "coordinator"
            head += (f": killed {who} at {self.kill_at_succeeded}/{self.expected} succeeded "
                     f"({self.kill_after_s:.2f} s into the run)")
        if self.api_s is not None:
            head += f", API back after {self.api_s:.3f} s"
        if self.recovery_s is not None:
            head += f", recovery {self.recovery_s:.3f} s ({self.recovered_by})"
        head += f", lost {self.lost}, finalised twice {self.duplicates}"
        return head + self.footer()

    def footer(self) -> str:
        """The end of the progress line: unfinished tasks, the error, where the logs are."""
        out = ""
        if self.unfinished is not None:
            out += f", {self.unfinished} tasks unfinished"
        if self.error:
            out += f"\n  FAILED: {self.error.splitlines()[0][:200]}"
        if self.kept:
            out += f"\n  logs kept in {self.kept}"
        return out


# -- waiting --------------------------------------------------------------------------------


async def wait_until(cond: Callable[[], Awaitable[bool] | bool], timeout_s: float, what: str,
                     watch: list[Proc]) -> None:
    """Poll ``cond`` every POLL_S; fail when a watched process exits or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = cond()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        for proc in watch:
            proc.check_alive()
        if time.monotonic() > deadline:
            raise RoundError(f"gave up after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(POLL_S)


def live_procs(stack: Stack) -> list[Proc]:
    procs = [stack.coordinator, *stack.agent_procs]
    return [p for p in procs if p is not None and p.popen.returncode is None]


class RunProbe:
    """Asks the coordinator about the run with a short timeout, and says when it finished."""

    def __init__(self, client: Client, tally: Tally, run_id: str) -> None:
        self.client, self.tally, self.run_id = client, tally, run_id
        self._asked_at = 0.0
        self.finished = False

    async def succeeded(self) -> tuple[int, bool] | None:
        """(succeeded count, finished) from the coordinator, or None when it does not answer."""
        with contextlib.suppress(FlowForgeError):
            run = (await self.client.get(self.run_id)).run
            self.finished = self.finished or run.status in RUN_FINAL
            return run.counts.succeeded, run.status in RUN_FINAL
        return None

    async def done(self) -> bool:
        """The run's final event arrived, or (every STATUS_POLL_S) the coordinator says final."""
        if self.finished or self.tally.finished_at is not None:
            return True
        if time.monotonic() - self._asked_at >= STATUS_POLL_S:
            self._asked_at = time.monotonic()
            await self.succeeded()
        return self.finished


# -- scenarios ------------------------------------------------------------------------------


async def kill_an_agent(stack: Stack, probe: RunProbe, rnd: Round, rng: random.Random,
                        timeout_s: float) -> None:
    """kill -9 one agent; recovery ends when one of its tasks starts elsewhere or the run ends."""
    i = rng.randrange(len(stack.agent_procs))
    victim, rnd.victim = stack.agent_procs[i], f"agent{i}"
    tally = probe.tally
    killed_at = time.monotonic()
    rnd.victim_running = tally.mark_kill(rnd.victim, killed_at)
    victim.kill9()
    rnd.kills += 1
    await wait_until(lambda: tally.recovered_at is not None or probe.done(), timeout_s,
                     f"a task of {rnd.victim} to start elsewhere", live_procs(stack))
    if tally.recovered_at is not None:
        rnd.recovery_s, rnd.recovered_by = tally.recovered_at - killed_at, "restarted elsewhere"
    else:
        end = tally.finished_at or time.monotonic()
        rnd.recovery_s, rnd.recovered_by = end - killed_at, "run finished"


async def kill_the_coordinator(stack: Stack, probe: RunProbe, rnd: Round, rng: random.Random,
                               timeout_s: float) -> None:
    """kill -9 the coordinator and restart it; recovery ends when succeeded grows again."""
    assert stack.coordinator is not None
    killed_at = time.monotonic()
    probe.tally.mark_kill(None, killed_at)
    stack.coordinator.kill9()
    rnd.kills += 1
    stack.spawn_coordinator()
    first: list[int] = []

    async def answers() -> bool:
        got = await probe.succeeded()
        if got is not None:
            first.append(got[0])
            rnd.api_s = time.monotonic() - killed_at
        return got is not None

    await wait_until(answers, timeout_s, "the restarted coordinator to answer", live_procs(stack))

    async def progressed() -> bool:
        got = await probe.succeeded()
        return got is not None and (got[0] > first[0] or got[1])

    await wait_until(progressed, timeout_s, "the succeeded count to grow after the restart",
                     live_procs(stack))
    rnd.recovery_s = time.monotonic() - killed_at
    rnd.recovered_by = "progress" if not probe.finished else "run finished"


Killer = Callable[[Stack, RunProbe, Round, random.Random, float], Awaitable[None]]
KILLERS: dict[str, Killer] = {"agent-kill": kill_an_agent, "coordinator-kill": kill_the_coordinator}


# -- one round ------------------------------------------------------------------------------


async def play(stack: Stack, ledger: Ledger, sc: Scenario, rnd: Round, rng: random.Random,
               timeout_s: float) -> None:
    """Start the run, kill at a random point, wait for the run to finish, count."""
    assert stack.client is not None
    await stack.client.register()
    rnd.kill_target = rng.randint(math.ceil(sc.tasks * KILL_AT[0]), int(sc.tasks * KILL_AT[1]))
    started_at = time.monotonic()
    run = await stack.client.start(sc.flow)
    rnd.run_id = run.run_id
    tally = ledger.tally(run.run_id)
    async with Client(ConnectOptions(url=stack.url), timeout_s=PROBE_TIMEOUT_S) as client:
        probe = RunProbe(client, tally, run.run_id)
        try:
            await wait_until(lambda: tally.distinct_succeeded >= (rnd.kill_target or 0), timeout_s,
                             f"{rnd.kill_target} tasks to succeed", live_procs(stack))
            rnd.kill_at_succeeded = tally.distinct_succeeded
            rnd.kill_after_s = time.monotonic() - started_at
            await KILLERS[sc.name](stack, probe, rnd, rng, timeout_s)
            await wait_until(probe.done, timeout_s, "the run to finish", live_procs(stack))
            rnd.wall_s = (tally.finished_at or time.monotonic()) - started_at
        finally:
            await count_or_say_why(stack, rnd, lambda client: count(client, tally, rnd))


async def count_or_say_why(stack: Stack, rnd: Round,
                           counter: Callable[[Client], Awaitable[None]]) -> None:
    """Count with a patient client (a busy machine can be slow to answer); a count that
    cannot be taken marks the round failed instead of leaving "lost" empty."""
    async with Client(ConnectOptions(url=stack.url), timeout_s=COUNT_TIMEOUT_S) as client:
        for attempt in range(3):
            try:
                await counter(client)
                return
            except FlowForgeError as exc:
                why = exc
                await asyncio.sleep(0.5 * (attempt + 1))
    if rnd.error is None:
        rnd.error = f"the final count could not be taken: {why}"


async def count(client: Client, tally: Tally, rnd: Round) -> None:
    """The final state from the coordinator, and what the events said about duplicates."""
    assert rnd.run_id is not None
    detail = await client.get(rnd.run_id)
    rnd.run_status = detail.run.status.value
    ok = [t for t in detail.tasks if t.status is TaskStatus.SUCCEEDED]
    rnd.succeeded = len(ok)
    missing = rnd.expected - len(ok)
    if detail.run.status in RUN_FINAL:
        rnd.lost = missing
    else:  # a timed-out round: not finished is not (yet) lost
        rnd.unfinished = missing
    rnd.lost_tasks = {t.task: t.status.value for t in detail.tasks
                      if t.status is not TaskStatus.SUCCEEDED}
    twice = tally.finalised_twice()
    rnd.duplicates, rnd.reruns = len(twice), tally.reruns()
    base = tally.killed_at or 0.0
    rnd.finalised_twice = {task: [(round(at - base, 3), *rest) for at, *rest in tally.history[task]]
                           for task in twice}


async def run_round(sc: Scenario, index: int, rng: random.Random, *, lease_s: float,
                    timeout_s: float, keep_dir: Path, keep_all: bool = False) -> Round:
    """One round on a fresh stack; any error is recorded, the processes are always stopped.

    The logs and database of a bad round (or of every round with ``keep_all``) are copied to
    ``keep_dir/<scenario>-<index>``.
    """
    rnd = Round(sc.name, index, expected=sc.tasks)
    with tempfile.TemporaryDirectory(prefix=f"flowforge-faults-{sc.name}-") as tmp:
        stack = Stack(Path(tmp), agents=sc.agents, concurrency=sc.concurrency,
                      lease_s=lease_s, imports=("tests.faultflows",), nats_in_process=True)
        try:
            async with stack:
                ledger = await Ledger.follow(stack.url)
                try:
                    await play(stack, ledger, sc, rnd, rng, timeout_s)
                finally:
                    await ledger.close()
        except ROUND_ERRORS as exc:
            rnd.error = f"{type(exc).__name__}: {exc}"
        if rnd.bad or keep_all:
            rnd.kept = str(keep(Path(tmp), keep_dir / f"{sc.name}-{index:02d}"))
    return rnd


def keep(workdir: Path, dest: Path) -> Path:
    """Copy the process logs and the database of a bad round out of its temporary directory."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in workdir.iterdir():
        if path.is_file() and (path.suffix == ".log" or path.name.startswith("flowforge.db")):
            shutil.copy2(path, dest / path.name)
    return dest
