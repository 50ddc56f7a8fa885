"""The agent's ExperimentSender: what a task logs goes out while it runs, in messages that fit,
and all of it is stored before the result — a failed send is kept for the next, never lost."""

import asyncio

import msgspec

from agent.experiment_sender import ExperimentSender, packed
from flowforge.experiment_log import ExperimentLog
from protocol.experiments import MAX_POINTS_PER_MESSAGE, ArtifactRef, Logged, MetricPoint
from protocol.messages import TaskDispatch, TaskMetrics

DISPATCH = TaskDispatch(run_id="r1", flow="f", version="v", task="t", function="m:f", attempt=2)
_decode = msgspec.json.Decoder(TaskMetrics).decode


class Store:
    """Stores reports; the first ``failures`` calls fail as if NATS were away."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.reports: list[TaskMetrics] = []
        self.stored = asyncio.Event()

    async def __call__(self, run_id: str, data: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("NATS is away")
        self.reports.append(_decode(data))
        self.stored.set()


def _sender(store: Store, log: ExperimentLog) -> ExperimentSender:
    return ExperimentSender(log, DISPATCH, 3, "agent-1", store, asyncio.get_running_loop())


async def test_points_logged_while_the_task_runs_go_out_without_waiting_for_its_end() -> None:
    store, log = Store(), ExperimentLog()
    _sender(store, log)
    await asyncio.to_thread(log.metric, "loss", 0.5)  # from the task's thread
    await asyncio.wait_for(store.stored.wait(), 5)
    [report] = store.reports
    assert (report.run_id, report.task, report.attempt, report.delivery, report.agent_id) == (
        "r1", "t", 2, 3, "agent-1")
    assert [(p.name, p.value, p.step) for p in report.points] == [("loss", 0.5, 0)]


async def test_what_failed_to_send_goes_with_the_next_and_finish_returns_once_all_is_stored(
) -> None:
    store, log = Store(failures=2), ExperimentLog()
    sender = _sender(store, log)
    for i in range(5):
        log.metric("x", i)
    assert not await sender.flush()  # NATS away: kept
    log.metric("y", 1)
    await sender.finish()  # retried until stored
    assert [(p.name, p.step) for r in store.reports for p in r.points] == [
        ("x", 0), ("x", 1), ("x", 2), ("x", 3), ("x", 4), ("y", 0)]
    log.metric("z", 1)  # after the end: dropped, nothing sent
    await asyncio.sleep(0)
    assert not log.waiting


async def test_many_points_go_in_messages_within_the_counts_and_bytes_of_one() -> None:
    now = 1.0
    logged = Logged(points=[MetricPoint("m", float(i), i, now) for i in range(5000)],
                    artifacts=[ArtifactRef(seq=i, uri="s3://" + "a" * 2000, at=now)
                               for i in range(300)])
    parts = list(packed(logged, 256 * 1024))
    assert sum(len(p.points) for p in parts) == 5000
    assert sum(len(p.artifacts) for p in parts) == 300
    assert all(len(p.points) <= MAX_POINTS_PER_MESSAGE for p in parts)
    assert all(len(msgspec.json.encode(p)) <= 256 * 1024 + 64 for p in parts)
    store, log = Store(), ExperimentLog()
    sender = _sender(store, log)
    log.merge(logged)
    await sender.finish()
    assert sum(len(r.points) for r in store.reports) == 5000
