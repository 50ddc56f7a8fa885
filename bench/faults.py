"""``python -m bench.faults``: kill -9 agents, coordinators and NATS nodes mid-run, count losses
and recovery.

Every round starts a fresh stack in a temporary directory — a nats-server run by this process,
a coordinator (``--nats URL --db PATH --lease 2``) and agents (``--import tests.faultflows
--lease 2``) as real processes — starts one run, ``kill -9``s one process group when a random
number of its tasks (uniform between 5 % and 85 %) have succeeded, and waits for the run to
finish. A plain nats-py subscriber (``max_reconnect_attempts=-1``), subscribed before the run
starts, follows ``flowforge.events.tasks.<run_id>`` and the run's events for the whole round.

Scenarios
  agent-kill        flow faults_200 (200 tasks), two agents of concurrency 8; one of them, chosen
                    at random, is killed. Recovery time: from the kill until the first task
                    whose last 'running' event named the killed agent is reported running on
                    another agent (its lease expired and NATS redelivered it), or until the
                    run finishes if that comes first.
  coordinator-kill  flow faults_500 (500 tasks), one agent of concurrency 16; the coordinator is
                    killed and at once restarted on the same database. Recovery time: from the
                    kill until the restarted coordinator answers ``runs.get`` for the run and a
                    later answer shows more succeeded tasks than its first one (or the run
                    finished); polled every 20 ms, so it includes the new process's start-up.
  cluster-leader-kill
                    a three-node NATS cluster run by this process (tests.cluster, streams
                    replicated 3 times), the coordinator given the nodes as n1,n2,n3, two agents
                    of concurrency 4 as n3,n2,n1 and n2,n3,n1 (the nats client shuffles them, so
                    where each sits is recorded); flow slow_fan over 2,000 items (--cluster-tasks)
                    of 20 ms each. Two kills a round: at 5-45 % of tasks succeeded the node
                    leading the tasks stream (JetStream stream info), at 50-85 % the leader again,
                    or a node not killed yet if the first one leads again. Each node is started
                    again at once and the round waits until every replica is current before going
                    on. Recovery time, per kill: from the kill until the tasks stream has a leader
                    again and, after that, the coordinator's count of succeeded tasks grows (or
                    the run finished) — two samples a round in the recovery columns. Finalised
                    twice is counted from the coordinator's database (each instance's attempts),
                    re-runs from the agents' own notes of each execution.
  schedule-kill     no run is started: three schedules of the one-task flow tick (every 1 s, the
                    per-second cron '* * * * * *', every 2 s; catch-up all with an hour's window,
                    overlap allow_all), one agent; the coordinator is killed --schedule-kills
                    times (default 3), each 0.3-2.5 s after the previous restart answered, left
                    down 0-1.5 s and restarted on the same database. Counted: nominal times
                    expected (each schedule's from its first to the newest run; in the tasks
                    column), lost (expected, never run), duplicates (a time run twice) and fires
                    recorded as anything but 'started'. Recovery time, per kill: the catch-up
                    delay, from the restarted coordinator's spawn until the runs of the times
                    that came due while it was down (after the previous restart answered, up to
                    this spawn; started by the restarted coordinator) exist. The lateness
                    (created_at - nominal) p50/p99 of the fires no kill affected (those and the
                    ones due while the restarted coordinator started, until it answered) is
                    printed above the table. The scenario: tests/schedule_scenario.py.
  agent-cut-off, coordinator-cut-off, node-cut-off
                    separate hosts: a network namespace per nats node (a three-node cluster),
                    coordinator and agent, joined by a bridge; one host cut off by setting its
                    link down, then healed (needs root; left out of the default set without
                    it). What each cuts and when its recovery ends: tests/partition_scenarios.py.
                    Lost and finalised twice are counted from the coordinator's database.

Counted per round: tasks expected; succeeded, from the coordinator's final state of the run;
lost = expected - succeeded once the run is final; duplicates finalised = tasks with more than
one 'succeeded' event (cluster-leader-kill: attempt); re-runs = extra starts on another agent
(cluster-leader-kill: executions beyond a task's first). A round that raises or whose
waits time out is counted as failed, with its error (its tasks not yet succeeded are reported
as unfinished, not lost), and its logs and database are kept under
bench/results/faults-<timestamp>/. p90 is nearest-rank.
"""

import argparse
import asyncio
import dataclasses
import functools
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.cluster_rounds import SCENARIO as CLUSTER
from bench.cluster_rounds import run_cluster_round
from bench.partition_rounds import PARTITIONS, run_partition_round, unavailable
from bench.report import RESULTS_DIR, environment, nearest_rank, write_json
from bench.rounds import SCENARIOS, Round, Scenario, run_round
from bench.schedule_rounds import KILLS as SCHEDULE_KILLS
from bench.schedule_rounds import SCENARIO as SCHEDULE
from bench.schedule_rounds import ScheduleRound, note, run_schedule_round, schedule_summary
from bench.stack import cancel_on_signals
from flowforge import runtime

EPILOG = """examples:
  python -m bench.faults --rounds 3                 # a quick check
  python -m bench.faults --rounds 20 --seed 7 --json /tmp/faults.json
  python -m bench.faults --scenario coordinator-kill --rounds 50
  python -m bench.faults --scenario cluster-leader-kill --rounds 20 --seed 7
  python -m bench.faults --scenario cluster-leader-kill --rounds 1 --cluster-tasks 500
  python -m bench.faults --scenario schedule-kill --rounds 20 --seed 12 --schedule-kills 5

exit codes: 0 every round finished with nothing lost or finalised twice, 1 a round failed,
lost tasks or finalised one twice, 2 usage, 130 interrupted (the processes are stopped first)
"""


RoundRunner = Callable[..., Awaitable[Round]]
ALL: dict[str, tuple[Scenario, RoundRunner]] = {
    **{name: (sc, run_round) for name, sc in SCENARIOS.items()},
    CLUSTER.name: (CLUSTER, run_cluster_round),
    SCHEDULE.name: (SCHEDULE, run_schedule_round),
    **{name: (sc, run_partition_round) for name, sc in PARTITIONS.items()},
}
"""Every scenario, and what plays one round of it."""


@dataclass(frozen=True, slots=True)
class FaultsConfig:
    """Everything the rounds depend on, recorded in the JSON."""

    rounds: int
    seed: int
    lease_s: float
    timeout_s: float
    scenarios: tuple[str, ...]
    keep_logs: bool = False
    """Keep every round's logs and database, not only those of bad rounds."""
    cluster_tasks: int = CLUSTER.tasks
    """Items of cluster-leader-kill's run."""
    schedule_kills: int = SCHEDULE_KILLS
    """Coordinator kills in each schedule-kill round."""


# -- summary --------------------------------------------------------------------------------


def summarise(rounds: list[Round]) -> dict[str, Any]:
    """Totals over the rounds of one scenario; recovery statistics over every kill measured
    (one a round, two in cluster-leader-kill)."""
    counted = [r for r in rounds if r.succeeded is not None]
    recovery = [s for r in rounds for s in r.recoveries]
    out: dict[str, Any] = {
        "rounds": len(rounds),
        "failed": sum(1 for r in rounds if r.error),
        "kills": sum(r.kills for r in rounds),
        "tasks": sum(r.expected for r in counted),
        "succeeded": sum(r.succeeded or 0 for r in counted),
        "lost": sum(r.lost or 0 for r in counted),
        "unfinished": sum(r.unfinished or 0 for r in counted),
        "duplicates": sum(r.duplicates or 0 for r in counted),
        "reruns": sum(r.reruns or 0 for r in counted),
    }
    if recovery:
        out |= {"recovery_samples": len(recovery),
                "recovery_median_s": statistics.median(recovery),
                "recovery_p90_s": nearest_rank(recovery, 0.9), "recovery_max_s": max(recovery)}
    schedule_rounds = [r for r in rounds if isinstance(r, ScheduleRound)]
    if schedule_rounds:
        out |= schedule_summary(schedule_rounds)
    return out


HEADER = ["scenario", "rounds", "failed", "kills", "tasks", "lost", "dup finalised", "re-runs",
          "recovery median", "p90", "max"]


def table(result: dict[str, Any]) -> str:
    """The printed summary: one row per scenario."""
    cfg, env = result["config"], result["environment"]
    rows = [HEADER]
    for name, s in result["summary"].items():
        secs = [f"{s[k]:.3f} s" if k in s else "-"
                for k in ("recovery_median_s", "recovery_p90_s", "recovery_max_s")]
        rows.append([name, str(s["rounds"]), str(s["failed"]), str(s["kills"]), f"{s['tasks']:,}",
                     str(s["lost"]), str(s["duplicates"]), str(s["reruns"]), *secs])
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = [f"FlowForge faults @ {env['commit']}{' (dirty)' if env['dirty'] else ''} — "
             f"seed {cfg['seed']}, lease {cfg['lease_s']:g} s (agent-kill, coordinator-kill: "
             f"kill -9 at 5-85 % of tasks succeeded); Python {env['python']}, {env['loop']}, "
             f"{env['cpus']} CPUs, {env['nats_server']}"]
    if CLUSTER.name in result["summary"]:
        s = result["summary"][CLUSTER.name]
        lines.append(f"{CLUSTER.name}: {cfg['cluster_tasks']:,} tasks a round, two node kills "
                     "(at 5-45 % and 50-85 %); recovery columns over every kill "
                     f"({s.get('recovery_samples', 0)} samples)")
    if SCHEDULE.name in result["summary"]:
        lines.append(note(result["summary"][SCHEDULE.name], cfg["schedule_kills"]))
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[j]) for j, c in enumerate(r)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    for name, s in result["summary"].items():
        if s["failed"]:
            lines.append(f"{name}: {s['failed']} round(s) failed, {s['unfinished']} tasks of "
                         "unfinished runs not counted as lost; errors and logs in the JSON")
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------


async def bench(cfg: FaultsConfig, json_path: Path | None) -> int:
    cancel_on_signals()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    keep_dir = RESULTS_DIR / f"faults-{stamp}"
    rng = random.Random(cfg.seed)
    rounds: dict[str, list[Round]] = {name: [] for name in cfg.scenarios}
    for name in cfg.scenarios:
        sc, runner = ALL[name]
        if sc is CLUSTER:
            sc = dataclasses.replace(sc, tasks=cfg.cluster_tasks)
        if sc is SCHEDULE:
            runner = functools.partial(runner, kills=cfg.schedule_kills)
        for i in range(1, cfg.rounds + 1):
            rnd = await runner(sc, i, rng, lease_s=cfg.lease_s, timeout_s=cfg.timeout_s,
                               keep_dir=keep_dir, keep_all=cfg.keep_logs)
            rounds[name].append(rnd)
            print(rnd.describe(), file=sys.stderr, flush=True)
    result = {"started_at": stamp, "config": asdict(cfg), "environment": environment(),
              "summary": {name: summarise(rs) for name, rs in rounds.items()},
              "rounds": {name: [asdict(r) for r in rs] for name, rs in rounds.items()}}
    print(table(result))
    for path in write_json(result, f"faults-{stamp}", json_path):
        print(f"wrote {path}", file=sys.stderr)
    bad = any(r.bad for rs in rounds.values() for r in rs)
    return runtime.EXIT_FAILED if bad else runtime.EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.faults", description=__doc__,
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rounds", type=int, default=20,
                   help="rounds per scenario, each on a fresh stack (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the kill points and victims (default: random, printed)")
    p.add_argument("--scenario", action="append", choices=tuple(ALL), dest="scenarios",
                   help="run only this scenario; repeatable (default: all)")
    p.add_argument("--lease", type=float, default=2.0, metavar="SECONDS",
                   help="--lease of the coordinator and agents (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                   help="give up on each wait of a round after this long (default: %(default)s)")
    p.add_argument("--cluster-tasks", type=int, default=CLUSTER.tasks, metavar="N",
                   help="tasks of cluster-leader-kill's run; the other scenarios' flows are "
                   "fixed (default: %(default)s)")
    p.add_argument("--schedule-kills", type=int, default=SCHEDULE_KILLS, metavar="K",
                   help="coordinator kills in each schedule-kill round (default: %(default)s)")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the logs and database of every round under bench/results/faults-<timestamp>/ "
                   "(default: only of failed rounds and rounds that lost or duplicated tasks)")
    p.add_argument("--json", type=Path, metavar="PATH",
                   help="also write the results here (always: bench/results/faults-<timestamp>.json)")
    return p


def config_from_args(ns: argparse.Namespace) -> FaultsConfig:
    if ns.rounds < 1:
        raise ValueError("--rounds must be 1 or more")
    if ns.lease <= 0 or ns.timeout <= 0:
        raise ValueError("--lease and --timeout must be more than 0")
    if ns.cluster_tasks < 20:
        raise ValueError("--cluster-tasks must be 20 or more (two kills need room)")
    if ns.schedule_kills < 1:
        raise ValueError("--schedule-kills must be 1 or more")
    why_not = unavailable()
    chosen = ns.scenarios or [n for n in ALL if n not in PARTITIONS or why_not is None]
    if why_not is not None and any(n in PARTITIONS for n in chosen):
        raise ValueError(f"the partition scenarios cannot run here: {why_not}")
    seed = ns.seed if ns.seed is not None else random.SystemRandom().randrange(1_000_000)
    return FaultsConfig(rounds=ns.rounds, seed=seed, lease_s=ns.lease, timeout_s=ns.timeout,
                        scenarios=tuple(dict.fromkeys(chosen)),
                        keep_logs=ns.keep_logs, cluster_tasks=ns.cluster_tasks,
                        schedule_kills=ns.schedule_kills)


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(ns)
    except ValueError as exc:
        print(f"bench.faults: {exc}", file=sys.stderr)
        return runtime.EXIT_USAGE
    print(f"bench.faults: seed {cfg.seed}", file=sys.stderr)
    try:
        return runtime.run(bench(cfg, ns.json))
    except (asyncio.CancelledError, KeyboardInterrupt):
        return runtime.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
