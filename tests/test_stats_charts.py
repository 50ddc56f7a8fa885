"""``flowforge stats --flow F [--days N] [--until DATE] [--json]``: the summary charts in the
terminal, against a coordinator holding runs of known outcomes and times (tests/stats_seed.py);
bad input refused before or by the coordinator with a clear message."""

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from coordinator.service import Coordinator
from flowforge.cli import main
from flowforge.stats_charts import charts_text, segments
from protocol.stats import DayRuns, FlowStats, TaskDurations
from tests import stats_seed
from tests.helpers import run_cli

PLAIN = {"NO_COLOR": "", "FORCE_COLOR": ""}
NIGHTLY_TEXT = """\
nightly: runs per UTC day (2025-06-13 to 2025-06-15), by their status now
2025-06-13 Fri │███████████████████████████▓▓▓▓▓▓▓▓▓▓▓▓▓     3  ✓2 ✗1
2025-06-14 Sat │█████████████░░░░░░░░░░░░░░                  2  ✓1 ■1
2025-06-15 Sun │█████████████▒▒▒▒▒▒▒▒▒▒▒▒▒▒                  2  ✓1 ●1
               █ ✓ succeeded  ▓ ✗ failed  ░ ■ cancelled  ▒ ● running  · ○ pending

task durations: succeeded attempts in the 6 newest finished runs of the window (p50, p95: nearest rank)
TASK     ATTEMPTS  P50     P95     MAX
extract  6         3.0 s   6.0 s   6.0 s
fanout   24        300 ms  500 ms  500 ms
load     4         20.0 s  40.0 s  40.0 s

failure rate: 1 of 6 finished runs failed (16.7 %); 7 runs in the window
"""


@pytest.fixture
async def seeded(tmp_path: Path,
                 start_coordinator: Callable[..., Awaitable[Coordinator]]) -> Coordinator:
    await stats_seed.seed(tmp_path / "ff.db")
    return await start_coordinator(db_path=tmp_path / "ff.db")


async def stats(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, ["flowforge", "stats", *args], env | PLAIN, 60)


async def test_the_charts_of_one_flow_read_as_bars_a_table_and_a_rate(
        seeded: Coordinator, cli_env: dict[str, str]) -> None:
    done = await stats(cli_env, "--flow", "nightly", "--days", "3", "--until", "2025-06-15")
    assert done.returncode == 0, done.stderr
    assert done.stdout == NIGHTLY_TEXT
    assert "\x1b" not in done.stdout  # not a terminal: no colour


async def test_every_flow_gets_a_failure_rate_row_and_json_has_the_same_figures(
        seeded: Coordinator, cli_env: dict[str, str]) -> None:
    text = await stats(cli_env, "--days", "3", "--until", "2025-06-15")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "2025-06-15 Sun │" in lines[3] and lines[3].endswith("6  ✓4 ✗1 ●1")
    assert "hourly   ping     3         1.5 s   2.5 s   2.5 s" in lines
    assert "hourly   4     4         1       0          25.0 %" in lines
    assert "nightly  7     6         1       1          16.7 %" in lines

    done = await stats(cli_env, "--flow", "hourly", "--days", "2", "--until", "2025-06-15",
                       "--json")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert [(d["day"], d["counts"]["succeeded"], d["counts"]["failed"])
            for d in figures["runs_per_day"]] == [("2025-06-14", 0, 0), ("2025-06-15", 3, 1)]
    assert figures["durations"] == [{"flow": "hourly", "task": "ping", "count": 3,
                                     "p50_s": 1.5, "p95_s": 2.5, "max_s": 2.5}]
    assert figures["failures"][0]["failure_rate"] == 0.25


async def test_colour_is_forced_by_force_color_and_plain_stats_keeps_its_figures(
        seeded: Coordinator, cli_env: dict[str, str]) -> None:
    coloured = await asyncio.to_thread(
        run_cli, ["flowforge", "stats", "--flow", "nightly", "--days", "3", "--until",
                  "2025-06-15"], cli_env | {"NO_COLOR": "", "FORCE_COLOR": "1"}, 60)
    assert "\x1b[32m" + "█" * 27 + "\x1b[0m\x1b[31m" + "▓" * 13 + "\x1b[0m" in coloured.stdout
    figures = await stats(cli_env)
    assert figures.returncode == 0 and figures.stdout.startswith("coordinator up ")


async def test_an_unknown_flow_is_an_error_that_names_it(
        seeded: Coordinator, cli_env: dict[str, str]) -> None:
    done = await stats(cli_env, "--flow", "nope")
    assert done.returncode == 2
    assert done.stderr.strip() == "flowforge stats: no flow named 'nope' is registered"


@pytest.mark.parametrize(("args", "message"), [
    (["--days", "0"], "argument --days: 0 days is out of range: 1 to 90"),
    (["--days", "91"], "argument --days: 91 days is out of range: 1 to 90"),
    (["--days", "two"], "argument --days: not a whole number of days: 'two'"),
    (["--until", "2025-13-01"], "argument --until: not a date (YYYY-MM-DD): '2025-13-01'"),
    (["--flow", "a flow"], "argument --flow: not a flow name: 'a flow'"),
])
def test_bad_arguments_are_refused_before_connecting(
        args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["stats", "--nats", "nats://127.0.0.1:1", *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def _day(**counts: int) -> DayRuns:
    return DayRuns(day="2025-06-15", start=stats_seed.LAST_DAY, counts=counts)


def test_a_bar_is_split_by_status_and_a_rare_status_still_shows() -> None:
    assert segments(_day(succeeded=2, failed=1), top=3, width=30) == [20, 10, 0, 0, 0]
    assert segments(_day(succeeded=999, failed=1), top=1000, width=40) == [40, 1, 0, 0, 0]
    assert segments(_day(), top=0) == [0] * 5
    assert segments(_day(running=1), top=10, width=40) == [0, 0, 0, 4, 0]


def test_names_from_the_answer_cannot_write_to_the_terminal() -> None:
    figures = FlowStats(flow=None, days=1, since=stats_seed.LAST_DAY,
                        until=stats_seed.LAST_DAY + 86400, runs_per_day=[_day(succeeded=1)],
                        sample_runs=1, durations=[TaskDurations(
                            flow="f", task="t\x1b]0;owned\x07", count=1, p50_s=1, p95_s=1,
                            max_s=1)])
    text = charts_text(figures, colour=True)
    assert "t\\x1b]0;owned\\x07" in text
    assert text.count("\x1b") == text.count("\x1b[")  # only our colour codes
