"""Property test of the gate with the real scheduler (hypothesis): whatever the order of
starts, results, failures, retries, cancels, limit changes and restarts (kill -9 between two
batches, with or without the last batch's messages sent), the committed holders of a limit
never outnumber it (unless it was lowered under them, and then only until they end), the
gate's counts are what is committed, nothing held is ever sent, and when the runs end every
slot is free."""

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.changes import Changes
from protocol.flows import ParamSpec
from tests.gate_harness import GateHarness, flow, t

WIDE = flow(*(t(f"w{i}", queue="gpu", retries=1) for i in range(4)), name="wide")
CAPPED = flow(t("one", max_active=1, retries=1), t("two", "one", queue="gpu"), name="capped",
              priority=2)
MAPPED = flow(t("m", queue="gpu", map_over="param:xs", params=(ParamSpec(name="xs"),),
                max_active=2), name="mapped")
KEYS = ("queue:gpu", "queue:default", "task:capped.one")

Op = st.tuples(st.integers(0, 9), st.integers(0, 1_000))


class Caps:
    """Each limit's ceiling: its value, or what held it when it was lowered, going down."""

    def __init__(self, h: GateHarness) -> None:
        self.h = h
        self.cap = {k: self._limit(k) for k in KEYS}

    def _limit(self, key: str) -> float:
        if key.startswith("task:"):
            return 1
        return self.h.limits.get(key, float("inf"))

    def lowered(self, key: str) -> None:
        self.cap[key] = max(self._limit(key), self.h.holding(key))

    def check(self) -> None:
        for key in KEYS:
            held = self.h.holding(key)
            assert held <= self.cap[key], (key, held, self.cap[key])
            assert self.h.gate.holding(key) == held, (key, self.h.gate.holding(key), held)
            self.cap[key] = max(self._limit(key), held)


def _step(h: GateHarness, caps: Caps, op: int, pick: int, runs: list[str]) -> None:
    live = h.live()
    msg = live[pick % len(live)] if live else None
    if op == 0 and len(runs) < 12:
        run_id = f"r{len(runs)}"
        runs.append(run_id)
        name = ("wide", "capped", "mapped")[pick % 3]
        h.start_run(run_id, name, priority=pick % 5 if pick % 2 else None,
                    params={"xs": list(range(pick % 5))} if name == "mapped" else None)
    elif op == 1 and msg is not None:
        h.started(msg)
    elif op in (2, 3) and msg is not None:
        h.succeed(msg)
    elif op == 4 and msg is not None:
        h.fail(msg)
    elif op == 5:
        h.fire_timers()
    elif op == 6:
        h.restart()
    elif op == 7 and msg is not None:  # kill -9 after a commit, before its messages went out
        h.succeed(msg, send=False)
        h.restart()
    elif op == 8:
        key = ("queue:gpu", "queue:default")[pick % 2]
        h.set_limit(key, None if pick % 7 == 0 else pick % 4)
        caps.lowered(key)
    elif op == 9 and runs:
        ch = Changes()
        h.sched.cancel(runs[pick % len(runs)], h.now, ch)
        h.commit(ch)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(Op, max_size=120), gpu=st.integers(1, 3), window=st.integers(1, 4))
def test_limits_hold_through_reports_retries_restarts_and_no_slot_leaks(
    ops: list[tuple[int, int]], gpu: int, window: int
) -> None:
    h = GateHarness([WIDE, CAPPED, MAPPED], window=window, limits={"queue:gpu": gpu})
    caps = Caps(h)
    runs: list[str] = []
    for op, pick in ops:
        _step(h, caps, op, pick, runs)
        caps.check()
    h.set_limit("queue:gpu", 2)  # a limit of 0 would hold the rest for ever
    h.set_limit("queue:default", None)
    caps.lowered("queue:gpu")
    for _ in range(500):  # the rest runs to the end
        live = h.live()
        if not live and not h.timers:
            break
        h.fire_timers()
        for msg in live:
            h.succeed(msg)
            caps.check()
    assert h.finished(), "a run is stuck: a task waits with room, or a slot leaked"
    assert not h.gate.holders and not h.gate.blocked
    assert all(not members for members in h.gate.members.values())
    assert not +h.gate.windows.outstanding and not +h.gate.windows.unsent
