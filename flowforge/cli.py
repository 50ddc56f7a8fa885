"""``flowforge``: the command-line client (register, run, runs, show, flows, graph; schedule and
batch in their own modules) and ``dev``."""

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from flowforge import (
    batch_cli,
    graphs,
    limit_cli,
    render,
    runtime,
    schedule_cli,
    show_cli,
    stats_cli,
    waiting_notes,
)
from flowforge.batch_cli import add_batch_parser
from flowforge.client import Client
from flowforge.connection import DEFAULT_NATS_URL, add_connection_args, options_from_args
from flowforge.experiments_cli import EXPERIMENT_COMMANDS, add_experiments_parsers
from flowforge.loader import LoadError, import_target
from flowforge.params import params_from, parse_param
from flowforge.registry import REGISTRY
from flowforge.schedule_cli import add_schedule_parser
from flowforge.terminal import out, safe_json
from protocol.errors import FlowForgeError, NotConnected
from protocol.limits import MAX_LIST_LIMIT
from protocol.records import RunDetail
from protocol.states import RunStatus

EPILOG = """examples:
  flowforge dev examples/seed_pipelines.py --run pipeline_simple --headless
  flowforge register examples.seed_pipelines
  flowforge run pipeline_simple_ml --param n_rows=500 --wait
  flowforge runs --flow pipeline_simple --status failed
  flowforge show RUN_ID
  flowforge show RUN_ID --task square --map-index 17
  flowforge show RUN_ID --children train --status failed
  flowforge logs RUN_ID TASK --follow
  flowforge cancel RUN_ID
  flowforge retry RUN_ID --wait
  flowforge run pipeline_simple --only clean_data,analyze_data --wait
  flowforge graph pipeline_simple
  flowforge batch submit pipeline_simple_ml --params params.jsonl --wait
  flowforge run pipeline_simple --priority 5
  flowforge limit set queue:gpu 2
  flowforge agents
  flowforge stats
  flowforge dashboard

exit codes: 0 ok (run succeeded), 1 run (or an item of a batch) failed or cancelled, 2 usage,
3 cannot reach NATS or the coordinator (or NATS refused the login)
"""

EXIT_CONNECTION = runtime.EXIT_NO_NATS


def _params(ns: argparse.Namespace) -> dict[str, Any]:
    return params_from(ns.params_json, "--params-json", ns.param)


def list_limit(text: str) -> int:
    """``--limit``: a whole number the coordinator will honour, or a usage error saying so."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_LIST_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is not from 1 to {MAX_LIST_LIMIT}")
    return value


def _print_json(value: Any) -> None:
    sys.stdout.write(safe_json(msgspec.json.format(msgspec.json.encode(value), indent=2).decode()) + "\n")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--param", "-p", action="append", type=parse_param, metavar="KEY=VALUE",
                   help="run parameter; VALUE is JSON when it parses, else text; repeatable")
    p.add_argument("--params-json", metavar="JSON", help="all parameters as one JSON object")


AddCommand = Callable[[str, str], argparse.ArgumentParser]
"""Adds a subcommand (name, help) that talks to the coordinator: connection options included."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowforge", description="Define, run and inspect FlowForge flows.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text, description=help_text)
        add_connection_args(c, nats_default=DEFAULT_NATS_URL)
        c.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                       help="how long to wait for each coordinator answer (default: %(default)s)")
        return c

    _add_start_commands(cmd)
    _add_run_commands(cmd)
    _add_read_commands(cmd)
    from flowforge.auth_cli import add_auth_parser
    from flowforge.dev import add_dev_parser

    add_dev_parser(sub)
    add_auth_parser(sub)
    add_schedule_parser(sub)
    add_batch_parser(sub)
    limit_cli.add_limit_parser(sub)
    stats_cli.add_stats_parser(sub)
    add_experiments_parsers(sub)
    return p


def _add_start_commands(cmd: AddCommand) -> None:
    """register and run."""
    c = cmd("register", "send the flows defined by modules or files to the coordinator")
    c.add_argument("targets", nargs="+", metavar="MODULE_OR_FILE")
    c.add_argument("--json", action="store_true", help="print JSON")

    c = cmd("run", "start a run of a flow")
    c.add_argument("flow", help="name of a registered flow")
    _add_run_args(c)
    c.add_argument("--wait", action="store_true", help="wait for the run to finish")
    c.add_argument("--wait-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --wait: give up waiting after this long (default: no limit)")
    c.add_argument("--idempotency-key", metavar="KEY",
                   help="a second start with the same key returns the first run")
    c.add_argument("--only", metavar="TASK,TASK",
                   help="run just these tasks (a debug run); the others are skipped and "
                   "their last successful outputs are reused")
    c.add_argument("--priority", type=int, metavar="N", help="the run's priority instead of its "
                   "flow's: within a queue higher goes first (-1000 to 1000)")
    c.add_argument("--json", action="store_true", help="print JSON")


def _add_run_commands(cmd: AddCommand) -> None:
    """What can be done to one run: logs, cancel, retry, mark."""
    c = cmd("logs", "what a task logged and printed (the last 64 KiB, every attempt)")
    c.add_argument("run_id")
    c.add_argument("task")
    c.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new lines until the run finishes")
    c.add_argument("--json", action="store_true", help="print JSON (not with --follow)")

    c = cmd("cancel", "cancel a run: pending tasks are cancelled, running ones stopped")
    c.add_argument("run_id")
    c.add_argument("--json", action="store_true", help="print JSON")

    c = cmd("retry", "run again the failed, cancelled and upstream-failed tasks of a run")
    c.add_argument("run_id")
    c.add_argument("--wait", action="store_true", help="wait for the run to finish")
    c.add_argument("--json", action="store_true", help="print JSON")

    c = cmd("mark", "set a task succeeded (with an output) or failed by hand")
    c.add_argument("run_id")
    c.add_argument("task")
    c.add_argument("status", choices=["succeeded", "failed"])
    c.add_argument("--output", default="null", metavar="JSON", help="output when succeeded")
    c.add_argument("--json", action="store_true", help="print JSON")


def _add_read_commands(cmd: AddCommand) -> None:
    """What only reads: runs, show, flows, graph, agents, rejected."""
    c = cmd("runs", "list runs, newest first")
    c.add_argument("--flow")
    c.add_argument("--status", choices=[s.value for s in RunStatus])
    c.add_argument("--limit", type=list_limit, default=50,
                   help=f"1 to {MAX_LIST_LIMIT} (default: %(default)s)")
    c.add_argument("--json", action="store_true", help="print JSON")

    c = cmd("show", "a run with each task's status, attempt, agent, times, output and error "
            "(a mapped task's instances, a task's children); or one instance of a mapped task; or "
            "a task's children")
    show_cli.add_show_args(c)

    c = cmd("flows", "list registered flows")
    c.add_argument("--json", action="store_true", help="print JSON")

    c = cmd("graph", "draw a flow's DAG: text, Mermaid or Graphviz dot")
    c.add_argument("flow")
    c.add_argument("--format", choices=("text", "mermaid", "dot"), default="text",
                   help="(default: %(default)s)")
    c.add_argument("--run", metavar="RUN_ID", help="colour the tasks by their state in this run")
    c.add_argument("--json", action="store_true", help="print the flow definition as JSON")

    c = cmd("agents", "live agents (and lost or stopped ones): queues, slots, last heartbeat")
    c.add_argument("--live", action="store_true", help="only live agents")
    c.add_argument("--json", action="store_true", help="print JSON")

    c = cmd("rejected", "messages the coordinator refused (bad triggers), with reasons")
    c.add_argument("--limit", type=list_limit, default=50,
                   help=f"1 to {MAX_LIST_LIMIT} (default: %(default)s)")
    c.add_argument("--json", action="store_true", help="print JSON")


async def _register(c: Client, ns: argparse.Namespace) -> int:
    for target in ns.targets:
        import_target(target)
    if not REGISTRY.flows:
        raise FlowForgeError(f"{', '.join(ns.targets)} defined no flows")
    result = await c.register()
    if ns.json:
        _print_json(result)
    for r in [] if ns.json else result:
        out(f"{r.name:30} {r.version}  {'registered' if r.changed else 'unchanged'}")
    return runtime.EXIT_OK


async def _run(c: Client, ns: argparse.Namespace) -> int:
    only = [t.strip() for t in ns.only.split(",") if t.strip()] if ns.only else None
    run = await c.start(ns.flow, _params(ns), idempotency_key=ns.idempotency_key, source="cli",
                        only=only, priority=ns.priority)
    if not ns.json and run.note:  # pending for its turn, or cancelled by its concurrency key
        out(f"run {run.run_id} of {run.flow} is {run.status.value}: {run.note}", file=sys.stderr)
    if not ns.wait or run.status is RunStatus.CANCELLED:
        if ns.json:
            _print_json(run)
        elif not run.note:
            out(f"started run {run.run_id} of {run.flow}")
        return runtime.EXIT_FAILED if run.status is RunStatus.CANCELLED else runtime.EXIT_OK
    if not ns.json:
        out(f"started run {run.run_id} of {run.flow}; waiting…", file=sys.stderr)
    return await _wait_and_show(c, run.run_id, ns)


async def _wait_and_show(c: Client, run_id: str, ns: argparse.Namespace) -> int:
    said: set[str] = set()

    def say_why_waiting(detail: RunDetail) -> None:  # e.g. "waiting: no agent on queue gpu"
        for line in waiting_notes.new_notes([detail], said):
            out(line, file=sys.stderr)

    detail = await c.wait(run_id, timeout_s=getattr(ns, "wait_timeout", None),
                          on_detail=say_why_waiting)
    spec = (await c.flow(detail.run.flow, detail.run.version)).spec
    await show_cli.print_run(c, detail, spec, ns.json)
    return runtime.EXIT_OK if detail.run.status is RunStatus.SUCCEEDED else runtime.EXIT_FAILED


async def _logs(c: Client, ns: argparse.Namespace) -> int:
    if ns.json:
        _print_json({"run_id": ns.run_id, "task": ns.task,
                     "log": await c.task_log(ns.run_id, ns.task)})
        return runtime.EXIT_OK
    if not ns.follow:
        out(await c.task_log(ns.run_id, ns.task), end="")
        return runtime.EXIT_OK
    async for text in c.follow_log(ns.run_id, ns.task):
        out(text, end="", flush=True)
    return runtime.EXIT_OK


async def _cancel(c: Client, ns: argparse.Namespace) -> int:
    run = await c.cancel(ns.run_id)
    _print_json(run) if ns.json else out(f"run {run.run_id} {run.status.value}")
    return runtime.EXIT_OK


async def _retry(c: Client, ns: argparse.Namespace) -> int:
    run = await c.retry(ns.run_id)
    if ns.wait:
        return await _wait_and_show(c, run.run_id, ns)
    _print_json(run) if ns.json else out(f"run {run.run_id} {run.status.value} again")
    return runtime.EXIT_OK


async def _mark(c: Client, ns: argparse.Namespace) -> int:
    try:
        output = json.loads(ns.output)
    except json.JSONDecodeError as exc:
        raise FlowForgeError(f"--output is not valid JSON: {exc}") from None
    rec = await c.mark(ns.run_id, ns.task, ns.status, output)
    _print_json(rec) if ns.json else out(f"{rec.task} of run {rec.run_id} is {rec.status.value}")
    return runtime.EXIT_OK


async def _runs(c: Client, ns: argparse.Namespace) -> int:
    runs = await c.runs(ns.flow, ns.status, ns.limit)
    if not runs and ns.flow:
        await c.flow(ns.flow)  # a name no flow has is an error, not an empty list
    _print_json(runs) if ns.json else out(render.runs_table(runs))
    return runtime.EXIT_OK


async def _flows(c: Client, ns: argparse.Namespace) -> int:
    flows = await c.flows()
    _print_json(flows) if ns.json else out(render.flows_table(flows))
    return runtime.EXIT_OK


async def _graph(c: Client, ns: argparse.Namespace) -> int:
    states = None
    version = None
    if ns.run:
        run = await c.get(ns.run)
        if run.run.flow != ns.flow:
            raise FlowForgeError(f"run {ns.run} is a run of {run.run.flow!r}, not {ns.flow!r}")
        states, version = {t.task: t.status for t in run.tasks}, run.run.version
    detail = await c.flow(ns.flow, version)
    if ns.json:
        _print_json(detail)
    elif ns.format == "mermaid":
        out(graphs.mermaid(detail.spec, states))
    elif ns.format == "dot":
        out(graphs.dot(detail.spec, states))
    else:
        out(render.graph_text(detail.spec, detail.version, states))
    return runtime.EXIT_OK


async def _agents(c: Client, ns: argparse.Namespace) -> int:
    agents = await c.agents(include_gone=not ns.live)
    _print_json(agents) if ns.json else out(render.agents_table(agents, time.time()))
    return runtime.EXIT_OK


async def _rejected(c: Client, ns: argparse.Namespace) -> int:
    items = await c.rejected(ns.limit)
    _print_json(items) if ns.json else out(render.rejected_table(items))
    return runtime.EXIT_OK


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], Awaitable[int]]] = {
    "register": _register, "run": _run, "runs": _runs, "show": show_cli.run, "flows": _flows,
    "graph": _graph, "rejected": _rejected, "agents": _agents, "cancel": _cancel,
    "retry": _retry, "mark": _mark, "logs": _logs, "schedule": schedule_cli.run,
    "batch": batch_cli.run, "limit": limit_cli.run, "stats": stats_cli.run,
    **EXPERIMENT_COMMANDS,
}


async def _client_command(ns: argparse.Namespace) -> int:
    try:
        async with Client(options_from_args(ns), timeout_s=ns.timeout) as client:
            return await COMMANDS[ns.command](client, ns)
    except NotConnected as exc:
        out(f"flowforge {ns.command}: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    except (FlowForgeError, LoadError) as exc:
        out(f"flowforge {ns.command}: {exc}", file=sys.stderr)
        return runtime.EXIT_USAGE
    except TimeoutError:
        out(f"flowforge {ns.command}: the run is still going after --wait-timeout; "
              "follow it with `flowforge show RUN_ID`", file=sys.stderr)
        return runtime.EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["dashboard"]:  # the same as flowforge-dashboard
        from tui.app import main as dashboard_main

        return dashboard_main(args[1:])
    ns = build_parser().parse_args(args)
    if ns.command == "dev":
        from flowforge.dev import dev_main

        return dev_main(ns)
    if ns.command == "auth":
        from flowforge.auth_cli import auth_main

        return auth_main(ns)
    try:  # before connecting: a bad definition or parameter file is told with no coordinator
        if ns.command == "register":
            for target in ns.targets:
                import_target(target)
        elif ns.command == "batch":
            batch_cli.prepare(ns)
    except FlowForgeError as exc:
        out(f"flowforge {ns.command}: {exc}", file=sys.stderr)
        return runtime.EXIT_USAGE
    try:
        return asyncio.run(_client_command(ns))
    except KeyboardInterrupt:
        return runtime.EXIT_INTERRUPTED
    except BrokenPipeError:  # `flowforge runs | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the interpreter closes it at exit
        return runtime.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
