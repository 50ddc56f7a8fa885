"""A pure-scheduler harness for mapped tasks (no I/O)."""
import random
from typing import Any

import msgspec

from coordinator.changes import Changes
from coordinator.graph import CompiledFlow
from coordinator.scheduler import Scheduler
from protocol.dag import validate_flow
from protocol.flows import FlowSpec, TaskSpec
from protocol.messages import ItemResult, TaskFailed, TaskStarted, TaskSucceeded
from protocol.records import RunRecord, TaskRecord

RUN_ID = "r1"
_enc = msgspec.json.Encoder()
_task_dec = msgspec.json.Decoder(TaskRecord)
_run_dec = msgspec.json.Decoder(RunRecord)


def copy(rec):
    return _task_dec.decode(_enc.encode(rec))


def t(name, *deps, **kw):
    return TaskSpec(name=name, function=f"m:{name}", depends_on=deps, **kw)


def flow(*tasks, name="etl"):
    spec = FlowSpec(name=name, tasks=tasks)
    validate_flow(spec)
    return spec


class H:
    def __init__(self, spec, params=None, settings=None):
        self.compiled = CompiledFlow.compile(spec)
        self.sched = Scheduler(settings, rng=random.Random(0))
        self.run = RunRecord(run_id=RUN_ID, flow=spec.name, version=self.compiled.version,
                             params=params or {})
        self.now = 1000.0
        self.db: dict[str, TaskRecord] = {}   # what the store would hold (copies)
        self.queued: dict[str, Any] = {}      # latest dispatch per task name
        self.all_dispatches = []
        self.timers = []
        ch = Changes()
        self.sched.start_run(self.run, self.compiled, self.now, ch)
        self._take(ch)

    def _take(self, ch):
        self.last = ch
        for _, task in ch.instances_reset:  # as the store deletes them
            for name in [n for n in self.db if n.startswith(task + "~")]:
                del self.db[name]
        for rec in ch.tasks.values():
            self.db[rec.task] = copy(rec)
        for d in ch.dispatches:
            self.queued[d.message.task] = d.message
            self.all_dispatches.append(d.message)
        self.timers += ch.timers

    def rec(self, name):
        return self.sched.task_record(RUN_ID, name) or self.db.get(name)

    def report(self, msg):
        self.now += 1.0
        ch = Changes()
        ok = self.sched.on_report(msg, self.now, ch)
        self._take(ch)
        return ok

    def ids(self, name):
        d = self.queued[name]
        return dict(run_id=RUN_ID, task=name, attempt=d.attempt, delivery=1, agent_id="a1",
                    at=self.now)

    def start(self, name):
        return self.report(TaskStarted(**self.ids(name)))

    def succeed(self, name, output=b"1"):
        return self.report(TaskSucceeded(**self.ids(name), started_at=self.now - 0.5,
                                         output=msgspec.Raw(output)))

    def fail(self, name, msg="boom", error_type="ValueError"):
        return self.report(TaskFailed(**self.ids(name), error_type=error_type, message=msg))

    def chunk_report(self, name, oks):
        results = [ItemResult(ok=True, output=msgspec.Raw(b"%d" % i)) if ok else
                   ItemResult(ok=False, error_type="E", message="x") for i, ok in oks]
        return self.succeed(name, _enc.encode(results))

    def fire(self, name, at=None):
        self.now = at if at is not None else self.now + 10_000
        ch = Changes()
        ok = self.sched.on_timer(RUN_ID, name, self.now, ch)
        self._take(ch)
        return ok

    def fire_all(self):
        timers, self.timers = self.timers, []
        for tm in timers:
            self.fire(tm.task, max(self.now, tm.at))

    def pending_msgs(self):
        """Dispatches whose instance is still queued with that attempt."""
        out = []
        for name, d in self.queued.items():
            rec = self.sched.task_record(RUN_ID, name)
            if rec is not None and rec.status.value == "queued" and rec.dispatch == d.attempt:
                out.append(d)
        return out

    def cancel(self):
        ch = Changes()
        self.now += 1
        self.sched.cancel(RUN_ID, self.now, ch)
        self._take(ch)

    def instances(self):
        return [copy(r) for n, r in self.db.items() if "~" in n]

    def tasks(self):
        return [copy(r) for n, r in self.db.items() if "~" not in n]

    def retry(self):
        ch = Changes()
        self.now += 1
        run = _run_dec.decode(_enc.encode(self.run))
        self.run = run
        again = self.sched.retry(run, self.compiled, self.tasks(), self.now, ch, self.instances())
        self._take(ch)
        return again

    def restart(self):
        """A new scheduler restored from what the store holds."""
        run = _run_dec.decode(_enc.encode(self.run))
        self.run = run
        self.sched = Scheduler(None, rng=random.Random(0))
        ch = Changes()
        self.sched.restore(run, self.compiled, self.tasks(), self.now, ch, self.instances(), {})
        self._take(ch)
        return ch
