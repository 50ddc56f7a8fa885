"""Schedules in SQLite (real files): state round trips, one record per nominal time, and the
schedule's writes share the batch's transaction with the runs they start."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from coordinator import schedule_store
from coordinator.changes import Changes
from coordinator.schedule_clock import ScheduleClock
from coordinator.schedule_store import ScheduleWrites
from coordinator.store import Store
from protocol.records import RunRecord
from protocol.schedules import Catchup, FireOutcome, FireRecord, ScheduleSpec, ScheduleState
from protocol.states import RunStatus


def _state(name: str = "hourly", cursor: float = 3600.0, **kw: object) -> ScheduleState:
    spec = ScheduleSpec(name=name, flow="f", cron="0 * * * *", timezone="Europe/Paris",
                        params={"n": 1}, catchup=Catchup.ALL)
    return ScheduleState(spec=spec, cursor=cursor, origin="cli", created_at=1.0, updated_at=2.0,
                         **kw)  # type: ignore[arg-type]


def _fire(nominal: float, outcome: FireOutcome = FireOutcome.STARTED,
          run_id: str | None = "r1") -> FireRecord:
    return FireRecord(schedule="hourly", nominal=nominal, last_nominal=nominal,
                      outcome=outcome, reason="", run_id=run_id, recorded_at=nominal + 1)


async def test_a_schedule_its_fires_and_its_run_are_written_together_and_read_back(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        run = RunRecord(run_id="r1", flow="f", version="v", status=RunStatus.RUNNING,
                        created_at=3601.0, idempotency_key="schedule:hourly:3600.0",
                        source="schedule", schedule="hourly", scheduled_for=3600.0)
        ch = Changes()
        ch.runs[run.run_id] = run
        ch.new_runs.append(run.run_id)
        state = _state(paused=True, note="maintenance")
        await store.commit(ch, side=[ScheduleWrites(
            states={"hourly": state}, fires=[_fire(3600.0)])])
        db = store.database
        assert await schedule_store.all_states(db) == [state]
        assert await schedule_store.get_state(db, "hourly") == state
        assert await schedule_store.fires_of(db, "hourly") == [_fire(3600.0)]
        detail = await store.get_run("r1")
        assert detail is not None
        assert (detail.run.schedule, detail.run.scheduled_for) == ("hourly", 3600.0)
    finally:
        await store.close()


async def test_a_nominal_time_keeps_its_first_record_and_deleting_forgets_the_schedule(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        await store.commit(Changes(), side=[ScheduleWrites(
            states={"hourly": _state()}, fires=[_fire(3600.0), _fire(7200.0, run_id="r2")])])
        await store.commit(Changes(), side=[ScheduleWrites(
            fires=[_fire(3600.0, FireOutcome.SKIPPED, run_id=None)])])  # again: ignored
        fires = await schedule_store.fires_of(store.database, "hourly")
        assert [(f.nominal, f.outcome, f.run_id) for f in fires] == [
            (7200.0, FireOutcome.STARTED, "r2"), (3600.0, FireOutcome.STARTED, "r1")]
        started = await schedule_store.fires_of(store.database, "hourly", limit=1,
                                                outcome=FireOutcome.STARTED)
        assert [f.nominal for f in started] == [7200.0]
        await store.commit(Changes(), side=[ScheduleWrites(deleted={"hourly"})])
        assert await schedule_store.get_state(store.database, "hourly") is None
    finally:
        await store.close()


async def test_a_failed_batch_writes_none_of_its_schedule_changes(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        bad = [("subject", "code", "reason", object())]  # not storable: the batch fails
        with pytest.raises(Exception):  # noqa: B017 - sqlite3 says which binding it refused
            await store.commit(Changes(), bad, side=[ScheduleWrites(  # type: ignore[arg-type]
                states={"hourly": _state()}, fires=[_fire(3600.0)])])
        assert await schedule_store.all_states(store.database) == []
        assert await schedule_store.fires_of(store.database, "hourly") == []
    finally:
        await store.close()


async def test_a_buffered_nominal_time_is_the_one_record_that_changes_when_it_starts(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "db")
    try:
        await store.commit(Changes(), side=[ScheduleWrites(
            fires=[_fire(3600.0, FireOutcome.BUFFERED, run_id=None)])])
        await store.commit(Changes(), side=[ScheduleWrites(fires=[_fire(3600.0)])])
        await store.commit(Changes(), side=[ScheduleWrites(
            fires=[_fire(3600.0, FireOutcome.SKIPPED, run_id=None)])])  # started stays
        [fire] = await schedule_store.fires_of(store.database, "hourly")
        assert (fire.outcome, fire.run_id) == (FireOutcome.STARTED, "r1")
    finally:
        await store.close()


def test_resuming_after_a_long_pause_records_the_times_missed_as_one_counted_range() -> None:
    state = ScheduleState(spec=ScheduleSpec(name="s", flow="f", every_s=1.0), cursor=0.0)
    batch = SimpleNamespace(schedules=ScheduleWrites())
    ScheduleClock.skip_paused(ScheduleClock.__new__(ScheduleClock), state, 3600.5, batch)  # type: ignore[arg-type]
    [gap] = batch.schedules.fires
    assert (gap.nominal, gap.last_nominal, gap.count) == (1.0, 3600.0, 3600)
    assert gap.outcome is FireOutcome.SKIPPED and gap.reason == "paused"
    assert state.cursor == 3600.5
