"""The coordinator API's schedule requests: define or change a schedule, list, show."""

from collections.abc import Awaitable, Callable
from typing import Any

from coordinator import schedule_store
from coordinator.flows import FlowCache
from coordinator.schedule_clock import ScheduleClock
from coordinator.writer import Batch
from flowforge.firetimes import check_timing, next_fires
from protocol.api import (
    DeleteSchedule,
    GetSchedule,
    ListSchedules,
    PauseSchedule,
    PutSchedule,
    ResumeSchedule,
    ScheduleDetail,
    TriggerSchedule,
)
from protocol.dag import check_params
from protocol.errors import UnknownSchedule
from protocol.records import RunRecord
from protocol.schedules import ScheduleState


class SchedulesApi:
    def __init__(self, clock: ScheduleClock, flows: FlowCache) -> None:
        self.clock = clock
        self.flows = flows

    def handlers(self) -> dict[tuple[str, str], Callable[[Any], Awaitable[Any]]]:
        return {("schedules", "put"): self.put, ("schedules", "list"): self.list_all,
                ("schedules", "get"): self.get, ("schedules", "pause"): self.pause,
                ("schedules", "resume"): self.resume, ("schedules", "delete"): self.delete,
                ("schedules", "trigger"): self.trigger}

    async def pause(self, req: PauseSchedule) -> ScheduleDetail:
        async def act(now: float, batch: Batch) -> ScheduleState:
            state = self._state(req.name)
            state.paused, state.note, state.updated_at = True, req.note, now
            return self._changed(state, batch)

        return self._detail(await self.clock.writer.submit(act))

    async def resume(self, req: ResumeSchedule) -> ScheduleDetail:
        async def act(now: float, batch: Batch) -> ScheduleState:
            state = self._state(req.name)
            if state.paused:
                self.clock.skip_paused(state, now, batch)
                state.paused, state.note, state.updated_at = False, None, now
            return self._changed(state, batch)

        return self._detail(await self.clock.writer.submit(act))

    async def delete(self, req: DeleteSchedule) -> ScheduleDetail:
        async def act(now: float, batch: Batch) -> ScheduleState:
            state = self._state(req.name)
            del self.clock.states[req.name]
            batch.schedules.deleted.add(req.name)
            self.clock.plan(req.name)  # forgets its next fire
            return state

        return self._detail(await self.clock.writer.submit(act), upcoming=0)

    async def trigger(self, req: TriggerSchedule) -> RunRecord:
        async def act(now: float, batch: Batch) -> RunRecord:
            self._state(req.name)
            return await self.clock.start_run(req.name, now, now, batch, "triggered by hand")

        return await self.clock.writer.submit(act)

    def _state(self, name: str) -> ScheduleState:
        state = self.clock.states.get(name)
        if state is None:
            raise UnknownSchedule(name)
        return state

    def _changed(self, state: ScheduleState, batch: Batch) -> ScheduleState:
        batch.schedules.states[state.spec.name] = state
        self.clock.plan(state.spec.name)
        return state

    async def put(self, req: PutSchedule) -> ScheduleDetail:
        """Create or change a schedule; a changed one keeps its cursor and pause."""
        spec = req.spec
        check_timing(spec)
        flow = await self.flows.current(spec.flow)
        check_params(spec.flow, flow.params, spec.params, allow_unknown=flow.accepts_any_param,
                     known=flow.param_names)

        async def act(now: float, batch: Batch) -> ScheduleState:
            old = self.clock.states.get(spec.name)
            state = ScheduleState(
                spec=spec, paused=old.paused if old else False, note=old.note if old else None,
                cursor=old.cursor if old else now, origin="cli",
                created_at=old.created_at if old else now, updated_at=now)
            self.clock.states[spec.name] = state
            batch.schedules.states[spec.name] = state
            self.clock.plan(spec.name)
            return state

        return self._detail(await self.clock.writer.submit(act))

    async def list_all(self, req: ListSchedules) -> list[ScheduleDetail]:
        return [self._detail(s, upcoming=1) for _, s in sorted(self.clock.states.items())]

    async def get(self, req: GetSchedule) -> ScheduleDetail:
        state = self.clock.states.get(req.name)
        if state is None:
            raise UnknownSchedule(req.name)
        fires = await schedule_store.fires_of(self.clock.store.database, req.name, req.fires)
        return self._detail(state, req.upcoming, fires)

    @staticmethod
    def _detail(state: ScheduleState, upcoming: int = 5,
                fires: list[Any] | None = None) -> ScheduleDetail:
        times = [] if state.paused or not upcoming else next_fires(state.spec, state.cursor,
                                                                    upcoming)
        return ScheduleDetail(state=state, next_fires=times, fires=fires or [])
