"""Schedules in SQLite: their state, and a row per nominal time they dealt with (its primary
key is the schedule and the nominal time, so no nominal time is recorded twice). Writes go in
the writer's batch transaction (``write``); reads go through the read connection."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import msgspec

from coordinator.database import Database
from protocol.schedules import FireOutcome, FireRecord, ScheduleSpec, ScheduleState
from protocol.states import RunStatus, TaskStatus

_enc = msgspec.json.Encoder()
_spec_dec = msgspec.json.Decoder(ScheduleSpec)
_STATE_COLS = "name, flow, spec, paused, note, cursor, origin, created_at, updated_at"
_FIRE_COLS = "schedule, nominal, last_nominal, count, outcome, reason, run_id, recorded_at"
_OUTCOMES = {o.value: o for o in FireOutcome}


def state_row(s: ScheduleState) -> tuple[Any, ...]:
    return (s.spec.name, s.spec.flow, _enc.encode(s.spec), int(s.paused), s.note, s.cursor,
            s.origin, s.created_at, s.updated_at)


def fire_row(f: FireRecord) -> tuple[Any, ...]:
    return (f.schedule, f.nominal, f.last_nominal, f.count, f.outcome.value, f.reason,
            f.run_id, f.recorded_at)


def _state(row: tuple[Any, ...]) -> ScheduleState:
    return ScheduleState(spec=_spec_dec.decode(row[2]), paused=bool(row[3]), note=row[4],
                         cursor=row[5], origin=row[6], created_at=row[7], updated_at=row[8])


def _fire(row: tuple[Any, ...]) -> FireRecord:
    return FireRecord(schedule=row[0], nominal=row[1], last_nominal=row[2], count=row[3],
                      outcome=_OUTCOMES[row[4]], reason=row[5], run_id=row[6],
                      recorded_at=row[7])


@dataclass(slots=True)
class ScheduleWrites:
    """What a batch changes about schedules (written in its transaction)."""

    states: dict[str, ScheduleState] = field(default_factory=dict)
    fires: list[FireRecord] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.states or self.fires or self.deleted)

    async def write(self, conn: aiosqlite.Connection) -> None:
        await write(conn, self.states.values(), self.fires, self.deleted)


async def write(conn: aiosqlite.Connection, states: Iterable[ScheduleState],
                fires: Iterable[FireRecord], deleted: Iterable[str] = ()) -> None:
    """Inside the writer's transaction: schedules as they are now, the nominal times dealt
    with (a time already recorded keeps its record, unless it was waiting: buffered),
    schedules deleted."""
    states, fires, deleted = list(states), list(fires), list(deleted)
    if states:
        await conn.executemany(f"INSERT OR REPLACE INTO schedules ({_STATE_COLS}) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [state_row(s) for s in states])
    if fires:
        await conn.executemany(
            f"INSERT INTO schedule_fires ({_FIRE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (schedule, nominal) DO UPDATE SET outcome = excluded.outcome, "
            "reason = excluded.reason, run_id = excluded.run_id, recorded_at = excluded.recorded_at "
            "WHERE schedule_fires.outcome = 'buffered'", [fire_row(f) for f in fires])
    if deleted:
        await conn.executemany("DELETE FROM schedules WHERE name = ?", [(n,) for n in deleted])
        await conn.executemany("DELETE FROM schedule_fires WHERE schedule = ? AND outcome = ?",
                               [(n, FireOutcome.BUFFERED.value) for n in deleted])


async def all_states(db: Database) -> list[ScheduleState]:
    return [_state(r) for r in await db.fetchall(
        f"SELECT {_STATE_COLS} FROM schedules ORDER BY name")]


async def get_state(db: Database, name: str) -> ScheduleState | None:
    row = await db.fetchone(f"SELECT {_STATE_COLS} FROM schedules WHERE name = ?", (name,))
    return None if row is None else _state(row)


async def waiting_fires(db: Database, name: str, limit: int) -> list[float]:
    """The nominal times of a schedule's buffered fires, oldest first."""
    rows = await db.fetchall("SELECT nominal FROM schedule_fires WHERE schedule = ? AND "
                             "outcome = ? ORDER BY nominal LIMIT ?",
                             (name, FireOutcome.BUFFERED.value, limit))
    return [r[0] for r in rows]


async def fires_of(db: Database, name: str, limit: int = 50,
                   outcome: FireOutcome | None = None) -> list[FireRecord]:
    """The newest records of a schedule's nominal times, newest first (of one outcome: by its
    index, where the primary key, in order, would walk every fire of the schedule)."""
    source, where, args = "schedule_fires", "schedule = ?", [name]
    if outcome is not None:
        source = "schedule_fires INDEXED BY schedule_fires_by_outcome"
        where, args = where + " AND outcome = ?", [*args, outcome.value]
    rows = await db.fetchall(f"SELECT {_FIRE_COLS} FROM {source} WHERE {where} "
                             "ORDER BY nominal DESC LIMIT ?", (*args, limit))
    return [_fire(r) for r in rows]


async def stopping_tasks(db: Database, name: str) -> list[tuple[str, str, int, str | None]]:
    """The tasks a cancel_other fire still waiting may be waiting for, after a restart: those
    that were queued or running (an attempt was sent) in the runs of ``name`` cancelled last
    (one commit cancels them, so they share its time; a newer fire that replaced the one it
    made wait came later). (run id, task, attempt, agent id or None if it was queued)"""
    row = await db.fetchone("SELECT max(finished_at) FROM runs WHERE schedule = ? AND "
                            "status = ? AND batch IS NULL", (name, RunStatus.CANCELLED.value))
    if row is None or row[0] is None:
        return []
    rows = await db.fetchall(  # not a mapped task (started, no agent) nor one waiting a retry
        "SELECT t.run_id, t.task, t.attempt, t.agent_id FROM runs r JOIN task_instances t "
        "ON t.run_id = r.run_id WHERE r.schedule = ? AND r.status = ? AND r.batch IS NULL "
        "AND r.finished_at = ? AND t.status = ? AND t.finished_at = ? AND t.attempt > 0 "
        "AND t.retry_at IS NULL AND (t.started_at IS NULL OR t.agent_id IS NOT NULL)",
        (name, RunStatus.CANCELLED.value, row[0], TaskStatus.CANCELLED.value, row[0]))
    return [(r[0], r[1], r[2], r[3]) for r in rows]
