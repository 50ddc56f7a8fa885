"""Schedules on the real stack (NATS, SQLite, an in-process coordinator and agent): a schedule
fires runs that know their nominal time, each nominal time once, across a coordinator
restart; a bad schedule is refused with what to fix."""

import asyncio
from datetime import UTC, datetime

import msgspec
import pytest

from flowforge import Schedule, register_task_pipeline
from flowforge.client import Client
from protocol.errors import InvalidFlow, RemoteError
from protocol.flows import FlowSpec
from protocol.records import RunRecord
from protocol.schedules import Catchup, FireOutcome, Overlap, ScheduleEvent, ScheduleSpec
from protocol.states import RunStatus
from tests import inputflows
from tests.helpers import wait_for


async def _scheduled_runs(client: Client) -> list[RunRecord]:
    return [r for r in await client.runs(flow="noop", limit=1000) if r.schedule == "tick"]


async def test_a_schedule_fires_each_nominal_time_once_across_a_coordinator_restart(
    start_coordinator, start_agent, client: Client
) -> None:
    coordinator = await start_coordinator()
    flow = inputflows.register_noop()  # before the agent: it serves what is registered
    await start_agent()
    await client.register([flow])
    detail = await client.put_schedule(ScheduleSpec(
        name="tick", flow="noop", every_s=1.0, catchup=Catchup.ALL, overlap=Overlap.ALLOW_ALL))
    assert len(detail.next_fires) == 5 and detail.next_fires[0] == int(detail.next_fires[0])

    async def at_least(n: int) -> bool:
        runs = await _scheduled_runs(client)
        return sum(r.status is RunStatus.SUCCEEDED for r in runs) >= n

    await wait_for(lambda: at_least(3), timeout_s=30)
    await coordinator.shutdown()  # fires keep coming due while it is down
    await start_coordinator()
    await wait_for(lambda: at_least(8), timeout_s=30)

    runs = await _scheduled_runs(client)
    nominal = sorted(r.scheduled_for for r in runs if r.scheduled_for is not None)
    assert len(nominal) == len(runs) == len(set(nominal)), "a nominal time ran twice"
    assert nominal == [float(t) for t in range(int(nominal[0]), int(nominal[-1]) + 1)], (
        "a nominal time was lost")
    for run in runs:
        assert run.source == "schedule" and run.idempotency_key == f"schedule:tick:{run.scheduled_for!r}"
        assert run.created_at >= run.scheduled_for  # type: ignore[operator]
    shown = await client.schedule("tick", fires=100)
    started = {f.nominal: f.run_id for f in shown.fires if f.outcome is FireOutcome.STARTED}
    assert {r.scheduled_for: r.run_id for r in runs}.items() <= started.items()
    assert shown.state.cursor >= nominal[-1] and shown.next_fires[0] > shown.state.cursor


async def test_a_running_run_makes_an_overlap_skip_schedule_record_its_fires_as_skipped(
    coordinator, client: Client
) -> None:
    await client.register([inputflows.register_noop()])  # no agent: the first run stays queued
    await client.put_schedule(ScheduleSpec(name="tick", flow="noop", every_s=1.0))

    async def skipped() -> bool:
        shown = await client.schedule("tick", fires=20)
        return any(f.outcome is FireOutcome.SKIPPED for f in shown.fires)

    await wait_for(skipped, timeout_s=20)
    shown = await client.schedule("tick", fires=20)
    started = [f for f in shown.fires if f.outcome is FireOutcome.STARTED]
    assert len(started) == 1
    assert all("overlap skip" in f.reason for f in shown.fires if f.outcome is FireOutcome.SKIPPED)


@pytest.mark.parametrize(("change", "said"), [
    ({"cron": "0 25 * * *"}, "is not valid"),
    ({"cron": "0 * * * *", "timezone": "Mars/Base"}, "not an IANA time zone"),
    ({"every_s": 60.0, "flow": "nope"}, "no flow named 'nope'"),
    ({"every_s": 60.0, "params": {"x": 1}}, "x"),
])
async def test_a_schedule_that_cannot_work_is_refused_with_what_to_fix(
    coordinator, client: Client, change: dict, said: str
) -> None:
    await client.register([inputflows.register_noop()])
    fields = {"name": "bad", "flow": "noop", **change}
    with pytest.raises(RemoteError, match=said):
        await client.put_schedule(ScheduleSpec(**fields))
    assert await client.schedules() == []


async def test_a_scheduled_task_knows_the_nominal_time_it_handles(
    coordinator, start_agent, client: Client
) -> None:
    flow = inputflows.register_which_hour()
    await start_agent()
    await client.register([flow])
    by_hand = await client.wait((await client.start("which_hour")).run_id, timeout_s=20)
    assert msgspec.json.decode(by_hand.tasks[0].output) is None
    await client.put_schedule(ScheduleSpec(name="hourly", flow="which_hour", every_s=1.0))

    async def scheduled() -> list[RunRecord]:
        return [r for r in await client.runs(flow="which_hour") if r.schedule == "hourly"
                and r.status is RunStatus.SUCCEEDED]

    await wait_for(scheduled, timeout_s=20)
    run = (await scheduled())[0]
    detail = await client.get(run.run_id)
    assert run.scheduled_for is not None
    assert msgspec.json.decode(detail.tasks[0].output) == datetime.fromtimestamp(
        run.scheduled_for, UTC).isoformat()


def _flow_with(schedules: list[dict]) -> FlowSpec:
    return register_task_pipeline(flow_name="noop", schedules=schedules, pipeline={
        "noop": {"function": inputflows.noop, "depends_on": []}})


async def test_schedules_written_in_code_follow_the_code_at_each_registration(
    coordinator, client: Client
) -> None:
    await client.register([_flow_with([Schedule("nightly", cron="30 2 * * *",
                                                timezone="Europe/Paris")])])
    [shown] = await client.schedules()
    assert (shown.state.spec.name, shown.state.origin, shown.state.spec.cron) == (
        "nightly", "code", "30 2 * * *")
    cursor = shown.state.cursor
    await client.register([_flow_with([Schedule("nightly", cron="0 3 * * *",
                                                timezone="Europe/Paris")])])
    [changed] = await client.schedules()  # new times start from now: nothing back-dated
    assert changed.state.spec.cron == "0 3 * * *" and changed.state.cursor >= cursor
    with pytest.raises(RemoteError, match="defined in the code of flow 'noop'"):
        await client.put_schedule(ScheduleSpec(name="nightly", flow="noop", every_s=60.0))
    await client.register([_flow_with([])])
    assert await client.schedules() == []


async def test_a_code_schedule_may_not_take_the_name_of_one_added_from_the_cli(
    coordinator, client: Client
) -> None:
    await client.register([_flow_with([])])
    await client.put_schedule(ScheduleSpec(name="nightly", flow="noop", every_s=60.0))
    with pytest.raises(RemoteError, match="schedule 'nightly' already exists"):
        await client.register([_flow_with([Schedule("nightly", every="1h")])])
    [kept] = await client.schedules()
    assert kept.state.origin == "cli" and kept.state.spec.every_s == 60.0


@pytest.mark.parametrize(("schedules", "said"), [
    ([Schedule("n", cron="0 25 * * *")], "cron '0 25 \\* \\* \\*' is not valid"),
    ([Schedule("n")], "exactly one of cron or every"),
    ([Schedule("n", every="soon")], "is not a duration"),
    ([Schedule("n", every="1h"), Schedule("n", every="2h")], "two schedules are named 'n'"),
    ([{"name": "n", "every": "1h", "when": "now"}], "has no option when"),
    ([Schedule("n", every="1h", start=datetime(2026, 1, 1))], "aware datetimes"),
])
def test_a_schedule_in_code_that_cannot_work_is_an_error_at_definition(
    schedules: list[dict], said: str
) -> None:
    with pytest.raises(InvalidFlow, match=f"flow 'noop': .*{said}"):
        _flow_with(schedules)


async def test_each_commit_that_changes_a_schedule_is_an_event(coordinator, client: Client) -> None:
    await client.register([inputflows.register_noop()])
    seen: list[ScheduleEvent] = []

    async def follow() -> None:
        async for event in client.events("schedule.>"):
            assert isinstance(event, ScheduleEvent)
            seen.append(event)

    follower = asyncio.create_task(follow())
    await client.flows()  # the subscription is in place once a request went through after it
    try:
        await client.put_schedule(ScheduleSpec(name="tick", flow="noop", every_s=1.0))
        await wait_for(lambda: any(f.outcome is FireOutcome.SKIPPED
                                   for e in seen for f in e.fires), timeout_s=20)
        await client.delete_schedule("tick")
        await wait_for(lambda: seen[-1].state is None, timeout_s=10)
    finally:
        follower.cancel()
    assert seen[0].state is not None and seen[0].fires == []  # the put
    started = [f for e in seen for f in e.fires if f.outcome is FireOutcome.STARTED]
    assert len(started) == 1 and started[0].run_id is not None  # no agent: the rest skip
    assert {e.name for e in seen} == {"tick"}


async def _fires(client: Client, name: str) -> list:  # type: ignore[type-arg]
    return (await client.schedule(name, fires=100)).fires


async def test_buffered_fires_wait_for_the_running_run_and_start_in_order(
    coordinator, client: Client
) -> None:
    await client.register([inputflows.register_noop()])  # no agent: runs stay queued
    await client.put_schedule(ScheduleSpec(name="tick", flow="noop", every_s=1.0,
                                           overlap=Overlap.BUFFER_ALL))

    async def buffered(n: int) -> bool:
        return sum(f.outcome is FireOutcome.BUFFERED for f in await _fires(client, "tick")) >= n

    await wait_for(lambda: buffered(2), timeout_s=20)
    [first] = [f for f in await _fires(client, "tick") if f.outcome is FireOutcome.STARTED]
    waiting = sorted(f.nominal for f in await _fires(client, "tick")
                     if f.outcome is FireOutcome.BUFFERED)
    await client.cancel(first.run_id or "")  # the running run ends: the oldest waiting starts

    async def started_next() -> bool:
        fires = {f.nominal: f for f in await _fires(client, "tick")}
        return fires[waiting[0]].outcome is FireOutcome.STARTED

    await wait_for(started_next, timeout_s=20)
    fires = {f.nominal: f for f in await _fires(client, "tick")}
    assert fires[waiting[1]].outcome is FireOutcome.BUFFERED  # in order, one at a time
    assert "buffered until" in fires[waiting[0]].reason


async def test_a_schedule_whose_fires_fail_is_paused_with_why_and_the_others_go_on(
    coordinator, client: Client
) -> None:
    await client.register([inputflows.register_noop(), inputflows.register_greeting()])
    await client.put_schedule(ScheduleSpec(name="a-greet", flow="greeting", every_s=1.0,
                                           params={"name": "x"}))
    await client.put_schedule(ScheduleSpec(name="b-tick", flow="noop", every_s=1.0,
                                           overlap=Overlap.ALLOW_ALL))
    changed = register_task_pipeline(flow_name="greeting", pipeline={  # a new required param
        "greet": {"function": inputflows.greet_twice, "depends_on": []}})
    await client.register([changed])

    async def paused() -> bool:
        return (await client.schedule("a-greet")).state.paused

    await wait_for(paused, timeout_s=20)
    note = (await client.schedule("a-greet")).state.note or ""
    assert note.startswith("a fire failed:") and "times" in note
    count = len(await _fires(client, "b-tick"))
    await wait_for(lambda: _more_fires(client, "b-tick", count), timeout_s=20)


async def _more_fires(client: Client, name: str, than: int) -> bool:
    return len(await _fires(client, name)) > than


async def test_a_schedule_deleted_and_added_again_inherits_nothing(
    coordinator, client: Client
) -> None:
    await client.register([inputflows.register_noop()])  # no agent: the first run stays queued
    spec = ScheduleSpec(name="tick", flow="noop", every_s=1.0)
    await client.put_schedule(spec)

    async def skipped() -> bool:
        return any(f.outcome is FireOutcome.SKIPPED for f in await _fires(client, "tick"))

    await wait_for(skipped, timeout_s=20)
    await client.delete_schedule("tick")
    again = await client.put_schedule(spec)

    async def started_again() -> bool:
        return any(f.outcome is FireOutcome.STARTED and f.nominal > again.state.cursor
                   for f in await _fires(client, "tick"))

    await wait_for(started_again, timeout_s=20)  # not skipped for the old schedule's run


async def test_a_failed_run_pauses_a_schedule_that_asks_for_it_in_the_same_commit(
    coordinator, start_agent, client: Client
) -> None:
    flow = inputflows.register_broken()
    await start_agent()
    await client.register([flow])
    await client.put_schedule(ScheduleSpec(name="fragile", flow="broken", every_s=1.0,
                                           overlap=Overlap.ALLOW_ALL, pause_on_failure=True))

    async def paused() -> bool:
        return (await client.schedule("fragile")).state.paused

    await wait_for(paused, timeout_s=20)
    shown = await client.schedule("fragile", fires=50)
    failed = [r for r in await client.runs(flow="broken") if r.status is RunStatus.FAILED]
    assert shown.state.note in {f"run {r.run_id} failed (pause_on_failure)" for r in failed}
    assert shown.next_fires == []


async def test_schedules_are_listed_a_page_at_a_time_and_all_come_back(
    coordinator, client: Client
) -> None:
    await client.register([inputflows.register_noop()])
    names = [f"s{i:02d}" for i in range(7)]
    for name in names:
        await client.put_schedule(ScheduleSpec(name=name, flow="noop", cron="0 3 1 1 *"))
    assert [d.state.spec.name for d in await client.schedules(page=3)] == names
    assert [d.state.spec.name for d in await client.schedules(page=7)] == names
