"""The figures in process: a restart or a retried run counts only what happens after it,
label values past their caps fold into "other", quantiles are told by their bucket, and one
endpoint serves a coordinator and an agent (as ``flowforge dev --metrics`` does)."""

import asyncio
import math
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coordinator.changes import Changes
from coordinator.graph import CompiledFlow
from coordinator.scheduler import Scheduler
from coordinator.task_tracker import TaskTracker
from coordinator.writer import Batch
from flowforge.client import Client
from flowforge.metrics import OTHER, Histograms, LabelCap, kind_of, quantile_bound, root_task
from flowforge.metrics_http import serving
from protocol.flows import FlowSpec, TaskSpec
from protocol.messages import TaskSucceeded
from protocol.records import RunRecord
from protocol.stats import Stats
from tests import metricflows
from tests.helpers import wait_for


def _series(stats: Stats, name: str, **labels: str) -> float:
    found = [s.value for s in getattr(stats, name) if labels.items() <= s.labels.items()]
    return sum(found)


def _count(stats: Stats, name: str, **labels: str) -> int:
    return sum(h.count for h in getattr(stats, name) if labels.items() <= h.labels.items())


async def test_a_restarted_coordinator_counts_only_the_attempts_that_end_after_it_started(
    start_coordinator: Callable[..., Awaitable[object]],
    start_agent: Callable[..., Awaitable[object]], client: Client,
) -> None:
    metricflows.register_all()
    metricflows.RELEASE.clear()
    first = await start_coordinator()
    await start_agent()
    await client.register()
    run = await client.start("held")

    async def second_attempt_runs() -> bool:
        rec = next(t for t in (await client.get(run.run_id)).tasks if t.task == "held")
        return rec.attempt == 2 and rec.status == "running"

    await wait_for(second_attempt_runs, timeout_s=20)
    before = await client.stats()
    assert _series(before, "task_retries", flow="held", reason="failed") == 1
    assert _count(before, "task_wait_s", flow="held") == 2
    await first.shutdown()  # type: ignore[attr-defined]

    await start_coordinator()
    metricflows.RELEASE.set()
    assert (await client.wait(run.run_id, timeout_s=30)).run.status == "succeeded"
    after = await client.stats()
    assert _series(after, "tasks_finished", flow="held", status="succeeded") == 1
    assert _series(after, "runs_finished", flow="held", status="succeeded") == 1
    assert _series(after, "task_retries", flow="held") == 0  # the first one counted it
    assert _count(after, "task_duration_s", flow="held") == 1  # the second attempt only
    assert _count(after, "task_wait_s", flow="held") == 0  # it started before the restart


async def test_a_finished_run_retried_counts_its_new_attempts_and_not_its_old_ones_again(
    start_coordinator: Callable[..., Awaitable[object]],
    start_agent: Callable[..., Awaitable[object]], client: Client,
) -> None:
    metricflows.register_all()
    await start_coordinator()
    await start_agent()
    await client.register()
    run = await client.start("doomed")
    assert (await client.wait(run.run_id, timeout_s=30)).run.status == "failed"
    await client.retry(run.run_id)
    detail = await client.wait(run.run_id, timeout_s=30)
    assert detail.run.status == "failed"
    attempts = next(t for t in detail.tasks if t.task == "doomed").history
    assert len(attempts) == 3  # its retries were used up: the run's retry runs it once more
    stats = await client.stats()
    assert _count(stats, "task_duration_s", flow="doomed", task="doomed") == 3
    assert _count(stats, "task_wait_s", flow="doomed", task="doomed") == 3
    assert _series(stats, "task_retries", flow="doomed", task="doomed") == 1
    assert _series(stats, "tasks_finished", flow="doomed", task="doomed", status="failed") == 2
    assert _series(stats, "tasks_finished", flow="doomed", task="after") == 2
    assert _series(stats, "runs_finished", flow="doomed", status="failed") == 2


def test_flows_and_tasks_past_the_caps_fold_into_other() -> None:
    cap = LabelCap(max_pairs=3, max_values=2)
    assert cap.pair("a", "x") == ("a", "x")
    assert cap.pair("a", "y") == ("a", "y")
    assert cap.pair("b", "x") == ("b", "x")
    assert cap.pair("a", "z") == ("a", OTHER)  # a known flow keeps its name
    assert cap.pair("c", "x") == (OTHER, OTHER)  # a third flow is past the flows' cap
    assert cap.pair("a", "x") == ("a", "x")
    assert cap.value("q1") == "q1" and cap.value("q2") == "q2" and cap.value("q3") == OTHER
    assert cap.folded == 3
    assert cap.pair("a", "z") == ("a", OTHER) and cap.folded == 3  # counted once


def test_instances_and_children_are_labelled_by_their_flow_task() -> None:
    assert [root_task(n) for n in ("t", "t~7", "t/0", "t~7/0/3")] == ["t"] * 4
    assert [kind_of(n) for n in ("t", "t~7", "t/0", "t~7/0")] == [
        "task", "instance", "child", "child"]


def test_a_quantile_is_told_as_the_bucket_it_falls_in() -> None:
    h = Histograms(bounds=(1.0, 2.0, 4.0))
    for v in (0.5, 1.5, 1.5, 3.0, 10.0):
        h.observe(("f",), v)
    [(labels, cumulative, total)] = list(h.items())
    assert labels == ("f",) and cumulative == [1, 3, 4, 5] and total == 16.5
    assert quantile_bound(0.5, h.bounds, cumulative) == 2.0
    assert quantile_bound(0.2, h.bounds, cumulative) == 1.0
    assert quantile_bound(0.99, h.bounds, cumulative) == math.inf
    assert quantile_bound(0.5, h.bounds, [0, 0, 0, 0]) is None


def test_a_report_published_again_unchanged_is_not_counted_twice() -> None:
    spec = FlowSpec(name="f", tasks=(TaskSpec(name="a", function="m:a"),))
    scheduler = Scheduler()
    tracker = TaskTracker(scheduler)
    batch = Batch()
    run = RunRecord(run_id="r1", flow="f", version=spec.version(), created_at=1.0)
    scheduler.start_run(run, CompiledFlow.compile(spec), 1.0, batch.changes)
    tracker.follow(1.0, batch)
    done = TaskSucceeded(run_id="r1", task="a", attempt=1, agent_id="x", delivery=1, at=3.0,
                         started_at=2.0, output=msgspec.Raw(b"1"))
    for _ in range(2):  # the second report is stale: the scheduler changes nothing
        batch = Batch(changes=Changes())
        scheduler.on_report(done, 3.0, batch.changes)
        tracker.follow(3.0, batch)
    again = Batch(changes=Changes(runs={"r1": run}))  # the ended run, published again
    tracker.follow(4.0, again)
    assert tracker.tasks_finished == {("f", "a", "default", "task", "succeeded"): 1}
    assert tracker.runs_finished == {("f", "succeeded"): 1}
    [(_, cumulative, total)] = list(tracker.duration.items())
    assert cumulative[-1] == 1 and total == 1.0
    [(_, cumulative, total)] = list(tracker.wait.items())
    assert cumulative[-1] == 1 and total == 1.0  # queued at 1.0, started at 2.0


async def test_one_endpoint_serves_the_coordinator_and_the_agent_as_flowforge_dev_does(
    start_coordinator: Callable[..., Awaitable[Any]],
    start_agent: Callable[..., Awaitable[Any]],
) -> None:
    coordinator, agent = await start_coordinator(), await start_agent()
    collectors = [coordinator.metrics_collector(), agent.metrics]
    async with serving(("127.0.0.1", 0), collectors) as url:
        assert url is not None
        text = await asyncio.to_thread(_get, url)
        names = [f.name for f in text_string_to_metric_families(text)]
        assert len(names) == len(set(names))  # no family twice
        assert {"flowforge_queue_depth", "flowforge_agent_queue_slots_total",
                "process_cpu_seconds"} <= set(names)
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(_get, url.replace("/metrics", "/other"))
        assert refused.value.code == 404
        refused.value.close()
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(_get, url)  # stopped with the block


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read().decode()
