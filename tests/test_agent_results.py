"""ResultSender against a real reports stream: results that finish together go as one message."""

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from agent.results import ResultSender
from bench.flows import fanout_flow
from coordinator.service import Coordinator
from flowforge.client import Client
from flowforge.jetstream import ensure_stream
from flowforge.jspub import JsPublisher, PublishError
from protocol.messages import (
    TaskFailed,
    TaskResults,
    TaskSucceeded,
    report_decoder,
)
from protocol.subjects import Subjects


@pytest.fixture
async def sender(nc: NATS) -> AsyncIterator[ResultSender]:
    jspub = JsPublisher(nc, ack_timeout_s=5)
    await jspub.start()
    yield ResultSender(jspub, Subjects(), max_bytes=4096)
    await jspub.stop()


def _ok(run_id: str, task: str, output: bytes = b"null") -> TaskSucceeded:
    return TaskSucceeded(run_id=run_id, task=task, attempt=1, agent_id="a", at=time.time(),
                         started_at=time.time(), output=msgspec.Raw(output))


async def _reports_stream(nc: NATS) -> None:
    s = Subjects()
    await ensure_stream(nc.jetstream(), s.reports_stream, s.wildcard("report"))


async def _stored(nc: NATS, n: int) -> list[Msg]:
    """The first ``n`` messages the reports stream holds, read back from it."""
    sub = await nc.jetstream().pull_subscribe("flowforge.report.>", durable="reader")
    msgs = await sub.fetch(n, timeout=5)
    assert len(msgs) == n
    return msgs


async def test_results_sent_in_one_turn_are_stored_as_one_message_a_lone_one_as_itself(
    nc: NATS, sender: ResultSender,
) -> None:
    await _reports_stream(nc)
    together = [_ok("r1", f"t{i}") for i in range(5)]
    failed = TaskFailed(run_id="r1", task="bad", attempt=2, agent_id="a", at=1.0,
                        error_type="ValueError", message="no")
    await asyncio.gather(*[sender.send(r) for r in [*together, failed]])  # one turn
    alone = _ok("r2", "alone")
    await sender.send(alone)
    assert sender.messages == 2

    first, second = await _stored(nc, 2)
    assert first.subject == "flowforge.report.r1"  # all of one run: that run's subject
    assert report_decoder.decode(first.data) == TaskResults(results=[*together, failed])
    assert second.subject == "flowforge.report.r2"
    assert report_decoder.decode(second.data) == alone


async def test_results_of_several_runs_go_on_the_several_subject_split_by_size(
    nc: NATS, sender: ResultSender,
) -> None:
    await _reports_stream(nc)
    blob = b'"' + b"x" * 1500 + b'"'  # three of these fit in 4,096 bytes, not four
    results = [_ok(f"run{i}", "t", blob) for i in range(6)]
    await asyncio.gather(*[sender.send(r) for r in results])

    msgs = await _stored(nc, 3)
    assert [m.subject for m in msgs] == ["flowforge.report.several"] * 3
    decoded = [report_decoder.decode(m.data) for m in msgs]
    assert all(isinstance(d, TaskResults) and len(d.results) == 2 for d in decoded)
    assert [r for d in decoded for r in d.results] == results  # all, in order  # type: ignore[union-attr]


async def test_when_nothing_stores_results_every_sender_of_the_message_hears_why(
    sender: ResultSender,
) -> None:
    outcome = await asyncio.gather(*[sender.send(_ok("r1", f"t{i}")) for i in range(3)],
                                   return_exceptions=True)
    assert sender.messages == 1
    assert all(isinstance(o, PublishError) for o in outcome), outcome


async def test_a_fan_out_stores_fewer_result_messages_than_tasks(
    coordinator: Coordinator, start_agent: object, client: Client, nc: NATS,
) -> None:
    spec = fanout_flow(200)
    reports: list[Msg] = []

    async def on_report(msg: Msg) -> None:
        reports.append(msg)

    await nc.subscribe("flowforge.report.>", cb=on_report)
    agent = await start_agent(concurrency=16)  # type: ignore[operator]
    await client.register([spec])
    run = await client.start(spec.name)
    assert (await client.wait(run.run_id, timeout_s=60)).run.status == "succeeded"
    await nc.flush()
    results = [r for m in reports for r in _results(report_decoder.decode(m.data))]
    assert sorted(r.task for r in results) == sorted(t.name for t in spec.tasks)
    assert agent._results.messages < len(spec.tasks)


def _results(report: object) -> list[TaskSucceeded | TaskFailed]:
    if isinstance(report, TaskResults):
        return list(report.results)
    return [report] if isinstance(report, TaskSucceeded | TaskFailed) else []
