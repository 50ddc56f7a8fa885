"""Concurrency limits in the coordinator: the task gate and the run gate hooked into the writer's
batches (decided in the transaction that dispatches), the limits set over the API (kept in
SQLite), a restart's rebuild, and what ``limits.list`` answers."""

import heapq
from collections.abc import Iterable
from itertools import islice
from typing import Any

from coordinator.changes import Changes
from coordinator.database import Database, transaction
from coordinator.gate import Gate
from coordinator.graph import CompiledFlow
from coordinator.release_window import GateSettings
from coordinator.run_gate import Reused, RunGate
from coordinator.store import Store
from coordinator.writer import Batch, Writer
from protocol.concurrency import LimitInfo, Slot
from protocol.records import RunRecord


async def stored_limits(db: Database) -> dict[str, int]:
    return {name: slots for name, slots in await db.fetchall("SELECT name, slots FROM limits")}


class Limits:
    """Owns both gates and puts them in the writer's path as it is made."""

    def __init__(self, writer: Writer, store: Store, settings: GateSettings | None = None) -> None:
        self.writer = writer
        self.store = store
        self.settings = settings or GateSettings()
        self.gate = Gate(writer.scheduler, self.settings)
        self.runs = RunGate(writer.scheduler, self.settings.aging_s)
        writer.before_commit.insert(0, self.before_commit)  # before anyone reads ch.runs
        writer.start_run = self.runs.admit
        writer.scheduler.cancel_waiting = self.runs.cancel_waiting
        writer.scheduler.children.lend = self.gate.lend
        writer.scheduler.children.reclaim = self.gate.reclaim
        writer.flows.listeners.append(self.runs.current)

    def before_commit(self, now: float, batch: Batch | Changes) -> None:
        """Runs that ended make room for waiting runs, then each task message of the batch is
        sent, held or kept for the window (and held ones go if slots freed)."""
        ch = batch if isinstance(batch, Changes) else batch.changes
        self.runs.follow(now, ch)
        self.gate.apply(now, ch)

    async def load(self) -> None:
        """The limits set over the API, before any run is restored."""
        for name, slots in (await stored_limits(self.store.database)).items():
            self.gate.set_limit(name, slots)

    async def write(self, name: str, slots: int | None, now: float) -> None:
        """Inside a writer batch: the limit's row, on the writer's connection (its own short
        transaction, like a flow's registration), then the gate (waiters go at the commit)."""
        conn = self.store.database.writer
        async with transaction(conn):
            if slots is None:
                await conn.execute("DELETE FROM limits WHERE name = ?", (name,))
            else:
                await conn.execute(
                    "INSERT INTO limits (name, slots, updated_at) VALUES (?, ?, ?) ON CONFLICT "
                    "(name) DO UPDATE SET slots = excluded.slots, updated_at = excluded.updated_at",
                    (name, slots, now))
        self.gate.set_limit(name, slots)

    async def reused_outputs(self, run: RunRecord, flow: CompiledFlow) -> Reused | None:
        """What a waiting partial run (``--only``) takes from earlier runs, read again after a
        restart."""
        if run.only is None:
            return None
        wanted = {i for t in run.only if t in flow.tasks for i in flow.tasks[t].inputs
                  if i not in run.only}
        return await self.store.last_outputs(run.flow, wanted)

    def remember(self, records: Iterable[Any]) -> None:
        self.gate.remember(records)

    def restore_runs(self, running: list[tuple[RunRecord, CompiledFlow]],
                     waiting: list[tuple[RunRecord, CompiledFlow, Reused | None]],
                     current: dict[str, CompiledFlow]) -> None:
        self.runs.restore(running, waiting, current)

    # -- limits.list ---------------------------------------------------------------------

    def listing(self, shown: int = 20) -> list[LimitInfo]:
        """Every limit with its holders and waiters (the first ``shown`` of each): queues and
        tasks, then flows and concurrency keys."""
        gate = self.gate
        names = sorted(set(gate.limits) | set(gate.blocked_by))
        out = [self._task_limit(name, shown) for name in names]
        runs = self.runs
        for flow in sorted(set(runs.flow_limit) | {w.run.flow for w in runs.waiting.values()}):
            out.append(self._run_limit(f"flow:{flow}", runs.flow_limit.get(flow),
                                       runs.active.get(flow, {}),
                                       [w for w in runs.waiting.values() if w.run.flow == flow],
                                       shown))
        for key in sorted(set(runs.keyed) | {w.key for w in runs.waiting.values() if w.key}):
            out.append(self._run_limit(f"key:{key}", runs.key_limit.get(key),
                                       runs.keyed.get(key, {}),
                                       [w for w in runs.waiting.values() if w.key == key], shown))
        return out

    def info(self, name: str, shown: int = 20) -> LimitInfo:
        return self._task_limit(name, shown)

    def _task_limit(self, name: str, shown: int) -> LimitInfo:
        gate = self.gate
        holders = [Slot(run_id=r, task=t, priority=gate.holders[(r, t)].priority)
                   for r, t in islice(gate.members.get(name, {}), shown)]
        entries = [e for e in gate.blocked_by.get(name, [])
                   if e[2] in gate.blocked and name in gate.blocked[e[2]].heaps]
        waiters = [Slot(run_id=k[0], task=k[1], priority=gate.blocked[k].priority)
                   for _, _, k in heapq.nsmallest(shown, entries)]
        return LimitInfo(name=name, limit=gate.limits.get(name),
                         origin="api" if name.startswith("queue:") else "code",
                         holding=gate.holding(name), waiting=len(entries), holders=holders,
                         waiters=waiters)

    @staticmethod
    def _run_limit(name: str, limit: int | None, going: dict[str, None], waiting: list[Any],
                   shown: int) -> LimitInfo:
        waiting.sort(key=lambda w: w.rank)
        return LimitInfo(name=name, limit=limit, origin="code", holding=len(going),
                         waiting=len(waiting),
                         holders=[Slot(run_id=r) for r in islice(going, shown)],
                         waiters=[Slot(run_id=w.run.run_id, priority=w.run.priority)
                                  for w in waiting[:shown]])
