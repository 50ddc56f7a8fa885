"""The benchmark suite: every workload on fresh stacks, FlowForge and Celery samples alternating.

For each workload a FlowForge stack (embedded nats-server, one coordinator, N agents) and,
unless Celery is off or unavailable, a Celery stack (redis-server, ``celery worker``s with
``bench.celery_app``'s configuration) are started side by side; after a warm-up each, the
samples alternate F, C, F, C, … ``repeat`` times, so both see the same noise on a shared
machine. The idle side's processes stay up meanwhile. Each sample records its CPU seconds per
component (``bench.usage``); the workload its processes' peak RSS at the end.
"""

import contextlib
import gc
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.errors import Error as NatsError

from bench import celery_side, flows, latency, scale, workloads
from bench.celery_side import CeleryStack
from bench.report import medians
from bench.stack import Stack, StackError
from bench.usage import CpuMeter
from protocol.errors import FlowForgeError
from protocol.flows import FlowSpec

WORKLOADS = ("wide", "triggers", "defaults", "fanout", "chain", "latency", "scale", "agents")
ALIASES = {"throughput-wide": "wide", "throughput-triggers": "triggers"}
NAMES = {"wide": "throughput-wide", "triggers": "throughput-triggers"}
"""The table's name of a workload, where it differs from its key."""


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Everything a benchmark run depends on, recorded in the JSON."""

    agents: int
    concurrency: int
    repeat: int
    quick: bool
    celery: bool
    wide_width: int
    trigger_count: int
    fanout_width: int
    chain_length: int
    latency_count: int
    latency_interval_ms: float
    scale_start_tasks: int
    scale_history_runs: int
    scale_history_tasks: int
    agent_counts: tuple[int, ...]
    agents_trigger_count: int
    defaults_width: int
    publish_window: int
    timeout_s: float
    workloads: tuple[str, ...]
    workdir: str | None = None
    """Keep each stack's data and logs under ``<workdir>/<workload>`` (default: a temp dir)."""


FULL_SIZES: dict[str, Any] = {
    "wide_width": flows.WIDE_WIDTH, "trigger_count": 5000, "fanout_width": 10_000,
    "chain_length": 200, "latency_count": 500, "scale_start_tasks": 10_000,
    "scale_history_runs": 100, "scale_history_tasks": 1000, "agent_counts": (1, 2, 4),
    "agents_trigger_count": 5000, "defaults_width": 2000,
}
QUICK_SIZES: dict[str, Any] = {
    "wide_width": 200, "trigger_count": 100, "fanout_width": 100, "chain_length": 20,
    "latency_count": 50, "scale_start_tasks": 1000, "scale_history_runs": 10,
    "scale_history_tasks": 100, "agent_counts": (1, 2, 4), "agents_trigger_count": 200,
    "defaults_width": 200,
}

FlowForgeSample = Callable[[Stack], Awaitable[dict[str, Any]]]
CelerySample = Callable[[CeleryStack], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Plan:
    """One row group of the report: what to start, register and sample on each side."""

    key: str
    kind: str
    label: str
    size: str
    flows: tuple[FlowSpec, ...]
    flowforge: FlowForgeSample
    celery: CelerySample | None
    agents: int
    repeat: int
    notes: tuple[str, ...] = ()
    defaults: bool = False
    """Both sides as a user starts them: agents without --concurrency, Celery workers without
    options (``CeleryStack.defaults``)."""


def _plan_throughput(cfg: BenchConfig, kind: str) -> Plan:
    t, single = cfg.timeout_s, flows.single_flow()
    if kind == "wide":
        spec, w = flows.fanout_flow(cfg.wide_width), cfg.wide_width
        return Plan("wide", kind, f"{NAMES[kind]} 1→{w:,}→1", f"{w + 2:,} tasks, one run", (spec,),
                    lambda s: workloads.fanout(s, spec.name, t),
                    lambda c: celery_side.wide(c, w, t), cfg.agents, cfg.repeat,
                    (f"wide: root → {w:,} → join = {w + 2:,} tasks; the coordinator accepts at most "
                     f"{flows.MAX_TASKS_PER_FLOW:,} tasks per flow (root and join count)",))
    n = cfg.trigger_count
    return Plan("triggers", kind, f"{NAMES[kind]}", f"{n:,} single-task runs", (single,),
                lambda s: workloads.triggers(s, single.name, n, t, cfg.publish_window),
                lambda c: celery_side.singles(c, n, t), cfg.agents, cfg.repeat)


def plans(cfg: BenchConfig, name: str) -> list[Plan]:
    """The plans of one workload (``agents`` has one per agent count)."""
    t, single = cfg.timeout_s, flows.single_flow()
    match name:
        case "wide" | "triggers":
            return [_plan_throughput(cfg, name)]
        case "fanout":
            spec, w = flows.fanout_flow(cfg.fanout_width), cfg.fanout_width
            return [Plan("fanout", name, f"fanout 1→{w:,}→1", f"{w + 2:,} tasks", (spec,),
                         lambda s: workloads.fanout(s, spec.name, t),
                         lambda c: celery_side.fanout(c, w, t), cfg.agents, cfg.repeat)]
        case "chain":
            spec, n = flows.chain_flow(cfg.chain_length), cfg.chain_length
            return [Plan("chain", name, f"chain t0→…→t{n - 1}", f"{n} tasks", (spec,),
                         lambda s: workloads.chain(s, spec.name, t),
                         lambda c: celery_side.chain(c, n, t), cfg.agents, cfg.repeat)]
        case "latency":
            n, every = cfg.latency_count, cfg.latency_interval_ms / 1000.0
            return [Plan("latency", name, "latency", f"{n} runs, 1 per {cfg.latency_interval_ms:g} ms",
                         (single,), lambda s: latency.dispatch_latency(s, single.name, n, t, every),
                         lambda c: celery_side.dispatch_latency(c, n, every, t), cfg.agents, cfg.repeat)]
        case "scale":
            return [_plan_scale(cfg)]
        case "defaults":
            return [_plan_defaults(cfg)]
        case _:
            n = cfg.agents_trigger_count
            return [Plan(f"agents-{k}", "agents", f"agents x{k}", f"{n:,} single-task runs", (single,),
                         lambda s: workloads.triggers(s, single.name, n, t, cfg.publish_window),
                         lambda c: celery_side.singles(c, n, t), k, cfg.repeat)
                    for k in cfg.agent_counts]


def _plan_defaults(cfg: BenchConfig) -> Plan:
    spec, w, t = flows.fanout_flow(cfg.defaults_width), cfg.defaults_width, cfg.timeout_s
    return Plan("defaults", "defaults", f"defaults 1→{w:,}→1", f"{w + 2:,} tasks, one run", (spec,),
                lambda s: workloads.fanout(s, spec.name, t),
                lambda c: celery_side.wide(c, w, t), 1, cfg.repeat,
                ("defaults: one agent started without --concurrency and one Celery worker started "
                 "as `celery -A app worker` (prefork, one process per core, prefetch multiplier 4) "
                 "with an app that sets only its broker, result backend and JSON; tasks/s from "
                 "the client's submit to the join's result",), defaults=True)


def _plan_scale(cfg: BenchConfig) -> Plan:
    start = flows.fanout_flow(cfg.scale_start_tasks - 2)
    hist = flows.fanout_flow(cfg.scale_history_tasks - 2)
    sizes = scale.ScaleSizes(start.name, cfg.scale_start_tasks, hist.name, cfg.scale_history_runs,
                             cfg.scale_history_tasks, starts=max(3, cfg.repeat))
    history = cfg.scale_history_runs * cfg.scale_history_tasks
    return Plan("scale", "scale", "scale (FlowForge only)",
                f"{cfg.scale_history_runs} runs x {cfg.scale_history_tasks:,} tasks = {history:,}",
                (start, hist), lambda s: scale.scale(s, sizes, cfg.timeout_s), None,
                cfg.agents, 1, (
                    f"scale: {sizes.starts} timed starts of a {cfg.scale_start_tasks:,}-task run "
                    "(1 → N → 1) before and after the history, medians; each waited for until it "
                    "succeeded. 1st task queued = its queued event arrived (published after the "
                    "commit); the queued_at stamp itself (in the JSON) is taken before the commit. "
                    "Tasks stored count the timed and warm-up runs too. The history runs 4 at a time.",))


# -- measuring -------------------------------------------------------------------------------


@dataclass(slots=True)
class Side:
    """One system's samples of one workload, for the JSON."""

    name: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None
    memory: dict[str, dict[str, int]] = field(default_factory=dict)
    shutdown: dict[str, Any] = field(default_factory=dict)
    stack_failed: bool = False

    @property
    def live(self) -> bool:
        return self.error is None and self.skipped is None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"samples": self.samples, "median": medians(self.samples),
                               "memory": self.memory, "shutdown": self.shutdown}
        if self.error is not None:
            out["error"] = self.error
        if self.skipped is not None:
            out = {"skipped": self.skipped}
        return out


def _workdir(cfg: BenchConfig, key: str) -> contextlib.AbstractContextManager[str]:
    if cfg.workdir is None:
        return tempfile.TemporaryDirectory(prefix=f"flowforge-bench-{key}-")
    path = Path(cfg.workdir) / key
    path.mkdir(parents=True)
    return contextlib.nullcontext(str(path))


def _progress(plan: Plan, i: int, side: str, sample: dict[str, Any]) -> None:
    print(f"  {plan.label} [{i + 1}/{plan.repeat}] {side}: {sample['wall_s']:.3f} s",
          file=sys.stderr, flush=True)


def _fail(side: Side, plan: Plan, exc: BaseException, what: str = "") -> None:
    side.error = f"{what}{exc}"
    side.stack_failed = side.stack_failed or isinstance(exc, StackError)
    print(f"{plan.label}: {side.name} FAILED: {side.error}", file=sys.stderr, flush=True)


async def _start_flowforge(stack: Stack, plan: Plan, ff: Side, timeout_s: float) -> None:
    try:
        await stack.start()
        assert stack.client is not None
        await stack.client.register([*plan.flows, flows.single_flow()])
        await workloads.one_run(stack, "bench_single", timeout_s)  # warm-up
    except StackError as exc:
        _fail(ff, plan, exc, "the stack did not start: ")
    except (workloads.WorkloadError, FlowForgeError, NatsError) as exc:
        _fail(ff, plan, exc, "registration or warm-up: ")


async def _start_celery(stack: CeleryStack, plan: Plan, cel: Side) -> None:
    try:
        await stack.start()  # its last step is a warm-up task
    except Exception as exc:  # noqa: BLE001 - Celery not starting fails that side only
        _fail(cel, plan, exc, "the stack did not start: ")


async def _alternate(plan: Plan, ff: Side, ff_stack: Stack, cel: Side, cel_stack: CeleryStack) -> None:
    """F, C, F, C, …: a side that failed is left out of the remaining rounds. Before each
    sample the bench process collects its garbage, so that neither side's sample pays for
    collecting what the other side's client left (Celery's client leaves much more)."""
    for i in range(plan.repeat):
        if ff.live:
            gc.collect()
            meter = CpuMeter.start(ff_stack)
            try:
                ff.samples.append(await plan.flowforge(ff_stack) | meter.fields())
                _progress(plan, i, "FlowForge", ff.samples[-1])
            except (workloads.WorkloadError, FlowForgeError, StackError, NatsError) as exc:
                _fail(ff, plan, exc)
        if cel.live and plan.celery is not None:
            gc.collect()
            meter = CpuMeter.start(cel_stack)
            try:
                cel.samples.append(await cel_stack.run(plan.celery, cel_stack) | meter.fields())
                _progress(plan, i, "Celery", cel.samples[-1])
            except Exception as exc:  # noqa: BLE001 - a Celery or Redis error fails that side only
                _fail(cel, plan, exc)


async def measure(cfg: BenchConfig, plan: Plan, celery_off: str | None) -> dict[str, Any]:
    """One workload on fresh stacks; the entry of ``result["workloads"]``."""
    ff, cel = Side("FlowForge"), Side("Celery")
    if plan.celery is None:
        cel.skipped = "FlowForge only"
    elif celery_off is not None:
        cel.skipped = celery_off
    t0 = time.perf_counter()
    with _workdir(cfg, plan.key) as tmp:
        (Path(tmp) / "flowforge").mkdir()
        (Path(tmp) / "celery").mkdir()
        ff_stack = Stack(Path(tmp) / "flowforge", plan.agents,
                         None if plan.defaults else cfg.concurrency)
        cel_stack = CeleryStack(Path(tmp) / "celery", workers=plan.agents, defaults=plan.defaults)
        try:
            await _start_flowforge(ff_stack, plan, ff, cfg.timeout_s)
            if cel.live:
                await _start_celery(cel_stack, plan, cel)
            await _alternate(plan, ff, ff_stack, cel, cel_stack)
            ff.memory, cel.memory = ff_stack.memory(), cel_stack.memory()
        finally:
            await cel_stack.stop()
            await ff_stack.stop()
        ff.shutdown, cel.shutdown = ff_stack.stopped, cel_stack.stopped
    return {"kind": plan.kind, "label": plan.label, "size": plan.size,
            "flows": [f.name for f in plan.flows], "agents": plan.agents,
            "celery_workers": plan.agents, "repeat": plan.repeat, "notes": list(plan.notes),
            "elapsed_s": time.perf_counter() - t0, "stack_failed": ff.stack_failed,
            "flowforge": ff.as_json(), "celery": cel.as_json()}
