"""Metrics from inside tasks, against the real stack: logged, sent while the task runs and
before its result, stored for every attempt, capped per run and per attempt; bad values cost
a line in the task's log, never the task; forged or broken reports never the coordinator."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from coordinator.service import Coordinator, CoordinatorConfig
from flowforge.client import Client
from flowforge.connection import ConnectOptions
from protocol.experiments import MetricPoint, RunExperiment, Series
from protocol.messages import TaskMetrics, encoder
from protocol.states import RunStatus, TaskStatus
from tests import experimentflows
from tests.helpers import wait_for


def _series(run: RunExperiment, name: str, attempt: int | None = None) -> Series:
    [found] = [s for s in run.series if s.name == name and attempt in (None, s.attempt)]
    return found


async def _experiment(client: Client, run_id: str) -> RunExperiment:
    return (await client.compare([run_id])).runs[0]


async def test_a_task_logs_metrics_a_result_and_an_artifact_and_bad_values_cost_only_a_log_line(
    coordinator, start_agent, client: Client
) -> None:
    await client.register(experimentflows.FLOWS)
    await start_agent()
    run = await client.start("exp_train", {"lr": 0.01, "depth": 4})
    detail = await client.wait(run.run_id, timeout_s=30)
    assert detail.run.status is RunStatus.SUCCEEDED  # the bad values did not fail it

    exp = await _experiment(client, run.run_id)  # complete as soon as the run is finished
    loss = _series(exp, "loss")
    assert (loss.task, loss.attempt, loss.steps) == ("train", 1, [0, 1, 2, 3])
    assert loss.values == [1.01, 0.51, round(1 / 3 + 0.01, 6), 0.26]
    assert _series(exp, "checkpointed").steps == [10, 11]
    assert exp.metrics == {"loss": 0.26, "accuracy": 0.89, "val.loss": 0.02,
                           "checkpointed": 2.0, "f1": 0.84}
    assert exp.params == {"lr": 0.01, "depth": 4}
    [result] = exp.results
    assert (result.algorithm, result.params, result.metrics, result.metadata) == (
        "hand_rolled", {"lr": 0.01, "depth": 4}, {"f1": 0.84}, {"rows": 500})
    assert result.artifact == f"file:///models/{run.run_id}"
    assert [(a.uri, a.kind) for a in exp.artifacts] == [(f"s3://bucket/{run.run_id}/plot.png",
                                                         "plot")]
    log = await client.task_log(run.run_id, "train")
    assert "log_metric('bad name', 1.0): the name 'bad name' is not an identifier" in log
    assert "log_metric('loss', nan): the value nan is not finite" in log
    assert "log_metric('loss', 'high'): the value 'high' is not a number" in log


async def test_a_retried_task_keeps_the_points_of_both_attempts_and_the_last_one_is_final(
    coordinator, start_agent, client: Client
) -> None:
    await client.register(experimentflows.FLOWS)
    await start_agent()
    run = await client.start("exp_flaky")
    assert (await client.wait(run.run_id, timeout_s=30)).run.status is RunStatus.SUCCEEDED
    exp = await _experiment(client, run.run_id)
    assert [(s.attempt, s.steps, s.values) for s in exp.series] == [
        (1, [0, 1, 2], [10.0, 11.0, 12.0]), (2, [0, 1, 2], [20.0, 21.0, 22.0])]
    assert exp.metrics == {"score": 22.0}


async def test_async_tasks_and_a_tasks_own_threads_log_every_point_with_steps_per_name(
    coordinator, start_agent, client: Client
) -> None:
    await client.register(experimentflows.FLOWS)
    await start_agent()
    run = await client.start("exp_async")
    assert (await client.wait(run.run_id, timeout_s=30)).run.status is RunStatus.SUCCEEDED
    exp = await _experiment(client, run.run_id)
    assert _series(exp, "tick").steps == [0, 1, 2, 3, 4]
    for k in range(4):
        assert _series(exp, f"t{k}").steps == list(range(250))


async def test_a_running_tasks_metrics_are_stored_while_it_runs(
    coordinator, start_agent, client: Client, tmp_path: Path
) -> None:
    await client.register(experimentflows.FLOWS)
    await start_agent()
    flag = tmp_path / "flag"
    run = await client.start("exp_live", {"flag": str(flag)})

    async def early_stored() -> bool:
        return any(s.name == "early" for s in (await _experiment(client, run.run_id)).series)

    await wait_for(early_stored, timeout_s=20)
    assert (await client.get(run.run_id)).run.status is RunStatus.RUNNING
    flag.touch()
    assert (await client.wait(run.run_id, timeout_s=30)).run.status is RunStatus.SUCCEEDED


@contextlib.asynccontextmanager
async def _coordinator(opts: ConnectOptions, db: Path, **config: int) -> AsyncIterator[Coordinator]:
    coordinator = Coordinator(CoordinatorConfig(connect=opts, db_path=db, **config))  # type: ignore[arg-type]
    await coordinator.start()
    serving = asyncio.create_task(coordinator.run())
    try:
        await asyncio.wait_for(coordinator.started.wait(), 10)
        yield coordinator
    finally:
        await coordinator.shutdown()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10)


async def test_past_the_per_run_cap_points_are_dropped_and_the_tasks_log_says_so_once(
    nats_opts: ConnectOptions, start_agent, client: Client, tmp_path: Path
) -> None:
    async with _coordinator(nats_opts, tmp_path / "cap.db", max_metric_points=50):
        await client.register(experimentflows.FLOWS)
        await start_agent()
        run = await client.start("exp_many", {"n": 40})  # two tasks of 40 points each
        assert (await client.wait(run.run_id, timeout_s=30)).run.status is RunStatus.SUCCEEDED
        exp = await _experiment(client, run.run_id)
        assert sum(s.points for s in exp.series) == 50
        logs = [await client.task_log(run.run_id, t) for t in ("first", "second")]
        said = [log.count("the run reached the limit of 50 metric points") for log in logs]
        assert sorted(said) == [0, 1], logs


@pytest.mark.e2e
async def test_a_task_in_a_worker_process_logs_through_its_agent_which_caps_each_attempt(
    coordinator, spawn, client: Client
) -> None:
    await client.register(experimentflows.FLOWS)
    agent = spawn("flowforge-agent", "--import", "tests.experimentflows", "--pool", "process",
                  "--max-metric-points", "30")
    run = await client.start("exp_proc", {"n": 40})
    detail = await client.wait(run.run_id, timeout_s=60)
    assert detail.run.status is RunStatus.SUCCEEDED, agent.log()
    assert int(bytes(detail.tasks[0].output)) != agent.pid  # it ran in a worker process
    exp = await _experiment(client, run.run_id)
    assert [r.algorithm for r in exp.results] == ["proc"]
    assert _series(exp, "final").values == [1.0]
    assert _series(exp, "y").steps == list(range(28))  # 30: the result, its metric, 28 points
    log = await client.task_log(run.run_id, "in_process")
    assert "log_metric('y', inf): the value inf is not finite" in log
    assert log.count("reached the limit of 30") == 1


# -- reports made by hand: anyone on the bus can publish one ------------------------------------


def _metrics(run_id: str, agent_id: str, attempt: int = 1, **parts: object) -> bytes:
    return encoder.encode(TaskMetrics(run_id=run_id, task="waits", attempt=attempt,
                                      agent_id=agent_id, at=time.time(), **parts))  # type: ignore[arg-type]


async def test_broken_forged_and_oversized_metrics_reports_are_set_aside_and_nothing_breaks(
    coordinator, start_agent, client: Client, nc: NATS, tmp_path: Path
) -> None:
    await client.register(experimentflows.FLOWS)
    agent = await start_agent(agent_id="exp-agent")
    flag = tmp_path / "flag"
    run = await client.start("exp_live", {"flag": str(flag)})

    async def running() -> bool:
        return (await client.get(run.run_id)).tasks[0].status is TaskStatus.RUNNING

    await wait_for(running)
    rid, now = run.run_id, time.time()
    too_many = [MetricPoint("x", 1.0, i, now) for i in range(2001)]
    bad = {
        "malformed": b'{"kind": "metrics.v1", "run_id": "' + rid.encode() + b'", "points": 5}',
        "oversized": _metrics(rid, agent.agent_id, points=too_many),
        "wrong attempt": _metrics(rid, agent.agent_id, attempt=7),
        "another agent": _metrics(rid, "someone-else"),
        "unknown run": _metrics("0190000000000000001", agent.agent_id),
        "infinite": _metrics(rid, agent.agent_id).replace(
            b'"points":[]', b'"points":[["huge",1e999,0,1.0]]'),
    }
    for data in bad.values():
        await nc.publish(f"flowforge.report.{rid}", data)
    one_bad_point = _metrics(rid, agent.agent_id).replace(
        b'"points":[]', b'"points":[["fine",2.5,3,1.0],["bad name",1,0,1.0]]')
    await nc.publish(f"flowforge.report.{rid}", one_bad_point)

    async def all_rejected() -> bool:
        return len(await client.rejected()) >= len(bad)

    await wait_for(all_rejected)
    reasons = " | ".join(r.reason for r in await client.rejected())
    for said in ("Expected `array`", "length <= 2000", "never sent", "holds it",
                 "no task of an active run", "Number out of range"):
        assert said in reasons, reasons
    flag.touch()
    assert (await client.wait(run.run_id, timeout_s=30)).run.status is RunStatus.SUCCEEDED
    exp = await _experiment(client, rid)
    assert exp.metrics == {"early": 1.0, "fine": 2.5}
    log = await client.task_log(rid, "waits")
    assert "[coordinator] metrics of attempt 1: point ('bad name', 1.0) refused: the name " \
           "'bad name' is not an identifier" in log
