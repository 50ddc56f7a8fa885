"""The mapper's part for generator tasks: their items as they arrive, and a task mapped over
one that starts on the items before the generator ended (on its last attempt: an earlier one
may fail and yield again from the start)."""

from typing import TYPE_CHECKING

import msgspec

from coordinator import mapping
from coordinator.changes import Changes
from coordinator.runstate import RunState
from protocol.errors import FlowForgeError
from protocol.messages import TaskFailed, TaskItems, TaskSucceeded
from protocol.states import TaskStatus
from protocol.untrusted import decode

_count = msgspec.json.Decoder(int)

if TYPE_CHECKING:
    from coordinator.mapping import MapState


class ItemsPart:
    """Mixed into ``Mapper`` (which provides ``expand``, ``stop`` and ``_progress``)."""

    def expand(self, state: RunState, name: str, now: float, ch: Changes) -> None:
        raise NotImplementedError

    def stop(self, state: RunState, task: str, now: float, ch: Changes) -> None:
        raise NotImplementedError

    def _progress(self, state: RunState, ms: "MapState", now: float, ch: Changes) -> None:
        raise NotImplementedError

    def take_items(self, state: RunState, msg: TaskItems, now: float, ch: Changes) -> None:
        """A generator task's next items (a batch sent again, or one past a gap, is ignored:
        its result then says how many there should be); a task mapped over it takes them."""
        if not state.flow.tasks[msg.task].yields:
            return  # only a generator task sends items
        items = state.streams.setdefault(msg.task, [])
        if msg.first_index != len(items) or len(items) + len(msg.items) > mapping.MAX_MAP_ITEMS:
            return  # sent again, past a gap, or too many: its result then fails (ItemsMissing)
        items.extend(msgspec.Raw(bytes(i)) for i in msg.items)  # copies: not the message
        ch.items += [(msg.run_id, msg.task, msg.first_index + n, bytes(i))
                     for n, i in enumerate(msg.items)]
        for name in self._mapped_over(state, msg.task):
            ms = state.maps.get(name)
            if ms is not None:
                mapping.fill(state, ms, now, ch)
                self._progress(state, ms, now, ch)
            elif self._may_start_early(state, msg.task, name):
                self.expand(state, name, now, ch)

    @staticmethod
    def _mapped_over(state: RunState, source: str) -> list[str]:
        return [name for name in state.flow.dependants.get(source, ())
                if state.flow.tasks[name].map_over == source]

    @staticmethod
    def _may_start_early(state: RunState, source: str, name: str) -> bool:
        """Only the generator holds it back, and the generator is on its last attempt."""
        rec, spec = state.tasks[source], state.flow.tasks[source]
        return (state.tasks[name].status is TaskStatus.PENDING and state.waiting[name] == 1
                and rec.attempt > spec.retries)

    def source_ended(self, state: RunState, source: str, ok: bool, now: float,
                     ch: Changes) -> None:
        """A generator ended: a task mapped over it since before has all its items (and may
        end), or, when it failed, stops as upstream failed."""
        if not state.flow.tasks[source].yields:
            return
        for name in self._mapped_over(state, source):
            ms = state.maps.get(name)
            if ms is None or not ms.open:
                continue
            if ok:
                ms.open = False
                mapping.fill(state, ms, now, ch)
                self._progress(state, ms, now, ch)
                continue
            self.stop(state, name, now, ch)  # its instances cancelled, its state gone
            rec = state.tasks[name]
            rec.note, rec.finished_at = f"upstream {source!r} did not succeed", now
            state.set(rec, TaskStatus.UPSTREAM_FAILED)
            ch.tasks[(state.run.run_id, name)] = rec
            state.fail_downstream(state.flow.dependants.get(name, ()), now, ch, [name])

    @staticmethod
    def items_missing(state: RunState, msg: TaskSucceeded) -> TaskFailed | None:
        """A generator task's result that cannot stand (not all of its items arrived), as the
        failure it is instead."""
        if not state.flow.tasks[msg.task].yields:
            return None
        got = len(state.streams.get(msg.task, ()))
        try:
            said = decode(_count, bytes(msg.output), "a generator's count")
        except FlowForgeError:
            said = -1
        if said == got:
            return None
        return TaskFailed(run_id=msg.run_id, task=msg.task, attempt=msg.attempt,
                          delivery=msg.delivery, agent_id=msg.agent_id, at=msg.at,
                          started_at=msg.started_at, error_type="ItemsMissing",
                          message=f"it yielded {said:,} items; {got:,} arrived")

    @staticmethod
    def reset_items(state: RunState, task: str, ch: Changes) -> None:
        """A generator task runs (again): its items start from none."""
        if state.streams.pop(task, None) is not None or task in state.flow.tasks:
            ch.items_reset.append((state.run.run_id, task))
