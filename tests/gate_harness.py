"""A pure harness for the gate: the real scheduler and gate, a dict for the store, a dict for
the tasks stream, and restarts that rebuild both from what was committed (no I/O)."""

import random
from typing import Any

import msgspec

from coordinator.changes import Changes
from coordinator.gate import Gate, holds_slot
from coordinator.graph import CompiledFlow
from coordinator.release_window import GateSettings
from coordinator.scheduler import Scheduler
from protocol.concurrency import queue_limit
from protocol.dag import validate_flow
from protocol.flows import FlowSpec, TaskSpec
from protocol.messages import TaskDispatch, TaskFailed, TaskStarted, TaskSucceeded
from protocol.records import RunRecord, TaskRecord
from protocol.states import RUN_FINAL, TaskStatus

Key = tuple[str, str]
_enc = msgspec.json.Encoder()
_task_dec = msgspec.json.Decoder(TaskRecord)
_run_dec = msgspec.json.Decoder(RunRecord)


def t(name: str, *deps: str, **kw: Any) -> TaskSpec:
    return TaskSpec(name=name, function=f"m:{name}", depends_on=deps, **kw)


def flow(*tasks: TaskSpec, name: str = "etl", **kw: Any) -> CompiledFlow:
    spec = FlowSpec(name=name, tasks=tasks, **kw)
    validate_flow(spec)
    return CompiledFlow.compile(spec)


class GateHarness:
    """Runs of compiled flows through a scheduler and a gate; ``db`` is what is committed,
    ``sent`` the newest message of each task that reached the stream."""

    def __init__(self, flows: list[CompiledFlow], window: int = 1000,
                 limits: dict[str, int] | None = None, aging_s: float = 30.0) -> None:
        self.flows = {f.spec.name: f for f in flows}
        self.settings = GateSettings(release_window=window, aging_s=aging_s)
        self.limits = dict(limits or {})
        self.db: dict[Key, TaskRecord] = {}
        self.runs: dict[str, RunRecord] = {}
        self.sent: dict[Key, TaskDispatch] = {}
        self.order: list[Key] = []
        """Every message sent, in order."""
        self.timers: list[Any] = []
        self.now = 1000.0
        self._new()

    def _new(self) -> None:
        self.sched = Scheduler(rng=random.Random(0))
        self.gate = Gate(self.sched, self.settings)
        for name, slots in self.limits.items():
            self.gate.set_limit(name, slots)

    def commit(self, ch: Changes, send: bool = True) -> Changes:
        """The writer's batch: the gate's hook, the commit, then the sends."""
        self.gate.apply(self.now, ch)
        for rec in ch.tasks.values():
            self.db[(rec.run_id, rec.task)] = _task_dec.decode(_enc.encode(rec))
        for run in ch.runs.values():
            self.runs[run.run_id] = _run_dec.decode(_enc.encode(run))
        if send:
            self.send(ch)
        self.timers += ch.timers
        return ch

    def send(self, ch: Changes) -> None:
        for item in ch.dispatches:
            key = (item.message.run_id, item.message.task)
            self.sent[key] = item.message
            self.order.append(key)

    def start_run(self, run_id: str, flow_name: str, priority: int | None = None,
                  params: dict[str, Any] | None = None) -> None:
        self.now += 1
        compiled = self.flows[flow_name]
        run = RunRecord(run_id=run_id, flow=flow_name, version=compiled.version,
                        params=params or {}, created_at=self.now,
                        priority=compiled.spec.priority if priority is None else priority)
        ch = Changes()
        self.sched.start_run(run, compiled, self.now, ch)
        self.commit(ch)

    def live(self) -> list[TaskDispatch]:
        """Messages an agent could take: the task is still queued or running with them."""
        out = []
        for key, msg in self.sent.items():
            rec = self.sched.task_record(*key)
            if rec is not None and rec.status in (TaskStatus.QUEUED, TaskStatus.RUNNING) and \
                    rec.dispatch == msg.attempt:
                assert not rec.held, f"{key} was sent while held"
                out.append(msg)
        return sorted(out, key=lambda m: (m.run_id, m.task))

    def report(self, msg: Any, send: bool = True) -> None:
        self.now += 1
        ch = Changes()
        self.sched.on_report(msg, self.now, ch)
        self.commit(ch, send)

    def ids(self, msg: TaskDispatch) -> dict[str, Any]:
        return dict(run_id=msg.run_id, task=msg.task, attempt=msg.attempt, delivery=1,
                    agent_id="a1", at=self.now)

    def started(self, msg: TaskDispatch) -> None:
        self.report(TaskStarted(**self.ids(msg)))

    def succeed(self, msg: TaskDispatch, send: bool = True) -> None:
        self.report(TaskSucceeded(**self.ids(msg), started_at=self.now, output=msgspec.Raw(b"1")),
                    send)

    def fail(self, msg: TaskDispatch) -> None:
        self.report(TaskFailed(**self.ids(msg), error_type="E", message="boom"))

    def fire_timers(self) -> None:
        timers, self.timers = self.timers, []
        for tm in timers:
            self.now = max(self.now, tm.at) + 1
            ch = Changes()
            self.sched.on_timer(tm.run_id, tm.task, self.now, ch)
            self.commit(ch)

    def set_limit(self, name: str, slots: int | None) -> None:
        if slots is None:
            self.limits.pop(name, None)
        else:
            self.limits[name] = slots
        self.gate.set_limit(name, slots)
        self.commit(Changes())

    def restart(self) -> None:
        """kill -9 and start again: a new scheduler and gate from the committed records (the
        stream keeps what was sent)."""
        self._new()
        self.timers = []
        ch = Changes()
        for run_id, stored in list(self.runs.items()):
            if stored.status in RUN_FINAL:
                continue
            run = _run_dec.decode(_enc.encode(stored))
            records = [_task_dec.decode(_enc.encode(r)) for k, r in self.db.items()
                       if k[0] == run_id]
            tasks = [r for r in records if "~" not in r.task]
            instances = [r for r in records if "~" in r.task]
            self.gate.remember(records)
            self.sched.restore(run, self.flows[run.flow], tasks, self.now, ch, instances)
        self.commit(ch)

    # -- what is committed -------------------------------------------------------------

    def holding(self, key: str) -> int:
        """Committed task instances that hold ``key`` (queue keys and task keys)."""
        n = 0
        for (run_id, task), rec in self.db.items():
            run = self.runs[run_id]
            spec = self.flows[run.flow].tasks.get(task)
            if not holds_slot(rec, spec):
                continue
            keys = {queue_limit(rec.queue)}
            if spec is not None and spec.max_active is not None:
                keys.add(f"task:{run.flow}.{task}")
            n += key in keys
        return n

    def finished(self) -> bool:
        return all(r.status in RUN_FINAL for r in self.runs.values())
