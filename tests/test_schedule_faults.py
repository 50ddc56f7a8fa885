"""kill -9 of the coordinator at random moments while a schedule fires every second: every
nominal time since the schedule began runs, and none runs twice."""

import asyncio
import contextlib
import random
import time
from pathlib import Path

import pytest

from flowforge.client import Client
from protocol.errors import FlowForgeError
from protocol.records import RunRecord
from protocol.schedules import Catchup, FireOutcome, Overlap, ScheduleSpec
from protocol.states import RunStatus
from tests import scheduleflows  # noqa: F401 - registers the flow
from tests.helpers import coordinator_answers, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KILLS = 5


async def _runs(client: Client) -> list[RunRecord]:
    with contextlib.suppress(FlowForgeError, TimeoutError):
        return [r for r in await client.runs(flow="tick", limit=1000) if r.schedule == "every-second"]
    return []


async def test_kill_9_of_the_coordinator_while_a_schedule_fires_loses_no_time_and_runs_none_twice(
    spawn, nats_server, client: Client, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)

    def coordinator():  # type: ignore[no-untyped-def]
        return spawn("flowforge-coordinator", "--db", str(tmp_path / "ff.db"), "--lease", "2")

    proc = coordinator()
    await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=30)
    await client.register()
    spawn("flowforge-agent", "--import", "tests.scheduleflows", "--lease", "2")
    await client.put_schedule(ScheduleSpec(
        name="every-second", flow="tick", every_s=1.0, catchup=Catchup.ALL,
        catchup_window_s=3600.0, overlap=Overlap.ALLOW_ALL))
    for _ in range(KILLS):
        await asyncio.sleep(rng.uniform(0.3, 2.5))  # a random moment of the firing
        proc.kill9()
        await asyncio.sleep(rng.uniform(0.0, 1.5))  # down: times keep coming due
        proc = coordinator()
        await wait_for(lambda: coordinator_answers(nats_server.url), timeout_s=30)
    last_kill = time.time()

    async def settled() -> bool:
        runs = await _runs(client)
        return (max((r.scheduled_for or 0 for r in runs), default=0) > last_kill + 1
                and all(r.status is RunStatus.SUCCEEDED for r in runs))

    await wait_for(settled, timeout_s=60)
    runs = await _runs(client)
    nominal = sorted(r.scheduled_for for r in runs if r.scheduled_for is not None)
    assert len(nominal) == len(set(nominal)) == len(runs), f"a time ran twice (seed {seed})"
    assert nominal == [float(t) for t in range(int(nominal[0]), int(nominal[-1]) + 1)], (
        f"a nominal time was lost (seed {seed})")
    shown = await client.schedule("every-second", fires=1000)
    assert {f.outcome for f in shown.fires} == {FireOutcome.STARTED}, f"seed {seed}"
