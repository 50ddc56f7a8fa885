"""``python -m bench.run``: FlowForge side by side with Celery + Redis; a table and a JSON file."""

import argparse
import asyncio
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import celery_side, compare, suite
from bench.report import celery_environment, environment, grid, header, resources_table, write_json
from bench.stack import cancel_on_signals
from bench.suite import ALIASES, FULL_SIZES, QUICK_SIZES, WORKLOADS, BenchConfig
from flowforge import runtime

DESCRIPTION = """Measure FlowForge and Celery 5 + Redis on the same workloads, with real processes.

workloads (full sizes; --quick in brackets)
  throughput-wide      root → 19,998 no-ops → join, 20,000 tasks in one run [1→200→1]: tasks/s
                       from the start request to the run's succeeded event (the coordinator
                       takes at most 20,000 tasks per flow, root and join included);
                       Celery: chain(noop, chord(19,998 x noop, noop))
  throughput-triggers  5,000 trigger messages, one single-task run each [100]: runs/s from the
                       first publish to the last run's succeeded event; Celery: 5,000 noop.delay()
  defaults             1 → 2,000 → 1 [1→200→1] with both sides as a user starts them: the agent
                       without --concurrency, `celery -A app worker` without options; tasks/s
  fanout               1 → 10,000 → 1 [1→100→1]: wall time from the start to the join's success
  chain                t0 → … → t199 [20]: ms per hop = wall time / tasks
  latency              500 single-task runs, one started every 10 ms through the API [50]:
                       ready → started (the task's queued_at → the agent's started_at), p50/p99;
                       submit → started; end to end. Celery: submit → the task body started
  scale                FlowForge only: 100 runs x 1,000 tasks stored [10 x 100]; the
                       coordinator's RSS and CPU seconds; time to start a 10,000-task run
                       [1,000] (→ API reply, → first task queued) before and after that history
  agents               throughput-triggers with 1, 2 and 4 agents on one queue (Celery: 1, 2, 4
                       workers). On a 2-core machine this shows overhead, not speed-up.

Each workload starts a fresh FlowForge stack (embedded nats-server, one coordinator, agents)
and a fresh Celery stack (redis-server, celery workers configured as bench.celery_app
recommends), warms both up, then alternates samples F, C, F, C, … and reports medians.
CPU seconds per component come from /proc/<pid>/stat (utime + stime), peak RSS from VmHWM."""

EPILOG = """examples:
  python -m bench.run                          # everything, 3 samples per side: ~7 min
  python -m bench.run --quick                  # smoke sizes, 1 sample per side: ~1 min
  python -m bench.run --quick --no-celery --repeat 1 --workload chain
  python -m bench.run --workload latency --workload fanout --repeat 5 --json /tmp/bench.json

(times measured on the project's shared 2-core machine: 6 min 36 s and 53 s; Celery's
20,000-task chord takes ~37 s a sample, FlowForge's ~4 s.)
The issue's targets are printed next to the results with "met"/"not met" (at --quick sizes
they are only indicative). Without redis-server or Celery the FlowForge side runs alone.
exit codes: 0 all measured, 1 a workload failed (on either side), 2 usage, 3 a FlowForge
stack did not start, 130 interrupted (SIGINT or SIGTERM; the processes are stopped first)
"""

AGENTS_NOTE = ("agents: this machine has {cpus} CPUs; the coordinator, nats-server and every "
               "agent (or Redis and every worker) share them, so more agents show the overhead "
               "of more processes, not a speed-up.")
LATENCY_NOTE = ("latency: FlowForge ready → started = the task's queued_at (coordinator) → "
                "started_at (agent); Celery has no coordinator, its row is client submit → body "
                "started, the same as its submit → started row.")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--agents", type=int, default=1,
                   help="FlowForge agents, and Celery workers (default: %(default)s; the agents "
                   "workload sets its own)")
    p.add_argument("--concurrency", type=int, default=16,
                   help="slots per agent, its --concurrency (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=None,
                   help="samples per side and workload; medians are reported (default: 3, or 1 "
                   "with --quick)")
    p.add_argument("--quick", action="store_true", help="smoke sizes (in brackets above)")
    p.add_argument("--no-celery", action="store_true", help="run the FlowForge side only")
    p.add_argument("--workload", action="append", choices=(*WORKLOADS, *ALIASES), dest="workloads",
                   help="run only this workload; repeatable (default: all)")
    p.add_argument("--window", type=int, default=1000,
                   help="trigger publishes in flight at once (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="give up on one sample after this long (default: %(default)s)")
    p.add_argument("--workdir", type=Path, metavar="DIR",
                   help="keep each workload's databases and process logs in DIR/<workload> "
                   "(default: a temporary directory, removed afterwards)")
    p.add_argument("--json", type=Path, metavar="PATH",
                   help="also write the results here (always: bench/results/<timestamp>.json)")
    return p


def config_from_args(ns: argparse.Namespace) -> BenchConfig:
    for flag in ("agents", "concurrency", "window"):
        if getattr(ns, flag) < 1:
            raise ValueError(f"--{flag} must be 1 or more")
    if ns.repeat is not None and ns.repeat < 1:
        raise ValueError("--repeat must be 1 or more")
    if ns.timeout <= 0:
        raise ValueError("--timeout must be more than 0")
    if ns.workdir and ns.workdir.exists() and any(ns.workdir.iterdir()):
        raise ValueError(f"--workdir {ns.workdir} is not empty; give a new or empty directory")
    names = [ALIASES.get(n, n) for n in ns.workloads or WORKLOADS]
    return BenchConfig(
        agents=ns.agents, concurrency=ns.concurrency,
        repeat=ns.repeat or (1 if ns.quick else 3), quick=ns.quick, celery=not ns.no_celery,
        **(QUICK_SIZES if ns.quick else FULL_SIZES), latency_interval_ms=10.0,
        publish_window=ns.window, timeout_s=ns.timeout, workloads=tuple(dict.fromkeys(names)),
        workdir=str(ns.workdir.resolve()) if ns.workdir else None,
    )


def notes(result: dict[str, Any]) -> list[str]:
    """What the table needs said: Celery skipped, definitions, failures."""
    cfg, cel, out = result["config"], result["celery"], []
    if cel.get("reason"):
        out.append(f"Celery was not run: {cel['reason']}")
    kinds = {e["kind"] for e in result["workloads"].values()}
    for entry in result["workloads"].values():
        out += [n for n in entry["notes"] if n not in out]
    if "latency" in kinds:
        out.append(LATENCY_NOTE)
    if "agents" in kinds:
        out.append(AGENTS_NOTE.format(cpus=result["environment"]["cpus"]))
    if cfg["quick"]:
        out.append("--quick: the targets are for the full sizes; these verdicts are only indicative.")
    for entry in result["workloads"].values():
        for side in ("flowforge", "celery"):
            if "error" in entry[side]:
                out.append(f"{entry['label']}: {side} FAILED: {entry[side]['error'].splitlines()[0]}")
    return out


def render(result: dict[str, Any], rows: list[compare.Row]) -> str:
    """The printed report: header, comparison with targets, per-process usage, notes."""
    cols = [["workload", "size", "metric", "FlowForge", "Celery", "FlowForge vs Celery", "target",
             "verdict"]]
    cols += [[r.workload, r.size, r.metric, r.flowforge, r.celery, r.ratio, r.target, r.verdict]
             for r in rows]
    lines = [header(result), "", *grid(cols), "", *resources_table(result), ""]
    for note in notes(result):
        lines += textwrap.wrap(note, 110, initial_indent="note: ", subsequent_indent="      ")
    return "\n".join(lines)


async def bench(cfg: BenchConfig, json_path: Path | None) -> int:
    cancel_on_signals()
    started = time.perf_counter()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    reason = celery_side.redis_available() if cfg.celery else "--no-celery was given"
    if reason is not None and cfg.celery:
        print(f"bench: the Celery side is skipped: {reason}", file=sys.stderr)
    result: dict[str, Any] = {"started_at": stamp, "config": asdict(cfg),
                              "environment": environment(), "celery": celery_environment(reason),
                              "workloads": {}}
    for name in cfg.workloads:
        for plan in suite.plans(cfg, name):
            print(f"{plan.label} ({plan.size})", file=sys.stderr, flush=True)
            result["workloads"][plan.key] = await suite.measure(cfg, plan, reason)
    rows = compare.comparison(result)
    result["comparison"] = compare.rows_json(rows)
    result["elapsed_s"] = time.perf_counter() - started
    print(render(result, rows))
    for path in write_json(result, stamp, json_path):
        print(f"wrote {path} ({result['elapsed_s']:.0f} s)", file=sys.stderr)
    entries = result["workloads"].values()
    if any(e["stack_failed"] for e in entries):
        return runtime.EXIT_NO_NATS
    failed = any("error" in e["flowforge"] or "error" in e["celery"] for e in entries)
    return runtime.EXIT_FAILED if failed else runtime.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(ns)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return runtime.EXIT_USAGE
    try:
        return runtime.run(bench(cfg, ns.json))
    except (asyncio.CancelledError, KeyboardInterrupt):
        return runtime.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
