"""``python -m bench.profile``: where one component's time goes, with cProfile, on a real stack.

The component under study runs in this process under cProfile; everything else runs as it
does in production (an embedded nats-server, the other component as a console script):

  python -m bench.profile coordinator fanout 10000   # coordinator in-process, agent process
  python -m bench.profile agent fanout 10000         # agent in-process, coordinator process
  python -m bench.profile coordinator triggers 5000  # 5,000 trigger messages, one run each
  python -m bench.profile coordinator chain 1000
  python -m bench.profile coordinator mapped 10000   # root → 10,000 mapped instances → join
  python -m bench.profile coordinator batch 50000    # a batch of 50,000 items, max_active 100

Prints the functions with the most time of their own, then FlowForge's own functions by
cumulative time, and the CPU time of the event loop's thread and of the others (the SQLite
connections' threads, whose statements cProfile does not see). cProfile roughly doubles the
profiled component's CPU time: read the numbers as shares, and `python -m bench.run` for speed.
"""

import argparse
import asyncio
import contextlib
import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from agent.worker import Agent, AgentConfig
from bench import flows
from bench.mapping import items_mod
from bench.stack import console_script, free_port, spawn
from coordinator.service import Coordinator, CoordinatorConfig
from flowforge import Client, ConnectOptions, runtime
from flowforge.embedded import EmbeddedNats
from flowforge.registry import REGISTRY
from protocol.batches import BATCH_FINAL
from protocol.errors import FlowForgeError
from protocol.flows import FlowSpec

OURS = "coordinator|agent|flowforge|protocol"
BATCH_MAX_ACTIVE = 100
BATCH_POLL_S = 1.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("component", choices=("coordinator", "agent"))
    p.add_argument("workload", choices=("fanout", "chain", "triggers", "mapped",
                                                "batch"))
    p.add_argument("size", type=int, help="tasks of the fan-out or chain, instances of the "
                   "mapped task; runs for triggers; items of the batch")
    p.add_argument("--top", type=int, default=30, help="rows per table (default: %(default)s)")
    return p


def workload_flow(workload: str, size: int) -> FlowSpec:
    match workload:
        case "fanout":
            return flows.fanout_flow(size)
        case "chain":
            return flows.chain_flow(size)
        case "mapped":
            return flows.mapped_flow()
        case "batch":
            return flows.item_flow()
        case _:
            return flows.single_flow()


@contextlib.asynccontextmanager
async def deployment(component: str, workdir: Path) -> AsyncIterator[ConnectOptions]:
    """nats-server, the coordinator and one agent (16 slots); ``component`` in-process."""
    nats = EmbeddedNats(workdir / "nats", port=free_port())
    await nats.start()
    opts = ConnectOptions(url=nats.url)
    other = None
    try:
        if component == "coordinator":
            coordinator = Coordinator(CoordinatorConfig(connect=opts, db_path=workdir / "ff.db"))
            await coordinator.start()
            serving = asyncio.create_task(coordinator.run())
            await coordinator.started.wait()
            other = spawn("agent", [*console_script("flowforge-agent", "agent.cli"), "--nats",
                                    nats.url, "--import", "bench.flows", "--concurrency", "16"],
                          workdir / "agent.log")
            yield opts
            await coordinator.shutdown()
        else:
            other = spawn("coordinator", [*console_script("flowforge-coordinator", "coordinator.cli"),
                                          "--nats", nats.url, "--db", str(workdir / "ff.db")],
                          workdir / "coordinator.log")
            await coordinator_answering(opts)
            agent = Agent(AgentConfig(connect=opts, queues=("default",),
                                      functions=dict(REGISTRY.functions), concurrency=16))
            await agent.start()
            serving = asyncio.create_task(agent.run())
            await agent.ready.wait()
            yield opts
            agent.request_stop()
            await serving
            await agent.shutdown()
        await asyncio.wait_for(serving, 15)
    finally:
        if other is not None:
            await other.stop()
        await nats.stop()


async def coordinator_answering(opts: ConnectOptions, timeout_s: float = 60.0) -> None:
    """Wait until a coordinator answers the API (a console script takes a moment to start)."""
    deadline = time.monotonic() + timeout_s
    async with Client(opts, timeout_s=2.0) as client:
        while True:
            try:
                await client.flows()
                return
            except FlowForgeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


async def run_batch(client: Client, spec: FlowSpec, size: int) -> None:
    """A batch of ``size`` items ``{"i": n}`` (one run each), BATCH_MAX_ACTIVE at once;
    returns when it is done."""
    items = [{"i": n} for n in range(size)]
    sub = await client.submit_batch(spec.name, items, name="profile", max_active=BATCH_MAX_ACTIVE)
    assert sub.batch is not None
    timeout_s = max(300.0, size / 20)
    deadline = time.monotonic() + timeout_s
    while (await client.batch(sub.batch.batch_id)).batch.state not in BATCH_FINAL:
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {sub.batch.batch_id} not done after {timeout_s:g} s")
        await asyncio.sleep(BATCH_POLL_S)  # the polling interval, not a synchronisation


async def run_once(client: Client, workload: str, spec: FlowSpec, size: int) -> None:
    """One run of the flow, ``size`` trigger messages, or a batch of ``size`` items; returns
    when all succeeded."""
    if workload == "batch":
        await run_batch(client, spec, size)
        return
    if workload != "triggers":
        params = {"n": size, "mod": items_mod(size)} if workload == "mapped" else {}
        run = await client.start(spec.name, params)
        await client.wait(run.run_id, timeout_s=300, poll_s=30)
        return
    done = asyncio.Event()
    finished: set[str] = set()

    async def on_run(msg: object) -> None:
        if b'"succeeded"' in msg.data:  # type: ignore[attr-defined]
            finished.add(msg.subject)  # type: ignore[attr-defined]
            if len(finished) >= size:
                done.set()

    sub = await client.nc.subscribe(client.subjects.run_event(spec.name, "*"), cb=on_run)
    acks = [await client.send_trigger(spec.name) for _ in range(size)]
    await asyncio.gather(*acks)
    await asyncio.wait_for(done.wait(), 300)
    await sub.unsubscribe()


async def profile(component: str, workload: str, size: int, top: int) -> int:
    spec = workload_flow(workload, size)
    with tempfile.TemporaryDirectory(prefix="flowforge-profile-") as tmp:
        async with deployment(component, Path(tmp)) as opts, Client(opts, timeout_s=60) as client:
            await client.register([spec, flows.single_flow()])
            await run_once(client, "fanout", flows.single_flow(), 1)  # warm-up
            prof = cProfile.Profile()
            started = time.perf_counter()
            cpu0, main0 = time.process_time(), time.thread_time()
            prof.enable()
            await run_once(client, workload, spec, size)
            prof.disable()
            wall = time.perf_counter() - started
            main_s = time.thread_time() - main0
            others_s = time.process_time() - cpu0 - main_s
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(OURS, top)
    print(f"{component} profiled during {workload} {size}: {wall:.3f} s wall (under cProfile); "
          f"CPU {main_s:.3f} s in the event loop's thread, {others_s:.3f} s in the others "
          "(SQLite's connections: cProfile does not see them)")
    print(out.getvalue())
    return runtime.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.size < 1:
        print("bench.profile: size must be 1 or more", file=sys.stderr)
        return runtime.EXIT_USAGE
    return runtime.run(profile(ns.component, ns.workload, ns.size, ns.top))


if __name__ == "__main__":
    sys.exit(main())
