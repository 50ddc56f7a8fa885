"""Results: medians over repeats, percentiles, the printed table, the JSON file and the machine."""

import json
import math
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.stack import REPO_ROOT
from flowforge.embedded import nats_server_binary

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def medians(samples: list[dict[str, Any]]) -> dict[str, float]:
    """The median of every numeric field across samples."""
    keys = [k for k, v in samples[0].items() if isinstance(v, int | float)] if samples else []
    return {k: statistics.median(s[k] for s in samples) for k in keys}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values``, linear between neighbours."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def nearest_rank(values: list[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``values``: the smallest value with at least that share
    of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment() -> dict[str, Any]:
    """What the numbers depend on: commit, interpreter, event loop, CPUs, nats-server."""
    try:
        import uvloop
        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    try:
        nats_server = _run([nats_server_binary(), "--version"])
    except Exception:  # noqa: BLE001 - the version is only a label in the report
        nats_server = ""
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "commit": _run(["git", "rev-parse", "--short", "HEAD"]),
        "dirty": bool(dirty),
        "dirty_files": [line[2:].strip() for line in dirty.splitlines()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loop": loop,
        "nats_server": nats_server,
        "argv": sys.argv,
    }


def celery_environment(reason: str | None) -> dict[str, Any]:
    """The Celery side's versions and worker configuration, or why it was not run."""
    from importlib import metadata

    from bench import celery_app

    if reason is not None:
        return {"available": False, "reason": reason}
    versions = {}
    for dist in ("celery", "redis", "kombu"):
        try:
            versions[dist if dist != "redis" else "redis_py"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = ""
    return {"available": True, "reason": None, **versions,
            "redis_server": _run(["redis-server", "--version"]).split(" sha=")[0],
            "pool": celery_app.POOL, "concurrency": celery_app.CONCURRENCY,
            "prefetch_multiplier": celery_app.PREFETCH_MULTIPLIER}


def write_json(result: dict[str, Any], stamp: str, extra: Path | None) -> list[Path]:
    """Write to ``bench/results/<stamp>.json`` and to ``extra`` when given."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    paths = [RESULTS_DIR / f"{stamp}.json", *([extra] if extra else [])]
    text = json.dumps(result, indent=2, sort_keys=False) + "\n"
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return paths


def grid(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns, a rule under the first row (the header)."""
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(widths[j]) for j, c in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _mib(memory: dict[str, dict[str, int]], who: str) -> str:
    """The peak RSS of the processes named ``who*``, summed (e.g. over agents or workers)."""
    total = sum(m.get("peak_rss_kib", 0) for name, m in memory.items() if name.startswith(who))
    return f"{total / 1024:.1f}" if total else "-"


def _cpu(med: dict[str, float], parts: tuple[tuple[str, str], ...]) -> str:
    return "  ".join(f"{name} {med[key]:.2f}" for name, key in parts if key in med)


FF_CPU = (("coord", "cpu_coordinator_s"), ("nats", "cpu_nats_s"), ("agents", "cpu_agents_s"),
          ("bench", "cpu_bench_s"))
CELERY_CPU = (("workers", "cpu_workers_s"), ("redis", "cpu_redis_s"), ("bench", "cpu_bench_s"))


def _side_row(label: str, side: str, data: dict[str, Any]) -> list[str]:
    if not data.get("samples"):
        return [label, side, "FAILED", "", (data.get("error") or "no samples").splitlines()[0][:70]]
    med, walls = data["median"], [s["wall_s"] for s in data["samples"]]
    spread = f"{min(walls):.3f}-{max(walls):.3f}" if len(walls) > 1 else ""
    mem = data["memory"]
    if side == "FlowForge":
        cpu = _cpu(med, FF_CPU)
        rss = (f"coord {_mib(mem, 'coordinator')}  nats {_mib(mem, 'nats-server')}  "
               f"agents {_mib(mem, 'agent')}")
    else:
        cpu = _cpu(med, CELERY_CPU)
        rss = f"workers {_mib(mem, 'worker')}  redis {_mib(mem, 'redis-server')}"
    failed = "  (then FAILED)" if "error" in data else ""
    return [label, side, f"{med['wall_s']:.3f}", spread, cpu + failed, rss]


def resources_table(result: dict[str, Any]) -> list[str]:
    """Per workload and side: median wall s per sample, its spread, CPU s, peak RSS MiB."""
    rows = [["workload", "side", "wall s", "min-max", "CPU s per sample (median)",
             "peak RSS MiB (agents, workers: sum)"]]
    for entry in result["workloads"].values():
        rows.append(_side_row(entry["label"], "FlowForge", entry["flowforge"]))
        if "skipped" not in entry["celery"]:  # why it was skipped is in the notes
            rows.append(_side_row("", "Celery", entry["celery"]))
    return grid(rows)


def header(result: dict[str, Any]) -> str:
    """Commit, configuration of both sides, interpreter, machine."""
    cfg, env, cel = result["config"], result["environment"], result["celery"]
    text = (f"FlowForge vs Celery + Redis @ {env['commit']}{' (dirty)' if env['dirty'] else ''}; "
            f"median of {cfg['repeat']} sample(s) per side, alternating F, C, F, C"
            f"{' (--quick sizes)' if cfg['quick'] else ''}\n"
            f"  FlowForge: {cfg['agents']} agent(s) x concurrency {cfg['concurrency']}, "
            f"embedded {env['nats_server']}, Python {env['python']}, {env['loop']}, "
            f"{env['cpus']} CPUs\n")
    if cel.get("reason"):
        return text + f"  Celery: not run: {cel['reason']}"
    return text + (f"  Celery {cel.get('celery', '?')}: {cfg['agents']} worker(s), pool "
                   f"{cel.get('pool')} x {cel.get('concurrency')}, prefetch multiplier "
                   f"{cel.get('prefetch_multiplier')}, {cel.get('redis_server', 'redis-server')}")
