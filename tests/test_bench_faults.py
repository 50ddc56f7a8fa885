"""``python -m bench.faults``: the summary's arithmetic (schedule-kill's too), and one real
cluster-leader-kill round."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cluster_rounds import ClusterRound, NodeKill, reruns
from bench.faults import build_parser, config_from_args, summarise
from bench.rounds import Round
from bench.schedule_rounds import ScheduleRound, note

REPO = Path(__file__).resolve().parent.parent


def _kill(node: str, recovery_s: float | None) -> NodeKill:
    return NodeKill(node, True, 100, 101, 1.0, recovery_s=recovery_s)


def test_each_node_kill_is_a_recovery_sample_and_a_single_kill_round_one() -> None:
    cluster: list[Round] = [ClusterRound("cluster-leader-kill", 1, expected=10, succeeded=10, lost=0,
                            duplicates=0, reruns=2, kills=2,
                            node_kills=[_kill("n1", 5.0), _kill("n2", 1.0)]),
               ClusterRound("cluster-leader-kill", 2, expected=10, succeeded=10, lost=0,
                            duplicates=0, reruns=0, kills=2,
                            node_kills=[_kill("n3", 3.0), _kill("n1", None)])]
    s = summarise(cluster)
    assert (s["kills"], s["reruns"], s["recovery_samples"]) == (4, 2, 3)
    assert (s["recovery_median_s"], s["recovery_max_s"]) == (3.0, 5.0)
    single = summarise([Round("agent-kill", 1, expected=5, succeeded=5, lost=0, kills=1,
                              recovery_s=2.0)])
    assert (single["recovery_samples"], single["recovery_median_s"]) == (1, 2.0)


def test_reruns_are_executions_beyond_each_tasks_first(tmp_path: Path) -> None:
    notes = tmp_path / "executions.log"
    notes.write_text("start a~1 1.0\nend a~1 1.1\nstart a~2 1.0\nstart a~1 2.0\nend a~1 2.1\n"
                     "start a~1 3.0\n")
    assert reruns(notes) == 2
    assert reruns(tmp_path / "none.log") == 0


def test_cluster_tasks_is_checked_and_recorded() -> None:
    cfg = config_from_args(build_parser().parse_args(
        ["--scenario", "cluster-leader-kill", "--cluster-tasks", "500", "--seed", "1"]))
    assert (cfg.scenarios, cfg.cluster_tasks) == (("cluster-leader-kill",), 500)
    with pytest.raises(ValueError, match="--cluster-tasks"):
        config_from_args(build_parser().parse_args(["--cluster-tasks", "5"]))


def _schedule_round(index: int, catchups: list[float | None], lateness: list[float],
                    not_started: int = 0) -> ScheduleRound:
    kills = [{"caught_up": 2, "affected": 3, "catchup_s": c,
              "caught_up_lateness_s": None if c is None else c + 1.0} for c in catchups]
    return ScheduleRound("schedule-kill", index, expected=30, succeeded=30, lost=0, duplicates=0,
                         reruns=0, kills=len(kills), runs=30, not_started=not_started,
                         kill_details=kills, lateness_s=lateness)


def test_schedule_kill_rounds_sample_each_catch_up_and_the_on_time_lateness() -> None:
    rounds: list[Round] = [_schedule_round(1, [0.5, 0.4, None], [0.001, 0.002]),
                           _schedule_round(2, [0.6, 0.3, 0.9], [0.003], not_started=1)]
    s = summarise(rounds)
    assert (s["kills"], s["tasks"], s["runs"], s["recovery_samples"]) == (6, 60, 60, 5)
    assert (s["recovery_median_s"], s["recovery_max_s"]) == (0.5, 0.9)
    assert (s["lateness_p50_s"], s["lateness_p99_s"], s["lateness_samples"]) == (0.002, 0.003, 3)
    assert (s["caught_up"], s["affected"], s["caught_up_lateness_max_s"]) == (12, 18, 1.9)
    assert (s["not_started"], rounds[0].bad, rounds[1].bad) == (1, False, True)
    assert "5 of 6 kills had a time due while down" in note(s, 3)
    cfg = config_from_args(build_parser().parse_args(
        ["--scenario", "schedule-kill", "--schedule-kills", "5", "--seed", "1"]))
    assert (cfg.scenarios, cfg.schedule_kills) == (("schedule-kill",), 5)
    with pytest.raises(ValueError, match="--schedule-kills"):
        config_from_args(build_parser().parse_args(["--schedule-kills", "0"]))


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_one_cluster_leader_kill_round_kills_twice_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.faults", "--scenario", "cluster-leader-kill", "--rounds",
         "1", "--seed", "3", "--cluster-tasks", "1000", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=230,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    s = result["summary"]["cluster-leader-kill"]
    assert (s["failed"], s["kills"], s["tasks"], s["lost"], s["duplicates"]) == (0, 2, 1000, 0, 0)
    assert s["recovery_samples"] == 2
    [rnd] = result["rounds"]["cluster-leader-kill"]
    assert rnd["node_kills"][0]["was_leader"] is True
    assert len({k["node"] for k in rnd["node_kills"]}) == 2
    row = next(line for line in proc.stdout.splitlines() if line.startswith("cluster-leader-kill "))
    assert row.split()[1:7] == ["1", "0", "2", "1,000", "0", "0"]
