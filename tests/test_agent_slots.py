"""An agent's slot is free once its function returned; results still being stored are bounded.

No coordinator here: the reports stream does not exist, so no result can be stored (the
agent keeps retrying), which holds every finished task in the "reporting" state.
"""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from agent.inhand import TaskState
from agent.slots import REPORTS_AHEAD
from agent.taskmsg import deliveries as _deliveries
from agent.worker import Agent, AgentConfig
from flowforge.connection import ConnectOptions
from flowforge.jetstream import ensure_streams
from protocol.messages import TaskDispatch, TaskResults, TaskSucceeded, encoder, report_decoder
from protocol.subjects import Subjects
from tests.helpers import wait_for

RAN: list[str] = []


def record(ctx_task: str) -> str:
    RAN.append(ctx_task)
    return ctx_task


@pytest.fixture
async def agent(nats_opts: ConnectOptions) -> AsyncIterator[Agent]:
    RAN.clear()
    agent = Agent(AgentConfig(connect=nats_opts, queues=("default",),
                              functions={"tests.test_agent_slots:record": record},
                              concurrency=1, grace_s=1.0))
    await agent.start()
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.ready.wait(), 10)
    yield agent
    agent.request_stop()
    await asyncio.wait_for(task, 15)
    await agent.shutdown()


async def _send(nc: NATS, n: int) -> None:
    js = nc.jetstream()
    for i in range(n):
        dispatch = TaskDispatch(
            run_id="slots01", flow="f", version="0", task=f"t{i}", attempt=1,
            function="tests.test_agent_slots:record", params={"ctx_task": f"t{i}"},
            queued_at=time.time(),
        )
        await js.publish("flowforge.task.default", encoder.encode(dispatch))


async def _consumer(nc: NATS) -> tuple[int, int, int]:
    """Task messages delivered and not acked, not yet delivered, pull requests waiting."""
    info = await nc.jetstream().consumer_info("FLOWFORGE_TASKS", "tasks_default")
    return info.num_ack_pending, info.num_pending, info.num_waiting


async def _all_acked(nc: NATS) -> bool:
    return await _consumer(nc) == (0, 0, 0) or (await _consumer(nc))[:2] == (0, 0)


async def test_a_slot_runs_the_next_task_while_results_wait_to_be_stored_up_to_a_bound(
    agent: Agent, nc: NATS,
) -> None:
    ahead = 1 + REPORTS_AHEAD  # one slot: one running, REPORTS_AHEAD waiting to be stored
    await _send(nc, ahead + 3)
    await wait_for(lambda: len(agent._slots.in_state(TaskState.REPORTING)) == ahead, 10)
    assert agent._nc is not None
    await agent._nc.flush()  # any pull request the agent sent has reached the server
    # nothing acked (no result stored yet), and the bound holds: no pull request is waiting,
    # so the server sends no more tasks while those results wait
    assert await _consumer(nc) == (ahead, 3, 0)
    assert len(RAN) == ahead

    reports = await nc.subscribe("flowforge.report.slots01")
    await ensure_streams(nc.jetstream(), Subjects())  # the store comes: results go in, acks follow
    got: list[TaskSucceeded] = []
    while len(got) < ahead + 3:
        report = report_decoder.decode((await reports.next_msg(timeout=15)).data)
        if isinstance(report, TaskSucceeded):
            got.append(report)
        elif isinstance(report, TaskResults):  # several stored together
            got += [r for r in report.results if isinstance(r, TaskSucceeded)]
    assert sorted(r.task for r in got) == sorted(f"t{i}" for i in range(ahead + 3))
    assert sorted(RAN) == sorted(f"t{i}" for i in range(ahead + 3))  # each ran once
    await wait_for(lambda: _all_acked(nc), 10)
    assert agent.completed == ahead + 3


@pytest.mark.parametrize(("reply", "expected"), [
    ("$JS.ACK.FLOWFORGE_TASKS.tasks_default.3.17.12.1764480000000000000.0", 3),
    ("$JS.ACK.hub.ACCHASH.FLOWFORGE_TASKS.tasks_default.2.17.12.1764480000000000000.0.xyz", 2),
    ("$JS.ACK.FLOWFORGE_TASKS.tasks_default.1.17.12.1764480000000000000.0", 1),
    ("", 1),  # not a JetStream message (hand-made in a test)
    ("_INBOX.abc", 1),
])
def test_deliveries_are_read_from_the_ack_subject_in_both_of_its_forms(
    reply: str, expected: int,
) -> None:
    assert _deliveries(Msg(_client=None, subject="flowforge.task.default", reply=reply)) == expected  # type: ignore[arg-type]
