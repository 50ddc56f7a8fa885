"""Property test of the scheduler's part for mapped tasks (pure, with hypothesis): whatever the
order of results, failures, retries and restarts, a mapped task never has more task messages
out than its window, runs every item, and ends with each item's output in its place (None for
an item that failed every attempt it had)."""

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.flows import ParamSpec
from protocol.states import TaskStatus
from tests.map_harness import H, flow, t


def _spec(chunk: int, max_active: int, retries: int, allow: int) -> object:
    return flow(t("m", map_over="param:xs", params=(ParamSpec(name="xs"),), chunk=chunk,
                  max_active=max_active, retries=retries, allow_failures=float(allow)),
                t("after", "m", inputs=("m",)))


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 30), chunk=st.integers(1, 4), max_active=st.integers(1, 3),
       retries=st.integers(0, 2), choices=st.lists(st.integers(0, 9), max_size=400),
       doomed=st.sets(st.integers(0, 29), max_size=4))
def test_a_map_keeps_its_window_runs_every_item_and_ends_with_every_output_in_place(
    n: int, chunk: int, max_active: int, retries: int, choices: list[int], doomed: set[int]
) -> None:
    h = H(_spec(chunk, max_active, retries, allow=30), params={"xs": list(range(n))})
    choice = iter(choices)
    for _ in range(2_000):
        pending = sorted(h.pending_msgs(), key=lambda d: d.task)
        assert len(pending) <= max_active
        if not pending:
            if not h.timers:
                break
            h.fire_all()
            continue
        pick = next(choice, 0)
        if pick == 9:  # a kill -9 and a restart from what the store holds
            h.restart()
            continue
        d = pending[pick % len(pending)]
        if chunk > 1:
            items = range(d.first_index, d.first_index + len(d.chunk or []))
            h.chunk_report(d.task, [(i, i not in doomed and pick % 3 != 1) for i in items])
        elif d.first_index in doomed or pick % 3 == 1:
            h.fail(d.task)
        else:
            h.succeed(d.task, b"%d" % d.first_index)
    m = h.rec("m")
    assert m.status is TaskStatus.SUCCEEDED, (m.status, m.note, m.error_message)
    outputs = msgspec.json.decode(bytes(m.output))
    assert len(outputs) == n
    for i, value in enumerate(outputs):
        assert value in (i, None), (i, value)
        if i in doomed:
            assert value is None  # never succeeded: none of its attempts could
