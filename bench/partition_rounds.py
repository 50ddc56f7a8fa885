"""Rounds of the partition scenarios for ``python -m bench.faults``.

The scenarios are the ones the test suite runs once (``tests/partition_scenarios.py``, on the
hosts of ``tests/netns.py``: a network namespace per nats node, coordinator and agent, a host
cut off by setting its link down); here each runs ``--rounds`` times on fresh hosts. They
need root and iproute2, and set their own leases (``tests/partitions.py``).
"""

import asyncio
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.rounds import Round, Scenario
from tests.netns import unavailable
from tests.partition_scenarios import SCENARIOS as PLAYS
from tests.partitions import Outcome

PARTITIONS = {
    "agent-cut-off": Scenario("agent-cut-off", "slow_fan", 24, agents=2, concurrency=4),
    "coordinator-cut-off": Scenario("coordinator-cut-off", "slow_fan", 48, agents=2,
                                    concurrency=4),
    "node-cut-off": Scenario("node-cut-off", "slow_fan", 48, agents=2, concurrency=4),
}
__all__ = ["PARTITIONS", "run_partition_round", "unavailable"]


@dataclass(slots=True)
class PartitionRound(Round):
    """A round with one host cut off; what the scenario saw, in its words."""

    facts: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        facts = ", ".join(f"{k} {v}" for k, v in self.facts.items())
        rec = "-" if self.recovery_s is None else f"{self.recovery_s:.3f} s"
        return (f"{self.scenario} [{self.index}]: {facts}; recovery {rec}, lost {self.lost}, "
                f"finalised twice {self.duplicates}" + self.footer())


def _fill(rnd: PartitionRound, out: Outcome) -> None:
    rnd.expected = out.expected
    rnd.run_status = str(out.facts["run"]) if "run" in out.facts else None
    rnd.succeeded, rnd.lost, rnd.duplicates = out.succeeded, out.lost, out.finalised_twice
    rnd.recovery_s, rnd.kills = out.recovery_s, 1
    rnd.facts = {k: str(v) for k, v in out.facts.items()}
    rnd.error = out.error


async def run_partition_round(sc: Scenario, index: int, rng: random.Random, *, lease_s: float,
                              timeout_s: float, keep_dir: Path, keep_all: bool = False) -> Round:
    """One scenario on fresh hosts; an error is recorded, the hosts are always removed.
    (``rng`` and ``lease_s`` are the other scenarios': these cut at fixed points.)"""
    rnd = PartitionRound(sc.name, index, expected=sc.tasks)
    with tempfile.TemporaryDirectory(prefix=f"flowforge-faults-{sc.name}-") as tmp:
        try:
            out = await asyncio.wait_for(PLAYS[sc.name](Path(tmp)), 3 * timeout_s)
        except Exception as exc:  # noqa: BLE001 - the round failed: say why, go on
            rnd.error = f"{type(exc).__name__}: {exc}"
        else:
            _fill(rnd, out)
        if rnd.bad or keep_all:
            dest = keep_dir / f"{sc.name}-{index:02d}"
            dest.mkdir(parents=True, exist_ok=True)
            for path in Path(tmp).iterdir():
                if path.is_file() and (path.suffix == ".log" or path.name.startswith("ff.db")):
                    shutil.copy2(path, dest / path.name)
            rnd.kept = str(dest)
    return rnd
