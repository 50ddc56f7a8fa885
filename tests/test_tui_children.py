"""A task's child tasks in the dashboard: its box's top edge counts them by state, its panel and the
children screen list them failed first (a page per state through the API, never all of them), a
child with children of its own opens theirs; live as their events come, and never among the
run's own tasks — over fixed data (Textual Pilot) and against the real stack."""

import re
from collections.abc import Awaitable, Callable, Iterator

import msgspec
import pytest
from textual.widgets import DataTable

from coordinator.service import Coordinator
from flowforge.client import Client
from flowforge.connection import ConnectOptions
from flowforge.registry import REGISTRY
from protocol.children import ChildInfo
from protocol.flows import FlowSpec
from protocol.records import RunCounts, RunDetail, RunRecord, TaskRecord
from protocol.states import RunStatus, TaskStatus
from tests import childflows
from tests.memory_source import MemorySource, flow_detail
from tests.test_tui_app import SIZE, app_for, open_task, panel_text, shown, text_of
from tests.test_tui_support import T0, memory_source, until, utc
from tui.app import DashboardApp
from tui.child_rows import badge
from tui.children_view import ChildrenScreen
from tui.client_source import ClientSource
from tui.dag_layout import layout, nodes_of
from tui.dag_view import DagView
from tui.model import Model
from tui.run_view import RunScreen

RUN = "run-kids-1"
PICKY = "tests.childflows:picky"
MIDDLE = "tests.childflows:middle"
ERROR = "item {0} at {0} is not wanted"
OK, FAILED, RUNNING, QUEUED = (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.RUNNING,
                               TaskStatus.QUEUED)


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    with utc():
        yield


def _chain_spec() -> FlowSpec:
    """prepare → train_model → report, left out of the registry, without the functions'
    source (its version, on screen, stays when they change)."""
    saved = (dict(REGISTRY.flows), dict(REGISTRY.replace), dict(REGISTRY.functions))
    try:
        spec = childflows.register_chain()
    finally:
        REGISTRY.flows, REGISTRY.replace, REGISTRY.functions = saved
    tasks = tuple(msgspec.structs.replace(t, doc="", source="") for t in spec.tasks)
    return msgspec.structs.replace(spec, tasks=tasks)


CHAIN = _chain_spec()


def child(parent: str, seq: int, status: TaskStatus = OK, function: str = PICKY) -> ChildInfo:
    start = T0 + 40 + seq * 0.25
    ended = status in (OK, FAILED)
    return ChildInfo(parent=parent, seq=seq, function=function, status=status, attempt=1,
                     agent_id=f"agent-{1 + seq % 2}", started_at=start,
                     finished_at=start + 0.1 if ended else None,
                     output=msgspec.Raw(str(seq).encode() if status is OK else b"null"),
                     error_type="ValueError" if status is FAILED else None,
                     error_message=ERROR.format(seq) if status is FAILED else None)


def children() -> list[tuple[str, ChildInfo]]:
    """train_model's twelve: ten ``picky`` (3 and 8 failed, 9 running), two ``middle`` with three
    of their own each (``train_model/11`` still going)."""
    kids = [child("train_model", i, FAILED if i in (3, 8) else RUNNING if i == 9 else OK)
            for i in range(10)]
    kids += [child("train_model", 10, function=MIDDLE),
             child("train_model", 11, RUNNING, function=MIDDLE)]
    kids += [child("train_model/10", i, function="tests.childflows:leaf") for i in range(3)]
    kids += [child("train_model/11", i, status, "tests.childflows:leaf")
             for i, status in enumerate((OK, RUNNING, QUEUED))]
    return [(RUN, k) for k in kids]


def chain_run() -> RunDetail:
    tasks = [TaskRecord(run_id=RUN, task="prepare", status=OK, attempt=1, agent_id="agent-1",
                        started_at=T0 + 39, finished_at=T0 + 39.5, output=msgspec.Raw(b"10")),
             TaskRecord(run_id=RUN, task="train_model", status=RUNNING, attempt=1,
                        agent_id="agent-2", queued_at=T0 + 39.6, started_at=T0 + 39.7),
             TaskRecord(run_id=RUN, task="report")]
    run = RunRecord(run_id=RUN, flow="chain", version=CHAIN.version(), status=RunStatus.RUNNING,
                    params={"n": 10}, created_at=T0 + 39, started_at=T0 + 39, source="cli",
                    counts=RunCounts(total=3, done=1, succeeded=1, running=1))
    return RunDetail(run=run, tasks=tasks)


def kids_source() -> MemorySource:
    """The fixed dashboard data plus a run of ``chain`` whose ``train_model`` has children."""
    source = memory_source()
    source.flow_details["chain"] = flow_detail(CHAIN, T0)
    source.details[RUN] = chain_run()
    source.child_infos.update({(RUN, f"{k.parent}/{k.seq}"): k for _, k in children()})
    return source


def event(parent: str, seq: int, status: TaskStatus, attempt: int = 1) -> TaskRecord:
    start = T0 + 40 + seq * 0.25
    return TaskRecord(run_id=RUN, task=f"{parent}/{seq}", status=status, attempt=attempt,
                      agent_id="agent-1", started_at=start,
                      finished_at=start + 0.3 if status in (OK, FAILED) else None,
                      output=msgspec.Raw(str(seq).encode() if status is OK else b"null"))


def rows(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


# -- what is drawn ----------------------------------------------------------------------------


def test_the_badge_counts_by_state_and_keeps_the_failures_longest() -> None:
    counts = {"succeeded": 8, "failed": 2, "running": 1, "queued": 1}
    assert badge(counts, 20) == "10/12 ✓8 ✗2 ▶2"
    assert badge(counts, 12) == "10/12 ✗2 ▶2"
    assert badge(counts, 6) == "✗2 ▶2"
    assert badge(counts, 3) == "✗2"
    assert badge({"running": 3}, 3) == "0/3" and badge({"running": 3}, 2) == "▶3"
    assert badge({"succeeded": 3}, 2) == "", "nothing that needs a look, and no room"
    assert badge({}, 20) == ""


def test_a_box_s_top_edge_carries_its_badge_when_one_fits() -> None:
    dag = layout(nodes_of(CHAIN))
    text = dag.text(badge=lambda name, width: badge({"succeeded": 3, "failed": 1}, width)
                    if name == "train_model" else "")
    assert "╭─ 4/4 ✓3 ✗1 ───╮" in text and text.count("╭") == 3
    assert dag.text(badge=lambda name, width: "") == dag.text(), "no badge: a plain edge"


def test_the_model_keeps_a_child_s_record_out_of_the_run_s_tasks_and_passes_on_the_newest() -> None:
    model = Model()
    first = model.apply(event("train_model", 3, RUNNING), 0.0)
    assert first.children == {(RUN, "train_model/3"): event("train_model", 3, RUNNING)}
    assert not first.runs and RUN not in model.tasks and model.seq == 0
    first.merge(model.apply(event("train_model", 3, FAILED), 0.0))
    assert [r.status for r in first.children.values()] == [FAILED] and first


# -- the dashboard over fixed data ------------------------------------------------------------


async def test_a_task_s_box_counts_its_children_and_its_panel_lists_the_failed_first() -> None:
    source = kids_source()
    app = app_for(source)
    async with app.run_test(size=SIZE):
        dag = await open_task(app, RUN, "prepare")
        await until(lambda: "╭─ 10/12 ✗2 ▶2 ─╮" in shown(dag), what="the box's badge")
        assert source.child_queries == [(RUN, None, "", 0, None)], "the counts alone"
        dag.selected = "train_model"
        await until(lambda: "ValueError: item 8" in panel_text(app, "#run-task"))
        text = panel_text(app, "#run-task")
        assert "✗ 2 failed   ● 2 running   ✓ 8 succeeded" in text
        listed = [line.split()[:2] for line in text.splitlines()
                  if re.match(r"\s*\d+\s+[✗●✓]", line)]
        assert listed[:4] == [["3", "✗"], ["8", "✗"], ["9", "●"], ["11", "●"]]
        assert len(listed) == 10, "the panel lists ten"
        asked = source.child_queries[-3:]
        assert [(q[1], q[4]) for q in asked] == [
            ("train_model", "failed"), ("train_model", "running"), ("train_model", "succeeded")]
        assert set(app.hub.model.tasks[RUN]) == {"prepare", "train_model", "report"}


async def test_enter_lists_the_children_failed_first_and_a_child_s_own_nested_under_it() -> None:
    source = kids_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        await open_task(app, RUN, "train_model")
        await until(lambda: "children" in panel_text(app, "#run-task"))
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ChildrenScreen))
        table = app.screen.query_one("#kids-table", DataTable)
        await until(lambda: table.row_count == 12)
        cells = rows(table)
        assert [c[0] for c in cells] == ["3", "8", "9", "11", "0", "1", "2", "4", "5", "6", "7",
                                         "10"]
        assert cells[0][1:4] == ["✗ failed", PICKY, "1"]
        assert cells[0][6] == "ValueError: item 3 at 3 is not wanted"
        assert cells[3][5] == "1/3 ✓1 ▶2" and cells[11][5] == "3/3 ✓3" and cells[4][5] == "-"
        assert cells[4][6] == "0", "a succeeded child's output"
        head = panel_text(app, "#kids-head")
        assert "children of train_model in run run-kids-1" in head
        assert "✗ 2 failed   ● 2 running   ✓ 8 succeeded" in head
        assert "all 12 children, failed first" in panel_text(app, "#kids-note")
        assert "ValueError: item 3 at 3 is not wanted" in panel_text(app, "#kids-child")
        await pilot.press("down", "down", "down")
        await until(lambda: "train_model/11" in panel_text(app, "#kids-child"))
        assert "children 1 succeeded, 1 running, 1 queued" in panel_text(app, "#kids-child")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ChildrenScreen)
                    and app.screen.parent_task == "train_model/11")
        nested = app.screen.query_one("#kids-table", DataTable)
        await until(lambda: nested.row_count == 3)
        assert [c[:2] for c in rows(nested)] == [["1", "● running"], ["2", "◌ queued"],
                                                 ["0", "✓ succeeded"]]
        assert "train_model > train_model/11" in panel_text(app, "#kids-head")
        await pilot.press("enter")
        await until(lambda: "has no children" in " ".join(
            str(n.message) for n in app._notifications))
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, ChildrenScreen)
                    and app.screen.parent_task == "train_model")
        await pilot.press("r")  # a tab's key leaves the run and its children
        await until(lambda: not isinstance(app.screen, RunScreen | ChildrenScreen))


async def test_the_children_follow_their_events_and_stay_out_of_the_run_s_tasks() -> None:
    source = kids_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        dag = await open_task(app, RUN, "train_model")
        await until(lambda: "10/12 ✗2 ▶2" in shown(dag))
        await pilot.press("k")
        await until(lambda: isinstance(app.screen, ChildrenScreen))
        screen = app.screen
        table = screen.query_one("#kids-table", DataTable)
        await until(lambda: table.row_count == 12)
        before = len(source.child_queries)
        source.push(event("train_model", 9, OK))
        await until(lambda: [c[0] for c in rows(table)][2:4] == ["11", "0"], what="at once")
        assert rows(table)[10][:2] == ["9", "✓ succeeded"], "among the succeeded now"
        assert "✓ 9 succeeded" in panel_text(app, "#kids-head")
        source.push(event("train_model", 12, QUEUED))  # a child spawned now: the next fetch
        await until(lambda: table.row_count == 13, what="the new child, fetched")
        assert "◌ 1 queued" in panel_text(app, "#kids-head")
        for seq in range(13, 33):
            source.push(event("train_model", seq, RUNNING))
        await until(lambda: table.row_count == 33)
        fetches = sum(1 for q in source.child_queries[before:] if q[1] is None)
        assert 1 <= fetches <= 8, f"{fetches} fetches for 22 events (two screens): throttled"
        assert set(app.hub.model.tasks[RUN]) == {"prepare", "train_model", "report"}
        await pilot.press("escape")
        await until(lambda: isinstance(app.screen, RunScreen))
        await until(lambda: "╭─ 11/33 ✗2 ▶22 ╮" in shown(dag), what="the run view's too")


async def test_the_children_are_fetched_again_when_the_deployment_comes_back() -> None:
    source = kids_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        await open_task(app, RUN, "train_model")
        await until(lambda: "children" in panel_text(app, "#run-task"))
        await pilot.press("k")
        await until(lambda: isinstance(app.screen, ChildrenScreen))
        table = app.screen.query_one("#kids-table", DataTable)
        await until(lambda: table.row_count == 12)
        source.go_down()
        await until(lambda: app.hub.model.link_down is not None)
        source.child_infos[(RUN, "train_model/9")] = child("train_model", 9, FAILED)  # missed
        source.come_back()
        await until(lambda: [c[0] for c in rows(table)][:3] == ["3", "8", "9"],
                    what="the child that failed meanwhile, fetched again")


# -- against the real stack -------------------------------------------------------------------


async def test_a_run_with_children_on_the_real_stack_shows_them_failed_first_and_nested(
    coordinator: Coordinator, start_agent: Callable[..., Awaitable[object]], client: Client,
    nats_opts: ConnectOptions,
) -> None:
    await client.register(childflows.register_all())
    await start_agent(concurrency=3)
    run = await client.start("chain", {"n": 10})
    app = DashboardApp(ClientSource(nats_opts), tick_s=None)
    async with app.run_test(size=SIZE) as pilot:
        app.open_run(run.run_id)
        await until(lambda: isinstance(app.screen, RunScreen) and app.screen.spec is not None)
        dag = app.screen.query_one("#run-dag", DagView)
        await until(lambda: "12/12 ✓10 ✗2" in shown(dag), what="the final counts")
        dag.selected = "train_model"
        await until(lambda: "ValueError: item 8" in panel_text(app, "#run-task"))
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ChildrenScreen))
        table = app.screen.query_one("#kids-table", DataTable)
        await until(lambda: table.row_count == 12)
        assert [str(table.get_row_at(i)[0]) for i in range(3)] == ["3", "8", "0"]
        assert "item 3 at 3 is not wanted" in panel_text(app, "#kids-child")
        assert str(table.get_row_at(11)[5]) == "3/3 ✓3"
        table.move_cursor(row=11)
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ChildrenScreen)
                    and app.screen.parent_task == "train_model/11")
        nested = app.screen.query_one("#kids-table", DataTable)
        await until(lambda: nested.row_count == 3)
        assert [str(nested.get_row_at(i)[6]) for i in range(3)] == ["10", "11", "12"]
        assert set(app.hub.model.tasks[run.run_id]) == {"prepare", "train_model", "report"}
        assert text_of(app.screen.query_one("#kids-note")).startswith("all 3 children")
