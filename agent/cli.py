"""``flowforge-agent``: import user modules, then serve their functions on the given queues."""

import argparse
import logging
import sys

from agent.config import default_concurrency
from agent.worker import Agent, AgentConfig
from flowforge import runtime
from flowforge.connection import DEFAULT_NATS_URL, add_connection_args, env, options_from_args
from flowforge.jetstream import DEFAULT_LEASE_S
from flowforge.loader import LoadError, import_target
from flowforge.metrics_http import MetricsAddressError, add_metrics_arg, serving
from flowforge.registry import REGISTRY
from protocol.errors import FlowForgeError, NotConnected
from protocol.experiments import DEFAULT_MAX_METRIC_POINTS
from protocol.limits import is_valid_name
from protocol.subjects import agent_id_fits

log = logging.getLogger("flowforge.agent")

MAX_PREFETCH = 10_000

EPILOG = """examples:
  flowforge-agent --queue default --import examples.seed_pipelines
  flowforge-agent --queue gpu --import examples/seed_pipelines.py --concurrency 1
  FLOWFORGE_NATS_URL=nats://nats:4222 flowforge-agent --queue default --import myflows
  flowforge-agent --queue default --import myflows --metrics 0.0.0.0:9465

exit codes: 0 stopped cleanly, 2 usage or import error, 3 cannot reach NATS
"""


def _csv_env(name: str) -> list[str] | None:
    value = env(name)
    return [v for v in value.split(",") if v] if value else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowforge-agent",
        description="Run the tasks of the given queues with the functions of the imported modules.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--queue", "-q", action="append", dest="queues", metavar="NAME",
                   help="queue to serve; repeatable [FLOWFORGE_QUEUES, comma-separated] "
                   "(default: default)")
    p.add_argument("--import", "-i", action="append", dest="imports", metavar="MODULE_OR_FILE",
                   help="module (pkg.mod) or file (path/to/flows.py) whose flows to serve; "
                   "repeatable [FLOWFORGE_IMPORTS, comma-separated]")
    p.add_argument("--concurrency", "-c", type=int, default=env("CONCURRENCY", None),
                   help="tasks run at once, split evenly between the queues "
                   "[FLOWFORGE_CONCURRENCY] (default: 16 with the thread pool, one per core "
                   "with the process pool)")
    p.add_argument("--prefetch", type=int, default=env("PREFETCH", None), metavar="N",
                   help="task messages a queue may hold beyond its free slots, waiting for "
                   "one, while its tasks take under 50 ms on average (a pull round trip "
                   "between two short tasks is what limits them); 0 turns it off "
                   "[FLOWFORGE_PREFETCH] (default: 4 per slot)")
    p.add_argument("--pool", choices=("thread", "process"), default=env("POOL", "thread"),
                   help="where sync task functions run: a thread pool, or worker processes "
                   "that are killed when a task times out or is cancelled [FLOWFORGE_POOL] "
                   "(default: %(default)s)")
    p.add_argument("--lease", type=float, default=env("LEASE", str(DEFAULT_LEASE_S)),
                   metavar="SECONDS", help="how long a task may go without a lease extension "
                   "before it is redelivered [FLOWFORGE_LEASE] (default: %(default)s)")
    p.add_argument("--grace", type=float, default=env("GRACE", "30"),
                   metavar="SECONDS", help="on SIGTERM, how long running tasks may finish "
                   "[FLOWFORGE_GRACE] (default: %(default)s)")
    p.add_argument("--heartbeat", type=float, default=env("HEARTBEAT", "5"),
                   metavar="SECONDS", help="how often to tell the coordinator it is alive "
                   "[FLOWFORGE_HEARTBEAT] (default: %(default)s)")
    p.add_argument("--agent-id", default=env("AGENT_ID", ""),
                   help="[FLOWFORGE_AGENT_ID] (default: host-pid-random)")
    p.add_argument("--max-metric-points", type=int, metavar="N",
                   default=env("MAX_METRIC_POINTS", str(DEFAULT_MAX_METRIC_POINTS)),
                   help="metric points, results and artifacts one attempt of a task may log "
                   "(ctx.log_metric...); past it one line in the task's log says so and the "
                   "rest are dropped [FLOWFORGE_MAX_METRIC_POINTS] (default: %(default)s)")
    add_metrics_arg(p, "tasks run, their durations and the slots in use")
    p.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"),
                   help="[FLOWFORGE_LOG_LEVEL] (default: %(default)s)")
    add_connection_args(p, nats_default=DEFAULT_NATS_URL)
    return p


def config_from_args(ns: argparse.Namespace) -> AgentConfig:
    """Validate options and import the user's modules; raises FlowForgeError or ValueError."""
    queues = tuple(dict.fromkeys(ns.queues or _csv_env("QUEUES") or ["default"]))
    for q in queues:
        if not is_valid_name(q):
            raise ValueError(f"--queue {q!r} is not a valid queue name")
    imports = ns.imports or _csv_env("IMPORTS") or []
    if not imports:
        raise ValueError("give at least one --import MODULE_OR_FILE with the task functions")
    if ns.concurrency is None:
        ns.concurrency = default_concurrency(ns.pool)
    if ns.concurrency < 1:
        raise ValueError("--concurrency must be 1 or more")
    if ns.prefetch is not None and not 0 <= ns.prefetch <= MAX_PREFETCH:
        raise ValueError(f"--prefetch must be 0 to {MAX_PREFETCH}")
    if ns.max_metric_points < 0:
        raise ValueError("--max-metric-points must be 0 or more")
    if ns.agent_id and not is_valid_name(ns.agent_id):
        raise ValueError(f"--agent-id {ns.agent_id!r} is not valid: letters, digits, '_', '-'")
    if ns.agent_id and ns.identity and not agent_id_fits(ns.identity, ns.agent_id):
        raise ValueError(f"--agent-id {ns.agent_id!r} does not fit --identity {ns.identity!r}: "
                         f"use {ns.identity!r} or a name starting '{ns.identity}-' (the "
                         "coordinator refuses reports from other names)")
    for target in imports:
        import_target(target)
    return AgentConfig(
        connect=options_from_args(ns),
        queues=queues,
        functions=dict(REGISTRY.functions),
        concurrency=max(ns.concurrency, len(queues)),
        prefetch=ns.prefetch,
        lease_s=ns.lease,
        grace_s=ns.grace,
        heartbeat_s=ns.heartbeat,
        agent_id=ns.agent_id,
        pool=ns.pool,
        imports=tuple(imports),
        max_metric_points=ns.max_metric_points,
    )


async def serve(config: AgentConfig, metrics: tuple[str, int] | None = None) -> int:
    agent = Agent(config)
    try:
        await agent.start()
    except NotConnected as exc:
        print(f"flowforge-agent: {exc}", file=sys.stderr)
        await agent.shutdown()
        return runtime.EXIT_NO_NATS
    runtime.install_stop_signals(agent.request_stop)
    try:
        async with serving(metrics, [agent.metrics]):
            log.info("agent %s serving queues %s with %d slots (%d functions)", agent.agent_id,
                     ", ".join(config.queues), config.concurrency, len(config.functions))
            await agent.run()
    except MetricsAddressError as exc:
        print(f"flowforge-agent: {exc}", file=sys.stderr)
        return runtime.EXIT_USAGE
    finally:
        await agent.shutdown()
    return runtime.EXIT_NO_NATS if agent.lost_nats else runtime.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    runtime.setup_logging(ns.log_level)
    try:
        config = config_from_args(ns)
    except (ValueError, LoadError, FlowForgeError) as exc:
        print(f"flowforge-agent: {exc}", file=sys.stderr)
        return runtime.EXIT_USAGE
    return runtime.run(serve(config, ns.metrics))


if __name__ == "__main__":
    sys.exit(main())
