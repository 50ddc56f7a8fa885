"""kill -9 of the coordinator at random moments while schedules fire every second: every
nominal time since each schedule began runs, and none runs twice. The scenario
(``tests/schedule_scenario.py``) is the one ``python -m bench.faults --scenario schedule-kill``
runs in rounds."""

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from protocol.records import RunRecord
from tests.helpers import SCENARIO_LINE
from tests.schedule_scenario import Kill, ScheduleOutcome, count, schedule_kill

KILLS = 3


def _logs(root: Path) -> str:
    return "\n".join(f"--- {p.name} ---\n" + "\n".join(p.read_text(errors="replace")
                                                     .splitlines()[-25:])
                     for p in sorted(root.glob("*.log")))


@pytest.mark.e2e
@pytest.mark.slow
async def test_kill_9_of_the_coordinator_while_schedules_fire_loses_no_time_and_runs_none_twice(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    seed = random.randrange(1 << 30)
    try:
        out = await schedule_kill(tmp_path, random.Random(seed), kills=KILLS)
    except Exception:
        print(f"seed {seed}\n{_logs(tmp_path)}")
        raise
    print(out.describe())
    record_property(SCENARIO_LINE, out.describe())
    assert not out.duplicates, f"a time ran twice (seed {seed}): {out.duplicates}"
    assert not out.lost, f"a nominal time was lost (seed {seed}): {out.lost}"
    assert out.expected == out.runs > 0, f"seed {seed}: {out.describe()}"
    assert not out.not_started, f"seed {seed}: {out.not_started}"
    assert len(out.kills) == KILLS


def _run(schedule: str, nominal: float, created_at: float) -> RunRecord:
    return RunRecord(run_id=f"{schedule}-{nominal}-{created_at}", flow="tick", version="v",
                     schedule=schedule, scheduled_for=nominal, created_at=created_at)


def test_counting_finds_lost_and_doubled_times_and_what_each_kill_caught_up() -> None:
    out = ScheduleOutcome(kills=[Kill(killed_at=103.5, down_s=1.0, spawned_at=104.5,
                                      answered_at=106.0)])
    runs = [_run("every-second", t, t + 0.01) for t in (101.0, 102.0, 103.0)]
    runs += [_run("every-second", 104.0, 105.0)]  # due while down: caught up
    runs += [_run("every-second", t, t + 0.01) for t in (105.0, 106.0)]  # due while starting
    runs += [_run("every-second", 107.0, 107.02), _run("every-second", 107.0, 107.03)]
    runs += [_run("cron-second", t, t + 0.01) for t in (101.0, 103.0)]  # 102 lost
    runs += [_run("cron-second", 104.0, 105.2), _run("every-2s", 104.0, 105.1)]  # caught up
    runs += [_run("every-2s", 102.0, 102.01)]
    count(out, {"every-second": 100.5, "cron-second": 100.5, "every-2s": 100.5}, runs, {})
    assert out.lost == {"cron-second": [102.0]}
    assert out.duplicates == {"every-second": [107.0]}
    assert (out.expected, out.runs) == (7 + 4 + 2, 13)
    [kill] = out.kills
    assert (kill.affected, kill.caught_up) == (5, 3)
    assert kill.catchup_s == pytest.approx(0.7)
    assert kill.caught_up_lateness_s == pytest.approx(1.2)
    assert len(out.lateness_s) == 8 and max(out.lateness_s) == pytest.approx(0.03)
