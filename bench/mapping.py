"""``python -m bench.mapping``: a mapped fan-out side by side with the static fan-out of today,
each on a real stack (embedded nats-server, coordinator, one agent at its defaults).

workloads (default sizes)
  mapped   1 → 10,000 mapped → 1: ``root`` returns list(range(10,000)), ``each`` runs one no-op
           instance per item (returning its item), ``join`` takes ``each``'s list of outputs
           (bench.flows.mapped_flow)
  static   1 → 10,000 → 1: ``root`` → 10,000 distinct no-op tasks → ``join``, the fan-out of
           ``python -m bench.run`` (bench.flows.fanout_flow)
  big      1 → 100,000 mapped → 1: as ``mapped``; list(range(100,000)) is 588,890 bytes of JSON,
           over the 262,144 a task output may hold, so its items are i % 10 (one digit each:
           200,001 bytes). A static flow takes at most 20,000 tasks: it has no static twin.

Each workload gets its own fresh stack; all are started first and warmed up with a one-task
run, then the samples go round the workloads (mapped, static, big, mapped, ...) ``--repeat``
times so that each sees the same noise of a shared machine; medians are reported. Measured per
sample: wall time from the start request to the run's succeeded event; instances/s (the
middle tasks over that time); CPU seconds of the coordinator, its nats-server and the agent
(/proc/<pid>/stat); the coordinator's peak RSS during the sample (VmHWM, reset before each
sample through /proc/<pid>/clear_refs; where that is refused, the peak since it started).
A mapped sample counts only when ``join`` saw every output, in item order.
"""

import argparse
import asyncio
import contextlib
import gc
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from nats.errors import Error as NatsError

from bench import flows, workloads
from bench.report import environment, grid, medians, write_json
from bench.stack import Stack, StackError, cancel_on_signals, memory_kib
from bench.usage import CpuMeter
from flowforge import runtime
from protocol.errors import FlowForgeError
from protocol.flows import FlowSpec
from protocol.limits import MAX_OUTPUT_BYTES, MAX_TASKS_PER_FLOW

SMALL_MOD = 10
"""Items ``i % SMALL_MOD`` when ``list(range(n))`` does not fit in one task output."""
KEYS = ("mapped", "static", "big")
SAMPLE_ERRORS = (workloads.WorkloadError, FlowForgeError, StackError, NatsError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Workload:
    """One column of the table: a flow, how many middle tasks (instances) it runs."""

    key: str
    label: str
    items: int
    mod: int
    """0: the items are ``list(range(items))``; else ``i % mod``."""
    flow: FlowSpec
    mapped: bool

    @property
    def params(self) -> dict[str, int]:
        return {"n": self.items, "mod": self.mod} if self.mapped else {}


@dataclass(slots=True)
class Result:
    """One workload's samples, for the JSON and the table."""

    workload: Workload
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    memory: dict[str, dict[str, int]] = field(default_factory=dict)
    rss_after_warm_up_kib: int = 0
    peak_is_per_sample: bool = True

    def as_json(self) -> dict[str, Any]:
        w = self.workload
        out = {"label": w.label, "flow": w.flow.name, "mapped": w.mapped, "items": w.items,
               "items_mod": w.mod or None, "samples": self.samples, "median": medians(self.samples),
               "memory": self.memory, "coordinator_rss_after_warm_up_kib": self.rss_after_warm_up_kib,
               "coordinator_peak_rss_per_sample": self.peak_is_per_sample}
        return out | ({"error": self.error} if self.error else {})


def items_bytes(n: int, mod: int) -> int:
    """Bytes of the JSON list ``root`` returns for ``n`` items."""
    return len(msgspec.json.encode(flows.map_items(n, mod)))


def items_mod(n: int) -> int:
    """0 when ``list(range(n))`` fits in one task output, else SMALL_MOD (ValueError when even
    one-digit items do not fit)."""
    if items_bytes(n, 0) <= MAX_OUTPUT_BYTES:
        return 0
    if items_bytes(n, SMALL_MOD) <= MAX_OUTPUT_BYTES:
        return SMALL_MOD
    raise ValueError(f"{n:,} one-digit items are {items_bytes(n, SMALL_MOD):,} bytes of JSON, over "
                     f"the {MAX_OUTPUT_BYTES:,} a task output may hold; give at most "
                     f"{(MAX_OUTPUT_BYTES - 2) // 2:,}")


def plan(ns: argparse.Namespace) -> list[Workload]:
    mapped = flows.mapped_flow()
    out = []
    for key in ns.workloads or KEYS:
        if key == "static":
            out.append(Workload(key, f"static 1→{ns.width:,}→1", ns.width, 0,
                                flows.fanout_flow(ns.width), False))
        else:
            n = ns.width if key == "mapped" else ns.big_width
            out.append(Workload(key, f"mapped 1→{n:,}→1", n, items_mod(n), mapped, True))
    return out


def reset_peak_rss(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux ``clear_refs`` 5); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def _check_join(stack: Stack, w: Workload, run_id: str) -> None:
    """The mapped run's ``join`` saw every instance's output, in item order."""
    assert stack.client is not None
    detail = await stack.client.get(run_id)
    outputs = {t.task: t.output for t in detail.tasks}
    got = msgspec.json.decode(outputs["join"]) if "join" in outputs else None
    if got != w.items:
        raise workloads.WorkloadError(f"{w.label}: join counted {got!r} outputs in item order, "
                                      f"expected {w.items:,}")


async def sample(stack: Stack, w: Workload, timeout_s: float) -> tuple[dict[str, Any], bool]:
    """One run of the workload's flow: its numbers, and whether the RSS peak is its own."""
    pid = stack.pids()["coordinator"]
    gc.collect()
    per_sample = reset_peak_rss(pid)
    meter = CpuMeter.start(stack)
    s = await workloads.one_run(stack, w.flow.name, timeout_s, w.params)
    s |= meter.fields()
    s["coordinator_peak_rss_kib"] = memory_kib(pid).get("peak_rss_kib", 0)
    if w.mapped:
        await _check_join(stack, w, s["run_id"])
    s["instances"] = w.items
    s["instances_per_s"] = w.items / s["wall_s"]
    return s, per_sample


async def _start(stack: Stack, w: Workload, timeout_s: float) -> None:
    await stack.start()
    assert stack.client is not None
    await stack.client.register([w.flow, flows.single_flow()])
    await workloads.one_run(stack, flows.single_flow().name, timeout_s)  # warm-up


async def _rounds(stacks: dict[str, Stack], results: dict[str, Result], repeat: int,
                  timeout_s: float) -> None:
    """Sample every live workload in turn, ``repeat`` times; one that fails is left out after."""
    for i in range(repeat):
        for key, stack in stacks.items():
            res = results[key]
            if res.error is not None:
                continue
            try:
                s, own_peak = await sample(stack, res.workload, timeout_s)
            except SAMPLE_ERRORS as exc:
                res.error = str(exc)
                print(f"{res.workload.label}: FAILED: {exc}", file=sys.stderr, flush=True)
                continue
            res.samples.append(s)
            res.peak_is_per_sample = res.peak_is_per_sample and own_peak
            print(f"  {res.workload.label} [{i + 1}/{repeat}]: {s['wall_s']:.3f} s, "
                  f"{s['instances_per_s']:,.0f} instances/s", file=sys.stderr, flush=True)


async def measure(plans: list[Workload], repeat: int, timeout_s: float,
                  workdir: Path) -> dict[str, Result]:
    """Start one stack per workload (agent at its defaults), then the rounds of samples."""
    results = {w.key: Result(w) for w in plans}
    async with contextlib.AsyncExitStack() as stacks_cm:
        stacks: dict[str, Stack] = {}
        for w in plans:
            (workdir / w.key).mkdir()
            stack = Stack(workdir / w.key, agents=1, concurrency=None)
            stacks_cm.push_async_callback(stack.stop)
            print(f"{w.label}: starting its stack", file=sys.stderr, flush=True)
            try:
                await _start(stack, w, timeout_s)
            except StackError as exc:
                raise StackError(f"{w.label}: the stack did not start: {exc}") from None
            stacks[w.key] = stack
            results[w.key].rss_after_warm_up_kib = memory_kib(
                stack.pids()["coordinator"]).get("rss_kib", 0)
        await _rounds(stacks, results, repeat, timeout_s)
        for key, stack in stacks.items():
            results[key].memory = stack.memory()
    return results


# -- the report --------------------------------------------------------------------------------


def _med(res: Result | None, key: str) -> float | None:
    if res is None or not res.samples:
        return None
    return medians(res.samples).get(key)


def _spread(res: Result | None) -> str:
    walls = [s["wall_s"] for s in res.samples] if res else []
    return f"{min(walls):.3f}-{max(walls):.3f}" if len(walls) > 1 else ""


def _num(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def _cell(res: Result | None, key: str, spec: str, scale: float = 1.0) -> str:
    if res is not None and res.error and not res.samples:
        return "FAILED"
    return _num(_med(res, key), spec, scale)


def _versus(mapped: float | None, static: float | None, lower_is_better: bool) -> str:
    """How the mapped number compares with the static one, in words."""
    if mapped is None or static is None or mapped <= 0 or static <= 0:
        return "-"
    better = static / mapped if lower_is_better else mapped / static
    if abs(better - 1) < 0.005:
        return "same"
    return f"{better:.2f}x better" if better > 1 else f"{1 / better:.2f}x worse"


ROWS = (  # (measure, sample field, format, scale, lower is better)
    ("run time s (median)", "wall_s", ".3f", 1.0, True),
    ("instances/s", "instances_per_s", ",.0f", 1.0, False),
    ("coordinator CPU s", "cpu_coordinator_s", ".2f", 1.0, True),
    ("coordinator peak RSS MiB", "coordinator_peak_rss_kib", ".1f", 1 / 1024, True),
    ("nats-server CPU s", "cpu_nats_s", ".2f", 1.0, True),
    ("agent CPU s", "cpu_agents_s", ".2f", 1.0, True),
    ("run time by the coordinator s", "coordinator_s", ".3f", 1.0, True),
)


def table(results: dict[str, Result]) -> list[str]:
    """Measures down, workloads across: mapped, static, mapped vs static, big."""
    m, s, b = (results.get(k) for k in KEYS)
    head = ["measure", m.workload.label if m else "mapped", s.workload.label if s else "static",
            "mapped vs static"]
    if b is not None:
        head.append(b.workload.label + (f" (items i % {b.workload.mod})" if b.workload.mod else ""))
    rows = [head]
    for name, key, spec, scale, lower in ROWS:
        row = [name, _cell(m, key, spec, scale), _cell(s, key, spec, scale),
               _versus(_med(m, key), _med(s, key), lower)]
        rows.append(row + ([_cell(b, key, spec, scale)] if b is not None else []))
        if key == "wall_s":
            rows.append(["  min-max", _spread(m), _spread(s), ""] + ([_spread(b)] if b else []))
        if key == "coordinator_peak_rss_kib":
            rows.append(["  before the samples", _rss(m), _rss(s), ""] + ([_rss(b)] if b else []))
    return grid(rows)


def _rss(res: Result | None) -> str:
    """The coordinator's RSS after the warm-up (its flow registered, one run done)."""
    return _num(res.rss_after_warm_up_kib if res else None, ".1f", 1 / 1024)


def verdict(results: dict[str, Result]) -> str:
    """The issue's requirement: mapping must not be slower than the static fan-out."""
    mapped, static = _med(results.get("mapped"), "wall_s"), _med(results.get("static"), "wall_s")
    if mapped is None or static is None:
        return "mapping must not be slower than static: not measured (a side is missing)"
    ok = mapped <= static
    return (f"mapping must not be slower than static: {'met' if ok else 'NOT met'} (median "
            f"{mapped:.3f} s mapped vs {static:.3f} s static)")


def render(results: dict[str, Result], repeat: int, env: dict[str, Any]) -> str:
    head = (f"mapped vs static fan-out @ {env['commit']}{' (dirty)' if env['dirty'] else ''}: "
            f"median of {repeat} sample(s) per workload, taken in turn; one fresh stack per "
            f"workload, one agent at its defaults; {env['nats_server']}, Python {env['python']}, "
            f"{env['loop']}, {env['cpus']} CPUs")
    lines = [head, "", *table(results), "", verdict(results)]
    big = results.get("big")
    if big is not None and big.workload.mod:
        n = big.workload.items
        lines.append(f"note: {big.workload.label}: list(range({n:,})) is {items_bytes(n, 0):,} "
                     f"bytes of JSON, over the {MAX_OUTPUT_BYTES:,} a task output may hold; its "
                     f"items are i % {big.workload.mod} ({items_bytes(n, big.workload.mod):,} "
                     f"bytes). No static twin: a flow takes at most {MAX_TASKS_PER_FLOW:,} tasks.")
    if not all(r.peak_is_per_sample for r in results.values()):
        lines.append("note: /proc/<pid>/clear_refs was refused: peak RSS is since the start.")
    for res in results.values():
        if res.error:
            lines.append(f"{res.workload.label}: FAILED: {res.error.splitlines()[0]}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.mapping", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example: python -m bench.mapping --repeat 3\n"
                                "exit codes: 0 measured, 1 a workload failed, 2 usage, 3 a stack "
                                "did not start, 130 interrupted")
    p.add_argument("--repeat", type=int, default=3, help="samples per workload (default: 3)")
    p.add_argument("--width", type=int, default=10_000,
                   help="instances of mapped, tasks of static (default: %(default)s)")
    p.add_argument("--big-width", type=int, default=100_000,
                   help="instances of big (default: %(default)s)")
    p.add_argument("--workload", action="append", choices=KEYS, dest="workloads",
                   help="only this workload; repeatable (default: all)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="give up on one sample after this long (default: %(default)s)")
    p.add_argument("--json", type=Path, metavar="PATH",
                   help="also write the results here (always: bench/results/mapping-<time>.json)")
    return p


def _check(ns: argparse.Namespace) -> list[Workload]:
    if ns.repeat < 1 or ns.width < 1 or ns.big_width < 1 or ns.timeout <= 0:
        raise ValueError("--repeat, --width, --big-width and --timeout must be positive")
    if ns.width + 2 > MAX_TASKS_PER_FLOW and "static" in (ns.workloads or KEYS):
        raise ValueError(f"--width {ns.width:,}: a static flow takes at most "
                         f"{MAX_TASKS_PER_FLOW:,} tasks, root and join included")
    ns.workloads = list(dict.fromkeys(ns.workloads or KEYS))
    return plan(ns)


async def bench(ns: argparse.Namespace, plans: list[Workload]) -> int:
    cancel_on_signals()
    stamp, t0 = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), time.perf_counter()
    env = environment()
    with tempfile.TemporaryDirectory(prefix="flowforge-bench-mapping-") as tmp:
        try:
            results = await measure(plans, ns.repeat, ns.timeout, Path(tmp))
        except StackError as exc:
            print(f"bench.mapping: {exc}", file=sys.stderr)
            return runtime.EXIT_NO_NATS
    print(render(results, ns.repeat, env))
    out = {"benchmark": "mapping", "started_at": stamp,
           "config": {"repeat": ns.repeat, "width": ns.width, "big_width": ns.big_width,
                      "workloads": ns.workloads, "timeout_s": ns.timeout,
                      "agent": "one, at its defaults (no --concurrency)"},
           "environment": env, "workloads": {k: r.as_json() for k, r in results.items()},
           "verdict": verdict(results), "elapsed_s": time.perf_counter() - t0}
    for path in write_json(out, f"mapping-{stamp}", ns.json):
        print(f"wrote {path}", file=sys.stderr)
    failed = any(r.error for r in results.values())
    return runtime.EXIT_FAILED if failed else runtime.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        plans = _check(ns)
    except ValueError as exc:
        print(f"bench.mapping: {exc}", file=sys.stderr)
        return runtime.EXIT_USAGE
    try:
        return runtime.run(bench(ns, plans))
    except (asyncio.CancelledError, KeyboardInterrupt):
        return runtime.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
