"""The follower: snapshot then events; a lost deployment shows, keeps the last state, and resyncs."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import msgspec

from protocol.messages import TaskLog
from protocol.records import FlowSummary, RunRecord
from protocol.states import RunStatus
from tests.memory_source import MemorySource
from tests.test_tui_support import NOW, T0, clock, memory_source, running_run, until
from tui.follower import Follower
from tui.model import Dirty, Model


@contextlib.asynccontextmanager
async def following(source: MemorySource, **kw: float) -> AsyncIterator[tuple[Follower, list[Dirty]]]:
    changes: list[Dirty] = []
    follower = Follower(source, Model(), clock, changes.append, retry_s=0.01, **kw)
    task = asyncio.create_task(follower.run())
    try:
        yield follower, changes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_it_loads_a_snapshot_then_applies_events() -> None:
    source = memory_source()
    async with following(source) as (follower, _):
        await until(lambda: follower.syncs == 1)
        assert "run-failed-1" in follower.model.runs
        done = msgspec.structs.replace(running_run().run, status=RunStatus.SUCCEEDED)
        source.push(done)
        await until(lambda: follower.model.runs["run-running-2"].status is RunStatus.SUCCEEDED)


async def test_events_that_arrive_while_the_snapshot_loads_are_not_lost() -> None:
    class Racing(MemorySource):
        async def flows(self) -> list[FlowSummary]:
            flows = await super().flows()
            self.push(RunRecord(run_id="run-during", flow="pipeline_simple", version="v",
                                created_at=T0 + 60))
            return flows

    base = memory_source()
    source = Racing(flows=base.flow_details.values(), clock=clock)
    async with following(source) as (follower, _):
        await until(lambda: "run-during" in follower.model.runs)


async def test_a_lost_link_keeps_the_last_state_and_resyncs_when_it_is_back() -> None:
    source = memory_source()
    async with following(source) as (follower, _):
        await until(lambda: follower.syncs == 1)
        source.go_down("lost NATS at memory; reconnecting")
        await until(lambda: follower.model.link_down is not None)
        assert "run-failed-1" in follower.model.runs  # the last state stays
        # what happened meanwhile comes with the resync
        source.details["run-running-2"] = msgspec.structs.replace(
            source.details["run-running-2"],
            run=msgspec.structs.replace(running_run().run, status=RunStatus.FAILED))
        source.come_back()
        await until(lambda: follower.syncs == 2 and follower.model.link_down is None)
        assert follower.model.runs["run-running-2"].status is RunStatus.FAILED


async def test_a_silent_coordinator_is_noticed_by_a_probe_and_found_again() -> None:
    source = memory_source()
    async with following(source, quiet_s=0.02) as (follower, _):
        await until(lambda: follower.syncs == 1)
        source.down = "no coordinator is answering"  # NATS still up: no LinkDown event
        await until(lambda: follower.model.link_down == "no coordinator is answering")
        source.down = None
        await until(lambda: follower.model.link_down is None and follower.syncs >= 2)


async def test_an_unreachable_deployment_at_start_is_retried() -> None:
    source = memory_source()
    source.down = "cannot reach NATS at nats://nowhere:4222"
    async with following(source) as (follower, _):
        await until(lambda: follower.model.link_down is not None)
        assert follower.model.down_since == NOW
        source.down = None
        await until(lambda: follower.syncs == 1 and follower.model.link_down is None)


async def test_the_runs_open_in_a_view_are_fetched_again_on_resync() -> None:
    source = memory_source()
    async with following(source) as (follower, _):
        await until(lambda: follower.syncs == 1)
        follower.model.pinned.add("run-running-2")
        source.go_down()
        await until(lambda: follower.model.link_down is not None)
        source.come_back()
        await until(lambda: follower.syncs == 2)
        assert "clean_data" in follower.model.tasks["run-running-2"]


async def test_an_unexpected_error_while_following_shows_and_following_starts_again() -> None:
    class Flaky(MemorySource):
        failures = 1

        async def agents(self) -> list:  # type: ignore[type-arg]
            if self.failures:
                self.failures -= 1
                raise RuntimeError("decoder exploded")
            return await super().agents()

    base = memory_source()
    source = Flaky(flows=base.flow_details.values(), clock=clock)
    async with following(source) as (follower, _):
        await until(lambda: follower.model.link_down == "RuntimeError: decoder exploded")
        await until(lambda: follower.syncs == 1 and follower.model.link_down is None)


async def test_a_resync_fetches_followed_logs_again_without_doubling_lines_in_flight() -> None:
    source = memory_source()
    key = ("run-running-2", "clean_data")
    source.logs[key] = "one\n"
    async with following(source) as (follower, _):
        await until(lambda: follower.syncs == 1)
        buffer, _ = follower.model.follow_log(*key)
        follower.model.set_log(*key, await source.task_log(*key), buffer.ask())
        source.go_down()
        await until(lambda: follower.model.link_down is not None)
        source.logs[key] += "two (its event was missed while the link was down)\n"
        source.logs[key] += "three\n"
        source.come_back()
        await until(lambda: follower.syncs == 2)
        assert buffer.text == source.logs[key]
        # the event of "three" was in flight: it arrives after the refetch that holds it
        source.push(TaskLog(run_id=key[0], task=key[1], attempt=1, agent_id="a", at=0.0,
                            text="three\n"))
        source.push(TaskLog(run_id=key[0], task=key[1], attempt=1, agent_id="a", at=0.0,
                            text="four\n"))
        await until(lambda: buffer.text.endswith("four\n"))
        assert buffer.text == "one\ntwo (its event was missed while the link was down)\nthree\nfour\n"
