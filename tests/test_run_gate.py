"""Limits on whole runs, driven directly (no I/O): max_active_runs and concurrency keys with
their three strategies, waiting runs starting in order (priority first) in the batch where a
run ends, a restart putting them back in line; and the flow options that define them."""

import random

import msgspec
import pytest

from coordinator.changes import Changes
from coordinator.graph import CompiledFlow
from coordinator.run_gate import RunGate
from coordinator.scheduler import Scheduler
from flowforge import register_task_pipeline
from protocol.concurrency import ConcurrencySpec, Strategy, render_key, template_problem
from protocol.errors import InvalidOption, InvalidState
from protocol.flows import FlowSpec, ParamSpec
from protocol.messages import TaskSucceeded
from protocol.records import RunRecord
from protocol.states import RunStatus
from tests import limitflows
from tests.gate_harness import flow, t

SOLO = flow(t("a"), name="solo", max_active_runs=1)
KEYED = {s: flow(t("a", params=(ParamSpec(name="customer"),)), name=f"k_{s}",
                 concurrency=ConcurrencySpec(key="{params.customer}", strategy=Strategy(s)))
         for s in ("queue", "cancel_newest", "cancel_in_progress")}


class Runs:
    def __init__(self) -> None:
        self.sched = Scheduler(rng=random.Random(0))
        self.gate = RunGate(self.sched, aging_s=10.0)
        self.now = 1000.0

    def start(self, run_id: str, compiled: CompiledFlow, priority: int = 0,
              **params: str) -> RunRecord:
        self.now += 1
        run = RunRecord(run_id=run_id, flow=compiled.spec.name, version=compiled.version,
                        params=params, created_at=self.now, priority=priority)
        ch = Changes()
        self.gate.admit(run, compiled, self.now, ch)
        self.gate.follow(self.now, ch)
        return run

    def finish(self, run_id: str) -> Changes:
        """Every task of the run succeeds."""
        self.now += 1
        ch = Changes()
        state = self.sched.run_state(run_id)
        assert state is not None
        for rec in list(state.tasks.values()):
            self.sched.on_report(TaskSucceeded(
                run_id=run_id, task=rec.task, attempt=rec.dispatch, agent_id="a", at=self.now,
                started_at=self.now, output=msgspec.Raw(b"1")), self.now, ch)
        self.gate.follow(self.now, ch)
        return ch


def test_runs_over_max_active_runs_wait_and_start_in_order_of_priority() -> None:
    r = Runs()
    first = r.start("r1", SOLO)
    low, high = r.start("r2", SOLO), r.start("r3", SOLO, priority=5)
    assert first.status is RunStatus.RUNNING
    assert (low.status, high.status) == (RunStatus.PENDING, RunStatus.PENDING)
    assert low.note == "waiting: flow solo has 1/1 runs going (max_active_runs): run r1"
    ch = r.finish("r1")
    assert ch.runs["r3"].status is RunStatus.RUNNING and ch.runs["r3"].note is None
    assert "r3" in ch.new_runs and low.status is RunStatus.PENDING
    r.finish("r3")
    assert low.status is RunStatus.RUNNING


def test_waiting_long_enough_outranks_a_higher_priority() -> None:
    r = Runs()
    r.start("r1", SOLO)
    old = r.start("r2", SOLO)
    r.now += 100  # ten priorities' worth of waiting (aging 10 s)
    r.start("r3", SOLO, priority=5)
    r.finish("r1")
    assert old.status is RunStatus.RUNNING


def test_a_concurrency_key_holds_runs_of_one_key_only() -> None:
    r = Runs()
    queue = KEYED["queue"]
    a1, a2 = r.start("a1", queue, customer="acme"), r.start("a2", queue, customer="acme")
    other = r.start("b1", queue, customer="initech")
    assert (a1.status, a2.status, other.status) == (RunStatus.RUNNING, RunStatus.PENDING,
                                                     RunStatus.RUNNING)
    assert a2.note == "waiting: concurrency key 'acme' has 1/1 runs going: run a1"
    r.finish("a1")
    assert a2.status is RunStatus.RUNNING


def test_cancel_newest_and_cancel_in_progress() -> None:
    r = Runs()
    r.start("n1", KEYED["cancel_newest"], customer="acme")
    refused = r.start("n2", KEYED["cancel_newest"], customer="acme")
    assert refused.status is RunStatus.CANCELLED
    assert "(cancel_newest): run n1" in (refused.note or "")
    old = r.start("p1", KEYED["cancel_in_progress"], customer="acme")
    assert r.sched.run_state("n1") is None  # keys are global: another flow's run made room
    new = r.start("p2", KEYED["cancel_in_progress"], customer="acme")
    assert old.status is RunStatus.CANCELLED and new.status is RunStatus.RUNNING
    assert old.note == "cancelled: run p2 started with concurrency key 'acme' (cancel_in_progress)"
    assert list(r.gate.keyed["acme"]) == ["p2"]


def test_a_waiting_run_cancelled_never_starts_and_a_restart_puts_runs_back_in_line() -> None:
    r = Runs()
    r.start("r1", SOLO)
    r.start("r2", SOLO)
    r.start("r3", SOLO)
    ch = Changes()
    r.sched.cancel_waiting = r.gate.cancel_waiting
    assert r.sched.cancel("r2", r.now, ch) == []  # nothing of it was queued or running
    assert ch.runs["r2"].status is RunStatus.CANCELLED
    assert r.gate.cancel_waiting("r1", r.now, ch) is None
    again = Runs()  # a restart: r1 going, r3 waiting
    state = r.sched.run_state("r1")
    assert state is not None
    again.gate.restore([(state.run, SOLO)], [(r.gate.waiting["r3"].run, SOLO, None)],
                       {"solo": SOLO})
    again.sched.restore(state.run, SOLO, list(state.tasks.values()), again.now, Changes())
    ch = Changes()
    again.gate.fill(again.now, ch)
    assert not ch.runs  # still full
    again.finish("r1")
    assert again.gate.owner.keys() == {"r3"}


def test_key_templates_are_checked_and_rendered() -> None:
    assert render_key("{flow}/{params.c}/{params.n}", "etl", {"c": "acme", "n": [1]}) == "etl/acme/[1]"
    assert render_key("{params.missing}", "etl", {}) == "null"
    assert template_problem("{params.c}") is None
    assert template_problem("{other}") == "{other} is not {flow} or {params.<name>}"
    assert template_problem("a{b") == "has an unmatched brace"


def test_flow_options_are_checked_when_registered() -> None:
    with pytest.raises(InvalidOption, match="concurrency"):
        limitflows.register_keyed("sometimes")
    with pytest.raises(InvalidOption, match=r"concurrency.key.*not a parameter"):
        register_task_pipeline(flow_name="k", pipeline={"a": {"function": limitflows.hold}},
                               concurrency={"key": "{params.nope}"})
    with pytest.raises(InvalidOption, match=r"max_active_runs.*must be 1"):
        limitflows.register_wide(max_active_runs=0)
    with pytest.raises(InvalidOption, match=r"priority.*must be -1,000 to 1,000"):
        limitflows.register_wide(priority=5000)
    with pytest.raises(InvalidOption, match="'priority': must be int"):
        limitflows.register_wide(priority="high")


def test_a_flow_without_limits_keeps_its_version() -> None:
    plain = FlowSpec(name="f", tasks=(t("a"),))
    assert b"priority" not in msgspec.json.encode(plain)
    assert plain.version() == FlowSpec(name="f", tasks=(t("a", priority=0),), priority=0).version()


def test_a_finished_run_is_not_made_active_again_over_max_active_runs() -> None:
    r = Runs()
    done = r.start("r1", SOLO)
    r.finish("r1")
    r.start("r2", SOLO)
    with pytest.raises(InvalidState, match="solo has 1/1 runs going"):
        r.gate.check_reopen(done)
    r.finish("r2")
    r.gate.check_reopen(done)
