"""A mapped task in the dashboard: its box counts its instances by state, its panel and the
instances screen list them failed first (a page per state through the API, never all of
them), one instance opens with its log; live as the task goes on — over fixed data (Textual
Pilot) and against the real stack."""

import re
from collections.abc import Awaitable, Callable, Iterator

import msgspec
import pytest
from textual.widgets import DataTable

from coordinator.service import Coordinator
from flowforge.client import Client
from flowforge.connection import ConnectOptions
from flowforge.registry import REGISTRY
from protocol.flows import FlowSpec
from protocol.messages import TaskLog
from protocol.records import Attempt, RunCounts, RunDetail, RunRecord, TaskRecord
from protocol.states import RunStatus, TaskStatus
from tests import mapflows
from tests.memory_source import MemorySource, flow_detail
from tests.test_tui_app import SIZE, app_for, open_task, panel_text, shown, text_of
from tests.test_tui_support import T0, memory_source, until, utc
from tui.app import DashboardApp
from tui.client_source import ClientSource
from tui.dag_view import DagView
from tui.instances_view import InstancesScreen
from tui.map_rows import MapShown, caption, listed_note, short
from tui.run_view import RunScreen

RUN = "run-mapped-3"
FAILED = {4: "item 4 (index 4) was asked to fail", 17: "item 17 (index 17) was asked to fail"}
TRACEBACK = '''Traceback (most recent call last):
  File "/srv/tests/mapflows.py", line 21, in square
    raise ValueError(f"item {item} (index {map_index}) was asked to fail")
ValueError: item 17 (index 17) was asked to fail
'''


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    with utc():
        yield


def _fan_spec() -> FlowSpec:
    """numbers → square (mapped) → total, left out of the registry (other tests register all),
    without the functions' source (its version, on screen, stays when they change)."""
    saved = (dict(REGISTRY.flows), dict(REGISTRY.replace), dict(REGISTRY.functions))
    try:
        spec = mapflows.register_fan(allow_failures=5)
    finally:
        REGISTRY.flows, REGISTRY.replace, REGISTRY.functions = saved
    tasks = tuple(msgspec.structs.replace(t, doc="", source="") for t in spec.tasks)
    return msgspec.structs.replace(spec, tasks=tasks)


FAN = _fan_spec()


def square(done: int = 37, failed: int = 2) -> TaskRecord:
    return TaskRecord(run_id=RUN, task="square", status=TaskStatus.RUNNING, attempt=1,
                      queued_at=T0 + 31, started_at=T0 + 31, progress=done / 100,
                      note=f"mapped: {done}/100 done, {failed} failed (index 4, 17)")


def instance(index: int, status: TaskStatus = TaskStatus.SUCCEEDED) -> TaskRecord:
    start = T0 + 31 + index * 0.5
    rec = TaskRecord(run_id=RUN, task=f"square~{index}", status=status, attempt=1,
                     agent_id=f"agent-{1 + index % 2}", queued_at=start - 0.1, started_at=start,
                     finished_at=None if status is TaskStatus.RUNNING else start + 0.2,
                     output=msgspec.Raw(str(index * index).encode())
                     if status is TaskStatus.SUCCEEDED else msgspec.Raw(b"null"))
    if index in FAILED:
        rec.error_type, rec.error_message = "ValueError", FAILED[index]
        rec.traceback = TRACEBACK.replace("17", str(index))
        rec.history = [Attempt(attempt=1, agent_id=rec.agent_id, queued_at=start - 0.1,
                               started_at=start, finished_at=start + 0.2, outcome="failed",
                               error_type="ValueError", error_message=FAILED[index])]
    return rec


def instances() -> list[TaskRecord]:
    """40 made of 100: 35 succeeded, 4 and 17 failed, 37 to 39 running."""
    return [instance(i, TaskStatus.FAILED if i in FAILED else
                     TaskStatus.RUNNING if i >= 37 else TaskStatus.SUCCEEDED) for i in range(40)]


def mapped_run() -> RunDetail:
    ok = TaskStatus.SUCCEEDED
    tasks = [TaskRecord(run_id=RUN, task="numbers", status=ok, attempt=1, agent_id="agent-1",
                        started_at=T0 + 30, finished_at=T0 + 30.5,
                        output=msgspec.Raw(msgspec.json.encode(list(range(100))))),
             TaskRecord(run_id=RUN, task="not_a_list", status=ok, attempt=1, agent_id="agent-2",
                        started_at=T0 + 30, finished_at=T0 + 30.2, output=msgspec.Raw(b'{"n":3}')),
             square(), TaskRecord(run_id=RUN, task="total")]
    run = RunRecord(run_id=RUN, flow="fan", version=FAN.version(), status=RunStatus.RUNNING,
                    params={"n": 100, "fail_on": [4, 17]}, created_at=T0 + 30,
                    started_at=T0 + 30, source="cli",
                    counts=RunCounts(total=4, done=2, succeeded=2, running=1))
    return RunDetail(run=run, tasks=tasks)


def map_source() -> MemorySource:
    """The fixed dashboard data plus a run of ``fan`` whose ``square`` maps 100 items."""
    source = memory_source()
    source.flow_details["fan"] = flow_detail(FAN, T0)
    source.details[RUN] = mapped_run()
    for rec in instances():
        source.push(rec)
    source.logs[(RUN, "square~4")] = "squaring item 4 at index 4\n"
    source.logs[(RUN, "square~17")] = "squaring item 17 at index 17\n"
    return source


# -- what is drawn ----------------------------------------------------------------------------


def test_the_caption_counts_by_state_and_drops_detail_to_fit() -> None:
    counts = {"succeeded": 35, "failed": 2, "running": 2, "queued": 1}
    assert caption(counts, 100, 20) == "37/100 ✓35 ✗2 ▶3"
    assert caption(counts, 100, 14) == "37/100 ✗2 ▶3"
    assert caption(counts, 100, 9) == "37/100 ✗2"
    assert caption({"succeeded": 3}, None, 20) == "3 done ✓3"
    big = {"succeeded": 999_000, "failed": 12, "running": 1000}
    assert caption(big, 1_000_000, 30) == "999k/1.0M ✓999k ✗12 ▶1.0k"
    assert [short(n) for n in (999, 1_000, 12_345, 999_999, 2_500_000)] == [
        "999", "1.0k", "12k", "999k", "2.5M"]


def test_the_note_under_the_instances_says_what_is_not_listed() -> None:
    listed = [instance(4, TaskStatus.FAILED)]
    note = listed_note(MapShown("square", {"failed": 2, "succeeded": 35}, 100, listed, True))
    assert note == ("1 of 37 instances made, failed first, then those going on, then the rest; "
                    "not listed: 1 failed, 35 succeeded")
    assert listed_note(MapShown("square", listed=True)).startswith("no instances yet")
    assert listed_note(None).startswith("asking the coordinator")


# -- the dashboard over fixed data ------------------------------------------------------------


async def test_a_mapped_task_s_box_counts_its_instances_and_its_panel_lists_failures_first() -> None:
    source = map_source()
    app = app_for(source)
    async with app.run_test(size=SIZE):
        dag = await open_task(app, RUN, "numbers")
        await until(lambda: "37/100 ✓35 ✗2 ▶3" in shown(dag), what="the box's counts")
        assert source.instance_queries == [(RUN, "square", None, -1, 0, True)]
        dag.selected = "square"
        await until(lambda: "ValueError: item 17" in panel_text(app, "#run-task"))
        text = panel_text(app, "#run-task")
        assert "✗ 2 failed   ● 3 running   ✓ 35 succeeded   60 not started   of 100 items" in text
        rows = [line.split()[:2] for line in text.splitlines()
                if re.match(r"\s*\d+\s+[✗●✓]", line)]
        assert rows[:5] == [["4", "✗"], ["17", "✗"], ["37", "●"], ["38", "●"], ["39", "●"]]
        assert len(rows) == 10, "the panel lists ten"
        listing = source.instance_queries[1:]
        assert [q[2] for q in listing] == ["failed", "running", "succeeded"]
        assert all(q[4] <= 10 for q in listing) and [q[5] for q in listing] == [True, False, False]


async def test_enter_lists_the_instances_failed_first_and_one_opens_with_its_log() -> None:
    source = map_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        dag = await open_task(app, RUN, "square")
        await until(lambda: "37/100" in shown(dag))
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, InstancesScreen))
        screen = app.screen
        table = screen.query_one("#map-instances", DataTable)
        await until(lambda: table.row_count == 40)
        cells = [[str(c) for c in table.get_row_at(i)] for i in range(6)]
        assert [c[:2] for c in cells] == [["4", "✗ failed"], ["17", "✗ failed"],
                                          ["37", "● running"], ["38", "● running"],
                                          ["39", "● running"], ["0", "✓ succeeded"]]
        assert cells[0][5] == "ValueError: item 4 (index 4) was asked to fail"
        assert "all 40 instances made" in text_of(screen.query_one("#map-note"))
        await until(lambda: "squaring item 4 at index 4" in panel_text(app, "#map-instance"))
        detail = panel_text(app, "#map-instance")
        assert "square~4" in detail and "Traceback" in detail and "attempts" in detail
        await pilot.press("down")
        await until(lambda: "squaring item 17" in panel_text(app, "#map-instance"))
        source.push(TaskLog(run_id=RUN, task="square~17", attempt=1, agent_id="agent-2", at=0.0,
                            text="a line sent later\n"))
        await until(lambda: "a line sent later" in panel_text(app, "#map-instance"))
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, RunScreen))
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, InstancesScreen))
        await pilot.press("r")  # a tab's key leaves the run and its instances
        await until(lambda: not isinstance(app.screen, RunScreen | InstancesScreen))
        assert app.query_one("#tabs").active == "runs"  # type: ignore[attr-defined]
        assert not [k for k in app.hub.model.logs if k[0] == RUN], "their logs are not followed"


async def test_the_counts_follow_the_mapped_task_s_events_a_fetch_a_second_at_most() -> None:
    source = map_source()
    app = app_for(source)
    async with app.run_test(size=SIZE):
        dag = await open_task(app, RUN, "numbers")
        await until(lambda: "37/100 ✓35 ✗2 ▶3" in shown(dag))
        before = len(source.instance_queries)
        for done in range(38, 58):  # twenty more end, each announced by the task's record
            source.push(instance(done - 1))
            source.push(instance(done + 2, TaskStatus.RUNNING))
            source.push(square(done))
        await until(lambda: "57/100 ✓55 ✗2 ▶3" in shown(dag), what="the last counts")
        fetched = len(source.instance_queries) - before
        assert 1 <= fetched <= 5, f"{fetched} fetches for 20 changes: throttled"


# -- against the real stack -------------------------------------------------------------------


async def test_a_mapped_run_on_the_real_stack_shows_its_counts_failures_and_an_instance_s_log(
    coordinator: Coordinator, start_agent: Callable[..., Awaitable[object]], client: Client,
    nats_opts: ConnectOptions,
) -> None:
    flow = mapflows.register_fan(allow_failures=2)
    await start_agent(concurrency=8)
    await client.register([flow])
    run = await client.start("fan", {"n": 50, "fail_on": [4, 17]})
    app = DashboardApp(ClientSource(nats_opts), tick_s=None)
    async with app.run_test(size=SIZE) as pilot:
        app.open_run(run.run_id)
        await until(lambda: isinstance(app.screen, RunScreen) and app.screen.spec is not None)
        dag = app.screen.query_one("#run-dag", DagView)
        await until(lambda: "50/50 ✓48 ✗2" in shown(dag), what="the final counts")
        dag.selected = "square"
        await until(lambda: "ValueError: item 17" in panel_text(app, "#run-task"))
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, InstancesScreen))
        table = app.screen.query_one("#map-instances", DataTable)
        await until(lambda: table.row_count == 50)
        assert [str(table.get_row_at(i)[0]) for i in range(3)] == ["4", "17", "0"]
        await until(lambda: "squaring item 4 at index 4" in panel_text(app, "#map-instance"))
        assert "Traceback" in panel_text(app, "#map-instance")
