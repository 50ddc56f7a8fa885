"""``python -m bench.run``: the comparison's arithmetic, and a real smoke run as a subprocess."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import compare
from bench.run import build_parser, config_from_args, notes
from bench.stack import cpu_seconds

REPO = Path(__file__).resolve().parent.parent


def test_speedup_is_flowforge_over_celery_for_rates_and_celery_over_flowforge_for_times() -> None:
    assert compare.speedup(2000.0, 200.0, higher_is_better=True) == 10.0
    assert compare.speedup(0.5, 2.0, higher_is_better=False) == 4.0
    assert compare.speedup(1.0, None, higher_is_better=True) is None
    assert compare.ratio_text(4.0) == "4.0x faster"
    assert compare.ratio_text(0.5) == "2.0x slower"


def test_start_time_is_flat_within_half_again_or_twenty_ms() -> None:
    assert compare.is_flat(100.0, 150.0)
    assert not compare.is_flat(100.0, 151.0)
    assert compare.is_flat(5.0, 24.0)  # small numbers: the slack
    assert not compare.is_flat(5.0, 26.0)


def _entry(kind: str, ff: dict[str, float], cel: dict[str, float] | None) -> dict[str, Any]:
    return {"kind": kind, "label": kind, "size": "n", "agents": 1,
            "flowforge": {"median": ff, "samples": [ff]},
            "celery": {"median": cel, "samples": [cel]} if cel else {"skipped": "no redis"}}


def test_targets_are_computed_from_the_medians() -> None:
    wide = compare.rows_for(_entry("wide", {"tasks_per_s": 5000.0}, {"tasks_per_s": 600.0}))[0]
    assert (wide.ratio, wide.verdict) == ("8.3x faster", "not met")
    chain = compare.rows_for(_entry("chain", {"ms_per_hop": 1.4}, {"ms_per_hop": 2.0}))[0]
    assert (chain.verdict, chain.celery) == ("met", "2.00")
    alone = compare.rows_for(_entry("triggers", {"runs_per_s": 3000.0}, None))[0]
    assert (alone.celery, alone.ratio, alone.verdict) == ("not run", "—", "n/a (no Celery number)")
    latency = compare.rows_for(_entry("latency", {"dispatch_p50_ms": 1.0, "dispatch_p99_ms": 12.0},
                                      {"p50_ms": 1.5, "p99_ms": 4.0}))
    assert latency[1].verdict == "not met" and latency[1].ratio == "3.0x slower"


def test_quick_keeps_small_sizes_and_aliases_pick_workloads() -> None:
    ns = build_parser().parse_args(["--quick", "--workload", "throughput-wide", "--no-celery"])
    cfg = config_from_args(ns)
    assert (cfg.workloads, cfg.repeat, cfg.celery, cfg.wide_width) == (("wide",), 1, False, 200)
    full = config_from_args(build_parser().parse_args([]))
    assert full.wide_width + 2 == 20_000 and full.fanout_width == 10_000
    assert full.workloads[0] == "wide" and full.repeat == 3


def test_cpu_seconds_reads_this_process() -> None:
    spent = cpu_seconds(__import__("os").getpid())
    assert spent is not None and spent > 0
    assert cpu_seconds(2**22 + 12345) is None


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_a_quick_flowforge_only_run_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--no-celery", "--repeat", "1",
         "--workload", "chain", "--workload", "latency", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=80,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert set(result["workloads"]) == {"chain", "latency"}
    assert result["celery"] == {"available": False, "reason": "--no-celery was given"}
    chain = result["workloads"]["chain"]["flowforge"]
    assert chain["median"]["ms_per_hop"] > 0 and len(chain["samples"]) == 1
    for key in ("cpu_coordinator_s", "cpu_nats_s", "cpu_agents_s"):  # read from /proc in
        assert isinstance(chain["median"][key], int | float) and chain["median"][key] >= 0  # 10 ms
    # ticks: a 20-task chain may well spend less than one (the reader itself is tested above)
    assert chain["memory"]["coordinator"]["peak_rss_kib"] > 0
    assert result["workloads"]["chain"]["celery"] == {"skipped": "--no-celery was given"}
    lat = result["workloads"]["latency"]["flowforge"]["median"]
    assert 0 < lat["dispatch_p50_ms"] <= lat["dispatch_p99_ms"]
    assert lat["samples"] == 50 and lat["e2e_samples"] > 0
    metrics = [r["metric"] for r in result["comparison"]]
    assert "ms per hop" in metrics and "ready → started p99 ms" in metrics
    assert "ready → started p99 ms" in proc.stdout and "Celery was not run" in proc.stdout
    assert notes(result)  # the printed notes come from the JSON alone


@pytest.mark.e2e
@pytest.mark.parametrize("component", ["coordinator", "agent"])
def test_the_profiler_runs_a_small_workload_and_prints_both_tables(component: str) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.profile", component, "chain", "5",
                           "--top", "5"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{component} profiled during chain 5" in done.stdout
    assert "Ordered by: internal time" in done.stdout and "Ordered by: cumulative time" in done.stdout


def test_the_defaults_workload_starts_both_sides_as_a_user_would(tmp_path: Path) -> None:
    from bench import celery_app, suite
    from bench.celery_side import CeleryStack
    from bench.stack import Stack

    cfg = config_from_args(build_parser().parse_args(["--workload", "defaults"]))
    [plan] = suite.plans(cfg, "defaults")
    assert plan.defaults and plan.agents == 1 and plan.size == "2,002 tasks, one run"
    tuned = Stack(tmp_path, 1, cfg.concurrency)._agent_argv("agent0")
    assert tuned[tuned.index("--concurrency") + 1] == "16"
    assert "--concurrency" not in Stack(tmp_path, 1, None)._agent_argv("agent0")
    worker = CeleryStack(tmp_path, defaults=True)._worker_argv("worker0")
    assert worker[worker.index("worker"):] == ["worker", "--hostname", "worker0@%h",
                                               "--loglevel", "WARNING"]
    assert set(celery_app.settings("redis://x", defaults=True)).isdisjoint(
        {"worker_prefetch_multiplier", "worker_pool", "worker_concurrency",
         "worker_disable_rate_limits", "task_acks_late"})
    row = compare.rows_for(_entry("defaults", {"tasks_per_s": 6000.0}, {"tasks_per_s": 500.0}))[0]
    assert (row.metric, row.ratio, row.verdict) == ("tasks/s, both at defaults", "12.0x faster", "met")


def test_the_schedules_benchmark_loads_schedules_fires_some_and_writes_its_json(
    tmp_path: Path,
) -> None:
    out = tmp_path / "schedules.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.schedules", "--schedules", "50", "--firing", "3",
         "--every", "1", "--idle-s", "0.5", "--fire-s", "3", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=80,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["schedules"] == 50 and result["idle_cpu_pct"] >= 0
    late = result["late_created"]
    assert late["count"] >= 3 and 0 <= late["p50_ms"] <= late["p99_ms"] <= late["max_ms"]
    assert "coordinator idle CPU" in proc.stdout


def test_the_batches_benchmark_submits_runs_resubmits_and_plans_a_batch_and_writes_its_json(
    tmp_path: Path,
) -> None:
    out = tmp_path / "batches.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.batches", "--items", "300", "--max-active", "20",
         "--json-out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=100,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert (result["items"], result["max_active"]) == (300, 20)
    assert result["submit"]["to_run"] == 300 and result["submit"]["seconds"] > 0
    assert result["run"]["counts"] == {"succeeded": 300} and result["run"]["runs_per_s"] > 0
    assert result["resubmit"]["skipped"] == 300 and result["resubmit"]["counts"] == {"skipped": 300}
    assert result["dry_run"] == {**result["dry_run"], "to_run": 0, "skipped": 300}
    rss = result["coordinator_rss_kib"]
    assert 0 < rss["before"] <= rss["peak_by_phase"]["run"] <= rss["peak_lifetime"]
    assert result["surprises"] == []
    assert "coordinator RSS peak: run" in proc.stdout and "second submit" in proc.stdout


def test_the_mapping_benchmark_picks_one_digit_items_when_the_range_does_not_fit_one_output() -> None:
    from bench import flows, mapping

    assert mapping.items_mod(10_000) == 0  # list(range(10,000)): 48,891 bytes
    assert mapping.items_mod(100_000) == mapping.SMALL_MOD  # 588,891 bytes; i % 10: 200,001
    with pytest.raises(ValueError, match="at most 131,071"):
        mapping.items_mod(200_000)
    assert flows.map_join(flows.map_items(1000, 10), 1000, 10) == 1000
    assert flows.map_join(flows.map_items(1000)[::-1], 1000) == -1  # out of order: refused
    assert mapping.main(["--width", "30000", "--workload", "static"]) == 2


def test_the_mapping_benchmark_runs_mapped_and_static_fan_outs_and_writes_its_json(
    tmp_path: Path,
) -> None:
    out = tmp_path / "mapping.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.mapping", "--width", "40", "--big-width", "120",
         "--repeat", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=100,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert list(result["workloads"]) == ["mapped", "static", "big"]
    for key, items in (("mapped", 40), ("static", 40), ("big", 120)):
        entry = result["workloads"][key]
        assert "error" not in entry and len(entry["samples"]) == 1
        med = entry["median"]
        assert med["instances"] == items and med["instances_per_s"] > 0 and med["wall_s"] > 0
        assert med["coordinator_peak_rss_kib"] > 0 and med["cpu_coordinator_s"] >= 0
    assert result["workloads"]["mapped"]["mapped"] and not result["workloads"]["static"]["mapped"]
    assert result["verdict"].startswith("mapping must not be slower than static: ")
    assert "mapped vs static" in proc.stdout and "coordinator peak RSS MiB" in proc.stdout


def test_the_million_item_benchmark_runs_a_small_map_end_to_end() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.million", "--items", "3000", "--chunk", "100"],
        cwd=REPO, capture_output=True, text=True, timeout=100,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 → 3,000 mapped → 1, chunk 100: succeeded (join saw 3000 outputs in order)" in (
        proc.stdout)
    assert "coordinator RSS before / peak" in proc.stdout
    assert "dashboard: run open, counted" in proc.stdout


def test_the_child_task_benchmark_runs_its_flowforge_workloads_and_writes_its_json(
    tmp_path: Path,
) -> None:
    out = tmp_path / "children.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.children", "--quick", "--repeat", "1", "--no-celery",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=100,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert list(result["workloads"]) == ["parents", "one", "mapped"]
    for key, children in (("parents", 20 * 5), ("one", 200), ("mapped", 200)):
        entry = result["workloads"][key]
        assert "error" not in entry and len(entry["samples"]) == 1
        med = entry["median"]
        assert med["children"] == children and med["children_per_s"] > 0
        assert med["coordinator_peak_rss_kib"] > 0
    assert result["celery"] == {"available": False, "reason": "--no-celery was given"}
    assert "children/s" in proc.stdout and "20 parents x 5 children" in proc.stdout
