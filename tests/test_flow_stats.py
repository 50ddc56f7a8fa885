"""``stats.flow`` against the real stack: runs per UTC day by status, task durations p50/p95
over the recent finished runs, failure rates per flow — over runs of known outcomes and exact
timestamps written through the store (tests/stats_seed.py), and over real runs."""

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from coordinator import flow_stats
from coordinator.service import Coordinator
from flowforge.client import Client
from protocol.errors import RemoteError
from protocol.stats import FlowStats, GetFlowStats
from tests import metricflows, stats_seed
from tests.stats_seed import UNTIL

ZERO = {"pending": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}


@pytest.fixture
async def seeded(tmp_path: Path,
                 start_coordinator: Callable[..., Awaitable[Coordinator]]) -> Coordinator:
    await stats_seed.seed(tmp_path / "ff.db")
    return await start_coordinator(db_path=tmp_path / "ff.db")


def per_day(stats: FlowStats) -> dict[str, dict[str, int]]:
    return {d.day: {k: n for k, n in d.counts.items() if n} for d in stats.runs_per_day}


def durations(stats: FlowStats) -> dict[tuple[str, str], tuple[int, float, float, float]]:
    return {(d.flow, d.task): (d.count, round(d.p50_s, 6), round(d.p95_s, 6), round(d.max_s, 6))
            for d in stats.durations}


async def test_one_flow_counts_runs_per_day_durations_of_finished_runs_and_its_failure_rate(
        seeded: Coordinator, client: Client) -> None:
    stats = await client.flow_stats("nightly", days=3, until=UNTIL)
    assert (stats.flow, stats.days) == ("nightly", 3)
    assert (stats.since, stats.until) == (stats_seed.LAST_DAY - 2 * 86400,
                                          stats_seed.LAST_DAY + 86400)
    assert per_day(stats) == {"2025-06-13": {"succeeded": 2, "failed": 1},
                              "2025-06-14": {"succeeded": 1, "cancelled": 1},
                              "2025-06-15": {"succeeded": 1, "running": 1}}
    assert all(set(d.counts) == set(ZERO) for d in stats.runs_per_day)
    assert stats.sample_runs == 6  # n1-n6: n7 is still running, n0 and n8 are outside
    assert durations(stats) == {
        ("nightly", "extract"): (6, 3.0, 6.0, 6.0),  # not n7's 100 s: its run is not finished
        ("nightly", "fanout"): (24, 0.3, 0.5, 0.5),  # instances, not the mapped task's 1,000 s
        ("nightly", "load"): (4, 20.0, 40.0, 40.0),
    }
    [failures] = stats.failures
    assert (failures.flow, failures.runs, failures.succeeded, failures.failed,
            failures.cancelled) == ("nightly", 7, 4, 1, 1)
    assert failures.failure_rate == pytest.approx(1 / 6)
    assert not stats.truncated


async def test_every_flow_adds_up_the_days_and_rates_each_flow(
        seeded: Coordinator, client: Client) -> None:
    stats = await client.flow_stats(days=3, until=UNTIL)
    assert stats.flow is None
    assert per_day(stats)["2025-06-15"] == {"succeeded": 4, "failed": 1, "running": 1}
    assert stats.sample_runs == 10
    assert durations(stats)[("hourly", "ping")] == (3, 1.5, 2.5, 2.5)  # h4's ping failed
    assert [(f.flow, f.runs, f.failure_rate) for f in stats.failures] == [
        ("hourly", 4, 0.25), ("nightly", 7, pytest.approx(1 / 6))]


async def test_the_window_is_whole_utc_days_ending_on_the_day_of_until(
        seeded: Coordinator, client: Client) -> None:
    one = await client.flow_stats("nightly", days=1, until=stats_seed.LAST_DAY + 86399)
    assert per_day(one) == {"2025-06-15": {"succeeded": 1, "running": 1}}
    assert one.sample_runs == 1
    assert durations(one)[("nightly", "extract")] == (1, 6.0, 6.0, 6.0)
    assert one.failures[0].failure_rate == 0.0
    empty = await client.flow_stats("nightly", days=14, until=stats_seed.LAST_DAY + 30 * 86400)
    assert len(empty.runs_per_day) == 14 and all(d.total == 0 for d in empty.runs_per_day)
    assert (empty.sample_runs, empty.durations, empty.failures) == (0, [], [])


async def test_durations_come_from_the_newest_finished_runs_and_the_first_instances(
        seeded: Coordinator, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow_stats, "RECENT_RUNS", 2)
    monkeypatch.setattr(flow_stats, "INSTANCES_PER_TASK", 2)
    stats = await client.flow_stats("nightly", days=3, until=UNTIL)
    assert stats.sample_runs == 2  # n6 and n5 (cancelled: its extract succeeded)
    assert durations(stats) == {("nightly", "extract"): (2, 5.0, 6.0, 6.0),
                                ("nightly", "fanout"): (2, 0.1, 0.2, 0.2),  # n6's ~0 and ~1
                                ("nightly", "load"): (1, 40.0, 40.0, 40.0)}
    assert sum(d.total for d in stats.runs_per_day) == 7  # the counts are not sampled


async def test_an_unknown_flow_and_days_out_of_range_are_refused_with_a_clear_error(
        seeded: Coordinator, client: Client) -> None:
    with pytest.raises(RemoteError) as unknown:
        await client.flow_stats("nope")
    assert unknown.value.code == "unknown_flow" and "'nope'" in str(unknown.value)
    for days in (0, 91):
        with pytest.raises(RemoteError) as bad:
            await client.request(GetFlowStats(flow="nightly", days=days), FlowStats)
        assert bad.value.code == "bad_request" and "days" in str(bad.value)
    with pytest.raises(RemoteError) as bad_name:
        await client.request(GetFlowStats(flow="no such flow"), FlowStats)
    assert bad_name.value.code == "bad_request"


async def test_real_runs_count_their_mapped_instances_as_their_task(
        coordinator: Coordinator, start_agent: Callable[..., Awaitable[object]],
        client: Client) -> None:
    metricflows.register_all()
    await start_agent()
    await client.register()
    for flow in ("measured", "measured", "doomed"):
        run = await client.start(flow)
        await client.wait(run.run_id, timeout_s=60)
    stats = await client.flow_stats(days=1)
    assert sum(d.counts["succeeded"] for d in stats.runs_per_day) == 2
    assert sum(d.counts["failed"] for d in stats.runs_per_day) == 1
    counts = {key: n for key, (n, *_) in durations(stats).items()}
    assert counts == {  # doomed's tasks never succeeded; parent's children are not its task
        ("measured", "items"): 2, ("measured", "flaky"): 2, ("measured", "square"): 6,
        ("measured", "parent"): 2, ("measured", "join"): 2}
    assert all(0 <= d.p50_s <= d.p95_s <= d.max_s for d in stats.durations)
    assert [(f.flow, f.failure_rate) for f in stats.failures] == [("doomed", 1.0),
                                                                   ("measured", 0.0)]
