"""TaskThreads: sync task functions on threads, their outcome back on the loop."""

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from agent.threads import TaskThreads
from agent.worker import Agent, AgentConfig
from flowforge.connection import ConnectOptions, connect
from flowforge.jetstream import ensure_streams
from protocol.messages import TaskDispatch, TaskFailed, encoder, report_decoder
from protocol.subjects import Subjects


async def test_a_call_returns_its_value_on_a_thread_other_than_the_loops() -> None:
    threads = TaskThreads(2)
    try:
        assert await threads.submit(lambda: threading.current_thread().name) == (
            "flowforge-task-0", None)
    finally:
        threads.shutdown()


@pytest.mark.parametrize("error", [ValueError("bad"), StopIteration("over"), KeyboardInterrupt()])
async def test_any_exception_comes_back_as_a_value_even_those_a_future_refuses(
    error: BaseException,
) -> None:
    def boom() -> None:
        raise error

    threads = TaskThreads(1)
    try:
        assert await asyncio.wait_for(threads.submit(boom), 5) == (None, error)
    finally:
        threads.shutdown()


async def test_threads_start_as_calls_need_them_up_to_the_size_and_run_at_once() -> None:
    threads = TaskThreads(3)
    barrier = threading.Barrier(3, timeout=5)  # passes only if three calls run together
    try:
        assert threads.threads == 0
        assert await threads.submit(lambda: 1) == (1, None)
        assert threads.threads == 1  # one call at a time needs one thread
        outcomes = await asyncio.gather(*(threads.submit(barrier.wait) for _ in range(3)))
        assert sorted(r for r, _ in outcomes) == [0, 1, 2] and threads.threads == 3
        await asyncio.gather(*(threads.submit(lambda: None) for _ in range(10)))
        assert threads.threads == 3
    finally:
        threads.shutdown()


async def test_a_cancelled_wait_leaves_the_call_running_and_the_pool_usable() -> None:
    threads = TaskThreads(1)
    release = threading.Event()
    try:
        slow = threads.submit(lambda: release.wait(5))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(slow), 0.05)
        release.set()
        assert await slow == (True, None)
        assert await threads.submit(lambda: "next") == ("next", None)
    finally:
        threads.shutdown()


async def test_after_shutdown_no_call_is_taken() -> None:
    threads = TaskThreads(1)
    threads.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        threads.submit(lambda: None)


def stops() -> None:
    raise StopIteration("no more items")


@pytest.fixture
async def nc(nats_opts: ConnectOptions) -> AsyncIterator[NATS]:
    conn = await connect(nats_opts, name="threads-test")
    await ensure_streams(conn.jetstream(), Subjects())
    yield conn
    await conn.close()


async def test_a_sync_task_raising_stop_iteration_is_reported_failed_with_that_type(
    nats_opts: ConnectOptions, nc: NATS,
) -> None:
    agent = Agent(AgentConfig(connect=nats_opts, queues=("default",),
                              functions={"tests.test_agent_threads:stops": stops}))
    await agent.start()
    serving = asyncio.create_task(agent.run())
    try:
        reports = await nc.subscribe("flowforge.report.stop01")
        await nc.jetstream().publish("flowforge.task.default", encoder.encode(TaskDispatch(
            run_id="stop01", flow="f", version="0", task="t", attempt=1,
            function="tests.test_agent_threads:stops", queued_at=time.time(),
        )))
        report = report_decoder.decode((await reports.next_msg(timeout=10)).data)
        assert isinstance(report, TaskFailed)
        assert (report.error_type, report.message) == ("StopIteration", "no more items")
        assert "raise StopIteration" in report.traceback
    finally:
        agent.request_stop()
        await asyncio.wait_for(serving, 15)
        await agent.shutdown()
