"""Rounds of the schedule-kill scenario for ``python -m bench.faults``.

The scenario is the one the test suite runs once (``tests/schedule_scenario.py``: schedules
firing every second, the coordinator killed ``kills`` times and restarted on the same
database); here each round plays it on a fresh stack with the benchmark's seeded random.
"""

import asyncio
import random
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.report import nearest_rank
from bench.rounds import Round, Scenario, keep
from tests.schedule_scenario import DOWN_S, SCHEDULES, ScheduleOutcome, schedule_kill

SCENARIO = Scenario("schedule-kill", "tick", 0, agents=1, concurrency=0)
"""``tasks`` is filled per round: the nominal times expected."""
KILLS = 3


@dataclass(slots=True)
class ScheduleRound(Round):
    """A round of schedule-kill: ``expected`` are nominal times, ``succeeded`` the distinct
    times that ran, ``lost``/``duplicates`` times never run / run twice."""

    runs: int | None = None
    not_started: int | None = None
    kill_details: list[dict[str, Any]] = field(default_factory=list)
    """Per kill: when (epoch s), down for, spawn, answered, runs caught up, catch-up delay."""
    lateness_s: list[float] = field(default_factory=list)
    """Of the fires no kill caught up (created_at - nominal), to the millisecond."""
    lost_times: dict[str, list[float]] = field(default_factory=dict)
    duplicate_times: dict[str, list[float]] = field(default_factory=dict)

    @property
    def bad(self) -> bool:
        return (self.error is not None or bool(self.lost) or bool(self.duplicates)
                or bool(self.not_started))

    @property
    def recoveries(self) -> list[float]:
        return [k["catchup_s"] for k in self.kill_details if k["catchup_s"] is not None]

    def describe(self) -> str:
        delays = ", ".join("-" if k["catchup_s"] is None else f"{k['catchup_s']:.2f}"
                           for k in self.kill_details)
        late = (f", on-time lateness p50 {statistics.median(self.lateness_s):.3f} s"
                if self.lateness_s else "")
        return (f"{self.scenario} [{self.index}]: {self.kills} kills, catch-up {delays or '-'} s"
                f"{late}; {self.expected} times expected, {self.runs} runs, lost {self.lost}, "
                f"duplicates {self.duplicates}, fires not started {self.not_started}"
                + self.footer())


def _fill(rnd: ScheduleRound, out: ScheduleOutcome) -> None:
    rnd.expected, rnd.runs = out.expected, out.runs
    rnd.lost, rnd.duplicates = out.lost_count, out.duplicate_count
    rnd.succeeded, rnd.reruns = out.expected - out.lost_count, 0
    rnd.not_started = sum(len(v) for v in out.not_started.values())
    rnd.lost_times, rnd.duplicate_times = out.lost, out.duplicates
    rnd.kills = len(out.kills)
    rnd.kill_details = [asdict(k) for k in out.kills]
    rnd.lateness_s = [round(s, 3) for s in out.lateness_s]


async def run_schedule_round(sc: Scenario, index: int, rng: random.Random, *, lease_s: float,
                             timeout_s: float, keep_dir: Path, keep_all: bool = False,
                             kills: int = KILLS) -> Round:
    """One round on a fresh stack; an error is recorded, the processes are always stopped.
    (``lease_s`` is the other scenarios': this one sets its own, ``LEASE_S`` of the scenario.)"""
    rnd = ScheduleRound(sc.name, index, expected=0)
    with tempfile.TemporaryDirectory(prefix=f"flowforge-faults-{sc.name}-") as tmp:
        try:
            out = await asyncio.wait_for(schedule_kill(Path(tmp), rng, kills, timeout_s),
                                         3 * timeout_s)
        except Exception as exc:  # noqa: BLE001 - the round failed: say why, go on
            rnd.error = f"{type(exc).__name__}: {exc}"
        else:
            _fill(rnd, out)
        if rnd.bad or keep_all:
            rnd.kept = str(keep(Path(tmp), keep_dir / f"{sc.name}-{index:02d}"))
    return rnd


def schedule_summary(rounds: list[ScheduleRound]) -> dict[str, Any]:
    """What the common summary does not say: runs, fires not started, on-time lateness and
    the lateness of the fires the kills caught up."""
    lateness = [s for r in rounds for s in r.lateness_s]
    caught = [k["caught_up_lateness_s"] for r in rounds for k in r.kill_details
              if k["caught_up_lateness_s"] is not None]
    out: dict[str, Any] = {"runs": sum(r.runs or 0 for r in rounds),
                           "not_started": sum(r.not_started or 0 for r in rounds),
                           "caught_up": sum(k["caught_up"] for r in rounds for k in r.kill_details),
                           "affected": sum(k["affected"] for r in rounds for k in r.kill_details)}
    if lateness:
        out |= {"lateness_samples": len(lateness), "lateness_p50_s": nearest_rank(lateness, 0.5),
                "lateness_p99_s": nearest_rank(lateness, 0.99)}
    if caught:
        out["caught_up_lateness_max_s"] = max(caught)
    return out


def note(s: dict[str, Any], kills: int) -> str:
    """The table's lines about schedule-kill: what it did and what its columns mean."""
    what = ", ".join(f"{x.name} ({f'cron {x.cron}' if x.cron else f'every {x.every_s:g} s'})"
                     for x in SCHEDULES)
    late = (f"p50 {s['lateness_p50_s']:.3f} s, p99 {s['lateness_p99_s']:.3f} s over "
            f"{s['lateness_samples']} fires" if "lateness_samples" in s else "-")
    caught = (f", at most {s['caught_up_lateness_max_s']:.2f} s late"
              if "caught_up_lateness_max_s" in s else "")
    return (f"schedule-kill: schedules {what}; catch-up all, overlap allow_all; {kills} "
            f"coordinator kills a round, each down {DOWN_S[0]:g}-{DOWN_S[1]:g} s\n"
            f"  tasks = nominal times expected ({s['runs']:,} runs, {s['not_started']} fires not "
            "started); recovery = catch-up delay per kill, from the restarted coordinator's "
            "spawn\n  until the runs of the times due while it was down exist "
            f"({s.get('recovery_samples', 0)} of {s['kills']} kills had a time due while down; "
            f"{s['caught_up']} runs caught up{caught}; {s['affected']} affected by a kill)\n"
            f"  lateness (created - nominal) of the fires no kill affected: {late}")
