"""``python -m bench.batches``: one batch of many items of a one-task no-op flow in a real
coordinator. Measures how long submitting takes and whether the coordinator's memory stays
bounded while the batch runs (items wait in SQLite, not as live runs).

On one fresh stack (embedded nats-server, coordinator, one agent), with ``--items`` parameter
sets ``{"i": n}`` of ``bench_item`` (see bench.flows):

1. submit: ``Client.submit_batch`` from the call until it returns (create, add the items in
   chunks, start); the goal is under 10 s for 100,000 items;
2. run: from the submit's return to the batch's ``finished_at`` (every item run), with the
   coordinator's RSS sampled all along (before the submit, its peak in each phase, after);
3. resubmit: the same items again, every one skipped (they succeeded);
4. dry run: the same items with ``dry_run=True`` (nothing stored).

The coordinator's RSS is read from /proc every ``RSS_SAMPLE_S``; its nats-server (a child
process) is not counted.
"""

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import flows
from bench.report import environment, write_json
from bench.stack import Stack, memory_kib
from flowforge import Client, runtime
from flowforge.batch_calls import BatchSubmission
from protocol.batches import BATCH_FINAL, DEFAULT_MAX_ACTIVE, MAX_ACTIVE_LIMIT, BatchRecord

RSS_SAMPLE_S = 0.1
TIMELINE_EVERY_S = 1.0
POLL_S = 1.0
"""How often the batch is looked at while it runs (each look counts its items by status)."""
PROGRESS_EVERY_S = 10.0
SUBMIT_GOAL_S = 10.0
MIN_RUNS_PER_S = 20.0
"""For the run's timeout: give up when the batch runs slower than this."""


@dataclass(slots=True)
class RssWatch:
    """Peak RSS (KiB) of one process per phase, sampled in the background; ``enter`` a phase."""

    pid: int
    phase: str = "idle"
    peaks_kib: dict[str, int] = field(default_factory=dict)
    timeline: list[tuple[str, float, int]] = field(default_factory=list)
    """(phase, seconds since the watch began, RSS KiB), about every TIMELINE_EVERY_S."""
    began: float = field(default_factory=time.monotonic)
    at: dict[str, int] = field(default_factory=dict)
    """RSS KiB as each phase began."""

    def sample(self) -> int:
        rss = memory_kib(self.pid).get("rss_kib", 0)
        self.peaks_kib[self.phase] = max(self.peaks_kib.get(self.phase, 0), rss)
        t = time.monotonic() - self.began
        if not self.timeline or t - self.timeline[-1][1] >= TIMELINE_EVERY_S:
            self.timeline.append((self.phase, round(t, 2), rss))
        return rss

    def enter(self, phase: str) -> int:
        """Close the current phase with a last sample; returns the RSS as the next begins."""
        self.sample()
        self.phase = phase
        self.at[phase] = self.sample()
        return self.at[phase]

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(RSS_SAMPLE_S)


async def _wait_done(client: Client, batch_id: str, timeout_s: float, total: int) -> BatchRecord:
    """The batch once it is done or cancelled, looked at every POLL_S, progress on stderr."""
    deadline = time.monotonic() + timeout_s
    said = time.monotonic()
    while True:
        record = (await client.batch(batch_id)).batch
        if record.state in BATCH_FINAL:
            return record
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} is still {record.state} after {timeout_s:g} s: "
                               f"{record.counts}")
        if time.monotonic() - said >= PROGRESS_EVERY_S:
            said = time.monotonic()
            done = sum(n for s, n in record.counts.items() if s not in ("waiting", "pending",
                                                                       "running"))
            print(f"bench.batches: {done:,}/{total:,} items done", file=sys.stderr)
        await asyncio.sleep(POLL_S)  # the polling interval, not a synchronisation


async def _timed_submit(client: Client, items: list[dict[str, Any]], max_active: int,
                        name: str, dry_run: bool = False) -> tuple[float, BatchSubmission]:
    t0 = time.perf_counter()
    sub = await client.submit_batch(flows.item_flow().name, items, name=name,
                                    max_active=max_active, dry_run=dry_run)
    return time.perf_counter() - t0, sub


async def _warm_up(client: Client, max_active: int) -> None:
    """One small batch (not counted) so the code paths are loaded before the RSS baseline."""
    _, sub = await _timed_submit(client, [{"i": -n} for n in range(1, 11)], max_active, "warm-up")
    assert sub.batch is not None
    await _wait_done(client, sub.batch.batch_id, 120, 10)


def _phase(seconds: float, sub: BatchSubmission) -> dict[str, Any]:
    return {"seconds": seconds, "total": sub.total, "to_run": sub.to_run,
            "skipped": sub.total - sub.to_run}


async def _first_batch(stack: Stack, items: list[dict[str, Any]], max_active: int,
                       watch: RssWatch) -> dict[str, Any]:
    """Submit the items and wait until every one ran: the submit's and the run's numbers."""
    assert stack.client is not None
    watch.enter("submit")
    cpu0 = stack.cpu()["coordinator"]
    submit_s, sub = await _timed_submit(stack.client, items, max_active, "bench")
    submitted_at, cpu1 = time.time(), stack.cpu()["coordinator"]
    assert sub.batch is not None
    watch.enter("run")
    record = await _wait_done(stack.client, sub.batch.batch_id,
                              max(600.0, len(items) / MIN_RUNS_PER_S), len(items))
    cpu2 = stack.cpu()["coordinator"]
    run_s = (record.finished_at or time.time()) - submitted_at
    return {"submit": _phase(submit_s, sub) | {"coordinator_cpu_s": cpu1 - cpu0,
                                               "goal_s": SUBMIT_GOAL_S},
            "run": {"seconds": run_s, "runs_per_s": sub.to_run / run_s if run_s > 0 else 0.0,
                    "state": record.state.value, "counts": record.counts,
                    "coordinator_cpu_s": cpu2 - cpu1}}


async def _again(client: Client, items: list[dict[str, Any]], max_active: int,
                 watch: RssWatch) -> dict[str, Any]:
    """The same items submitted again (all skipped, the batch done at once), then a dry run."""
    watch.enter("resubmit")
    resubmit_s, again = await _timed_submit(client, items, max_active, "bench again")
    assert again.batch is not None
    record = await _wait_done(client, again.batch.batch_id, 600, len(items))
    watch.enter("dry_run")
    dry_s, plan = await _timed_submit(client, items, max_active, "", dry_run=True)
    watch.enter("after")
    return {"resubmit": _phase(resubmit_s, again) | {"state": record.state.value,
                                                     "counts": record.counts},
            "dry_run": _phase(dry_s, plan)}


async def measure(ns: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    items = [{"i": n} for n in range(ns.items)]
    async with Stack(workdir, agents=1, concurrency=ns.concurrency) as stack:
        assert stack.client is not None
        await stack.client.register([flows.item_flow()])
        await _warm_up(stack.client, ns.max_active)
        watch = RssWatch(stack.pids()["coordinator"])
        sampler = asyncio.ensure_future(watch.run())
        try:
            phases = await _first_batch(stack, items, ns.max_active, watch)
            phases |= await _again(stack.client, items, ns.max_active, watch)
            memory = stack.memory()
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
    return {
        "items": ns.items, "max_active": ns.max_active,
        "agent_concurrency": ns.concurrency or "agent default", **phases,
        "coordinator_rss_kib": {"before": watch.at["submit"], "after_run": watch.at["resubmit"],
                                "after": watch.at["after"], "peak_by_phase": watch.peaks_kib,
                                "peak_lifetime": memory["coordinator"].get("peak_rss_kib", 0)},
        "agent_peak_rss_kib": memory.get("agent0", {}).get("peak_rss_kib", 0),
        "coordinator_rss_timeline": watch.timeline,
    }


def surprises(r: dict[str, Any]) -> list[str]:
    """What did not come out as a correct batch would have it (the numbers may then mislead)."""
    out: list[str] = []
    n, run = r["items"], r["run"]
    if r["submit"]["to_run"] != n:
        out.append(f"the submit said {r['submit']['to_run']:,} of {n:,} items would run")
    if run["state"] != "done" or run["counts"] != {"succeeded": n}:
        out.append(f"the batch ended {run['state']} with {_counts(run['counts'])}")
    for phase in ("resubmit", "dry_run"):
        if r[phase]["to_run"] != 0:
            out.append(f"{phase}: {r[phase]['to_run']:,} items reported to run, expected 0 "
                       "(every item succeeded in the first batch)")
    if r["resubmit"]["counts"] != {"skipped": n}:
        out.append(f"the second batch ended with {_counts(r['resubmit']['counts'])}")
    return out


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def render(r: dict[str, Any]) -> str:
    sub, run, again, dry = r["submit"], r["run"], r["resubmit"], r["dry_run"]
    rss, peaks = r["coordinator_rss_kib"], r["coordinator_rss_kib"]["peak_by_phase"]
    verdict = "met" if sub["seconds"] < sub["goal_s"] else "NOT met"
    rows = [
        ("items (one no-op task each)", f"{r['items']:,}, max_active {r['max_active']}, "
                                        f"agent concurrency {r['agent_concurrency']}"),
        ("submit (create, add, start)", f"{sub['seconds']:.2f} s ({sub['to_run']:,} to run; "
                                        f"goal < {sub['goal_s']:g} s: {verdict}; coordinator "
                                        f"CPU {sub['coordinator_cpu_s']:.1f} s)"),
        ("run to done", f"{run['seconds']:.1f} s, {run['runs_per_s']:,.0f} runs/s "
                        f"({run['state']}: {_counts(run['counts'])}; coordinator CPU "
                        f"{run['coordinator_cpu_s']:.1f} s)"),
        ("second submit (all skipped)", f"{again['seconds']:.2f} s ({again['skipped']:,} "
                                        f"skipped, {again['to_run']:,} to run)"),
        ("dry run", f"{dry['seconds']:.2f} s ({dry['skipped']:,} would be skipped, "
                    f"{dry['to_run']:,} would run)"),
        ("coordinator RSS before submit", _mib(rss["before"])),
        ("coordinator RSS peak: submit", _mib(peaks.get("submit", 0))),
        ("coordinator RSS peak: run", _mib(peaks.get("run", 0))),
        ("coordinator RSS after the run", _mib(rss["after_run"])),
        ("coordinator RSS peak: resubmit", _mib(peaks.get("resubmit", 0))),
        ("coordinator RSS peak: dry run", _mib(peaks.get("dry_run", 0))),
        ("coordinator RSS at the end", f"{_mib(rss['after'])} (lifetime peak "
                                       f"{_mib(rss['peak_lifetime'])})"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {status}" for status, n in sorted(counts.items())) or "no items"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.batches", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--max-active", type=int, default=DEFAULT_MAX_ACTIVE,
                   help="runs of the batch at once (default: the library's, %(default)s)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="the agent's --concurrency (default: the agent's default)")
    p.add_argument("--json-out", type=Path, metavar="PATH",
                   help="also write the JSON here (it always goes to bench/results/)")
    ns = p.parse_args(argv)
    if ns.items < 1 or not 1 <= ns.max_active <= MAX_ACTIVE_LIMIT or (ns.concurrency or 1) < 1:
        print(f"bench.batches: --items must be positive, --max-active 1 to {MAX_ACTIVE_LIMIT:,}, "
              "--concurrency positive", file=sys.stderr)
        return runtime.EXIT_USAGE
    with tempfile.TemporaryDirectory() as tmp:
        result = runtime.run(measure(ns, Path(tmp)))
    result["surprises"] = surprises(result)
    print(render(result))
    for line in result["surprises"]:
        print(f"SURPRISE: {line}")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = {"benchmark": "batches", **result, "environment": environment()}
    for path in write_json(out, f"batches-{stamp}", ns.json_out):
        print(f"wrote {path}", file=sys.stderr)
    return runtime.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
