"""Results: medians over repeats, the printed table, the JSON file and the machine it ran on."""

import json
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
    return {
        "commit": _run(["git", "rev-parse", "--short", "HEAD"]),
        "dirty": bool(_run(["git", "status", "--porcelain", "--untracked-files=no"])),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loop": loop,
        "nats_server": nats_server,
        "argv": sys.argv,
    }


def write_json(result: dict[str, Any], stamp: str, extra: Path | None) -> list[Path]:
    """Write to ``bench/results/<stamp>.json`` and to ``extra`` when given."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    paths = [RESULTS_DIR / f"{stamp}.json", *([extra] if extra else [])]
    text = json.dumps(result, indent=2, sort_keys=False) + "\n"
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return paths


def _mib(memory: dict[str, dict[str, int]], who: str) -> str:
    kib = [m.get("peak_rss_kib", 0) for name, m in memory.items() if name.startswith(who)]
    return f"{max(kib) / 1024:.1f} MiB" if kib and max(kib) else "-"


def _row(name: str, entry: dict[str, Any]) -> list[str]:
    if "error" in entry:
        return [name, entry.get("size", ""), "FAILED", "", entry["error"].splitlines()[0][:60]]
    med, walls = entry["median"], [s["wall_s"] for s in entry["samples"]]
    spread = f"{min(walls):.3f}-{max(walls):.3f}" if len(walls) > 1 else ""
    match entry["kind"]:
        case "fanout":
            rate, unit = f"{med['tasks_per_s']:,.0f} tasks/s", ""
        case "triggers":
            rate, unit = f"{med['runs_per_s']:,.0f} runs/s", f"publish {med['publish_s']:.3f} s"
        case _:
            rate = f"{med['tasks'] / med['wall_s']:,.0f} tasks/s"
            unit = f"{med['ms_per_hop']:.2f} ms/hop"
    mem = entry["memory"]
    return [name, entry["size"], f"{med['wall_s']:.3f}", spread, rate, unit,
            _mib(mem, "coordinator"), _mib(mem, "nats-server"), _mib(mem, "agent")]


HEADER = ["workload", "size", "wall s", "min-max", "throughput", "detail",
          "coord peak RSS", "nats peak RSS", "agent peak RSS"]


def table(result: dict[str, Any]) -> str:
    """The printed summary: one row per workload, medians over repeats."""
    cfg, env = result["config"], result["environment"]
    rows = [HEADER] + [_row(name, e) for name, e in result["workloads"].items()]
    widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(len(HEADER))]
    lines = [
        f"FlowForge bench @ {env['commit']}{' (dirty)' if env['dirty'] else ''} — "
        f"{cfg['agents']} agent(s) x concurrency {cfg['concurrency']}, "
        f"median of {cfg['repeat']} repeat(s); Python {env['python']}, {env['loop']}, "
        f"{env['cpus']} CPUs, {env['nats_server']}",
    ]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[j]) for j, c in enumerate(r)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
