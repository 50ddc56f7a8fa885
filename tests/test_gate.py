"""The gate, driven directly with the real scheduler (no I/O): limits per queue and per task,
held tasks committed as held with a note, slots freed as tasks end, restarts that rebuild it
from what was committed, the release window and priorities."""

from coordinator.changes import Changes
from coordinator.release_window import GateSettings, Windows
from protocol.states import TaskStatus
from tests.gate_harness import GateHarness, flow, t

WIDE = flow(*(t(f"w{i}", queue="gpu") for i in range(6)), name="wide")
CAPPED = flow(t("one", max_active=1), t("two", "one"), name="capped")


def test_a_queue_limit_holds_the_rest_back_committed_as_held_with_a_note() -> None:
    h = GateHarness([WIDE], limits={"queue:gpu": 2})
    h.start_run("r1", "wide")
    assert len(h.live()) == 2
    held = [r for r in h.db.values() if r.held]
    assert len(held) == 4
    assert all(r.status is TaskStatus.QUEUED for r in held)
    assert held[0].note is not None
    assert held[0].note.startswith("waiting: limit queue:gpu 2/2 (held by run r1 task w")
    assert h.holding("queue:gpu") == 2


def test_a_slot_frees_when_its_task_ends_and_the_next_goes_in_the_same_batch() -> None:
    h = GateHarness([WIDE], limits={"queue:gpu": 2})
    h.start_run("r1", "wide")
    first = h.live()[0]
    h.succeed(first)
    live = h.live()
    assert len(live) == 2 and first not in live
    assert sum(r.held for r in h.db.values()) == 3
    released = [r for r in h.db.values() if r.status is TaskStatus.QUEUED and not r.held]
    assert all(r.note is None for r in released)


def test_every_task_runs_and_no_slot_is_left_held() -> None:
    h = GateHarness([WIDE], limits={"queue:gpu": 2})
    h.start_run("r1", "wide")
    h.start_run("r2", "wide")
    while h.live():
        assert h.holding("queue:gpu") <= 2
        msg = h.live()[0]
        h.started(msg)
        h.succeed(msg)
    assert h.finished()
    assert not h.gate.holders and not h.gate.blocked
    assert h.gate.holding("queue:gpu") == 0


def test_a_task_max_active_holds_across_runs() -> None:
    h = GateHarness([CAPPED])
    for i in range(3):
        h.start_run(f"r{i}", "capped")
    assert [m.run_id for m in h.live()] == ["r0"]
    h.succeed(h.live()[0])
    assert {m.task for m in h.live()} == {"one", "two"}
    assert h.holding("task:capped.one") == 1


def test_a_restart_keeps_held_tasks_held_and_holders_holding() -> None:
    h = GateHarness([WIDE], limits={"queue:gpu": 2})
    h.start_run("r1", "wide")
    h.started(h.live()[0])
    h.restart()
    assert h.gate.holding("queue:gpu") == 2
    assert len(h.gate.blocked) == 4
    assert h.holding("queue:gpu") == 2
    h.succeed(h.live()[0])
    assert len(h.gate.blocked) == 3 and h.holding("queue:gpu") == 2


def test_raising_a_limit_releases_waiters_and_lowering_it_stops_nobody() -> None:
    h = GateHarness([WIDE], limits={"queue:gpu": 1})
    h.start_run("r1", "wide")
    h.set_limit("queue:gpu", 4)
    assert len(h.live()) == 4
    h.set_limit("queue:gpu", 1)
    assert len(h.live()) == 4  # nobody is preempted
    for msg in h.live()[:3]:
        h.succeed(msg)
    assert len(h.live()) == 1  # none released while over the lowered limit
    h.set_limit("queue:gpu", None)
    assert len(h.live()) == 3


def test_a_cancelled_run_frees_its_slots_and_its_held_tasks_are_dropped() -> None:
    h = GateHarness([WIDE], limits={"queue:gpu": 2})
    h.start_run("r1", "wide")
    h.start_run("r2", "wide")
    ch = Changes()
    h.sched.cancel("r1", h.now, ch)
    h.commit(ch)
    assert {m.run_id for m in h.live()} == {"r2"} and len(h.live()) == 2
    assert not any(r.held for r in h.db.values() if r.run_id == "r1")


def test_beyond_the_window_tasks_wait_in_memory_and_higher_priority_goes_first() -> None:
    many = flow(*(t(f"n{i}") for i in range(10)), name="many")
    urgent = flow(t("u"), name="urgent", priority=9)
    h = GateHarness([many, urgent], window=3)
    h.start_run("r0", "many")
    assert len(h.live()) == 3
    assert not any(r.held for r in h.db.values())  # nothing written for the window
    h.start_run("r9", "urgent")
    h.succeed(h.live()[0])
    assert h.order[-1] == ("r9", "u")


def test_waiting_raises_priority_so_nothing_starves() -> None:
    low = flow(t("l"), name="low")
    high = flow(t("h"), name="high", priority=1)
    h = GateHarness([low, high], window=1, aging_s=10.0)
    h.start_run("r0", "low")   # sent at once
    h.start_run("old", "low")  # waits from now
    h.now += 60                 # six priorities' worth of waiting
    h.start_run("new", "high")
    h.succeed(h.live()[0])
    assert h.order[-1] == ("old", "l")


def test_a_restart_sends_waiting_tasks_through_the_window_again() -> None:
    many = flow(*(t(f"n{i}") for i in range(10)), name="many")
    h = GateHarness([many], window=3)
    h.start_run("r0", "many")
    h.restart()
    assert h.gate.windows.outstanding["default"] == 3 and h.gate.windows.unsent["default"] == 7
    while h.live():
        h.succeed(h.live()[0])
    assert h.finished() and not h.gate.holders


def test_a_busy_queue_s_window_grows_with_its_pace_and_keeps_it_while_idle() -> None:
    windows = Windows(GateSettings(release_window=10, release_window_s=0.5))
    now = 100.0
    windows.sent("q", now)  # busy from now
    for step in range(1, 5):  # 400 tasks a second taken
        for _ in range(100):
            windows.sent("q", now)
            windows.left("q", waiting=False)
        windows.measure(now + step * 0.25)
    assert windows.size["q"] == 200  # half a second's worth
    windows.left("q", waiting=False)  # idle
    windows.sent("q", now + 60)  # busy again a minute later: measured from then
    windows.left("q", waiting=False)
    windows.measure(now + 60.5)
    assert windows.size["q"] == 100  # 2 a second now, smoothed with the pace before
