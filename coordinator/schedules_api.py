"""The coordinator API's schedule requests: define or change a schedule, list, show."""

from collections.abc import Awaitable, Callable
from typing import Any

from coordinator import schedule_store
from coordinator.flows import FlowCache
from coordinator.intake import check_run_params
from coordinator.schedule_clock import ScheduleClock
from coordinator.writer import Batch
from flowforge.firetimes import check_timing, next_fires
from protocol.api import (
    DeleteSchedule,
    GetSchedule,
    ListSchedules,
    PauseSchedule,
    PutSchedule,
    RegisterFlows,
    ResumeSchedule,
    ScheduleDetail,
    TriggerSchedule,
)
from protocol.dag import check_params
from protocol.errors import BadRequest, UnknownSchedule
from protocol.records import RunRecord
from protocol.schedules import ScheduleSpec, ScheduleState


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
                await self.clock.start_waiting(req.name, now, batch)  # its runs ended meanwhile
            return self._changed(state, batch)

        return self._detail(await self.clock.writer.submit(act))

    async def delete(self, req: DeleteSchedule) -> ScheduleDetail:
        async def act(now: float, batch: Batch) -> ScheduleState:
            state = self._state(req.name)
            self.clock.forget(req.name, batch)
            return state

        return self._detail(await self.clock.writer.submit(act), upcoming=0)

    async def trigger(self, req: TriggerSchedule) -> RunRecord:
        async def act(now: float, batch: Batch) -> RunRecord:
            self._state(req.name)
            return await self.clock.start_run(req.name, now, now, batch, "triggered by hand",
                                              key=f"schedule:{req.name}:by-hand:{now!r}")

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

    def check_code(self, req: RegisterFlows) -> None:
        """Before a registration stores anything: its code-defined schedules can work, and
        none takes the name of a schedule added from the CLI."""
        for flow, specs in (req.schedules or {}).items():
            if flow not in {f.name for f in req.flows}:
                raise BadRequest(f"schedules are given for flow {flow!r}, which is not registered "
                                 "in the same request")
            for spec in specs:
                if spec.flow != flow:
                    raise BadRequest(f"schedule {spec.name!r} is given with flow {flow!r} but "
                                     f"runs flow {spec.flow!r}")
                check_timing(spec)
                check_run_params(spec.params, f"schedule {spec.name!r}: ")
                old = self.clock.states.get(spec.name)
                if old is not None and (old.origin != "code" or old.spec.flow != flow):
                    raise BadRequest(
                        f"schedule {spec.name!r} already exists ({old.origin}, flow "
                        f"{old.spec.flow!r}); delete it or give the one in code another name")

    async def sync_code(self, req: RegisterFlows) -> None:
        """After the flows are stored: each flow's code-defined schedules become exactly the
        ones given (added, changed in place, or deleted)."""
        given = req.schedules or {}
        for flow_name, specs in given.items():
            flow = await self.flows.current(flow_name)
            for spec in specs:
                check_params(flow_name, flow.params, spec.params,
                             allow_unknown=flow.accepts_any_param, known=flow.param_names)

        async def act(now: float, batch: Batch) -> None:
            for flow_name, specs in given.items():
                wanted = {s.name for s in specs}
                for name, state in list(self.clock.states.items()):
                    if state.origin == "code" and state.spec.flow == flow_name and name not in wanted:
                        self.clock.forget(name, batch)
                for spec in specs:
                    await self._put_state(spec, "code", now, batch)

        await self.clock.writer.submit(act)

    async def put(self, req: PutSchedule) -> ScheduleDetail:
        """Create or change a schedule; a changed one keeps its cursor and pause."""
        spec = req.spec
        check_timing(spec)
        check_run_params(spec.params, f"schedule {spec.name!r}: ")
        flow = await self.flows.current(spec.flow)
        check_params(spec.flow, flow.params, spec.params, allow_unknown=flow.accepts_any_param,
                     known=flow.param_names)

        old = self.clock.states.get(spec.name)
        if old is not None and old.origin == "code":
            raise BadRequest(f"schedule {spec.name!r} is defined in the code of flow "
                             f"{old.spec.flow!r}; change it there and register again")
        return self._detail(await self.clock.writer.submit(
            lambda now, batch: self._put_state(spec, "cli", now, batch)))

    async def _put_state(self, spec: ScheduleSpec, origin: str, now: float,
                         batch: Batch) -> ScheduleState:
        """A new schedule fires from now; a changed one keeps its cursor and pause."""
        old = self.clock.states.get(spec.name)
        batch.schedules.deleted.discard(spec.name)  # deleted and added again in one batch
        if old is not None and old.spec == spec and old.origin == origin:
            return old
        cursor = now if old is None else old.cursor
        if old is not None and _timing(old.spec) != _timing(spec):
            cursor = max(cursor, now)  # new times start from now: no back-dated catch-up
        state = ScheduleState(
            spec=spec, paused=old.paused if old else False, note=old.note if old else None,
            cursor=cursor, origin=origin,
            created_at=old.created_at if old else now, updated_at=now)
        self.clock.states[spec.name] = state
        batch.schedules.states[spec.name] = state
        self.clock.plan(spec.name)
        return state

    async def list_all(self, req: ListSchedules) -> list[ScheduleDetail]:
        names = sorted(n for n in self.clock.states if req.after is None or n > req.after)
        return [self._detail(self.clock.states[n], upcoming=1) for n in names[:req.limit]]

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


def _timing(spec: ScheduleSpec) -> tuple[object, ...]:
    return (spec.cron, spec.every_s, spec.timezone, spec.start_at)
