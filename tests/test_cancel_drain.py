"""The tasks of runs a cancel_other schedule cancelled, waited for until their agents stopped."""

import time

from coordinator.agents import AgentRegistry
from coordinator.cancel_drain import CancelDrains
from protocol.messages import AgentHeartbeat, TaskFailed, TaskStarted
from protocol.records import TaskRecord
from protocol.states import TaskStatus


def _rec(task: str, agent: str | None = None, attempt: int = 1,
         status: TaskStatus | None = None) -> TaskRecord:
    """As the run had it just before the cancel: running on ``agent``, or queued."""
    status = status or (TaskStatus.QUEUED if agent is None else TaskStatus.RUNNING)
    return TaskRecord(run_id="r1", task=task, status=status, attempt=attempt, agent_id=agent,
                      started_at=None if status is TaskStatus.QUEUED else 1.0)


def _failed(task: str, run_id: str = "r1", attempt: int = 1) -> TaskFailed:
    return TaskFailed(run_id=run_id, task=task, attempt=attempt, agent_id="a1", at=2.0,
                      started_at=1.0, error_type="Cancelled", message="the run was cancelled")


def _started(task: str) -> TaskStarted:
    return TaskStarted(run_id="r1", task=task, attempt=1, agent_id="a2", at=2.0)


def test_the_wait_ends_with_the_report_of_the_last_task_an_agent_was_running() -> None:
    drains = CancelDrains(agent_alive=lambda _: True)
    assert drains.hold("nightly", "r1", [_rec("a", "a1"), _rec("b", "a1")], now=0.0)
    assert drains.report(_failed("a")) is None and drains.draining("nightly")
    assert drains.report(_failed("other", run_id="r9")) is None  # not waited for
    assert drains.sweep(now=1000.0) == []  # agents alive: no end by time
    assert drains.report(_failed("b")) == "nightly"
    assert not drains.draining("nightly") and not drains


def test_nothing_in_flight_means_no_wait() -> None:
    drains = CancelDrains(agent_alive=lambda _: True)
    assert not drains.hold("nightly", "r1", [], now=0.0)
    assert not drains


def test_a_task_whose_agent_is_lost_is_waited_for_no_more() -> None:
    alive = {"a1": True}
    drains = CancelDrains(agent_alive=lambda agent: alive.get(agent, False))
    drains.hold("nightly", "r1", [_rec("a", "a1")], now=0.0)
    assert drains.sweep(now=5.0) == []
    alive["a1"] = False
    assert drains.sweep(now=6.0) == ["nightly"]


def test_a_queued_task_is_waited_for_a_grace_unless_an_agent_says_it_started_it() -> None:
    drains = CancelDrains(agent_alive=lambda agent: agent == "a2", queued_grace_s=5.0)
    drains.hold("nightly", "r1", [_rec("a"), _rec("b")], now=0.0)
    assert drains.report(_started("b")) is None  # an agent had it: now waited for until done
    assert drains.sweep(now=4.9) == []
    assert drains.sweep(now=5.0) == []  # 'a' is past its grace, 'b' is still running
    assert drains.draining("nightly")
    assert drains.report(_failed("b")) == "nightly"


def test_a_deleted_schedule_waits_for_nothing() -> None:
    drains = CancelDrains(agent_alive=lambda _: True)
    drains.hold("nightly", "r1", [_rec("a", "a1")], now=0.0)
    drains.hold("hourly", "r2", [_rec("a", "a1")], now=0.0)
    drains.forget("nightly")
    assert not drains.draining("nightly") and drains.draining("hourly")
    assert drains.report(_failed("a")) is None


def test_only_tasks_an_agent_may_have_are_waited_for() -> None:
    drains = CancelDrains(agent_alive=lambda _: True)
    done = _rec("done", status=TaskStatus.SUCCEEDED)
    mapped = _rec("mapped", status=TaskStatus.RUNNING)  # its instances run, not itself
    assert not drains.hold("nightly", "r1", [done, mapped, _rec("waits", status=TaskStatus.PENDING)],
                           now=0.0)
    assert drains.hold("nightly", "r1", [_rec("fan[3]", "a1")], now=0.0)


def test_a_report_of_an_older_attempt_ends_nothing() -> None:
    drains = CancelDrains(agent_alive=lambda _: True)
    drains.hold("nightly", "r1", [_rec("a", "a1", attempt=2)], now=0.0)
    assert drains.report(_failed("a", attempt=1)) is None and drains.draining("nightly")
    assert drains.report(_failed("a", attempt=3)) == "nightly"  # a redelivery's attempt


def test_after_a_restart_a_task_is_waited_for_until_its_report_or_a_deadline() -> None:
    drains = CancelDrains(agent_alive=lambda _: True)  # its agent may be busy cleaning up
    drains.hold_task("nightly", "r1", "a", 1, "a1", until=15.0)  # its report may have come
    assert drains.sweep(now=14.9) == [] and drains.draining("nightly")
    assert drains.sweep(now=15.0) == ["nightly"]
    drains.hold_task("nightly", "r1", "b", 1, "a1", until=15.0)
    assert drains.report(_failed("b")) == "nightly"  # it came: no need to wait longer


def test_a_new_coordinator_counts_agents_it_has_not_heard_from_yet_as_maybe_running() -> None:
    registry = AgentRegistry(lost_after_s=15.0)
    assert registry.may_be_running("a1")  # no heartbeat heard yet: its next one will tell
    registry.beat(AgentHeartbeat(agent_id="a2", host="h", pid=1, queues=("default",),
                                 functions=(), slots_total=1, slots_busy=0, started_at=0.0,
                                 at=0.0),
                  now=time.time())
    assert registry.may_be_running("a1")
    registry.first_beat_at = time.time() - 16.0
    assert not registry.may_be_running("a1")  # others beat for a while, not it: gone
