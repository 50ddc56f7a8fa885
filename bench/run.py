"""``python -m bench.run``: start real processes per workload, measure, print a table, write JSON."""

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import flows, workloads
from bench.report import environment, medians, table, write_json
from bench.stack import Stack, StackError, cancel_on_signals
from flowforge import runtime
from protocol.errors import FlowForgeError
from protocol.flows import FlowSpec

WORKLOADS = ("fanout", "triggers", "chain")

DESCRIPTION = """Measure FlowForge end to end with real processes and report medians:
  fan-out   1→N→1 in one run: wall time from the start request to the run's succeeded event
  triggers  N messages {"params": {}} on flowforge.trigger.<flow> (JetStream, pipelined):
            runs/s from the first publish to the last run's succeeded event
  chain     t0→…→tN-1: wall time, and ms per hop = wall time / N tasks
Each stack gets one warm-up run first. Peak RSS is VmHWM from /proc/<pid>/status."""

EPILOG = """examples:
  python -m bench.run --quick                      # smoke run: small sizes, one repeat
  python -m bench.run                              # 1→1000→1, 1,000 triggers, 100-chain, 3 repeats
  python -m bench.run --agents 2 --concurrency 32 --json /tmp/bench.json
  python -m bench.run --workload chain --repeat 5

Every workload gets its own coordinator (embedded nats-server, fresh SQLite in a temporary
directory) and agents, started as real processes from the repository root.
exit codes: 0 all workloads measured, 1 a workload failed, 2 usage, 3 the stack did not
start, 130 interrupted (SIGINT or SIGTERM; the processes are stopped first)
"""


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Everything a benchmark run depends on, recorded in the JSON."""

    agents: int
    concurrency: int
    repeat: int
    quick: bool
    fanout_width: int
    trigger_count: int
    chain_length: int
    publish_window: int
    timeout_s: float
    workloads: tuple[str, ...]
    workdir: str | None = None
    """Keep each stack's data and logs under ``<workdir>/<workload>`` (default: a temp dir)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--agents", type=int, default=1, help="agent processes (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=16,
                   help="slots per agent, its --concurrency (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=None,
                   help="measured samples per workload; the median is reported "
                   "(default: 3, or 1 with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="smoke sizes: 1→100→1, 100 triggers, a 20-task chain")
    p.add_argument("--workload", action="append", choices=WORKLOADS, dest="workloads",
                   help="run only this workload; repeatable (default: all)")
    p.add_argument("--window", type=int, default=1000,
                   help="trigger publishes in flight at once (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="give up on one sample after this long (default: %(default)s)")
    p.add_argument("--workdir", type=Path, metavar="DIR",
                   help="keep each stack's database and process logs in DIR/<workload> "
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
    if ns.workdir and ns.workdir.exists() and any(ns.workdir.iterdir()):
        raise ValueError(f"--workdir {ns.workdir} is not empty; give a new or empty directory")
    return BenchConfig(
        agents=ns.agents, concurrency=ns.concurrency,
        repeat=ns.repeat or (1 if ns.quick else 3), quick=ns.quick,
        fanout_width=100 if ns.quick else flows.FANOUT_WIDTH,
        trigger_count=100 if ns.quick else 1000,
        chain_length=20 if ns.quick else flows.CHAIN_LENGTH,
        publish_window=ns.window, timeout_s=ns.timeout,
        workloads=tuple(dict.fromkeys(ns.workloads or WORKLOADS)),
        workdir=str(ns.workdir.resolve()) if ns.workdir else None,
    )


Sample = Callable[[Stack], Awaitable[dict[str, Any]]]


def plan(cfg: BenchConfig, name: str) -> tuple[str, str, FlowSpec, Sample]:
    """A workload's table label, size, flow and one-sample coroutine."""
    t = cfg.timeout_s
    match name:
        case "fanout":
            spec = flows.fanout_flow(cfg.fanout_width)
            return (f"fan-out 1→{cfg.fanout_width}→1", f"{len(spec.tasks):,} tasks", spec,
                    lambda s: workloads.fanout(s, spec.name, t))
        case "triggers":
            spec = flows.single_flow()
            return ("trigger → single-task run", f"{cfg.trigger_count:,} runs", spec,
                    lambda s: workloads.triggers(s, spec.name, cfg.trigger_count, t,
                                                 cfg.publish_window))
        case _:
            spec = flows.chain_flow(cfg.chain_length)
            return (f"chain t0→…→t{cfg.chain_length - 1}", f"{cfg.chain_length} tasks", spec,
                    lambda s: workloads.chain(s, spec.name, t))


def _workdir(cfg: BenchConfig, name: str) -> contextlib.AbstractContextManager[str]:
    if cfg.workdir is None:
        return tempfile.TemporaryDirectory(prefix=f"flowforge-bench-{name}-")
    path = Path(cfg.workdir) / name
    path.mkdir(parents=True)
    return contextlib.nullcontext(str(path))


async def measure(cfg: BenchConfig, name: str) -> tuple[str, dict[str, Any]]:
    """One workload on a fresh stack: register, one warm-up run, ``repeat`` samples, memory."""
    label, size, spec, sample = plan(cfg, name)
    entry: dict[str, Any] = {"kind": name, "size": size, "flow": spec.name}
    with _workdir(cfg, name) as tmp:
        stack = Stack(Path(tmp), cfg.agents, cfg.concurrency)
        try:
            async with stack:
                assert stack.client is not None
                await stack.client.register([spec, flows.single_flow()])
                await workloads.one_run(stack, "bench_single", cfg.timeout_s)  # warm-up
                samples = []
                for i in range(cfg.repeat):
                    samples.append(await sample(stack))
                    print(f"  {label} [{i + 1}/{cfg.repeat}]: {samples[-1]['wall_s']:.3f} s",
                          file=sys.stderr, flush=True)
                entry |= {"samples": samples, "median": medians(samples),
                          "memory": stack.memory()}
        except (workloads.WorkloadError, FlowForgeError) as exc:
            print(f"{label}: FAILED: {exc}", file=sys.stderr)
            entry["error"] = str(exc)
        entry["shutdown"] = stack.stopped
    return label, entry


async def bench(cfg: BenchConfig, json_path: Path | None) -> int:
    cancel_on_signals()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result: dict[str, Any] = {"started_at": stamp, "config": asdict(cfg),
                              "environment": environment(), "workloads": {}}
    try:
        for name in cfg.workloads:
            label, entry = await measure(cfg, name)
            result["workloads"][label] = entry
    except StackError as exc:
        print(f"bench: the stack did not start: {exc}", file=sys.stderr)
        return runtime.EXIT_NO_NATS
    print(table(result))
    for path in write_json(result, stamp, json_path):
        print(f"wrote {path}", file=sys.stderr)
    failed = any("error" in e for e in result["workloads"].values())
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
