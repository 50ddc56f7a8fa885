"""The scheduler as a pure state machine: unit tests and a crash-and-chaos property test."""

import random
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import astuple, dataclass
from itertools import pairwise
from typing import Any

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from coordinator.changes import Changes, Dispatch, Timer
from coordinator.graph import CompiledFlow
from coordinator.runstate import RunState
from coordinator.scheduler import MAX_RETRY_DELAY_S, Scheduler, SchedulerSettings
from protocol.dag import validate_flow
from protocol.flows import FlowSpec, ParamSpec, TaskSpec
from protocol.messages import TaskDispatch, TaskFailed, TaskProgress, TaskStarted, TaskSucceeded
from protocol.records import RunRecord, TaskRecord
from protocol.states import (
    RUN_FINAL,
    TASK_DONE_OK,
    TASK_FINAL,
    TASK_NOT_OK,
    RunStatus,
    TaskStatus,
)

Report = TaskStarted | TaskSucceeded | TaskFailed | TaskProgress

RUN_ID = "r1"
T0 = 1_000.0
FAILED_STATES = (TaskStatus.FAILED, TaskStatus.UPSTREAM_FAILED)

_enc = msgspec.json.Encoder()
_task_dec = msgspec.json.Decoder(TaskRecord)
_run_dec = msgspec.json.Decoder(RunRecord)


def copy_task(rec: TaskRecord) -> TaskRecord:
    """What SQLite would give back: a deep copy through the wire format."""
    return _task_dec.decode(_enc.encode(rec))


def copy_run(run: RunRecord) -> RunRecord:
    return _run_dec.decode(_enc.encode(run))


def t(name: str, *depends_on: str, **options: Any) -> TaskSpec:
    return TaskSpec(name=name, function=f"m:{name}", depends_on=depends_on, **options)


def flow(*tasks: TaskSpec, name: str = "etl") -> FlowSpec:
    spec = FlowSpec(name=name, tasks=tasks)
    validate_flow(spec)
    return spec


def assert_counts_match(run: RunRecord, tasks: Iterable[TaskRecord]) -> None:
    statuses = [r.status for r in tasks]
    c = run.counts
    assert c.total == len(statuses)
    assert c.done == sum(s in TASK_FINAL for s in statuses)
    assert c.succeeded == statuses.count(TaskStatus.SUCCEEDED)
    assert c.failed == sum(s in FAILED_STATES for s in statuses)
    assert c.running == statuses.count(TaskStatus.RUNNING)


class Harness:
    """One run driven step by step; each step's Changes kept in ``last``."""

    def __init__(self, spec: FlowSpec, *, params: dict[str, Any] | None = None, seed: int = 0,
                 settings: SchedulerSettings | None = None) -> None:
        self.compiled = CompiledFlow.compile(spec)
        self.sched = Scheduler(settings, rng=random.Random(seed))
        self.run = RunRecord(run_id=RUN_ID, flow=spec.name, version=self.compiled.version,
                             params=params or {})
        self.now = T0
        self.last = Changes()
        self.sched.start_run(self.run, self.compiled, self.now, self.last)
        self.tasks = {rec.task: rec for rec in self.last.tasks.values()}

    def status(self, task: str) -> TaskStatus:
        return self.tasks[task].status

    def statuses(self) -> dict[str, TaskStatus]:
        return {name: rec.status for name, rec in self.tasks.items()}

    def dispatched(self) -> list[str]:
        return sorted(d.message.task for d in self.last.dispatches)

    def report(self, msg: Report) -> bool:
        self.now += 1.0
        self.last = Changes()
        return self.sched.on_report(msg, self.now, self.last)

    def _ids(self, task: str, attempt: int | None, delivery: int | None) -> dict[str, Any]:
        """Report identity; by default the delivery of the current message that ``attempt`` is."""
        attempt = self.tasks[task].attempt if attempt is None else attempt
        if delivery is None:
            delivery = max(1, attempt - self.tasks[task].dispatch + 1)
        return {"run_id": RUN_ID, "task": task, "attempt": attempt, "delivery": delivery}

    def start(self, task: str, attempt: int | None = None, agent: str = "agent-1",
              delivery: int | None = None) -> bool:
        return self.report(TaskStarted(**self._ids(task, attempt, delivery), agent_id=agent,
                                       at=self.now))

    def succeed(self, task: str, attempt: int | None = None, output: bytes = b"1",
                delivery: int | None = None) -> bool:
        return self.report(TaskSucceeded(
            **self._ids(task, attempt, delivery), agent_id="agent-1",
            at=self.now, started_at=self.now - 0.5, output=msgspec.Raw(output),
        ))

    def fail(self, task: str, attempt: int | None = None, message: str = "boom",
             delivery: int | None = None) -> bool:
        return self.report(TaskFailed(
            **self._ids(task, attempt, delivery), agent_id="agent-1",
            at=self.now, error_type="ValueError", message=message, traceback="Traceback ...",
        ))

    def fire(self, task: str) -> bool:
        self.last = Changes()
        due = self.tasks[task].retry_at
        self.now = max(self.now, due or self.now)
        return self.sched.on_timer(RUN_ID, task, self.now, self.last)

    def run_through(self, *tasks: str) -> None:
        for task in tasks:
            assert self.start(task) and self.succeed(task), task


# -- starting ---------------------------------------------------------------------------


def test_starting_a_run_queues_exactly_the_roots_with_attempt_one() -> None:
    h = Harness(flow(t("a"), t("b", "a"), t("c"), t("d", "b", "c", queue="gpu")))
    assert h.dispatched() == ["a", "c"]
    assert all(d.message.attempt == 1 for d in h.last.dispatches)
    assert h.statuses() == {"a": TaskStatus.QUEUED, "b": TaskStatus.PENDING,
                            "c": TaskStatus.QUEUED, "d": TaskStatus.PENDING}
    assert h.run.status is RunStatus.RUNNING and h.run.started_at == T0
    assert h.last.new_runs == [RUN_ID] and h.last.runs[RUN_ID] is h.run
    assert set(h.last.tasks) == {(RUN_ID, n) for n in "abcd"}
    assert_counts_match(h.run, h.tasks.values())


def test_a_dispatch_goes_to_the_task_queue_with_its_params_inputs_and_timeout() -> None:
    spec = flow(
        t("load"),
        t("train", "load", queue="gpu", inputs=("load",), timeout_s=60.0,
          params=(ParamSpec(name="lr", type="float"),)),
    )
    h = Harness(spec, params={"lr": 0.1, "unrelated": 1})
    h.start("load")
    h.succeed("load", output=b'{"rows":3}')
    [item] = h.last.dispatches
    queue, dispatch = item.queue, item.message
    assert queue == "gpu"
    assert (dispatch.task, dispatch.function, dispatch.attempt) == ("train", "m:train", 1)
    assert dispatch.params == {"lr": 0.1}
    assert bytes(dispatch.inputs["load"]) == b'{"rows":3}'
    assert dispatch.timeout_s == 60.0
    assert (dispatch.flow, dispatch.version) == ("etl", h.compiled.version)


# -- dependencies -------------------------------------------------------------------------


def test_a_task_is_queued_only_when_all_its_dependencies_succeeded() -> None:
    h = Harness(flow(t("a"), t("b"), t("join", "a", "b")))
    h.run_through("a")
    assert h.dispatched() == []
    assert h.status("join") is TaskStatus.PENDING
    h.start("b")
    assert h.status("join") is TaskStatus.PENDING
    h.succeed("b")
    assert h.dispatched() == ["join"]
    assert h.status("join") is TaskStatus.QUEUED


def test_the_run_state_tracks_open_tasks_and_unmet_dependencies() -> None:
    h = Harness(flow(t("a"), t("b"), t("c", "a", "b")))
    state = h.sched.run_state(RUN_ID)
    assert isinstance(state, RunState) and state.run is h.run
    assert state.waiting == {"a": 0, "b": 0, "c": 2}
    assert (state.open_count, state.failed_count) == (3, 0)
    h.run_through("a")
    assert state.waiting["c"] == 1 and state.open_count == 2
    h.fail("b")
    assert (state.open_count, state.failed_count) == (0, 2)
    assert h.run.status is RunStatus.FAILED


def test_a_failure_fails_every_transitive_dependant_while_an_independent_branch_runs_on() -> None:
    h = Harness(flow(t("a"), t("b", "a"), t("c", "b"), t("d", "c", "x"), t("x"), t("y", "x")))
    h.start("a")
    assert h.fail("a")
    assert h.statuses() == {
        "a": TaskStatus.FAILED, "b": TaskStatus.UPSTREAM_FAILED, "c": TaskStatus.UPSTREAM_FAILED,
        "d": TaskStatus.UPSTREAM_FAILED, "x": TaskStatus.QUEUED, "y": TaskStatus.PENDING,
    }
    assert h.tasks["d"].note == "upstream 'a' did not succeed"
    assert h.run.status is RunStatus.RUNNING, "x and y can still run"
    h.run_through("x")
    assert h.dispatched() == ["y"]
    assert h.run.status is RunStatus.RUNNING
    h.run_through("y")
    assert h.run.status is RunStatus.FAILED
    assert h.run.finished_at == h.now
    assert_counts_match(h.run, h.tasks.values())


def test_a_run_fails_as_soon_as_nothing_more_can_run() -> None:
    h = Harness(flow(t("a"), t("b", "a"), t("c", "b")))
    h.start("a")
    h.fail("a")
    assert h.run.status is RunStatus.FAILED
    assert not h.sched.is_active(RUN_ID)
    assert h.last.runs[RUN_ID].status is RunStatus.FAILED
    assert {h.last.tasks[(RUN_ID, n)].status for n in "bc"} == {TaskStatus.UPSTREAM_FAILED}


def test_a_run_succeeds_when_every_task_succeeded() -> None:
    h = Harness(flow(t("a"), t("b", "a"), t("c", "a"), t("d", "b", "c")))
    h.run_through("a", "b")
    assert h.run.status is RunStatus.RUNNING
    h.run_through("c", "d")
    assert h.run.status is RunStatus.SUCCEEDED
    assert h.run.finished_at == h.now
    assert not h.sched.is_active(RUN_ID)
    assert h.run.counts.done == h.run.counts.succeeded == 4
    assert_counts_match(h.run, h.tasks.values())


def test_a_failed_task_keeps_its_error_and_a_succeeded_task_its_output() -> None:
    h = Harness(flow(t("a"), t("b")))
    h.start("a")
    h.fail("a", message="no such file")
    h.start("b")
    h.succeed("b", output=b'{"ok":true}')
    a, b = h.tasks["a"], h.tasks["b"]
    assert (a.error_type, a.error_message, a.traceback) == ("ValueError", "no such file", "Traceback ...")
    assert a.finished_at is not None and a.agent_id == "agent-1"
    assert bytes(b.output) == b'{"ok":true}' and b.error_type is None
    assert b.started_at is not None and b.finished_at is not None


# -- reports that must change nothing -----------------------------------------------------


def test_a_duplicate_terminal_report_is_ignored() -> None:
    h = Harness(flow(t("a"), t("b", "a")))
    h.start("a")
    assert h.succeed("a", output=b"1")
    assert not h.succeed("a", output=b"2")
    assert not h.fail("a")
    assert not h.last and h.last.dispatches == []
    assert h.status("a") is TaskStatus.SUCCEEDED and bytes(h.tasks["a"].output) == b"1"
    assert h.status("b") is TaskStatus.QUEUED and h.tasks["b"].attempt == 1


def test_a_duplicate_started_report_from_the_same_agent_is_ignored() -> None:
    h = Harness(flow(t("a")))
    assert h.start("a", agent="agent-1")
    assert not h.start("a", agent="agent-1")
    assert h.run.counts.running == 1


def test_a_redelivered_attempt_starting_on_another_agent_is_recorded_once_as_running() -> None:
    h = Harness(flow(t("a")))
    assert h.start("a", agent="agent-1")
    assert h.start("a", agent="agent-2")
    assert h.tasks["a"].agent_id == "agent-2"
    assert h.run.counts.running == 1


def test_a_terminal_report_before_its_started_report_is_accepted_and_the_late_start_ignored() -> None:
    h = Harness(flow(t("a")))
    assert h.succeed("a")
    assert not h.start("a")
    assert h.run.status is RunStatus.SUCCEEDED
    assert_counts_match(h.run, h.tasks.values())


def test_a_report_of_a_stale_attempt_is_ignored() -> None:
    h = Harness(flow(t("a", retries=2)))
    h.start("a")
    h.fail("a")
    assert h.fire("a")
    assert h.tasks["a"].attempt == 2
    assert not h.succeed("a", attempt=1)
    assert not h.start("a", attempt=1, agent="agent-9")
    assert not h.fail("a", attempt=1)
    assert h.status("a") is TaskStatus.QUEUED
    assert h.succeed("a", attempt=2)
    assert h.run.status is RunStatus.SUCCEEDED


def test_a_report_of_an_attempt_older_than_the_current_one_is_ignored() -> None:
    h = Harness(flow(t("a")))
    assert not h.start("a", attempt=0)
    assert h.status("a") is TaskStatus.QUEUED


def test_a_redelivery_reports_a_higher_attempt_and_the_lost_one_is_kept_in_history() -> None:
    h = Harness(flow(t("a")))
    assert h.start("a", attempt=1)
    assert h.start("a", attempt=2)  # the message came back after agent-1 vanished
    assert h.succeed("a", attempt=2)
    assert h.status("a") is TaskStatus.SUCCEEDED
    assert [(a.attempt, a.outcome) for a in h.tasks["a"].history] == [(1, "lost"), (2, "succeeded")]


def test_a_running_task_past_its_timeout_and_backstop_is_failed_as_lost_and_retried() -> None:
    spec = FlowSpec(name="f", tasks=(
        TaskSpec(name="a", function="m:f", timeout_s=10.0, retries=1),
    ))
    h = Harness(spec, settings=SchedulerSettings(backstop_s=5.0))
    assert h.start("a")
    ch = Changes()
    assert not h.sched.on_timer(RUN_ID, "a", T0 + 14.0, ch)  # deadline not reached: ignored
    assert h.sched.on_timer(RUN_ID, "a", T0 + 15.0, ch)
    rec = h.tasks["a"]
    assert rec.status is TaskStatus.RETRY_WAIT
    assert rec.error_type == "AgentLost"
    assert [a.outcome for a in rec.history] == ["lost"]


def test_a_report_for_an_unknown_run_or_task_is_ignored() -> None:
    h = Harness(flow(t("a")))
    ch = Changes()
    other_run = TaskStarted(run_id="nope", task="a", attempt=1, agent_id="x", at=T0)
    other_task = TaskStarted(run_id=RUN_ID, task="nope", attempt=1, agent_id="x", at=T0)
    assert not h.sched.on_report(other_run, T0, ch)
    assert not h.sched.on_report(other_task, T0, ch)
    assert not ch
    assert not h.sched.on_timer("nope", "a", T0, ch)


def test_a_report_for_a_task_still_waiting_for_its_dependencies_is_ignored() -> None:
    h = Harness(flow(t("a"), t("b", "a")))
    assert not h.succeed("b", attempt=0)
    assert not h.succeed("b", attempt=1)
    assert h.status("b") is TaskStatus.PENDING


def test_a_report_for_a_finished_run_is_ignored() -> None:
    h = Harness(flow(t("a")))
    h.run_through("a")
    assert not h.succeed("a")
    assert not h.start("a", agent="agent-2")


def test_progress_marks_a_queued_task_running_and_keeps_fraction_and_checkpoint() -> None:
    h = Harness(flow(t("a")))
    assert h.report(TaskProgress(run_id=RUN_ID, task="a", attempt=1, agent_id="ag", at=T0 + 5,
                                 fraction=0.25, message="row 100"))
    rec = h.tasks["a"]
    assert rec.status is TaskStatus.RUNNING and rec.started_at == T0 + 5
    assert (rec.progress, rec.checkpoint, rec.checkpoint_at) == (0.25, "row 100", T0 + 5)
    assert h.run.counts.running == 1
    h.succeed("a")
    assert rec.progress == 1.0
    assert h.run.counts.running == 0


# -- retries ------------------------------------------------------------------------------


def test_a_failed_attempt_with_retries_left_waits_then_is_queued_again() -> None:
    h = Harness(flow(t("a", retries=1, retry_delay_s=10.0), t("b", "a")))
    h.start("a")
    h.fail("a")
    rec = h.tasks["a"]
    assert rec.status is TaskStatus.RETRY_WAIT
    assert rec.error_message == "boom"
    [timer] = h.last.timers
    due, run_id, task = timer.at, timer.run_id, timer.task
    assert (run_id, task) == (RUN_ID, "a") and due == rec.retry_at
    assert 10.0 <= due - h.now <= 11.0
    assert h.status("b") is TaskStatus.PENDING
    assert h.run.status is RunStatus.RUNNING
    assert h.fire("a")
    assert h.dispatched() == ["a"] and h.last.dispatches[0].message.attempt == 2
    assert rec.status is TaskStatus.QUEUED and rec.retry_at is None
    assert not h.fire("a"), "a second firing of the same timer does nothing"


def test_a_task_fails_for_good_after_its_last_retry() -> None:
    h = Harness(flow(t("a", retries=2), t("b", "a")))
    for attempt in (1, 2):
        h.start("a")
        h.fail("a")
        assert h.status("a") is TaskStatus.RETRY_WAIT, attempt
        assert h.fire("a")
    h.start("a")
    h.fail("a", message="third time")
    assert h.tasks["a"].attempt == 3
    assert h.status("a") is TaskStatus.FAILED and h.tasks["a"].error_message == "third time"
    assert h.status("b") is TaskStatus.UPSTREAM_FAILED
    assert h.run.status is RunStatus.FAILED
    assert_counts_match(h.run, h.tasks.values())


def test_a_retried_task_that_succeeds_clears_its_error_and_unblocks_its_dependants() -> None:
    h = Harness(flow(t("a", retries=1), t("b", "a")))
    h.start("a")
    h.fail("a")
    h.fire("a")
    h.start("a")
    h.succeed("a")
    assert h.tasks["a"].error_type is None and h.tasks["a"].error_message is None
    assert h.dispatched() == ["b"]


def test_retry_delays_grow_exponentially_with_at_most_ten_percent_jitter() -> None:
    base = 3.0
    h = Harness(flow(t("a", retries=6, retry_delay_s=base)), seed=7)
    for attempt in range(1, 7):
        h.start("a")
        h.fail("a")
        delay = h.tasks["a"].retry_at - h.now
        expected = base * 2 ** (attempt - 1)
        assert expected <= delay <= expected * 1.1, attempt
        h.fire("a")


def test_a_zero_retry_delay_retries_at_once() -> None:
    h = Harness(flow(t("a", retries=1)))
    h.fail("a")
    assert h.tasks["a"].retry_at == h.now


@settings(max_examples=200, deadline=None)
@given(
    base_s=st.floats(min_value=1e-3, max_value=10 * MAX_RETRY_DELAY_S),
    attempt=st.integers(min_value=1, max_value=5_000),
    seed=st.integers(0, 2**32),
)
def test_retry_delay_is_capped_backoff_with_jitter_for_any_attempt(
    base_s: float, attempt: int, seed: int
) -> None:
    sched = Scheduler(rng=random.Random(seed))
    delay = sched.retry_delay_s(base_s, attempt)
    # 1e-3 * 2**64 is far past the cap, so the exponent may be clamped here
    backoff = min(base_s * 2.0 ** min(attempt - 1, 64), MAX_RETRY_DELAY_S)
    assert backoff <= delay <= backoff * 1.1


# -- restart -------------------------------------------------------------------------------


def snapshot(h: Harness) -> tuple[RunRecord, list[TaskRecord]]:
    """What the store holds: copies, so the old scheduler cannot touch them."""
    return copy_run(h.run), [copy_task(r) for r in h.tasks.values()]


def restored(h: Harness) -> tuple[Scheduler, Changes, dict[str, TaskRecord], RunRecord]:
    run, records = snapshot(h)
    sched, ch = Scheduler(rng=random.Random(1)), Changes()
    sched.restore(run, h.compiled, records, h.now, ch)
    return sched, ch, {r.task: r for r in records}, run


def test_restore_republishes_queued_tasks_with_the_same_attempt_and_the_run_completes() -> None:
    h = Harness(flow(t("a"), t("b", "a", inputs=("a",)), t("c", "a"), t("d", "b", "c")))
    h.start("a")
    h.succeed("a", output=b'"A"')
    h.start("c")  # c is running; b is queued, maybe never published
    sched, ch, tasks, run = restored(h)
    assert [(d.queue, d.message.task, d.message.attempt) for d in ch.dispatches] == [("default", "b", 1)]
    assert bytes(ch.dispatches[0].message.inputs["a"]) == b'"A"'
    assert ch.timers == [] and not ch, "nothing to persist: the store was consistent"
    assert run.status is RunStatus.RUNNING
    for task in ("b", "c"):
        sched.on_report(TaskSucceeded(run_id=RUN_ID, task=task, attempt=1, agent_id="x", at=T0 + 9,
                                      started_at=T0 + 8, output=msgspec.Raw(b"1")), T0 + 9, ch)
    [d] = [item.message for item in ch.dispatches[1:]]
    assert (d.task, d.attempt) == ("d", 1)
    sched.on_report(TaskSucceeded(run_id=RUN_ID, task="d", attempt=1, agent_id="x", at=T0 + 10,
                                  started_at=T0 + 9, output=msgspec.Raw(b"1")), T0 + 10, ch)
    assert run.status is RunStatus.SUCCEEDED
    assert_counts_match(run, tasks.values())


def test_restore_rearms_the_timer_of_a_task_waiting_to_retry() -> None:
    h = Harness(flow(t("a", retries=1, retry_delay_s=30.0)))
    h.fail("a")
    due = h.tasks["a"].retry_at
    sched, ch, _, _ = restored(h)
    assert ch.timers == [Timer(due, RUN_ID, "a")] and ch.dispatches == []
    assert sched.on_timer(RUN_ID, "a", due, ch)
    assert [(d.message.task, d.message.attempt) for d in ch.dispatches] == [("a", 2)]


def test_restore_leaves_a_running_task_to_its_agent() -> None:
    h = Harness(flow(t("a")))
    h.start("a", agent="agent-7")
    sched, ch, tasks, run = restored(h)
    assert ch.dispatches == [] and ch.timers == []
    assert tasks["a"].status is TaskStatus.RUNNING
    sched.on_report(TaskSucceeded(run_id=RUN_ID, task="a", attempt=1, agent_id="agent-7", at=T0 + 3,
                                  started_at=T0 + 1, output=msgspec.Raw(b"1")), T0 + 3, ch)
    assert run.status is RunStatus.SUCCEEDED
    assert_counts_match(run, tasks.values())


def test_restore_ignores_reports_the_crashed_coordinator_had_already_finalised() -> None:
    h = Harness(flow(t("a"), t("b", "a")))
    h.run_through("a")
    sched, ch, tasks, _ = restored(h)
    stale = TaskFailed(run_id=RUN_ID, task="a", attempt=1, agent_id="x", at=T0 + 9,
                       error_type="E", message="late")
    assert not sched.on_report(stale, T0 + 9, ch)
    assert tasks["a"].status is TaskStatus.SUCCEEDED


def test_restore_queues_a_task_missing_from_the_store_whose_dependencies_succeeded() -> None:
    h = Harness(flow(t("a"), t("b", "a")))
    h.run_through("a")
    run, records = snapshot(h)
    records = [r for r in records if r.task != "b"]
    sched, ch = Scheduler(), Changes()
    sched.restore(run, h.compiled, records, h.now, ch)
    assert [(d.message.task, d.message.attempt) for d in ch.dispatches] == [("b", 1)]
    assert ch.tasks[(RUN_ID, "b")].status is TaskStatus.QUEUED


def test_restore_marks_a_task_missing_from_the_store_upstream_failed_when_its_dependency_failed() -> None:
    h = Harness(flow(t("a"), t("b", "a"), t("c", "b"), t("x")))
    h.fail("a")  # b and c become upstream_failed; x still queued
    run, records = snapshot(h)
    records = [r for r in records if r.task != "b"]  # as if b's row were never written
    run.counts.done, run.counts.failed = 2, 2  # and the run row counted only a and c
    sched, ch = Scheduler(), Changes()
    sched.restore(run, h.compiled, records, h.now, ch)
    b = ch.tasks[(RUN_ID, "b")]
    assert b.status is TaskStatus.UPSTREAM_FAILED
    assert b.note == "upstream 'a' did not succeed"
    assert ch.runs[RUN_ID] is run, "the run's counts changed, so the run row is written too"
    assert_counts_match(run, [*records, b])
    sched.on_report(TaskSucceeded(run_id=RUN_ID, task="x", attempt=1, agent_id="ag", at=T0 + 5,
                                  started_at=T0 + 4, output=msgspec.Raw(b"1")), T0 + 5, ch)
    assert run.status is RunStatus.FAILED, "nothing is left that could run"
    assert not sched.is_active(RUN_ID)
    assert_counts_match(run, [*records, b])


def test_restore_finishes_a_run_whose_tasks_were_all_final() -> None:
    h = Harness(flow(t("a")))
    h.run_through("a")
    run, records = snapshot(h)
    run.status, run.finished_at = RunStatus.RUNNING, None  # as if the run row lagged behind
    sched, ch = Scheduler(), Changes()
    sched.restore(run, h.compiled, records, T0 + 50, ch)
    assert run.status is RunStatus.SUCCEEDED and run.finished_at == T0 + 50
    assert ch.runs[RUN_ID] is run and not sched.is_active(RUN_ID)


# -- operator actions: cancel, retry, mark ----------------------------------------------


def mark(h: Harness, task: str, status: TaskStatus, output: bytes = b"null") -> TaskRecord:
    """Mark a task by hand the way the operations layer does for an active or finished run."""
    h.last = Changes()
    h.now += 1.0
    return h.sched.mark(h.run, h.compiled, list(h.tasks.values()), task, status,
                        msgspec.Raw(output), h.now, h.last)


def retry(h: Harness) -> list[str]:
    h.last = Changes()
    h.now += 1.0
    return h.sched.retry(h.run, h.compiled, list(h.tasks.values()), h.now, h.last)


def test_a_retry_due_while_its_dependency_runs_again_waits_for_it_instead_of_failing() -> None:
    """b ran on a's marked output; a is marked failed and retried; b's own retry falls due
    while a is still running again: b waits for a, and runs once a succeeded."""
    h = Harness(flow(t("a"), t("b", "a", retries=1)))
    mark(h, "a", TaskStatus.SUCCEEDED, b'{"by": "hand"}')
    assert h.status("b") is TaskStatus.QUEUED
    mark(h, "a", TaskStatus.FAILED)
    assert h.status("b") is TaskStatus.QUEUED, "b already has its inputs"
    assert retry(h) == ["a"]
    h.start("b")
    h.fail("b")
    assert h.status("b") is TaskStatus.RETRY_WAIT
    assert h.fire("b")  # a is queued, not succeeded: b cannot run yet, nor has it failed
    assert h.status("b") is TaskStatus.PENDING and h.dispatched() == []
    assert "waiting for 'a'" in (h.tasks["b"].note or "")
    h.run_through("a")
    assert h.dispatched() == ["b"] and h.tasks["b"].attempt == 2
    h.run_through("b")
    assert h.run.status is RunStatus.SUCCEEDED
    assert_counts_match(h.run, h.tasks.values())


def test_cancelling_a_run_withdraws_its_queued_task_and_names_the_run_as_cancelled() -> None:
    h = Harness(flow(t("a"), t("b"), t("c", "a", "b")))
    h.start("b")
    ch = Changes()
    in_flight = h.sched.cancel(RUN_ID, h.now + 1, ch)
    assert in_flight is not None and sorted(r.task for r in in_flight) == ["a", "b"]
    assert [r.task for r in ch.withdrawn] == ["a"], "the running task is stopped, not withdrawn"
    assert ch.cancelled_runs == [RUN_ID]
    assert ch.dispatches == [] and not h.sched.is_active(RUN_ID)
    assert h.statuses() == {n: TaskStatus.CANCELLED for n in "abc"}
    assert [(x.attempt, x.outcome) for x in h.tasks["b"].history] == [(1, "cancelled")]
    assert h.tasks["a"].history == [], "a queued attempt never ran"
    assert h.run.status is RunStatus.CANCELLED and h.run.finished_at == h.now + 1
    assert_counts_match(h.run, h.tasks.values())
    assert not h.succeed("b") and not h.start("a") and not h.last
    assert h.sched.cancel(RUN_ID, h.now, Changes()) is None, "a cancelled run is not active"


def test_retrying_a_run_with_nothing_to_retry_returns_nothing_and_changes_nothing() -> None:
    h = Harness(flow(t("a"), t("b", "a")))
    h.run_through("a", "b")
    run, records = snapshot(h)  # a finished run, as the store gives it back
    stored = _enc.encode([run, *records])
    ch = Changes()
    assert h.sched.retry(run, h.compiled, records, h.now + 1, ch) == []
    assert ch == Changes()
    assert _enc.encode([run, *records]) == stored
    assert not h.sched.is_active(RUN_ID)

    active = Harness(flow(t("a"), t("b", "a")))
    active.start("a")
    stored = _enc.encode([active.run, *active.tasks.values()])
    assert retry(active) == []
    assert active.last == Changes()
    assert _enc.encode([active.run, *active.tasks.values()]) == stored


def test_marking_a_failed_task_succeeded_reruns_its_upstream_failed_chain() -> None:
    h = Harness(flow(t("a"), t("b", "a", inputs=("a",)), t("c", "b"), t("x")))
    h.fail("a")
    h.run_through("x")
    assert h.run.status is RunStatus.FAILED
    assert h.status("b") is h.status("c") is TaskStatus.UPSTREAM_FAILED
    rec = mark(h, "a", TaskStatus.SUCCEEDED, b'"by hand"')
    assert rec is h.tasks["a"] and rec.status is TaskStatus.SUCCEEDED
    assert bytes(rec.output) == b'"by hand"' and rec.error_type is None
    assert h.statuses() == {"a": TaskStatus.SUCCEEDED, "b": TaskStatus.QUEUED,
                            "c": TaskStatus.PENDING, "x": TaskStatus.SUCCEEDED}
    [d] = [item.message for item in h.last.dispatches]
    assert (d.task, d.attempt, bytes(d.inputs["a"])) == ("b", 1, b'"by hand"')
    assert h.run.status is RunStatus.RUNNING and h.run.finished_at is None
    assert_counts_match(h.run, h.tasks.values())
    h.run_through("b")
    assert h.dispatched() == ["c"]
    h.run_through("c")
    assert h.run.status is RunStatus.SUCCEEDED
    assert_counts_match(h.run, h.tasks.values())


def test_marking_a_task_failed_fails_its_pending_dependants_and_finishes_the_run() -> None:
    h = Harness(flow(t("a"), t("b", "a"), t("c", "b")))
    h.start("a")
    rec = mark(h, "a", TaskStatus.FAILED)
    assert (rec.status, rec.error_type) == (TaskStatus.FAILED, "MarkedFailed")
    assert h.status("b") is h.status("c") is TaskStatus.UPSTREAM_FAILED
    assert h.run.status is RunStatus.FAILED and not h.sched.is_active(RUN_ID)
    assert_counts_match(h.run, h.tasks.values())
    assert not h.succeed("a", attempt=1), "the agent's late report is ignored"


def test_retrying_a_failed_run_reruns_only_what_did_not_succeed_and_keeps_the_outputs() -> None:
    h = Harness(flow(t("a"), t("b", "a"), t("x")))
    h.start("x")
    h.succeed("x", output=b'"x1"')
    h.fail("a")
    assert h.run.status is RunStatus.FAILED
    assert sorted(retry(h)) == ["a", "b"]
    assert h.dispatched() == ["a"] and h.tasks["a"].attempt == 2
    assert h.status("b") is TaskStatus.PENDING and h.tasks["b"].note == "retried"
    x = h.tasks["x"]
    assert (x.status, x.attempt, bytes(x.output)) == (TaskStatus.SUCCEEDED, 1, b'"x1"')
    h.run_through("a", "b")
    assert h.run.status is RunStatus.SUCCEEDED
    assert [(a.attempt, a.outcome) for a in h.tasks["a"].history] == [(1, "failed"), (2, "succeeded")]
    assert_counts_match(h.run, h.tasks.values())


def test_marking_one_of_two_failed_dependencies_succeeded_keeps_the_dependant_upstream_failed() -> None:
    h = Harness(flow(t("a"), t("b"), t("c", "a", "b")))
    h.fail("a")
    h.fail("b")
    mark(h, "a", TaskStatus.SUCCEEDED, b"1")
    assert h.status("c") is TaskStatus.UPSTREAM_FAILED, "b still failed: c cannot run"
    assert h.run.status is RunStatus.FAILED and not h.sched.is_active(RUN_ID)


def test_marking_a_task_of_a_cancelled_run_succeeded_leaves_the_run_cancelled() -> None:
    h = Harness(flow(t("a"), t("b")))
    h.sched.cancel(RUN_ID, h.now, Changes())
    mark(h, "a", TaskStatus.SUCCEEDED, b"1")
    assert h.status("b") is TaskStatus.CANCELLED
    assert h.run.status is RunStatus.CANCELLED, "b never ran"
    assert_counts_match(h.run, h.tasks.values())


def test_a_task_marked_while_running_and_retried_gets_a_new_deadline_when_it_starts_again() -> None:
    h = Harness(flow(t("a", timeout_s=10.0)))
    h.start("a")
    mark(h, "a", TaskStatus.FAILED)
    h.now += 100.0
    assert retry(h) == ["a"]
    started = h.now
    h.start("a")
    rec = h.tasks["a"]
    assert (rec.status, rec.attempt) == (TaskStatus.RUNNING, 2)
    assert rec.deadline_at == started + 10.0 + h.sched.settings.backstop_s
    assert h.last.timers == [Timer(rec.deadline_at, RUN_ID, "a")]


def test_marking_a_task_failed_in_an_active_run_writes_the_run_with_its_new_counts() -> None:
    h = Harness(flow(t("a"), t("b")))
    mark(h, "a", TaskStatus.FAILED)
    assert h.run.status is RunStatus.RUNNING, "b is still queued"
    assert h.last.runs.get(RUN_ID) is h.run
    assert_counts_match(h.last.runs[RUN_ID], h.tasks.values())


def test_a_dependant_waiting_to_retry_is_not_dispatched_after_its_dependency_is_marked_failed() -> None:
    h = Harness(flow(t("a"), t("b", "a", retries=1, retry_delay_s=5.0)))
    h.run_through("a")
    h.start("b")
    h.fail("b")
    assert h.status("b") is TaskStatus.RETRY_WAIT
    mark(h, "a", TaskStatus.FAILED)
    h.fire("b")
    assert h.dispatched() == [], "b's dependency a is failed"
    assert h.status("b") is TaskStatus.UPSTREAM_FAILED


# Scheduler bugs found by the operator property test below, now fixed; each test states the
# expected behaviour.


def test_a_running_dependant_is_not_retried_after_its_dependency_is_marked_failed() -> None:
    h = Harness(flow(t("a"), t("b", "a", retries=1, retry_delay_s=5.0)))
    h.run_through("a")
    h.start("b")
    mark(h, "a", TaskStatus.FAILED)
    assert h.status("b") is TaskStatus.RUNNING, "its attempt already has its inputs"
    h.fail("b")
    h.fire("b")
    assert h.dispatched() == [], "b's dependency a is failed"
    assert h.status("b") is TaskStatus.UPSTREAM_FAILED


def test_a_late_report_from_before_a_retry_does_not_take_over_the_retried_attempt() -> None:
    h = Harness(flow(t("a")))
    h.start("a")  # attempt 1, the first message
    h.sched.cancel(RUN_ID, h.now, Changes())
    assert retry(h) == ["a"] and h.tasks["a"].attempt == 2  # a second message, attempt 2
    h.start("a", attempt=3, agent="agent-9", delivery=3)  # the first message's third delivery
    assert h.succeed("a", attempt=2), "the second message ran and succeeded"
    assert h.run.status is RunStatus.SUCCEEDED


def test_a_redelivery_of_a_task_still_queued_keeps_the_lost_attempt_in_history() -> None:
    h = Harness(flow(t("a")))
    assert h.start("a", attempt=2)  # attempt 1's agent vanished before its started report
    assert h.succeed("a", attempt=2)
    assert [(a.attempt, a.outcome) for a in h.tasks["a"].history] == [(1, "lost"), (2, "succeeded")]


# -- the property test: random DAGs, an unreliable world, crashes ------------------------


class Simulation:
    """A scheduler with a store of committed copies, and the messages in flight around it.

    Mirrors the service: one ``Changes`` per batch, commit, ack the batch's reports, then
    publish dispatches and arm timers. A crash loses the scheduler and its timers, and
    optionally the last batch's commit (its reports stay unacked) or its publishing.
    """

    def __init__(self, spec: FlowSpec, fails_first: Mapping[str, int]) -> None:
        self.flow = CompiledFlow.compile(spec)
        self.deps = {name: task.depends_on for name, task in self.flow.tasks.items()}
        self.fails_first = fails_first
        self.now = T0
        self.restarts = 0
        self.sched = Scheduler(rng=random.Random(0))
        self.live: dict[str, TaskRecord] = {}
        self.store_run: RunRecord | None = None
        self.store_tasks: dict[str, TaskRecord] = {}
        self.published: list[TaskDispatch] = []
        self.reports: list[Report] = []
        self.history: list[Report] = []
        self.timers: list[Timer] = []
        self.executions = 0
        self.ever_dispatched: set[str] = set()
        self.successes: Counter[str] = Counter()
        run = RunRecord(run_id=RUN_ID, flow=spec.name, version=self.flow.version, created_at=T0)
        self.batch(lambda ch: self.sched.start_run(run, self.flow, self.now, ch))

    @property
    def finished(self) -> bool:
        assert self.store_run is not None
        return self.store_run.status in RUN_FINAL

    # -- the coordinator side --------------------------------------------------------

    def batch(self, apply: Callable[[Changes], object], acked: Iterable[Report] = (),
              lose: str | None = None) -> None:
        before = {name: rec.status for name, rec in self.live.items()}
        ch = Changes()
        apply(ch)
        self.live.update({task: rec for (_, task), rec in ch.tasks.items()})
        self.check_in_memory(ch, before)
        if lose == "commit":
            self.crash()
            return
        self.commit(ch)
        for msg in acked:
            self.reports.remove(msg)
        if lose == "publish":
            self.crash()
            return
        self.publish(ch)

    def check_in_memory(self, ch: Changes, before: Mapping[str, TaskStatus]) -> None:
        for name, old in before.items():
            if old in TASK_FINAL:
                assert self.live[name].status is old, f"{name} left final state {old}"
        for item in ch.dispatches:
            d = item.message
            assert item.queue == self.flow.tasks[d.task].queue
            assert self.live[d.task].status is TaskStatus.QUEUED
            assert self.live[d.task].attempt == d.attempt
            for dep in self.deps[d.task]:
                assert self.live[dep].status is TaskStatus.SUCCEEDED, f"{d.task} before {dep}"

    def commit(self, ch: Changes) -> None:
        for rec in ch.tasks.values():
            new, old = copy_task(rec), self.store_tasks.get(rec.task)
            if old is not None and old.status in TASK_FINAL:
                assert new.status is old.status, f"{rec.task}: {old.status} -> {new.status}"
                assert bytes(new.output) == bytes(old.output)
            if new.status is TaskStatus.SUCCEEDED and (old is None or old.status is not new.status):
                self.successes[rec.task] += 1
            self.store_tasks[rec.task] = new
        for run in ch.runs.values():
            if self.store_run is not None and self.store_run.status in RUN_FINAL:
                assert run.status is self.store_run.status, "a finished run changed"
            self.store_run = copy_run(run)
        assert self.store_run is not None
        assert_counts_match(self.store_run, self.store_tasks.values())

    def publish(self, ch: Changes) -> None:
        for d in (item.message for item in ch.dispatches):
            stored = self.store_tasks[d.task]
            assert stored.status is TaskStatus.QUEUED and stored.attempt == d.attempt, \
                "committed as queued before it is published"
            for dep in self.deps[d.task]:
                assert self.store_tasks[dep].status is TaskStatus.SUCCEEDED
                assert bytes(d.inputs[dep]) == bytes(self.store_tasks[dep].output)
            self.published.append(d)
            self.ever_dispatched.add(d.task)
        for timer in ch.timers:
            stored = self.store_tasks[timer.task]
            assert stored.status is TaskStatus.RETRY_WAIT and stored.retry_at == timer.at
        self.timers.extend(ch.timers)

    def crash(self) -> None:
        """Lose the scheduler and its timers; restore from the committed records."""
        self.restarts += 1
        self.sched = Scheduler(rng=random.Random(self.restarts))
        self.timers.clear()
        self.live = {}
        if self.finished:
            return
        assert self.store_run is not None
        run = copy_run(self.store_run)
        self.live = {name: copy_task(rec) for name, rec in self.store_tasks.items()}
        records = list(self.live.values())
        self.batch(lambda ch: self.sched.restore(run, self.flow, records, self.now, ch))

    # -- the agents' side --------------------------------------------------------------

    def execute(self, index: int, *, keep: bool = False, flip: bool = False,
                progress: bool = False, agent: str = "agent-1") -> None:
        """An agent runs one delivery of a dispatch; its reports go to the reports stream."""
        d = self.published[index] if keep else self.published.pop(index)
        self.executions += 1
        ids = {"run_id": d.run_id, "task": d.task, "attempt": d.attempt, "agent_id": agent}
        msgs: list[Report] = [TaskStarted(**ids, at=self.now)]
        if progress:
            msgs.append(TaskProgress(**ids, at=self.now, fraction=0.5, message="half"))
        if (d.attempt <= self.fails_first[d.task]) != flip:
            msgs.append(TaskFailed(**ids, at=self.now, started_at=self.now, error_type="ValueError",
                                   message=f"attempt {d.attempt} failed"))
        else:
            output = _enc.encode({"task": d.task, "attempt": d.attempt, "execution": self.executions})
            msgs.append(TaskSucceeded(**ids, at=self.now, started_at=self.now,
                                      output=msgspec.Raw(output)))
        self.reports.extend(msgs)
        self.history.extend(msgs)

    def deliver(self, msgs: list[Report], *, ack: bool = True, lose: str | None = None) -> None:
        def apply(ch: Changes) -> None:
            for msg in msgs:
                self.sched.on_report(msg, self.now, ch)

        self.batch(apply, acked=msgs if ack else (), lose=lose)

    def fire(self, index: int, *, keep: bool = False, lose: str | None = None) -> None:
        due, run_id, task = astuple(self.timers[index] if keep else self.timers.pop(index))
        self.now = max(self.now, due)
        self.batch(lambda ch: self.sched.on_timer(run_id, task, self.now, ch), lose=lose)

    def drain(self) -> None:
        """A well-behaved world from here on: everything delivered once, in order."""
        for _ in range(100_000):
            if self.finished:
                return
            self.now += 1.0
            if self.reports:
                self.deliver([self.reports[0]])
            elif self.published:
                self.execute(0)
            elif self.timers:
                self.fire(min(range(len(self.timers)), key=lambda i: self.timers[i].at))
            else:
                pytest.fail(f"stuck: nothing in flight, run {self.store_run}, tasks {self.store_tasks}")
        pytest.fail("the run did not finish")

    # -- the outcome -------------------------------------------------------------------

    def check_final(self) -> None:
        assert self.store_run is not None
        tasks = self.store_tasks
        assert set(tasks) == set(self.flow.tasks)
        for name, rec in tasks.items():
            self.check_final_task(name, rec)
        statuses = {rec.status for rec in tasks.values()}
        if statuses == {TaskStatus.SUCCEEDED}:
            assert self.store_run.status is RunStatus.SUCCEEDED
        else:
            assert self.store_run.status is RunStatus.FAILED
            assert TaskStatus.FAILED in statuses
        assert self.store_run.finished_at is not None
        assert self.store_run.counts.done == self.store_run.counts.total == len(tasks)
        assert self.store_run.counts.running == 0
        assert max(self.successes.values(), default=0) <= 1
        assert not self.sched.is_active(RUN_ID)

    def check_final_task(self, name: str, rec: TaskRecord) -> None:
        deps = [self.store_tasks[d].status for d in self.deps[name]]
        match rec.status:
            case TaskStatus.SUCCEEDED:
                assert all(s is TaskStatus.SUCCEEDED for s in deps)
                assert msgspec.json.decode(rec.output)["attempt"] == rec.attempt
            case TaskStatus.FAILED:
                assert all(s is TaskStatus.SUCCEEDED for s in deps)
                assert rec.attempt == self.flow.tasks[name].retries + 1
                assert rec.error_type == "ValueError"
            case TaskStatus.UPSTREAM_FAILED:
                assert any(s in FAILED_STATES for s in deps)
                assert rec.attempt == 0 and name not in self.ever_dispatched
            case other:
                pytest.fail(f"task {name} ended {other}")


TASK_PLAN = st.tuples(
    st.lists(st.integers(0, 2**10), max_size=3),  # dependencies, as picks among earlier tasks
    st.integers(0, 2),  # retries
    st.sampled_from([0.0, 0.5, 4.0]),  # retry_delay_s
    st.sampled_from(["default", "gpu"]),
    st.sampled_from([0] * 8 + [1, 2, 3]),  # how many first attempts fail
)


@st.composite
def flows_with_plans(draw: st.DrawFn, max_tasks: int = 30) -> tuple[FlowSpec, dict[str, int]]:
    """A random DAG (declared in shuffled order) and, per task, how many first attempts fail.

    Half the flows have tasks that fail for good; in the other half only a flipped outcome
    during the chaos can make a task fail after its last retry.
    """
    n = draw(st.integers(1, max_tasks))
    may_fail_for_good = draw(st.booleans())
    tasks: list[TaskSpec] = []
    fails_first: dict[str, int] = {}
    for i in range(n):
        picks, retries, delay_s, queue, fails = draw(TASK_PLAN)
        deps = tuple(dict.fromkeys(f"t{p % i}" for p in picks)) if i else ()
        tasks.append(t(f"t{i}", *deps, retries=retries, retry_delay_s=delay_s, queue=queue,
                       inputs=deps))
        fails_first[f"t{i}"] = min(fails, retries + may_fail_for_good)
    order = draw(st.permutations(tasks))
    return flow(*order, name="chaos"), fails_first


ACTIONS = ("execute",) * 6 + ("deliver",) * 8 + ("timer",) * 3 + ("replay", "crash")
STEP = st.tuples(
    st.sampled_from(ACTIONS),
    st.integers(0, 2**16),  # which message
    st.integers(0, 3),  # how many more reports in the same batch
    st.integers(0, 59),  # 0: lose the batch's commit, 1: lose its publishing; 2: flip an outcome
    st.integers(0, 3),  # bit 0: deliver again later (no ack); bit 1: progress, second agent
)


def chaos_step(sim: Simulation, data: st.DataObject) -> None:
    """One thing happens: an agent runs something, reports arrive, a timer fires, a crash."""
    action, pick, more, fate, flags = data.draw(STEP)
    keep, other = bool(flags & 1), bool(flags & 2)
    sim.now += 0.5
    lose = {0: "commit", 1: "publish"}.get(fate)
    available = {"execute": sim.published, "deliver": sim.reports, "replay": sim.history,
                 "timer": sim.timers, "crash": [None]}
    if not available[action]:
        action = next(a for a in ("deliver", "execute", "timer", "crash") if available[a])
    match action:
        case "execute":
            sim.execute(pick % len(sim.published), keep=keep, flip=fate == 2, progress=other,
                        agent="agent-2" if other else "agent-1")
        case "deliver":
            picks = dict.fromkeys((pick + 7 * k) % len(sim.reports) for k in range(more + 1))
            sim.deliver([sim.reports[i] for i in picks], ack=not keep, lose=lose)
        case "replay":
            sim.deliver([sim.history[pick % len(sim.history)]], ack=False, lose=lose)
        case "timer":
            sim.fire(pick % len(sim.timers), keep=keep, lose=lose)
        case "crash":
            sim.crash()


@settings(max_examples=200, deadline=None)
@given(plan=flows_with_plans(), data=st.data())
def test_any_dag_under_duplicated_reordered_stale_reports_and_crashes_finishes_consistently(
    plan: tuple[FlowSpec, dict[str, int]], data: st.DataObject
) -> None:
    spec, fails_first = plan
    sim = Simulation(spec, fails_first)
    for _ in range(data.draw(st.integers(0, 150), label="chaos steps")):
        if sim.finished:
            break
        chaos_step(sim, data)
    event("finished amid chaos" if sim.finished else "finished while draining")
    event(f"restarts: {min(sim.restarts, 5)}{'+' if sim.restarts >= 5 else ''}")
    sim.drain()
    event(f"run {sim.store_run.status if sim.store_run else None}")
    sim.check_final()


# -- the property test with an operator: cancel, retry, mark; agents lost mid-task --------

OUTCOMES = frozenset({"succeeded", "failed", "timed_out", "lost", "cancelled"})
FAILED_OUTCOMES = frozenset({"failed", "timed_out", "lost"})


def check_history(rec: TaskRecord) -> None:
    """One entry per finished attempt: strictly increasing attempt numbers, none in the future."""
    attempts = [a.attempt for a in rec.history]
    assert all(x < y for x, y in pairwise(attempts)), f"{rec.task}: history attempts {attempts}"
    assert all(1 <= a <= rec.attempt for a in attempts), f"{rec.task}: {attempts} vs {rec.attempt}"
    assert {a.outcome for a in rec.history} <= OUTCOMES


@dataclass(slots=True)
class Delivery:
    """A task message on the stream and how many times an agent has taken it so far."""

    dispatch: TaskDispatch
    delivered: int = 0


class WatchedDispatches(list[Dispatch]):
    """``Changes.dispatches`` that checks the scheduler's memory at the moment of each dispatch."""

    def __init__(self, check: Callable[[str, TaskDispatch], None]) -> None:
        super().__init__()
        self.check = check
        self.checked = 0

    def append(self, item: Dispatch) -> None:
        self.check(item.queue, item.message)
        self.checked += 1
        super().append(item)


Before = dict[str, tuple[TaskStatus, int, bytes]]


def snapshot_tasks(records: Iterable[TaskRecord]) -> Before:
    return {rec.task: (rec.status, rec.attempt, bytes(rec.output)) for rec in records}


class OperatorSimulation(Simulation):
    """The chaos simulation plus an operator (cancel, retry, mark) and agents lost mid-task.

    Each message on the stream counts its deliveries; an agent numbers a redelivery as
    ``attempt + deliveries - 1``, like the real one. A lost agent reports only that it
    started, and its message stays on the stream. Operator actions get the run from memory
    when it is active and from the store otherwise, like ``Operations``; a cancel withdraws
    the queued messages and a mark succeeded of an active run withdraws the task's message.
    """

    published: list[Delivery]

    def __init__(self, spec: FlowSpec, fails_first: Mapping[str, int]) -> None:
        self.before: Before = {}
        self.actions: Counter[str] = Counter()
        self.origin: dict[int, int] = {}
        """Each report's message, by the attempt the message was dispatched with."""
        self.latest: dict[str, int] = {}
        """The attempt of each task's newest message."""
        self.marked: dict[str, bytes] = {}
        """Tasks whose final state was set by hand (and the output given when succeeded)."""
        super().__init__(spec, fails_first)

    # -- the coordinator side --------------------------------------------------------

    def batch(self, apply: Callable[[Changes], object], acked: Iterable[Report] = (),
              lose: str | None = None, *, kind: str | None = None,
              touched: Collection[str] = ()) -> bool:
        """One batch; ``kind`` names an operator action, ``touched`` the final tasks it may change.

        Returns whether the batch was committed.
        """
        before = self.before = snapshot_tasks(self.live.values())
        ch = Changes()
        ch.dispatches = watched = WatchedDispatches(self.check_dispatch)
        apply(ch)
        assert watched.checked == len(ch.dispatches)
        self.live.update({task: rec for (_, task), rec in ch.tasks.items()})
        self.check_batch(ch, before, kind, touched)
        if lose == "commit":
            self.crash()
            return False
        self.commit_batch(ch, kind, touched)
        for msg in acked:
            self.reports.remove(msg)
        if lose == "publish":
            self.crash()
            return True
        self.publish(ch)
        return True

    def check_dispatch(self, queue: str, d: TaskDispatch) -> None:
        state = self.sched.run_state(d.run_id)
        assert state is not None
        rec = state.tasks[d.task]
        assert queue == self.flow.tasks[d.task].queue
        assert rec.status is TaskStatus.QUEUED and rec.attempt == d.attempt
        self.latest[d.task] = max(self.latest.get(d.task, 0), d.attempt)
        if self.before.get(d.task, (None, 0))[:2] == (TaskStatus.QUEUED, d.attempt):
            return  # restore re-publishing a message sent before (its upstream may since be marked)
        for dep in self.deps[d.task]:
            assert state.tasks[dep].status in TASK_DONE_OK, f"{d.task} dispatched before {dep}"
            assert bytes(d.inputs[dep]) == bytes(state.tasks[dep].output)

    def check_batch(self, ch: Changes, before: Before, kind: str | None,
                    touched: Collection[str]) -> None:
        for name, (status, attempt, output) in before.items():
            rec = self.live[name]
            if status in TASK_FINAL and name not in touched:
                assert (rec.status, rec.attempt, bytes(rec.output)) == (status, attempt, output), \
                    f"{name} left final state {status} in a {kind or 'report or timer'} batch"
        for (_, name), rec in ch.tasks.items():
            check_history(rec)
            if name in before:
                self.check_attempts(rec, *before[name][:2], ch, kind)

    def check_attempts(self, rec: TaskRecord, old: TaskStatus, old_attempt: int, ch: Changes,
                       kind: str | None) -> None:
        """Every running attempt that ends is kept; a new running attempt gets a deadline."""
        now = (rec.status, rec.attempt)
        history = [(a.attempt, a.outcome) for a in rec.history]
        if old is TaskStatus.RUNNING and now != (old, old_attempt) and kind != "mark":
            assert old_attempt in [a for a, _ in history], f"{rec.task}: attempt {old_attempt} lost"
        if (rec.status is TaskStatus.RUNNING and (old, old_attempt) != now
                and self.flow.tasks[rec.task].timeout_s is not None):
            assert Timer(rec.deadline_at, RUN_ID, rec.task) in ch.timers, \
                f"{rec.task}: attempt {rec.attempt} running with no deadline timer"
        if kind is None and rec.status is not old:
            if rec.status is TaskStatus.SUCCEEDED:
                assert history[-1] == (rec.attempt, "succeeded")
            elif rec.status in (TaskStatus.FAILED, TaskStatus.RETRY_WAIT):
                assert history[-1][0] == rec.attempt and history[-1][1] in FAILED_OUTCOMES

    def commit_batch(self, ch: Changes, kind: str | None, touched: Collection[str]) -> None:
        for rec in ch.tasks.values():
            new, old = copy_task(rec), self.store_tasks.get(rec.task)
            if old is not None and old.status in TASK_FINAL and rec.task not in touched:
                assert (new.status, new.attempt, bytes(new.output)) == \
                    (old.status, old.attempt, bytes(old.output)), f"{rec.task} left {old.status}"
            became_ok = old is None or old.status is not TaskStatus.SUCCEEDED
            if kind is None and new.status is TaskStatus.SUCCEEDED and became_ok:
                self.successes[rec.task] += 1
                assert self.successes[rec.task] == 1, f"{rec.task} finalised twice as succeeded"
            self.store_tasks[rec.task] = new
        for name in touched:  # set or reset by hand: it may succeed (once) again
            self.successes[name] = int(self.store_tasks[name].status is TaskStatus.SUCCEEDED)
        for run in ch.runs.values():
            if self.store_run is not None and kind not in ("retry", "mark"):
                assert self.store_run.status not in RUN_FINAL or run.status is self.store_run.status, \
                    "a finished run changed without an operator"
            self.store_run = copy_run(run)
        self.check_store()

    def check_store(self) -> None:
        """The committed run agrees with its committed tasks."""
        run = self.store_run
        assert run is not None
        assert_counts_match(run, self.store_tasks.values())
        statuses = [rec.status for rec in self.store_tasks.values()]
        assert (run.status in RUN_FINAL) == all(s in TASK_FINAL for s in statuses), \
            f"run {run.status} with tasks {statuses}"
        match run.status:
            case RunStatus.SUCCEEDED:
                assert set(statuses) == {TaskStatus.SUCCEEDED}, f"run succeeded with {statuses}"
            case RunStatus.FAILED:
                assert any(s in FAILED_STATES for s in statuses)
            case RunStatus.CANCELLED:
                assert TaskStatus.CANCELLED in statuses

    def publish(self, ch: Changes) -> None:
        for d in (item.message for item in ch.dispatches):
            # committed first; a redelivered report numbered like this attempt may be applied
            # in the same batch, so the record may already be past queued
            assert self.store_tasks[d.task].attempt >= d.attempt
            self.published.append(Delivery(d))
            self.ever_dispatched.add(d.task)
        for rec in ch.withdrawn:
            self.published = [e for e in self.published
                              if (e.dispatch.task, e.dispatch.attempt) != (rec.task, rec.attempt)]
        due_by_task = {timer.task: timer.at for timer in ch.timers}  # the writer keeps the last one
        for task, due in due_by_task.items():
            stored = self.store_tasks[task]
            if stored.status is TaskStatus.RETRY_WAIT:
                assert stored.retry_at == due
            elif stored.status is TaskStatus.RUNNING:
                assert stored.deadline_at == due
            self.timers = [timer for timer in self.timers if timer.task != task]
            self.timers.append(Timer(due, RUN_ID, task))

    # -- the agents' side --------------------------------------------------------------

    def execute(self, index: int, *, keep: bool = False, flip: bool = False,
                progress: bool = False, agent: str = "agent-1", lost: bool = False) -> None:
        """One delivery of a message; a lost agent reports it started, then nothing."""
        entry = self.published[index]
        d = entry.dispatch
        attempt = d.attempt + entry.delivered
        entry.delivered += 1
        if not (keep or lost):
            self.published.pop(index)
        self.executions += 1
        ids = {"run_id": d.run_id, "task": d.task, "attempt": attempt, "agent_id": agent,
               "delivery": entry.delivered}
        msgs: list[Report] = [TaskStarted(**ids, at=self.now)]
        if progress:
            msgs.append(TaskProgress(**ids, at=self.now, fraction=0.5, message="half"))
        if lost:
            pass
        elif (attempt <= self.fails_first[d.task]) != flip:
            msgs.append(TaskFailed(**ids, at=self.now, started_at=self.now, error_type="ValueError",
                                   message=f"attempt {attempt} failed"))
        else:
            output = _enc.encode({"task": d.task, "attempt": attempt, "execution": self.executions})
            msgs.append(TaskSucceeded(**ids, at=self.now, started_at=self.now,
                                      output=msgspec.Raw(output)))
        self.reports.extend(msgs)
        self.history.extend(msgs)
        self.origin.update((id(msg), d.attempt) for msg in msgs)

    def deliver(self, msgs: list[Report], *, ack: bool = True, lose: str | None = None) -> None:
        finished = self.finished
        assert not finished or not self.sched.is_active(RUN_ID)

        def apply(ch: Changes) -> None:
            applied = []
            for msg in msgs:
                applied.append(self.sched.on_report(msg, self.now, ch))
            if finished:
                assert not any(applied), "a report for a finished run was applied"
                assert not ch and not ch.dispatches and not ch.timers

        self.batch(apply, acked=msgs if ack else (), lose=lose)

    def fire(self, index: int, *, keep: bool = False, lose: str | None = None) -> None:
        due, run_id, task = astuple(self.timers[index] if keep else self.timers.pop(index))
        self.now = max(self.now, due)
        finished = self.finished

        def apply(ch: Changes) -> None:
            fired = self.sched.on_timer(run_id, task, self.now, ch)
            assert not (finished and (fired or ch or ch.dispatches)), "a timer moved a finished run"

        self.batch(apply, lose=lose)

    # -- the operator ------------------------------------------------------------------

    def records(self) -> tuple[RunRecord, list[TaskRecord]]:
        """What ``Operations`` passes: the run in memory when active, else the store's copy."""
        state = self.sched.run_state(RUN_ID)
        assert (state is None) == self.finished
        if state is not None:
            return state.run, list(state.tasks.values())
        assert self.store_run is not None
        self.live = {name: copy_task(rec) for name, rec in self.store_tasks.items()}
        return copy_run(self.store_run), list(self.live.values())

    def cancel(self, lose: str | None) -> None:
        active = not self.finished
        before = {name: rec.status for name, rec in self.live.items()}

        def apply(ch: Changes) -> None:
            in_flight = self.sched.cancel(RUN_ID, self.now, ch)
            if not active:
                assert in_flight is None and not ch and not ch.dispatches and not ch.cancelled_runs
                return
            assert in_flight is not None
            in_flight_before = {n for n, s in before.items() if s in (TaskStatus.QUEUED, TaskStatus.RUNNING)}
            assert {rec.task for rec in in_flight} == in_flight_before
            assert {rec.task for rec in ch.withdrawn} == {
                n for n, s in before.items() if s is TaskStatus.QUEUED}
            assert ch.cancelled_runs == [RUN_ID] and not ch.dispatches
            assert not self.sched.is_active(RUN_ID)
            assert (ch.runs[RUN_ID].status, ch.runs[RUN_ID].finished_at) == (RunStatus.CANCELLED, self.now)
            for name, old in before.items():
                assert self.live[name].status is (old if old in TASK_FINAL else TaskStatus.CANCELLED)

        if self.batch(apply, lose=lose, kind="cancel") and active:
            self.actions["cancel"] += 1

    def retry(self, lose: str | None) -> None:
        run, records = self.records()
        before, status_before = snapshot_tasks(records), run.status
        again = {name for name, (status, _, _) in before.items() if status in TASK_NOT_OK}

        def apply(ch: Changes) -> None:
            assert sorted(self.sched.retry(run, self.flow, records, self.now, ch)) == sorted(again)
            if not again:
                assert not ch and not ch.dispatches and run.status is status_before
                return
            assert (run.status, run.finished_at) == (RunStatus.RUNNING, None)
            assert self.sched.is_active(RUN_ID)
            for rec in records:
                status, attempt, output = before[rec.task]
                if rec.task in again:
                    assert rec.status in (TaskStatus.PENDING, TaskStatus.QUEUED)
                    assert rec.attempt == attempt + int(rec.status is TaskStatus.QUEUED)
                    assert rec.error_type is None
                else:  # succeeded tasks keep their output and attempt; the others go on
                    assert (rec.status, rec.attempt, bytes(rec.output)) == (status, attempt, output)

        if self.batch(apply, lose=lose, kind="retry", touched=again) and again:
            self.actions["retry"] += 1
            for name in again:
                self.marked.pop(name, None)

    def downstream(self, task: str) -> set[str]:
        found: set[str] = set()
        stack = list(self.flow.dependants.get(task, ()))
        while stack:
            name = stack.pop()
            if name not in found:
                found.add(name)
                stack.extend(self.flow.dependants.get(name, ()))
        return found

    def mark(self, task: str, status: TaskStatus, lose: str | None) -> None:
        run, records = self.records()
        tasks = {rec.task: rec for rec in records}
        blocked = set()  # what a mark succeeded may free
        if status is TaskStatus.SUCCEEDED:
            blocked = {n for n in self.downstream(task) if tasks[n].status is TaskStatus.UPSTREAM_FAILED}
        waiting_children = {c for c in self.flow.dependants.get(task, ())
                            if tasks[c].status in (TaskStatus.PENDING, TaskStatus.RETRY_WAIT)}
        active = not self.finished
        output = msgspec.Raw(_enc.encode({"task": task, "marked": sum(self.actions.values())}))

        def apply(ch: Changes) -> None:
            rec = self.sched.mark(run, self.flow, records, task, status, output, self.now, ch)
            if active and status is TaskStatus.SUCCEEDED:
                ch.withdrawn.append(rec)  # as Operations.mark does
            assert rec is tasks[task] and rec.status is status and rec.deadline_at is None
            assert ch.runs.get(RUN_ID) is run, "the run's counts changed: its row is written"
            if status is TaskStatus.SUCCEEDED:
                assert bytes(rec.output) == bytes(output)
            for name in blocked:  # freed exactly when none of its dependencies is still failed
                failed_deps = [d for d in self.deps[name] if tasks[d].status in TASK_NOT_OK]
                assert (tasks[name].status is TaskStatus.UPSTREAM_FAILED) == bool(failed_deps), name
            for name in waiting_children if status is TaskStatus.FAILED else ():
                assert tasks[name].status is TaskStatus.UPSTREAM_FAILED
            still_open = any(r.status not in TASK_FINAL for r in records)
            assert self.sched.is_active(RUN_ID) == still_open == (run.status is RunStatus.RUNNING)

        if self.batch(apply, lose=lose, kind="mark", touched={task} | blocked):
            self.actions[f"mark {status}"] += 1
            self.marked[task] = bytes(output)

    # -- the outcome -------------------------------------------------------------------

    def check_final(self) -> None:
        """Everything settled: one final state per task, and a run that agrees with them."""
        run = self.store_run
        assert run is not None and run.status in RUN_FINAL
        assert set(self.store_tasks) == set(self.flow.tasks)
        self.check_store()
        assert run.finished_at is not None
        assert run.counts.done == run.counts.total == len(self.store_tasks)
        assert run.counts.running == 0
        assert not self.sched.is_active(RUN_ID)
        for name, rec in self.store_tasks.items():
            check_history(rec)
            self.check_final_task(name, rec)

    def check_final_task(self, name: str, rec: TaskRecord) -> None:
        last = (rec.history[-1].attempt, rec.history[-1].outcome) if rec.history else None
        match rec.status:
            case TaskStatus.SUCCEEDED if name in self.marked:
                assert bytes(rec.output) == self.marked[name]
            case TaskStatus.SUCCEEDED:
                assert msgspec.json.decode(rec.output)["attempt"] == rec.attempt
                assert last == (rec.attempt, "succeeded")
            case TaskStatus.FAILED if name not in self.marked:
                assert rec.attempt > self.flow.tasks[name].retries, "failed with retries left"
                assert last is not None and last[0] == rec.attempt and last[1] in FAILED_OUTCOMES
            case TaskStatus.UPSTREAM_FAILED:
                assert any(self.store_tasks[d].status in TASK_NOT_OK for d in self.deps[name])
            case TaskStatus.CANCELLED:
                assert self.actions["cancel"] > 0
            case TaskStatus.FAILED:
                pass
            case other:
                pytest.fail(f"task {name} ended {other}")


@st.composite
def flows_with_timeouts(draw: st.DrawFn) -> tuple[FlowSpec, dict[str, int]]:
    """Random DAGs as above, some of whose tasks have a timeout (so a deadline timer)."""
    spec, fails_first = draw(flows_with_plans(max_tasks=20))
    timeouts = draw(st.lists(st.sampled_from([None, None, 5.0]), min_size=len(spec.tasks),
                             max_size=len(spec.tasks)))
    tasks = [msgspec.structs.replace(task, timeout_s=timeout)
             for task, timeout in zip(spec.tasks, timeouts, strict=True)]
    return flow(*tasks, name=spec.name), fails_first


OPERATOR_ACTIONS = ACTIONS + ("lost",) * 3 + ("cancel",) + ("retry",) * 2 + ("mark",) * 3
OPERATOR_STEP = st.tuples(
    st.sampled_from(OPERATOR_ACTIONS),
    st.integers(0, 2**16),  # which message, timer or task
    st.integers(0, 3),  # how many more reports in the same batch
    st.integers(0, 59),  # 0: lose the batch's commit, 1: lose its publishing; 2: flip an outcome
    st.integers(0, 3),  # bit 0: deliver again later (no ack) / mark succeeded; bit 1: progress, second agent
)


def operator_chaos_step(sim: OperatorSimulation, data: st.DataObject) -> None:
    """One thing happens: an agent runs (or loses) something, reports arrive, a timer fires,
    a crash, or an operator cancels, retries or marks."""
    action, pick, more, fate, flags = data.draw(OPERATOR_STEP)
    keep, other = bool(flags & 1), bool(flags & 2)
    sim.now += 0.5
    lose = {0: "commit", 1: "publish"}.get(fate)
    agent = "agent-2" if other else "agent-1"
    available = {"execute": sim.published, "lost": sim.published, "deliver": sim.reports,
                 "replay": sim.history, "timer": sim.timers}
    if not available.get(action, [None]):
        action = next((a for a in ("deliver", "execute", "timer") if available[a]), "crash")
    match action:
        case "execute" | "lost":
            sim.execute(pick % len(sim.published), keep=keep, flip=fate == 2, progress=other,
                        agent=agent, lost=action == "lost")
        case "deliver":
            picks = dict.fromkeys((pick + 7 * k) % len(sim.reports) for k in range(more + 1))
            sim.deliver([sim.reports[i] for i in picks], ack=not keep, lose=lose)
        case "replay":
            sim.deliver([sim.history[pick % len(sim.history)]], ack=False, lose=lose)
        case "timer":
            sim.fire(pick % len(sim.timers), keep=keep, lose=lose)
        case "crash":
            sim.crash()
        case "cancel":
            sim.cancel(lose)
        case "retry":
            sim.retry(lose)
        case "mark":
            names = sorted(sim.flow.tasks)
            sim.mark(names[pick % len(names)],
                     TaskStatus.SUCCEEDED if keep else TaskStatus.FAILED, lose)


@settings(max_examples=150, deadline=None)
@given(plan=flows_with_timeouts(), data=st.data())
def test_any_dag_under_chaos_with_cancel_retry_mark_and_lost_agents_finishes_consistently(
    plan: tuple[FlowSpec, dict[str, int]], data: st.DataObject
) -> None:
    spec, fails_first = plan
    sim = OperatorSimulation(spec, fails_first)
    for _ in range(data.draw(st.integers(0, 150), label="chaos steps")):
        operator_chaos_step(sim, data)
    for action in sim.actions:
        event(f"did: {action}")
    for outcome in {a.outcome for rec in sim.store_tasks.values() for a in rec.history}:
        event(f"an attempt ended {outcome}")
    sim.drain()
    assert sim.store_run is not None
    event(f"run {sim.store_run.status} after the chaos")
    sim.check_final()
    for _ in range(4 * len(sim.flow.tasks) + 4):  # retrying a failed run gets it through
        if sim.store_run.status is RunStatus.SUCCEEDED:
            break
        sim.retry(None)
        sim.drain()
        sim.check_final()
    assert sim.store_run.status is RunStatus.SUCCEEDED
