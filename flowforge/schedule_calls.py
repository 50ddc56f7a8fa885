"""The Client's schedule calls (``flowforge schedule ...``)."""

from typing import TypeVar

import msgspec

from protocol import api
from protocol.records import RunRecord
from protocol.schedules import ScheduleSpec

T = TypeVar("T")


class ScheduleCalls:
    """Mixed into ``Client``, which provides ``request``."""

    async def request(self, body: msgspec.Struct, result_type: type[T]) -> T:
        raise NotImplementedError

    async def put_schedule(self, spec: ScheduleSpec) -> api.ScheduleDetail:
        """Create or change a schedule; a changed one keeps its place (nothing fires twice)."""
        return await self.request(api.PutSchedule(spec=spec), api.ScheduleDetail)

    async def schedules(self, page: int = 500) -> list[api.ScheduleDetail]:
        """Every schedule, by name (asked for a page at a time: an answer must fit in one
        NATS message)."""
        out: list[api.ScheduleDetail] = []
        while True:
            after = out[-1].state.spec.name if out else None
            got = await self.request(api.ListSchedules(after=after, limit=page),
                                     list[api.ScheduleDetail])
            out += got
            if len(got) < page:
                return out

    async def schedule(self, name: str, fires: int = 20, upcoming: int = 5) -> api.ScheduleDetail:
        return await self.request(api.GetSchedule(name=name, fires=fires, upcoming=upcoming),
                                  api.ScheduleDetail)

    async def pause_schedule(self, name: str, note: str | None = None) -> api.ScheduleDetail:
        return await self.request(api.PauseSchedule(name=name, note=note), api.ScheduleDetail)

    async def resume_schedule(self, name: str) -> api.ScheduleDetail:
        return await self.request(api.ResumeSchedule(name=name), api.ScheduleDetail)

    async def delete_schedule(self, name: str) -> api.ScheduleDetail:
        return await self.request(api.DeleteSchedule(name=name), api.ScheduleDetail)

    async def trigger_schedule(self, name: str) -> RunRecord:
        """A run of the schedule now, outside its times."""
        return await self.request(api.TriggerSchedule(name=name), RunRecord)


