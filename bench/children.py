"""``python -m bench.children``: child tasks (``ctx.map`` inside a running task) on a real stack
(embedded nats-server, coordinator, two agents with four slots each, as console scripts).

workloads (default sizes)
  parents  200 parents each mapping 20 no-op children (the issue's scenario): ``root`` returns
           list(range(200)), ``parent`` is mapped over it and each instance, a sync task,
           ``ctx.map``s 20 children and blocks until they are done (bench.flows.parents_flow).
           Eight slots in all for 200 waiting parents: it ends only because a waiting parent
           lends its slot.
  one      one parent mapping 10,000 no-op children (bench.flows.one_parent_flow)
  mapped   the same 10,000 no-op items as a flow-level mapped task (``map_over``):
           root → 10,000 instances → join (bench.flows.mapped_flow), for comparison with ``one``
  celery   Celery 5 + Redis, the equivalent of ``parents``: 200 parent tasks, each calling a
           group of 20 no-op children and waiting with ``allow_join_result``, on two prefork
           workers with ``--concurrency 4`` (the same eight slots). Celery's known failure mode
           is a deadlock (every pool process holds a waiting parent, the children queue behind
           them): a sample that is not done after ``--celery-timeout`` is reported as
           deadlocked, with how many parents had finished. Skipped when Celery or
           redis-server is missing (the ``bench`` extra), or with ``--no-celery``.

Each FlowForge workload gets its own fresh stack, warmed up with a small run of its flow; the
samples go round the workloads ``--repeat`` times and medians are reported. Per sample: wall
time from the start request to the run's succeeded event, children/s (child tasks, or mapped
instances, over that time), CPU seconds of the coordinator and the agents, and the
coordinator's peak RSS during the sample (VmHWM reset through /proc/<pid>/clear_refs, as in
``bench.mapping``). Each Celery sample gets a fresh stack (a deadlocked one is of no further
use); after a deadlock the Celery side is not sampled again.
"""

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import celery_side, flows, workloads
from bench.mapping import SAMPLE_ERRORS, reset_peak_rss
from bench.report import environment, grid, medians, write_json
from bench.stack import Stack, StackError, cancel_on_signals, memory_kib
from bench.usage import CpuMeter
from flowforge import runtime
from protocol.flows import FlowSpec

FF_KEYS = ("parents", "one", "mapped")
KEYS = (*FF_KEYS, "celery")
AGENTS = 2
SLOTS = 4
"""Each agent's ``--concurrency`` (and each Celery worker's)."""
CELERY_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class Sizes:
    parents: int = 200
    children: int = 20
    """Children of each of the ``parents``."""
    width: int = 10_000
    """Children of ``one``, instances of ``mapped``."""


QUICK = Sizes(parents=20, children=5, width=200)


@dataclass(frozen=True, slots=True)
class Workload:
    key: str
    label: str
    flow: FlowSpec
    params: dict[str, int]
    warm_up: dict[str, int]
    children: int
    """Child tasks (or mapped instances) one run makes."""


def plan(sizes: Sizes, keys: list[str]) -> list[Workload]:
    both = sizes.parents * sizes.children
    every = {
        "parents": Workload("parents", f"{sizes.parents} parents x {sizes.children} children",
                            flows.parents_flow(), {"n": sizes.parents, "children": sizes.children},
                            {"n": 2, "children": 2}, both),
        "one": Workload("one", f"1 parent x {sizes.width:,} children", flows.one_parent_flow(),
                        {"children": sizes.width}, {"children": 2}, sizes.width),
        "mapped": Workload("mapped", f"map_over 1→{sizes.width:,}→1", flows.mapped_flow(),
                           {"n": sizes.width}, {"n": 2}, sizes.width),
    }
    return [every[k] for k in keys if k in every]


@dataclass(slots=True)
class Result:
    label: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    note: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "samples": self.samples,
                               "median": medians(self.samples) if self.samples else {}}
        return out | {k: v for k, v in (("error", self.error), ("note", self.note)) if v}


# -- FlowForge ---------------------------------------------------------------------------------


async def ff_sample(stack: Stack, w: Workload, timeout_s: float) -> dict[str, Any]:
    pid = stack.pids()["coordinator"]
    own_peak = reset_peak_rss(pid)
    meter = CpuMeter.start(stack)
    s = await workloads.one_run(stack, w.flow.name, timeout_s, w.params)
    s |= meter.fields()
    s["coordinator_peak_rss_kib"] = memory_kib(pid).get("peak_rss_kib", 0)
    s["peak_rss_is_per_sample"] = own_peak
    s["children"] = w.children
    s["children_per_s"] = w.children / s["wall_s"]
    return s


async def _warm(stack: Stack, w: Workload, timeout_s: float) -> None:
    """Start the stack, register the workload's flow, one small run of it."""
    print(f"{w.label}: starting its stack", file=sys.stderr, flush=True)
    await stack.start()
    assert stack.client is not None
    await stack.client.register([w.flow])
    await workloads.one_run(stack, w.flow.name, timeout_s, w.warm_up)


async def measure_ff(plans: list[Workload], repeat: int, timeout_s: float,
                     workdir: Path) -> dict[str, Result]:
    """One stack per workload (two agents, four slots each), then the rounds of samples."""
    results = {w.key: Result(w.label) for w in plans}
    async with contextlib.AsyncExitStack() as cleanup:
        stacks: dict[str, Stack] = {}
        for w in plans:
            (workdir / w.key).mkdir()
            stack = Stack(workdir / w.key, agents=AGENTS, concurrency=SLOTS)
            cleanup.push_async_callback(stack.stop)
            await _warm(stack, w, timeout_s)
            stacks[w.key] = stack
        for i in range(repeat):
            for w in plans:
                if results[w.key].error is None:
                    await _one_sample(stacks[w.key], w, results[w.key], timeout_s,
                                      f"[{i + 1}/{repeat}]")
    return results


async def _one_sample(stack: Stack, w: Workload, res: Result, timeout_s: float,
                      which: str) -> None:
    try:
        s = await ff_sample(stack, w, timeout_s)
    except SAMPLE_ERRORS as exc:
        res.error = str(exc)
        print(f"{w.label}: FAILED: {exc}", file=sys.stderr, flush=True)
        return
    res.samples.append(s)
    print(f"  {w.label} {which}: {s['wall_s']:.3f} s, {s['children_per_s']:,.0f} children/s",
          file=sys.stderr, flush=True)


# -- Celery ------------------------------------------------------------------------------------


def celery_parents(stack: celery_side.CeleryStack, parents: int, children: int,
                   timeout_s: float) -> dict[str, Any]:
    """Blocking: ``parents`` group-waiting parent tasks; until all are done or ``timeout_s``."""
    from bench.celery_app import GROUP_PARENT

    task = stack.client().tasks[GROUP_PARENT]
    inner_timeout_s = timeout_s + 60.0  # the parents must not give up within the sample
    t0 = time.perf_counter()
    results = [task.delay(children, inner_timeout_s) for _ in range(parents)]
    done = 0
    while time.perf_counter() - t0 < timeout_s and not stack.stopping.is_set():
        done = sum(1 for r in results if r.ready())
        if done == parents:
            break
        time.sleep(CELERY_POLL_S)
    wall = time.perf_counter() - t0
    failed = [r for r in results if r.ready() and r.failed()]
    if failed:
        raise workloads.WorkloadError(f"celery: {len(failed)} parents failed: {failed[0].result!r}")
    out: dict[str, Any] = {"wall_s": wall, "parents": parents, "parents_done": done,
                           "children": parents * children, "deadlocked": done < parents}
    if done == parents:
        out["children_per_s"] = parents * children / wall
    return out


async def measure_celery(sizes: Sizes, repeat: int, timeout_s: float, workdir: Path) -> Result:
    res = Result(f"celery {sizes.parents} x {sizes.children} (group + allow_join_result)")
    for i in range(repeat):
        sub = workdir / f"celery{i}"
        sub.mkdir()
        try:
            async with celery_side.CeleryStack(sub, workers=AGENTS, concurrency=SLOTS) as stack:
                s = await stack.run(celery_parents, stack, sizes.parents, sizes.children, timeout_s)
                mem = stack.memory()
        except (StackError, workloads.WorkloadError) as exc:
            res.error = str(exc)
            return res
        s["workers_peak_rss_kib"] = sum(m["peak_rss_kib"] for k, m in mem.items()
                                        if k.startswith("worker"))
        res.samples.append(s)
        state = (f"DEADLOCKED: {s['parents_done']}/{sizes.parents} parents done after "
                 f"{s['wall_s']:.0f} s" if s["deadlocked"] else f"{s['wall_s']:.3f} s")
        print(f"  {res.label} [{i + 1}/{repeat}]: {state}", file=sys.stderr, flush=True)
        if s["deadlocked"]:
            res.note = (f"deadlocked in sample {i + 1}: {s['parents_done']} of {sizes.parents} "
                        f"parents done after {timeout_s:g} s (every pool process held a "
                        "parent waiting for children queued behind it); not sampled again")
            break
    return res


# -- the report --------------------------------------------------------------------------------

ROWS = (  # (measure, sample field, format, scale)
    ("run time s (median)", "wall_s", ".3f", 1.0),
    ("children/s", "children_per_s", ",.0f", 1.0),
    ("coordinator peak RSS MiB", "coordinator_peak_rss_kib", ".1f", 1 / 1024),
    ("coordinator CPU s", "cpu_coordinator_s", ".2f", 1.0),
    ("agents CPU s", "cpu_agents_s", ".2f", 1.0),
    ("nats-server CPU s", "cpu_nats_s", ".2f", 1.0),
    ("celery workers peak RSS MiB", "workers_peak_rss_kib", ".1f", 1 / 1024),
)


def _cell(res: Result, key: str, spec: str, scale: float) -> str:
    if not res.samples:
        return "FAILED" if res.error else "-"
    if key == "wall_s" and any(s.get("deadlocked") for s in res.samples):
        s = res.samples[-1]
        return f"DEADLOCK ({s['parents_done']}/{s['parents']} in {s['wall_s']:.0f} s)"
    values = [s[key] for s in res.samples if key in s]
    return format(statistics.median(values) * scale, spec) if values else "-"


def _spread(res: Result) -> str:
    walls = [s["wall_s"] for s in res.samples if not s.get("deadlocked")]
    return f"{min(walls):.3f}-{max(walls):.3f}" if len(walls) > 1 else ""


def table(results: dict[str, Result]) -> list[str]:
    """Measures down, workloads across."""
    cols = list(results.values())
    rows = [["measure", *(r.label for r in cols)]]
    for name, key, spec, scale in ROWS:
        cells = [_cell(r, key, spec, scale) for r in cols]
        if any(c != "-" for c in cells):
            rows.append([name, *cells])
        if key == "wall_s":
            rows.append(["  min-max", *(_spread(r) for r in cols)])
    return grid(rows)


def render(results: dict[str, Result], repeat: int, env: dict[str, Any]) -> str:
    head = (f"child tasks @ {env['commit']}{' (dirty)' if env['dirty'] else ''}: median of "
            f"{repeat} sample(s) per workload, taken in turn; {AGENTS} agents x {SLOTS} slots "
            f"(Celery: {AGENTS} prefork workers x {SLOTS}); {env['nats_server']}, Python "
            f"{env['python']}, {env['loop']}, {env['cpus']} CPUs")
    lines = [head, "", *table(results)]
    for res in results.values():
        if res.note:
            lines.append(f"note: {res.label}: {res.note}")
        if res.error:
            lines.append(f"{res.label}: FAILED: {res.error.splitlines()[0]}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.children", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example: python -m bench.children --repeat 3\n"
                                "exit codes: 0 measured (a Celery deadlock is a measurement), "
                                "1 a FlowForge workload failed, 2 usage, 3 a stack did not "
                                "start, 130 interrupted")
    p.add_argument("--repeat", type=int, default=3, help="samples per workload (default: 3)")
    p.add_argument("--quick", action="store_true",
                   help=f"small sizes: {QUICK.parents} parents x {QUICK.children}, "
                   f"{QUICK.width} children (for a smoke test)")
    p.add_argument("--workload", action="append", choices=KEYS, dest="workloads",
                   help="only this workload; repeatable (default: all)")
    p.add_argument("--no-celery", action="store_true", help="leave the Celery side out")
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="give up on one FlowForge sample after this long (default: %(default)s)")
    p.add_argument("--celery-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="a Celery sample not done after this long is reported as deadlocked "
                   "(default: %(default)s)")
    p.add_argument("--json", type=Path, metavar="PATH",
                   help="also write the results here (always: bench/results/children-<time>.json)")
    return p


def _celery_reason(ns: argparse.Namespace) -> str | None:
    """Why the Celery side is not run (None: it is)."""
    if "celery" not in ns.workloads:
        return "not asked for (--workload)"
    if ns.no_celery:
        return "--no-celery was given"
    return celery_side.redis_available()


async def bench(ns: argparse.Namespace) -> int:
    cancel_on_signals()
    stamp, t0 = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), time.perf_counter()
    sizes, env = QUICK if ns.quick else Sizes(), environment()
    skipped = _celery_reason(ns)
    with tempfile.TemporaryDirectory(prefix="flowforge-bench-children-") as tmp:
        try:
            results = await measure_ff(plan(sizes, ns.workloads), ns.repeat, ns.timeout, Path(tmp))
            if skipped is None:
                results["celery"] = await measure_celery(sizes, ns.repeat, ns.celery_timeout,
                                                         Path(tmp))
        except StackError as exc:
            print(f"bench.children: {exc}", file=sys.stderr)
            return runtime.EXIT_NO_NATS
    print(render(results, ns.repeat, env))
    if skipped is not None:
        print(f"celery: not run: {skipped}")
    out = {"benchmark": "children", "started_at": stamp,
           "config": {"repeat": ns.repeat, "sizes": {"parents": sizes.parents,
                                                     "children": sizes.children,
                                                     "width": sizes.width},
                      "agents": AGENTS, "slots": SLOTS, "workloads": ns.workloads,
                      "timeout_s": ns.timeout, "celery_timeout_s": ns.celery_timeout},
           "environment": env, "workloads": {k: r.as_json() for k, r in results.items()},
           "celery": {"available": False, "reason": skipped} if skipped else {"available": True},
           "elapsed_s": time.perf_counter() - t0}
    for path in write_json(out, f"children-{stamp}", ns.json):
        print(f"wrote {path}", file=sys.stderr)
    failed = any(r.error for k, r in results.items() if k in FF_KEYS)
    return runtime.EXIT_FAILED if failed else runtime.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.repeat < 1 or ns.timeout <= 0 or ns.celery_timeout <= 0:
        print("bench.children: --repeat, --timeout and --celery-timeout must be positive",
              file=sys.stderr)
        return runtime.EXIT_USAGE
    ns.workloads = list(dict.fromkeys(ns.workloads or KEYS))
    try:
        return runtime.run(bench(ns))
    except (asyncio.CancelledError, KeyboardInterrupt):
        return runtime.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
