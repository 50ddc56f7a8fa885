"""Fixed data for the dashboard tests (a clock, flows, runs, agents, problems, schedules,
batches), and its own checks."""

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator

import msgspec

import examples.seed_pipelines  # noqa: F401 - registers the seed flows
import tests.taskflows  # noqa: F401 - registers the test flows
from flowforge.registry import REGISTRY
from protocol.batches import BatchItem, BatchRecord, BatchSpec, BatchState, ItemStatus
from protocol.flows import FlowSpec
from protocol.records import (
    AgentInfo,
    Attempt,
    RejectedMessage,
    RunCounts,
    RunDetail,
    RunRecord,
    TaskRecord,
)
from protocol.schedules import ScheduleSpec, ScheduleState
from protocol.states import RunStatus, TaskStatus
from tests.memory_source import MemorySource, flow_detail

T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
NOW = T0 + 90.0

TRACEBACK = '''Traceback (most recent call last):
  File "/srv/flowforge/agent/executor.py", line 88, in call
    return fn(**kwargs)
  File "/srv/examples/seed_pipelines.py", line 62, in faulty_transform
    return {"value": undefined_variable}
NameError: name 'undefined_variable' is not defined
'''

FAULTY_LOG = """00:00:01 INFO faulty_transform: transforming 3 rows from clean_data
about to use a variable that was never defined
"""

# Specs are snapshotted once: other tests may re-register flows under the same names.
SPECS: dict[str, FlowSpec] = {
    name: REGISTRY.flows[name]
    for name in ("pipeline_simple", "pipeline_simple_with_failure", "pipeline_simple_ml", "random_dag")
}


@contextlib.contextmanager
def utc() -> Iterator[None]:
    """Local time is UTC inside (dates on screen must not depend on the machine)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def clock() -> float:
    return NOW


def spec(name: str) -> FlowSpec:
    return SPECS[name]


def _task(run_id: str, name: str, status: TaskStatus, start: float, end: float | None,
          **extra: object) -> TaskRecord:
    return TaskRecord(run_id=run_id, task=name, status=status, attempt=1, agent_id="agent-1",
                      queued_at=start - 0.01, started_at=start, finished_at=end, **extra)


def failed_run() -> RunDetail:
    """pipeline_simple_with_failure after it failed: faulty_transform raised NameError."""
    s = spec("pipeline_simple_with_failure")
    rid = "run-failed-1"
    ok = msgspec.Raw(b'{"n": 200}')
    tasks = [
        _task(rid, "fetch_data1", TaskStatus.SUCCEEDED, T0 + 1, T0 + 1.05,
              output=msgspec.Raw(b'{"source": "source1", "rows": [1, 2, 3]}')),
        _task(rid, "fetch_data2", TaskStatus.SUCCEEDED, T0 + 1, T0 + 1.06,
              output=msgspec.Raw(b'{"source": "source2", "rows": [4, 5, 6]}')),
        _task(rid, "clean_data", TaskStatus.SUCCEEDED, T0 + 1.1, T0 + 1.12,
              output=msgspec.Raw(b'{"rows": [1, 2, 3, 4, 5, 6], "dropped": 0}')),
        _task(rid, "faulty_transform", TaskStatus.FAILED, T0 + 1.2, T0 + 1.21,
              error_type="NameError", error_message="name 'undefined_variable' is not defined",
              traceback=TRACEBACK,
              history=[Attempt(attempt=1, agent_id="agent-1", queued_at=T0 + 1.19,
                               started_at=T0 + 1.2, finished_at=T0 + 1.21, outcome="failed",
                               error_type="NameError",
                               error_message="name 'undefined_variable' is not defined")]),
        TaskRecord(run_id=rid, task="publish_results", status=TaskStatus.UPSTREAM_FAILED),
        _task(rid, "independent_summary", TaskStatus.SUCCEEDED, T0 + 1.1, T0 + 1.11, output=ok),
    ]
    run = RunRecord(run_id=rid, flow=s.name, version=s.version(), status=RunStatus.FAILED,
                    params={"n_rows": 200}, created_at=T0 + 1, started_at=T0 + 1,
                    finished_at=T0 + 1.25, source="cli",
                    counts=RunCounts(total=6, done=6, succeeded=4, failed=2))
    return RunDetail(run=run, tasks=tasks)


def running_run() -> RunDetail:
    """pipeline_simple half way: clean_data is running."""
    s = spec("pipeline_simple")
    rid = "run-running-2"
    tasks = [
        _task(rid, "fetch_data1", TaskStatus.SUCCEEDED, T0 + 10, T0 + 10.05),
        _task(rid, "fetch_data2", TaskStatus.SUCCEEDED, T0 + 10, T0 + 10.05),
        _task(rid, "clean_data", TaskStatus.RUNNING, T0 + 10.1, None, progress=0.5,
              checkpoint="merged 2 sources", checkpoint_at=T0 + 10.2),
        TaskRecord(run_id=rid, task="analyze_data"),
        TaskRecord(run_id=rid, task="some_post_process_function"),
    ]
    run = RunRecord(run_id=rid, flow=s.name, version=s.version(), status=RunStatus.RUNNING,
                    created_at=T0 + 10, started_at=T0 + 10, source="api",
                    counts=RunCounts(total=5, done=2, succeeded=2, running=1))
    return RunDetail(run=run, tasks=tasks)


def history(n: int) -> list[RunDetail]:
    """``n`` finished runs of pipeline_simple before the fixed ones, a minute apart; every
    seventh failed."""
    s = spec("pipeline_simple")
    out = []
    for i in range(n):
        at = T0 - 60.0 * (i + 1)
        status = RunStatus.FAILED if i % 7 == 6 else RunStatus.SUCCEEDED
        out.append(RunDetail(run=RunRecord(
            run_id=f"run-old-{i:04d}", flow=s.name, version=s.version(), status=status,
            created_at=at, started_at=at, finished_at=at + 2.0, source="schedule",
            counts=RunCounts(total=5, done=5, succeeded=5 - (status is RunStatus.FAILED),
                             failed=int(status is RunStatus.FAILED))), tasks=[]))
    return out


def agent(agent_id: str = "agent-1", status: str = "live") -> AgentInfo:
    return AgentInfo(agent_id=agent_id, host="build-7", pid=4242, queues=("default", "gpu"),
                     functions=("examples.seed_pipelines:fetch_data1",
                                "examples.seed_pipelines:clean_data"),
                     slots_total=4, slots_busy=1, started_at=T0, last_seen=NOW - 3,
                     status=status)


def schedules() -> list[ScheduleState]:
    nightly = ScheduleSpec(name="nightly-ml", flow="pipeline_simple_ml", cron="30 2 * * *",
                           timezone="Europe/Paris", params={"n_rows": 500})
    often = ScheduleSpec(name="every-15m", flow="pipeline_simple", every_s=900.0)
    return [ScheduleState(spec=nightly, cursor=T0 - 3600, origin="code", created_at=T0 - 86400),
            ScheduleState(spec=often, cursor=T0, paused=True, note="source system down",
                          created_at=T0 - 86400)]


BIG_BATCH = "0019b7a1c2e0000b1f0"
BACKFILL = "0019b7a1b660000a2f0"
OLD_BATCH = "0019b79e3e00000c3d0"


def _big_batch() -> tuple[BatchRecord, list[BatchItem]]:
    """2,000 items of pipeline_simple: 1,497 succeeded, 3 failed (item 17's run is
    run-failed-1), 2 running (item 1501's is run-running-2), 1 pending, 1 skipped, 496 waiting."""
    special = {17: (ItemStatus.FAILED, "run-failed-1"), 404: (ItemStatus.FAILED, None),
               1203: (ItemStatus.FAILED, None), 1500: (ItemStatus.RUNNING, None),
               1501: (ItemStatus.RUNNING, "run-running-2"), 1502: (ItemStatus.PENDING, None),
               1600: (ItemStatus.SKIPPED, None)}
    items = []
    for seq in range(2000):
        status, run_id = special.get(seq, (ItemStatus.SUCCEEDED if seq < 1500 else
                                           ItemStatus.WAITING, None))
        if run_id is None and status not in (ItemStatus.WAITING, ItemStatus.SKIPPED):
            run_id = f"0019b7a1{seq:011x}"
        items.append(BatchItem(
            batch_id=BIG_BATCH, seq=seq, status=status, run_id=run_id,
            params={"n_rows": 100 + seq, "source": f"s3://archive/2025/part-{seq:05d}.parquet"},
            reason="same parameters as item 3" if status is ItemStatus.SKIPPED else None))
    record = BatchRecord(batch_id=BIG_BATCH, spec=BatchSpec(
        flow="pipeline_simple", name="reprocess-2025", max_active=4), state=BatchState.ACTIVE,
        created_at=T0 + 20, updated_at=T0 + 21, total=2000)
    return record, items


def _backfill() -> tuple[BatchRecord, list[BatchItem]]:
    """A backfill of nightly-ml, paused: 10 hours done, 14 waiting."""
    items = [BatchItem(batch_id=BACKFILL, seq=h, params={"n_rows": 500},
                       status=ItemStatus.SUCCEEDED if h < 10 else ItemStatus.WAITING,
                       run_id=f"0019b7a1b66{h:08x}" if h < 10 else None,
                       scheduled_for=T0 - 86400 + 3600 * h) for h in range(24)]
    record = BatchRecord(batch_id=BACKFILL, spec=BatchSpec(
        flow="pipeline_simple_ml", name="backfill nightly-ml", max_active=1,
        schedule="nightly-ml"), state=BatchState.PAUSED, note="source system down",
        created_at=T0 + 10, updated_at=T0 + 15, total=24)
    return record, items


def _old_batch() -> tuple[BatchRecord, list[BatchItem]]:
    """An unnamed batch that is done: 3 succeeded, 1 failed, 1 skipped (it ran before)."""
    statuses = [ItemStatus.SUCCEEDED] * 3 + [ItemStatus.FAILED, ItemStatus.SKIPPED]
    items = [BatchItem(batch_id=OLD_BATCH, seq=i, status=s, params={"n_rows": i},
                       run_id=None if s is ItemStatus.SKIPPED else f"0019b79e3e{i:09x}",
                       reason="succeeded in batch 0019b79a00000000fff (run 0019b79a0000000a1b2)"
                       if s is ItemStatus.SKIPPED else None)
             for i, s in enumerate(statuses)]
    record = BatchRecord(batch_id=OLD_BATCH, spec=BatchSpec(flow="pipeline_simple_with_failure"),
                         state=BatchState.DONE, created_at=T0 - 3600, updated_at=T0 - 3000,
                         finished_at=T0 - 3000, total=5)
    return record, items


def batches() -> list[tuple[BatchRecord, list[BatchItem]]]:
    return [_big_batch(), _backfill(), _old_batch()]


def rejected() -> RejectedMessage:
    return RejectedMessage(id=1, subject="flowforge.trigger.pipeline_simple",
                           reason="params: expected an object, got a string", code="bad_request",
                           raw=b'{"params": "oops"}', received_at=T0 + 5)


def memory_source(runs: bool = True) -> MemorySource:
    flows = [flow_detail(spec(n), T0) for n in ("pipeline_simple", "pipeline_simple_with_failure",
                                                "pipeline_simple_ml")]
    return MemorySource(flows=flows, runs=[failed_run(), running_run()] if runs else [],
                        agents=[agent(), agent("agent-2", "lost")], rejected=[rejected()],
                        logs={("run-failed-1", "faulty_transform"): FAULTY_LOG}, clock=clock,
                        schedules=schedules(), batches=batches())


async def test_the_memory_source_answers_like_a_coordinator() -> None:
    source = memory_source()
    flows = await source.flows()
    assert [f.name for f in flows] == ["pipeline_simple", "pipeline_simple_ml",
                                       "pipeline_simple_with_failure"]
    assert flows[2].last_run_status is RunStatus.FAILED
    assert [r.run_id for r in await source.runs()] == ["run-running-2", "run-failed-1"]
    run = await source.start("pipeline_simple", {"n_rows": 3})
    assert run.run_id == "run-0001" and source.calls == [("start", "pipeline_simple", {"n_rows": 3})]


async def until(predicate: Callable[[], object], timeout_s: float = 30.0, what: str = "") -> None:
    """Wait for a condition (checked every few ms), failing after ``timeout_s`` (generous: a
    loaded machine is slow, and a condition met early ends the wait at once)."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"not after {timeout_s:g} s: {what or predicate}") from None
