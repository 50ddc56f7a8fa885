"""One active coordinator per namespace (a lease in a NATS KV bucket), with real processes: a
standby on the same database finishes a run after the active one is killed; an active one
paused past its lease stops instead of committing; one on another database refuses; a
schedule firing through a takeover runs each nominal time once."""

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from nats.js.errors import KeyDeletedError, KeyNotFoundError

from flowforge.client import Client
from flowforge.connection import ConnectOptions, connect
from protocol.errors import FlowForgeError
from protocol.records import RunRecord
from protocol.schedules import Catchup, Overlap, ScheduleSpec
from protocol.states import RunStatus
from protocol.subjects import Subjects
from tests import batchfaultflows, scheduleflows
from tests.helpers import SCENARIO_LINE, coordinator_answers, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]
LEASE = "2"


def _coordinator(spawn, db: Path):  # type: ignore[no-untyped-def]
    return spawn("flowforge-coordinator", "--db", str(db), "--lease", "3",
                 "--active-lease", LEASE)


async def _active_and_standby(spawn, url: str, db: Path):  # type: ignore[no-untyped-def]
    """An active coordinator (answering) and a standby on the same database (waiting)."""
    active = _coordinator(spawn, db)
    await wait_for(lambda: coordinator_answers(url), timeout_s=60)
    standby = _coordinator(spawn, db)
    await wait_for(lambda: "standby:" in standby.log(), timeout_s=30)
    return active, standby


async def test_a_standby_finishes_the_run_when_the_active_coordinator_is_killed(
    spawn, nats_server, client: Client, tmp_path: Path,
    record_property: Callable[[str, object], None]
) -> None:
    active, standby = await _active_and_standby(spawn, nats_server.url, tmp_path / "ff.db")
    await client.register([batchfaultflows.FLOW])
    spawn("flowforge-agent", "--import", "tests.batchfaultflows", "--lease", "3",
          "--concurrency", "4")
    run = await client.start(batchfaultflows.FLOW.name, {"x": 3, "hold_s": 2.0})
    await wait_for(lambda: _running(client, run.run_id), timeout_s=30)
    active.kill9()
    killed = time.monotonic()
    await wait_for(lambda: "coordinator ready" in standby.log(), timeout_s=30)
    took = time.monotonic() - killed
    assert took <= float(LEASE) + 2, f"took over after {took:.1f} s"
    detail = await client.wait(run.run_id, timeout_s=60)
    assert detail.run.status is RunStatus.SUCCEEDED
    record_property(SCENARIO_LINE, f"standby-takeover: active coordinator killed mid-run, the "
                    f"standby ready after {took:.2f} s (lease {LEASE} s), run succeeded")


async def _running(client: Client, run_id: str) -> bool:
    detail = await client.get(run_id)
    return any(t.status.value == "running" for t in detail.tasks)


async def test_an_active_coordinator_paused_past_its_lease_stops_instead_of_committing(
    spawn, nats_server, client: Client, tmp_path: Path,
    record_property: Callable[[str, object], None]
) -> None:
    active, standby = await _active_and_standby(spawn, nats_server.url, tmp_path / "ff.db")
    os.killpg(active.pid, signal.SIGSTOP)  # past its lease: the standby takes over
    paused = time.monotonic()
    try:
        await wait_for(lambda: "coordinator ready" in standby.log(), timeout_s=30)
    finally:
        os.killpg(active.pid, signal.SIGCONT)
    took = time.monotonic() - paused
    assert took <= float(LEASE) + 2, f"took over after {took:.1f} s"
    await wait_for(lambda: active.popen.poll() is not None, timeout_s=30)
    assert active.popen.returncode != 0
    assert "lease" in active.log()
    await client.register([batchfaultflows.FLOW])  # the standby answers and commits
    spawn("flowforge-agent", "--import", "tests.batchfaultflows", "--lease", "3")
    run = await client.start(batchfaultflows.FLOW.name, {"x": 3, "hold_s": 0.0})
    assert (await client.wait(run.run_id, timeout_s=60)).run.status is RunStatus.SUCCEEDED
    record_property(SCENARIO_LINE, f"standby-after-pause: active coordinator SIGSTOPped, the "
                    f"standby ready after {took:.2f} s (lease {LEASE} s); the paused one exited "
                    "when continued")


async def test_a_coordinator_on_another_database_refuses_naming_the_active_one(
    spawn, nats_server, tmp_path: Path
) -> None:
    _coordinator(spawn, tmp_path / "a.db")
    await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)
    other = _coordinator(spawn, tmp_path / "b.db")
    await wait_for(lambda: other.popen.poll() is not None, timeout_s=30)
    assert other.popen.returncode != 0
    text = other.log()
    assert "another coordinator is active on this namespace" in text
    assert str((tmp_path / "a.db").resolve()) in text and "pid" in text


async def test_a_coordinator_paused_past_its_lease_with_no_standby_resumes_by_itself(
    spawn, nats_server, client: Client, tmp_path: Path
) -> None:
    active = _coordinator(spawn, tmp_path / "ff.db")
    await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=60)
    await client.register([batchfaultflows.FLOW])
    spawn("flowforge-agent", "--import", "tests.batchfaultflows", "--lease", "3")
    run = await client.start(batchfaultflows.FLOW.name, {"x": 3, "hold_s": 1.0})
    await wait_for(lambda: _running(client, run.run_id), timeout_s=30)
    os.killpg(active.pid, signal.SIGSTOP)
    try:  # its entry expires: nobody holds the namespace
        await wait_for(lambda: _lease_gone(nats_server.url), timeout_s=30)
    finally:
        os.killpg(active.pid, signal.SIGCONT)
    await wait_for(lambda: active.log().count("coordinator ready") == 2, timeout_s=60)
    assert "Starting again from the database" in active.log()
    assert (await client.wait(run.run_id, timeout_s=60)).run.status is RunStatus.SUCCEEDED
    assert active.popen.poll() is None


async def _lease_gone(url: str) -> bool:
    nc = await connect(ConnectOptions(url=url), name="test")
    try:
        kv = await nc.jetstream().key_value(Subjects().lease_bucket)
        try:
            await kv.get("active")
        except (KeyNotFoundError, KeyDeletedError):
            return True
        return False
    finally:
        await nc.close()


async def test_two_coordinators_never_fire_one_nominal_time_twice(
    spawn, nats_server, client: Client, tmp_path: Path,
    record_property: Callable[[str, object], None]
) -> None:
    """The double fire of two scheduler instances: an active coordinator paused past its
    lease while a schedule fires every second, a standby taking over, then the paused one
    continued. Every nominal time runs once."""
    active, standby = await _active_and_standby(spawn, nats_server.url, tmp_path / "ff.db")
    await client.register()
    spawn("flowforge-agent", "--import", "tests.scheduleflows", "--lease", "3")
    await client.put_schedule(ScheduleSpec(name="every-second", flow=scheduleflows.FLOW.name,
                                           every_s=1.0, catchup=Catchup.ALL,
                                           overlap=Overlap.ALLOW_ALL))
    await wait_for(lambda: _scheduled(client, at_least=3), timeout_s=30)
    os.killpg(active.pid, signal.SIGSTOP)  # mid-firing, holding its lease
    try:
        await wait_for(lambda: "coordinator ready" in standby.log(), timeout_s=30)
    finally:
        os.killpg(active.pid, signal.SIGCONT)  # it wakes up with its schedules due
    await wait_for(lambda: active.popen.poll() is not None, timeout_s=30)
    took_over = time.time()

    async def settled() -> bool:
        runs = await _scheduled(client)
        return (max((r.scheduled_for or 0 for r in runs), default=0) > took_over + 2
                and all(r.status is RunStatus.SUCCEEDED for r in runs))

    await wait_for(settled, timeout_s=60)
    runs = await _scheduled(client)
    nominal = sorted(r.scheduled_for for r in runs if r.scheduled_for is not None)
    assert len(nominal) == len(set(nominal)) == len(runs), "a nominal time ran twice"
    assert nominal == [float(t) for t in range(int(nominal[0]), int(nominal[-1]) + 1)], (
        "a nominal time was lost")
    record_property(SCENARIO_LINE, f"schedule-two-coordinators: the active one paused past its "
                    f"lease, the standby fired on; {len(nominal)} nominal times, each run once")


async def _scheduled(client: Client, at_least: int = 0) -> list[RunRecord]:
    with contextlib.suppress(FlowForgeError, TimeoutError):
        runs = [r for r in await client.runs(flow=scheduleflows.FLOW.name, limit=1000)
                if r.schedule == "every-second"]
        return runs if len(runs) >= at_least else []
    return []
