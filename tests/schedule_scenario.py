"""kill -9 of the coordinator while schedules fire every second (the schedule-kill scenario).

A fresh stack in ``root`` (a nats-server run by this process, a coordinator on a SQLite file
``--lease 2``, one agent importing ``tests.scheduleflows``) and three schedules of the one-task
flow ``tick``, all ``catchup all`` with an hour's window and ``overlap allow_all``: every 1 s,
the per-second cron ``* * * * * *`` (cronsim's optional seconds field) and every 2 s. The
coordinator is killed ``kills`` times, each at a random moment (0.3-2.5 s after the previous
restart answered), down for a random 0-1.5 s, then started again on the same database. Once
every schedule has fired after the last restart and every run succeeded, the scenario counts
from the coordinator's answers:

- expected: each schedule's nominal times from its first (the first after it was put) to the
  newest one run; lost: expected without a run; duplicates: times with more than one run;
  fires not started: recorded fire outcomes other than 'started' (there should be none).
- affected by kill k: the fires that came due after the previous restart answered and before
  this one answered, and whose run was created after the kill (the restarted coordinator
  started them). Of those, caught up: the ones that came due while it was down (by the
  restarted coordinator's spawn). Catch-up delay of kill k: from the spawn until the last
  caught-up run was created. Lateness: a run's created_at minus its nominal time; the
  on-time lateness is that of the fires no kill affected.

The test suite runs it once (``tests/test_schedule_faults.py``); ``python -m bench.faults
--scenario schedule-kill`` runs it in rounds.
"""

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.rounds import wait_until
from bench.stack import Stack
from flowforge.client import Client
from flowforge.connection import ConnectOptions
from flowforge.firetimes import nominal_times
from protocol.errors import FlowForgeError
from protocol.records import RunRecord
from protocol.schedules import Catchup, FireOutcome, FireRecord, Overlap, ScheduleSpec
from protocol.states import RunStatus
from tests import scheduleflows
from tests.helpers import coordinator_answers

FLOW = scheduleflows.FLOW.name
LEASE_S = 2.0
KILL_AFTER_S = (0.3, 2.5)
"""Each kill comes this long (uniform) after the previous restart answered (or the put)."""
DOWN_S = (0.0, 1.5)
"""How long the coordinator stays dead before it is started again (uniform)."""
ASK_TIMEOUT_S = 2.0
COUNT_TIMEOUT_S = 10.0


def _spec(name: str, **timing: object) -> ScheduleSpec:
    return ScheduleSpec(name=name, flow=FLOW, catchup=Catchup.ALL, catchup_window_s=3600.0,
                        overlap=Overlap.ALLOW_ALL, **timing)  # type: ignore[arg-type]


SCHEDULES = (_spec("every-second", every_s=1.0), _spec("cron-second", cron="* * * * * *"),
             _spec("every-2s", every_s=2.0))
INTERVAL_S = {"every-second": 1.0, "cron-second": 1.0, "every-2s": 2.0}


@dataclass(slots=True)
class Kill:
    """One kill -9 of the coordinator and its restart (epoch seconds), and what it caught up."""

    killed_at: float
    """When the killed process was gone (reaped)."""
    down_s: float
    spawned_at: float
    answered_at: float
    """When the restarted coordinator first answered the API."""
    affected: int = 0
    """Fires due from the previous restart answering up to this one answering, started by
    the restarted coordinator."""
    caught_up: int = 0
    """Of those, the ones due while it was down (by ``spawned_at``)."""
    catchup_s: float | None = None
    """From ``spawned_at`` until the last caught-up run was created; None: it caught up none."""
    caught_up_lateness_s: float | None = None
    """The largest lateness of the fires it caught up."""


@dataclass(slots=True)
class ScheduleOutcome:
    """What one schedule-kill scenario did and counted."""

    kills: list[Kill] = field(default_factory=list)
    expected: int = 0
    runs: int = 0
    lost: dict[str, list[float]] = field(default_factory=dict)
    """Schedule -> nominal times that came due and never ran."""
    duplicates: dict[str, list[float]] = field(default_factory=dict)
    """Schedule -> nominal times that ran more than once."""
    not_started: dict[str, list[str]] = field(default_factory=dict)
    """Schedule -> outcomes of its recorded fires other than 'started'."""
    lateness_s: list[float] = field(default_factory=list)
    """Of every fire no kill affected."""

    @property
    def lost_count(self) -> int:
        return sum(len(v) for v in self.lost.values())

    @property
    def duplicate_count(self) -> int:
        return sum(len(v) for v in self.duplicates.values())

    def describe(self) -> str:
        delays = ", ".join("-" if k.catchup_s is None else f"{k.catchup_s:.2f} s"
                           for k in self.kills)
        return (f"schedule-kill: {len(self.kills)} kills (down "
                f"{', '.join(f'{k.down_s:.2f}' for k in self.kills)} s), catch-up {delays}; "
                f"{self.expected} nominal times expected, {self.runs} runs, lost "
                f"{self.lost_count}, duplicates {self.duplicate_count}, fires not started "
                f"{sum(len(v) for v in self.not_started.values())}")


async def schedule_kill(root: Path, rng: random.Random, kills: int = 3,
                        timeout_s: float = 60.0) -> ScheduleOutcome:
    """Play the scenario in ``root`` (logs and database stay there); raises when a wait fails."""
    out = ScheduleOutcome()
    async with Stack(root, agents=1, concurrency=None, lease_s=LEASE_S,
                     imports=("tests.scheduleflows",), nats_in_process=True) as stack:
        async with Client(ConnectOptions(url=stack.url), timeout_s=ASK_TIMEOUT_S) as client:
            await client.register()
            cursors = {s.name: (await client.put_schedule(s)).state.cursor for s in SCHEDULES}
            for _ in range(kills):
                out.kills.append(await _kill_and_restart(stack, rng, timeout_s))
            last = out.kills[-1].answered_at if out.kills else time.time()
            await _until(lambda: _settled(client, last), timeout_s,
                         "every schedule to fire after the last restart, and its runs to succeed",
                         stack)
        async with Client(ConnectOptions(url=stack.url), timeout_s=COUNT_TIMEOUT_S) as patient:
            runs = await _runs(patient)
            fires = {s.name: (await patient.schedule(s.name, fires=1000)).fires for s in SCHEDULES}
    count(out, cursors, runs, fires)
    return out


async def _kill_and_restart(stack: Stack, rng: random.Random, timeout_s: float) -> Kill:
    await asyncio.sleep(rng.uniform(*KILL_AFTER_S))  # a random moment of the firing
    assert stack.coordinator is not None
    stack.coordinator.kill9()
    killed_at = time.time()
    down_s = rng.uniform(*DOWN_S)
    await asyncio.sleep(down_s)  # down: times keep coming due
    spawned_at = time.time()
    stack.spawn_coordinator()
    await _until(lambda: coordinator_answers(stack.url), timeout_s,
                 "the restarted coordinator to answer", stack)
    return Kill(killed_at, down_s, spawned_at, answered_at=time.time())


async def _until(cond: Callable[[], Awaitable[bool] | bool], timeout_s: float, what: str,
                 stack: Stack) -> None:
    """Poll ``cond()`` until true; fail when the coordinator or an agent exits, or on timeout."""
    watch = [p for p in (stack.coordinator, *stack.agent_procs) if p is not None]
    await wait_until(cond, timeout_s, what, watch)


async def _runs(client: Client) -> list[RunRecord]:
    return [r for r in await client.runs(flow=FLOW, limit=1000) if r.schedule in INTERVAL_S]


async def _settled(client: Client, last_restart: float) -> bool:
    """Every schedule ran a time due after the last restart answered; every run succeeded."""
    with contextlib.suppress(FlowForgeError, TimeoutError):
        runs = await _runs(client)
        newest = {name: max((r.scheduled_for or 0.0 for r in runs if r.schedule == name),
                            default=0.0) for name in INTERVAL_S}
        return (all(newest[n] > last_restart + INTERVAL_S[n] for n in INTERVAL_S)
                and all(r.status is RunStatus.SUCCEEDED for r in runs))
    return False


# -- counting -------------------------------------------------------------------------------


def count(out: ScheduleOutcome, cursors: dict[str, float], runs: list[RunRecord],
          fires: dict[str, list[FireRecord]]) -> None:
    """Fill ``out`` from the runs and fire records (pure: the unit tests drive it)."""
    out.runs = len(runs)
    for spec in SCHEDULES:
        name = spec.name
        ran = Counter(r.scheduled_for for r in runs if r.schedule == name)
        newest = max((t for t in ran if t is not None), default=cursors[name])
        expected = list(itertools.takewhile(lambda t, n=newest: t <= n,
                                            nominal_times(spec, cursors[name])))
        out.expected += len(expected)
        if lost := [t for t in expected if t not in ran]:
            out.lost[name] = lost
        if twice := sorted(t for t, n in ran.items() if t is not None and n > 1):
            out.duplicates[name] = twice
        if other := [f.outcome.value for f in fires.get(name, [])
                     if f.outcome is not FireOutcome.STARTED]:
            out.not_started[name] = other
    _lateness(out, runs)


def _lateness(out: ScheduleOutcome, runs: list[RunRecord]) -> None:
    """Split the runs into those each kill affected and the rest; fill the delays."""
    affected: list[list[RunRecord]] = [[] for _ in out.kills]
    for run in runs:
        if run.scheduled_for is None:
            continue
        k = _due_during(out.kills, run.scheduled_for)
        if k is not None and run.created_at >= out.kills[k].killed_at:
            affected[k].append(run)
        else:
            out.lateness_s.append(run.created_at - run.scheduled_for)
    for kill, mine in zip(out.kills, affected, strict=True):
        kill.affected = len(mine)
        mine = [r for r in mine if (r.scheduled_for or 0.0) <= kill.spawned_at]
        kill.caught_up = len(mine)
        if mine:
            kill.catchup_s = max(r.created_at for r in mine) - kill.spawned_at
            kill.caught_up_lateness_s = max(r.created_at - (r.scheduled_for or 0.0) for r in mine)


def _due_during(kills: list[Kill], nominal: float) -> int | None:
    """The kill whose window holds ``nominal``: after the previous restart answered, up to
    this restart answering."""
    previous = float("-inf")
    for k, kill in enumerate(kills):
        if previous < nominal <= kill.answered_at:
            return k
        previous = kill.answered_at
    return None
