"""``flowforge dev``: embedded NATS + coordinator + agents + progress in one process."""

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from flowforge import child_show, dev_batch, render, runtime, show_cli
from flowforge.batch_cli import read_params
from flowforge.client import Client
from flowforge.connection import ConnectOptions
from flowforge.embedded import EmbeddedNats, EmbeddedNatsError, parse_listen, parse_sync_interval
from flowforge.loader import import_target
from flowforge.metrics_http import add_metrics_arg, serving
from flowforge.params import parse_param
from flowforge.registry import REGISTRY
from flowforge.terminal import out
from protocol.children import CHILD_SEP
from protocol.errors import FlowForgeError
from protocol.flows import FlowSpec
from protocol.records import RunDetail, RunRecord, TaskRecord
from protocol.states import RUN_FINAL, RunStatus, TaskStatus
from protocol.subjects import DEFAULT_NAMESPACE


def add_dev_parser(sub: Any) -> None:
    c = sub.add_parser(
        "dev", help="run everything in one process: NATS, coordinator, agents, progress",
        description="Start an embedded nats-server, a coordinator and one agent for every "
        "queue the file's flows use; register the flows; optionally run one and follow it.",
    )
    c.add_argument("target", metavar="FILE_OR_MODULE")
    c.add_argument("--run", metavar="FLOW", help="start this flow and exit when it finishes "
                   "(0 succeeded, 1 failed)")
    c.add_argument("--param", "-p", action="append", metavar="KEY=VALUE", type=parse_param,
                   help="run parameter; VALUE is JSON when it parses; repeatable")
    c.add_argument("--batch", metavar="PARAMS.jsonl",
                   help="with --run: one run per line of the file (a JSON object of parameters) "
                   "as one batch, then the runs side by side: the dashboard's Experiments view, "
                   "or with --headless the `flowforge experiments` table once the batch ends")
    c.add_argument("--headless", action="store_true",
                   help="print progress lines instead of opening the dashboard; with --run, "
                   "exit when the run finishes")
    c.add_argument("--data-dir", type=Path, default=Path(".flowforge"),
                   help="database and JetStream store (default: %(default)s)")
    c.add_argument("--listen", default="127.0.0.1:4222", metavar="HOST:PORT", type=parse_listen,
                   help="embedded nats-server address; a free port is used when it is taken "
                   "(default: %(default)s)")
    c.add_argument("--sync-interval", type=parse_sync_interval, metavar="always|DURATION",
                   help="how often the embedded nats-server flushes JetStream to disk "
                   "(default: the server's 2m; see flowforge-coordinator --help)")
    c.add_argument("--concurrency", type=int, default=None,
                   help="slots of each agent (default: as flowforge-agent's)")
    add_metrics_arg(c, "the coordinator's and the agent's figures (one endpoint)")


class Progress:
    """Prints each task's transitions for one run as events arrive."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.early: list[TaskRecord] = []
        self.last: dict[str, TaskStatus] = {}
        self.t0 = time.time()

    def on_task(self, rec: TaskRecord) -> None:
        if self.run_id is None:
            self.early.append(rec)
            return
        if rec.run_id != self.run_id or self.last.get(rec.task, TaskStatus.PENDING) is rec.status:
            return
        if CHILD_SEP in rec.task and rec.status is not TaskStatus.FAILED:
            return  # child tasks may be thousands: only their failures are news
        self.last[rec.task] = rec.status
        detail = ""
        if rec.status is TaskStatus.RUNNING and rec.agent_id:
            detail = f"on {rec.agent_id}"
        elif rec.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED):
            detail = f"in {render.duration(rec.started_at, rec.finished_at)}"
            if rec.error_type:
                detail += f": {rec.error_type}: {render.cut(rec.error_message or '', 80)}"
        elif rec.note:
            detail = rec.note
        line = f"{time.time() - self.t0:8.3f}s  {rec.task:32} {rec.status.value:16} {detail}"
        out(line.rstrip(), flush=True)

    def started(self, run_id: str) -> None:
        self.run_id = run_id
        early, self.early = self.early, []
        for rec in early:
            self.on_task(rec)


async def _start_nats(ns: argparse.Namespace) -> EmbeddedNats:
    host, port = ns.listen
    server = EmbeddedNats(ns.data_dir / "nats", host=host, port=port,
                          sync_interval=ns.sync_interval)
    try:
        await server.start()
    except EmbeddedNatsError:
        server = EmbeddedNats(ns.data_dir / "nats", host=host, port=-1,
                              sync_interval=ns.sync_interval)
        await server.start()
    return server


async def dev(ns: argparse.Namespace) -> int:
    from agent.config import default_concurrency
    from agent.worker import Agent, AgentConfig
    from coordinator.service import Coordinator, CoordinatorConfig
    import_target(ns.target)
    if not REGISTRY.flows:
        raise FlowForgeError(f"{ns.target} defines no flows (call register_task_pipeline)")
    if ns.run and ns.run not in REGISTRY.flows:
        raise FlowForgeError(f"{ns.target} defines no flow {ns.run!r}; it defines "
                             f"{', '.join(sorted(REGISTRY.flows))}")
    if ns.batch and not ns.run:
        raise FlowForgeError("--batch runs the flow given by --run over each line of the file")
    ns.batch_params = read_params(ns.batch) if ns.batch else None
    params = dict(ns.param or [])
    server = await _start_nats(ns)
    opts = ConnectOptions(url=server.url, namespace=DEFAULT_NAMESPACE)
    queues = tuple(sorted({q for f in REGISTRY.flows.values() for q in f.queues()}))
    coordinator = Coordinator(CoordinatorConfig(connect=opts, db_path=ns.data_dir / "flowforge.db"))
    agent = Agent(AgentConfig(connect=opts, queues=queues, functions=dict(REGISTRY.functions),
                              concurrency=max(ns.concurrency or default_concurrency("thread"), len(queues)),
                              grace_s=5.0))
    out(f"nats-server {server.url} (store {server.store_dir}), database "
          f"{ns.data_dir / 'flowforge.db'}, agent on {', '.join(queues)}", file=sys.stderr)
    try:
        await coordinator.start()
        await agent.start()
        async with serving(ns.metrics, [coordinator.metrics_collector(), agent.metrics]) as url, \
                asyncio.TaskGroup() as tg:
            if url:
                out(f"metrics on {url}", file=sys.stderr)
            tg.create_task(coordinator.run())
            tg.create_task(agent.run())
            try:
                code = await _session(ns, opts, params, coordinator, agent)
            finally:
                agent.request_stop()
                coordinator.request_stop()
        return code
    finally:
        await agent.shutdown()
        await coordinator.shutdown()
        await server.stop()


async def _session(ns: argparse.Namespace, opts: ConnectOptions, params: dict[str, Any],
                   coordinator: Any, agent: Any) -> int:
    async with Client(opts) as client:
        await coordinator.started.wait()
        for r in await client.register():
            out(f"registered {r.name} ({r.version})", file=sys.stderr)
        if ns.batch_params is not None:
            if ns.headless:
                return await dev_batch.headless(client, ns.run, ns.batch_params)
            return await dev_batch.dashboard(client, opts, ns.run, ns.batch_params)
        if not ns.headless:
            return await _dashboard(client, opts, ns.run, params)
        if not ns.run:
            out(f"ready: try `flowforge run {next(iter(REGISTRY.flows))} --nats {opts.url}` "
                  "in another terminal; Ctrl-C stops", file=sys.stderr)
            stop = asyncio.Event()
            runtime.install_stop_signals(stop.set)
            await stop.wait()
            return runtime.EXIT_OK
        try:
            return await _follow(client, ns.run, params)
        except FlowForgeError as exc:
            out(f"flowforge dev: {exc}", file=sys.stderr)
            return runtime.EXIT_USAGE


async def _dashboard(
    client: Client, opts: ConnectOptions, flow: str | None, params: dict[str, Any]
) -> int:
    """The Textual dashboard over this dev stack; with ``--run``, opened on that run."""
    from tui.app import DashboardApp
    from tui.client_source import ClientSource

    run = await client.start(flow, params, source="dev") if flow else None
    app = DashboardApp(ClientSource(opts))
    if run is not None:
        app.call_after_refresh(app.open_run, run.run_id)
    await app.run_async()
    if run is None:
        return runtime.EXIT_OK
    status = (await client.get(run.run_id)).run.status
    return runtime.EXIT_FAILED if status in (RunStatus.FAILED, RunStatus.CANCELLED) else runtime.EXIT_OK


async def _follow(client: Client, flow: str, params: dict[str, Any]) -> int:
    progress = Progress()
    finished = asyncio.Event()
    final: dict[str, RunRecord] = {}

    async def pump() -> None:
        async for event in client.events():
            if isinstance(event, TaskRecord):
                progress.on_task(event)
            elif isinstance(event, RunRecord) and event.run_id == progress.run_id \
                    and event.status in RUN_FINAL:
                final["run"] = event
                finished.set()

    pumper = asyncio.create_task(pump())
    await asyncio.sleep(0)
    try:
        run = await client.start(flow, params, source="dev")
        out(f"run {run.run_id} of {flow} started", flush=True)
        progress.started(run.run_id)
        detail = await client.wait(run.run_id)
    finally:
        pumper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumper
    spec = REGISTRY.flows[flow]
    rows = [[t.task, t.status.value, str(t.attempt), render.duration(t.started_at, t.finished_at)]
            for t in render.ordered(detail, spec)]
    out()
    out(render.table(["task", "status", "attempt", "duration"], rows))
    for t in render.ordered(detail, spec):
        if t.error_type:
            out(f"\n── {t.task} failed: {t.error_type}: {t.error_message}\n{t.traceback or ''}")
    await _print_mapped(client, detail, spec)
    kids = await child_show.fetch(client, detail.run.run_id, {t.task for t in detail.tasks})
    for name, lines in child_show.lines_by_task(detail.run.run_id, kids).items():
        out(f"\n── {name} " + "\n".join(lines))
    r = detail.run
    out(f"\nrun {r.run_id} {r.status.value} in {render.duration(r.started_at, r.finished_at)}"
          f" ({r.counts.succeeded}/{r.counts.total} tasks succeeded)")
    return runtime.EXIT_OK if r.status is RunStatus.SUCCEEDED else runtime.EXIT_FAILED


async def _print_mapped(client: Client, detail: RunDetail, spec: FlowSpec) -> None:
    """Under the table: each mapped task that started, its instances counted and the failed."""
    run_id = detail.run.run_id
    for task in spec.tasks:
        if task.map_over and any(r.task == task.name and r.attempt for r in detail.tasks):
            found = await show_cli.listed(client, run_id, task.name)
            lines = render.mapped_lines(run_id, task.name, found.counts, found.total,
                                        found.instances)
            out(f"\n── {task.name} (mapped) " + "\n".join(lines))


def dev_main(ns: argparse.Namespace) -> int:
    try:
        return runtime.run(dev(ns))
    except (FlowForgeError, EmbeddedNatsError) as exc:
        out(f"flowforge dev: {exc}", file=sys.stderr)
        return runtime.EXIT_USAGE
    except KeyboardInterrupt:
        return runtime.EXIT_INTERRUPTED
