"""Separate hosts on one machine (a network namespace each, joined by a bridge) and a host cut
off by setting its link down: an agent past its lease, the coordinator's host away from the
cluster's majority, a nats node. Each scenario prints what it did and counted."""

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import SCENARIO_LINE
from tests.netns import unavailable
from tests.partition_scenarios import SCENARIOS

why_not = unavailable()
pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.timeout(300),
              pytest.mark.skipif(why_not is not None, reason=why_not or "")]


def _logs(root: Path) -> str:
    return "\n".join(f"--- {p.name} ---\n" + "\n".join(p.read_text(errors="replace")
                                                     .splitlines()[-25:])
                     for p in sorted(root.glob("*.log")))


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_a_partition_loses_nothing_and_finalises_each_task_once(
    name: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    try:
        out = await SCENARIOS[name](tmp_path)
    except Exception:
        print(_logs(tmp_path))
        raise
    print(out.describe())
    record_property(SCENARIO_LINE, out.describe())  # in the run's summary (conftest)
    assert out.error is None, out.describe() + "\n" + _logs(tmp_path)
    assert out.lost == 0 and out.finalised_twice == 0, out.describe()
    assert out.recovery_s is not None
    if name == "agent-cut-off":
        assert out.facts["late reports from a1"] > 0  # they came, and were not taken
    if name == "coordinator-cut-off":
        assert out.facts["commits while cut off"] == 0
        # one restart for the cut; a second was seen once on a loaded CI run with this test's
        # short (6 s) lease. A restart is safe (nothing lost, nothing committed while cut off);
        # more would be flapping
        assert 1 <= out.facts["restarts"] <= 2, out.describe() + "\n" + _logs(tmp_path)
