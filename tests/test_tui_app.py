"""The dashboard driven by keys (Textual Pilot) over fixed data: flows, runs, one run, actions."""

import io
from collections.abc import Iterator

import msgspec
import pytest
from rich.console import Console
from textual import events
from textual.command import CommandInput, CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import DataTable, Select, Static, TextArea

from protocol.messages import TaskLog
from protocol.records import AgentInfo, RunDetail, RunRecord, TaskRecord
from protocol.schedules import FireOutcome, FireRecord, ScheduleEvent
from protocol.states import RunStatus, TaskStatus
from tests.memory_source import MemorySource, flow_detail
from tests.test_tui_dag_shape import etl, fan
from tests.test_tui_support import T0, clock, history, memory_source, running_run, until, utc
from tui.app import DashboardApp
from tui.banner import Banner
from tui.dag_layout import progress_edge
from tui.dag_view import DagView
from tui.forms import ConfirmScreen, MarkScreen, TextScreen, TriggerScreen
from tui.run_view import RunScreen

SIZE = (150, 44)


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    with utc():
        yield


def app_for(source: MemorySource) -> DashboardApp:
    return DashboardApp(source, clock=clock, tick_s=None)


async def run_screen(app: DashboardApp) -> RunScreen:
    """The run view once it is on screen with its widgets (the task panel is mounted last:
    under load the DAG can be there a moment before it)."""
    await until(lambda: isinstance(app.screen, RunScreen) and app.screen.query("#run-dag")
                and app.screen.query("#run-task"))
    assert isinstance(app.screen, RunScreen)
    return app.screen


def shown(widget: DagView) -> str:
    """What the DAG view draws on screen, as plain text."""
    return "\n".join(widget.render_line(y).text for y in range(widget.size.height))


def text_of(widget: Static) -> str:
    """What a Static holds (text or a Rich renderable), as plain text."""
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


def panel_text(app: DashboardApp, selector: str) -> str:
    return text_of(app.screen.query_one(selector, Static))


async def open_task(app: DashboardApp, run_id: str, task: str) -> DagView:
    """Open a run and select one of its tasks; returns the run's DAG view."""
    app.open_run(run_id)
    dag = (await run_screen(app)).query_one("#run-dag", DagView)
    await until(lambda: dag.dag is not None)
    dag.selected = task
    return dag


async def submit_params(app: DashboardApp, pilot: Pilot[None], text: str) -> TriggerScreen:
    """Type ``text`` into the open trigger form and submit it."""
    form = app.screen
    assert isinstance(form, TriggerScreen)
    form.query_one("#params", TextArea).load_text(text)
    await pilot.press("ctrl+s")
    return form


def form_error(form: TriggerScreen) -> str:
    return text_of(form.query_one("#form-error", Static))


async def test_choosing_a_flow_draws_its_dag_and_describes_the_selected_task() -> None:
    app = app_for(memory_source())
    async with app.run_test(size=SIZE) as pilot:
        dag = app.query_one("#flow-dag", DagView)
        await until(lambda: dag.dag is not None and "clean_data" in dag.dag.boxes)
        await pilot.press("down", "down")  # pipeline_simple_with_failure
        await until(lambda: dag.dag is not None and "faulty_transform" in dag.dag.boxes)
        assert "│ · faulty_transform │" in shown(dag)
        await pilot.press("enter")  # into the DAG
        assert app.focused is dag and dag.selected == "fetch_data1"
        await pilot.press("right", "right")
        assert dag.selected in ("faulty_transform", "independent_summary")
        await until(lambda: dag.selected in panel_text(app, "#flow-task"))
        text = panel_text(app, "#flow-task")
        assert "queue default" in text and "def " in text
        await pilot.press("escape")
        assert app.focused is app.query_one("#flows-table")


def grouped_source() -> tuple[MemorySource, str]:
    """One flow with a three-task group ``clean`` and a run in which one of them failed."""
    spec = etl()
    rid = "run-etl-1"
    statuses = {"load": TaskStatus.SUCCEEDED, "a": TaskStatus.SUCCEEDED, "b": TaskStatus.FAILED,
                "c": TaskStatus.SUCCEEDED, "report": TaskStatus.UPSTREAM_FAILED,
                "audit": TaskStatus.SUCCEEDED}
    run = RunRecord(run_id=rid, flow=spec.name, version=spec.version(), status=RunStatus.FAILED,
                    created_at=T0, started_at=T0, finished_at=T0 + 1)
    tasks = [TaskRecord(run_id=rid, task=t, status=s, attempt=1) for t, s in statuses.items()]
    return MemorySource(flows=[flow_detail(spec, T0)], runs=[RunDetail(run=run, tasks=tasks)],
                        clock=clock), rid


async def test_the_dag_zooms_out_to_smaller_boxes_and_back() -> None:
    app = app_for(memory_source())
    async with app.run_test(size=SIZE) as pilot:
        dag = app.query_one("#flow-dag", DagView)
        await until(lambda: dag.dag is not None and "clean_data" in dag.dag.boxes)
        await pilot.press("enter")
        widths = [dag.dag.width]
        for _ in range(3):  # the third stops at the smallest
            await pilot.press("minus")
            widths.append(dag.dag.width)
        assert widths[0] > widths[1] > widths[2] == widths[3]
        assert len(dag.dag.labels["some_post_process_function"]) == 5
        await pilot.press("plus", "plus")
        assert dag.dag.width == widths[0] and len(dag.dag.labels["some_post_process_function"]) == 24


async def test_a_group_collapses_to_one_box_and_expands_again() -> None:
    source, _ = grouped_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        dag = app.query_one("#flow-dag", DagView)
        await until(lambda: dag.dag is not None and "a" in dag.dag.boxes)
        await pilot.press("enter")
        dag.selected = "b"
        await pilot.press("x")
        await until(lambda: "▣ clean" in dag.dag.boxes)
        assert dag.selected == "▣ clean" and "▣ clean (3)" in shown(dag)
        assert not {"a", "b", "c"} & set(dag.dag.boxes)
        await until(lambda: "3 tasks, collapsed" in panel_text(app, "#flow-task"))
        await pilot.press("x")
        await until(lambda: "b" in dag.dag.boxes)
        assert dag.selected == "a"
        await pilot.press("X")
        await until(lambda: "▣ clean" in dag.dag.boxes)
        dag.selected = "load"
        await pilot.press("x")
        await until(lambda: "load is in no group" in
                    " ".join(str(n.message) for n in app._notifications))


async def test_a_collapsed_group_in_a_run_shows_the_state_of_its_worst_task() -> None:
    source, rid = grouped_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        app.open_run(rid)
        dag = (await run_screen(app)).query_one("#run-dag", DagView)
        await until(lambda: "✗ b" in shown(dag))
        dag.selected = "a"
        await pilot.press("x")
        await until(lambda: "✗ ▣ clean (3)" in shown(dag))
        text = panel_text(app, "#run-task")
        assert "1 failed" in text and "2 succeeded" in text


async def test_a_wide_fan_out_run_is_one_stacked_box_that_unstacks_on_s() -> None:
    spec = fan("run", 30)
    rid = "run-fan-1"
    states = {f"m{i:02d}": TaskStatus.SUCCEEDED for i in range(30)} | {
        "root": TaskStatus.SUCCEEDED, "m07": TaskStatus.RUNNING, "join": TaskStatus.PENDING}
    run = RunRecord(run_id=rid, flow=spec.name, version=spec.version(), status=RunStatus.RUNNING,
                    created_at=T0, started_at=T0)
    source = MemorySource(flows=[flow_detail(spec, T0)], clock=clock, runs=[RunDetail(
        run=run, tasks=[TaskRecord(run_id=rid, task=t, status=s) for t, s in states.items()])])
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        app.open_run(rid)
        dag = (await run_screen(app)).query_one("#run-dag", DagView)
        await until(lambda: "● 30× m00 … m29" in shown(dag))  # noqa: RUF001 - running: m07 is
        dag.selected = "≡ m00"
        await until(lambda: "29 succeeded" in panel_text(app, "#run-task"))
        rows = panel_text(app, "#run-task").splitlines()
        assert rows[2].startswith("m07") and rows[3].startswith("m00")  # not succeeded first
        await pilot.press("s")
        await until(lambda: "● m07" in shown(dag) or "m07" in dag.dag.boxes)
        assert dag.selected == "m00" and len(dag.dag.boxes) == 32


async def test_the_runs_view_lists_newest_first_and_filters_by_flow_and_status() -> None:
    app = app_for(memory_source())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        table = app.query_one("#runs-table", DataTable)
        await until(lambda: table.row_count == 2)
        assert [str(k.value) for k in table.rows] == ["run-running-2", "run-failed-1"]
        app.query_one("#runs-flow", Select).value = "pipeline_simple_with_failure"
        await until(lambda: [str(k.value) for k in table.rows] == ["run-failed-1"])
        app.query_one("#runs-flow", Select).clear()
        app.query_one("#runs-status", Select).value = "running"
        await until(lambda: [str(k.value) for k in table.rows] == ["run-running-2"])


async def test_the_runs_view_filters_through_the_api_and_loads_a_page_more_at_a_time() -> None:
    source = memory_source()
    source.details |= {d.run.run_id: d for d in history(250)}
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        table = app.query_one("#runs-table", DataTable)
        note = app.query_one("#runs-note", Static)
        await until(lambda: table.row_count == 100)
        assert source.run_queries[-1] == (None, None, 100)
        assert "l loads 100 more" in text_of(note)
        # Failed runs older than the 200 the dashboard loaded at start come from the API.
        app.query_one("#runs-status", Select).value = "failed"
        await until(lambda: source.run_queries[-1] == (None, "failed", 100))
        failed = [r.run_id for r in await source.runs(status="failed", limit=1000)]
        assert len(failed) == 36 and "run-old-0244" in failed
        await until(lambda: [str(k.value) for k in table.rows] == failed)
        assert "36 runs: all there are" in text_of(note)
        app.query_one("#runs-status", Select).clear()
        await until(lambda: source.run_queries[-1] == (None, None, 100) and table.row_count == 100)
        await pilot.press("l")
        await until(lambda: table.row_count == 200)
        assert source.run_queries[-1] == (None, None, 200)
        await pilot.press("l")
        await until(lambda: table.row_count == 252)
        assert "252 runs: all there are" in text_of(note)
        assert [str(k.value) for k in table.rows][-1] == "run-old-0249"


async def test_a_task_event_changes_the_run_view_on_screen() -> None:
    source = memory_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        table = app.query_one("#runs-table", DataTable)
        await until(lambda: table.row_count == 2)
        await pilot.press("enter")  # the newest: run-running-2
        dag = (await run_screen(app)).query_one("#run-dag", DagView)
        await until(lambda: "● clean_data" in shown(dag))
        done = TaskRecord(run_id="run-running-2", task="clean_data", status=TaskStatus.SUCCEEDED,
                          attempt=1, output=msgspec.Raw(b'{"rows": [1, 2]}'))
        source.push(done)
        await until(lambda: "✓ clean_data" in shown(dag))
        await pilot.press("right")  # from fetch_data1 to clean_data
        await until(lambda: "succeeded" in panel_text(app, "#run-task"))
        assert '"rows"' in panel_text(app, "#run-task")


async def test_a_failed_task_shows_its_error_traceback_and_attempts() -> None:
    app = app_for(memory_source())
    async with app.run_test(size=SIZE) as pilot:
        app.open_run("run-failed-1")
        dag = (await run_screen(app)).query_one("#run-dag", DagView)
        await until(lambda: "✗ faulty_transform" in shown(dag))
        dag.selected = "faulty_transform"
        await until(lambda: "Traceback" in panel_text(app, "#run-task"))
        text = panel_text(app, "#run-task")
        assert "NameError: name 'undefined_variable' is not defined" in text
        assert "attempts" in text
        await pilot.press("o")
        await until(lambda: isinstance(app.screen, TextScreen))
        assert "Traceback" in app.screen.query_one("#full-text", TextArea).text
        await pilot.press("escape", "escape")
        await until(lambda: not isinstance(app.screen, RunScreen | TextScreen))


async def test_the_selected_task_shows_its_log_which_follows_log_events() -> None:
    source = memory_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        dag = await open_task(app, "run-failed-1", "faulty_transform")
        await until(lambda: "never defined" in panel_text(app, "#run-task"))
        assert "transforming 3 rows" in panel_text(app, "#run-task")
        source.push(TaskLog(run_id="run-failed-1", task="faulty_transform", attempt=1,
                            agent_id="agent-1", at=0.0, text="a line sent later\n"))
        source.push(TaskLog(run_id="run-failed-1", task="clean_data", attempt=1,
                            agent_id="agent-1", at=0.0, text="not this task's line\n"))
        await until(lambda: "a line sent later" in panel_text(app, "#run-task"))
        assert "not this task's line" not in panel_text(app, "#run-task")
        await pilot.press("g")
        await until(lambda: isinstance(app.screen, TextScreen))
        full = app.screen.query_one("#full-text", TextArea).text
        assert "transforming 3 rows" in full and "a line sent later" in full
        await pilot.press("escape")
        dag.selected = "clean_data"
        await until(lambda: "not this task's line" in panel_text(app, "#run-task"))


async def test_only_the_last_log_lines_are_in_the_panel_and_g_shows_them_all() -> None:
    lines = "".join(f"line {i:03d}\n" for i in range(100))
    source = memory_source()
    source.logs[("run-failed-1", "clean_data")] = lines
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        await open_task(app, "run-failed-1", "clean_data")
        await until(lambda: "line 099" in panel_text(app, "#run-task"))
        text = panel_text(app, "#run-task")
        assert "line 080" in text and "line 079" not in text
        assert "80 before: press g to see all" in text
        await pilot.press("g")
        await until(lambda: isinstance(app.screen, TextScreen))
        assert "line 000" in app.screen.query_one("#full-text", TextArea).text


async def test_a_run_opened_before_the_deployment_answers_loads_once_it_does() -> None:
    source = memory_source()
    source.go_down("lost NATS at memory; reconnecting")
    app = DashboardApp(source, clock=clock, tick_s=None, retry_s=0.05)
    async with app.run_test(size=SIZE):
        app.open_run("run-failed-1")
        screen = await run_screen(app)
        await until(lambda: "reconnecting" in panel_text(app, "#run-head"))
        source.come_back()
        await until(lambda: screen.dag_view.dag is not None and "✗ faulty_transform" in
                    shown(screen.dag_view), what="the run drawn after the link came back")


async def test_the_trigger_form_rejects_bad_json_then_starts_the_run_and_opens_it() -> None:
    source = memory_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.query_one("#flows-table", DataTable).row_count == 3)
        await pilot.press("t")
        await until(lambda: isinstance(app.screen, TriggerScreen))
        form = await submit_params(app, pilot, '{"n_rows": 10,')
        await until(lambda: "not valid JSON" in form_error(form))
        await submit_params(app, pilot, "[1, 2]")
        await until(lambda: "must be a JSON object" in form_error(form))
        assert source.calls == []
        await submit_params(app, pilot, '{"n_rows": 10}')
        await until(lambda: isinstance(app.screen, RunScreen))
        assert source.calls == [("start", "pipeline_simple", {"n_rows": 10})]
        assert app.screen.run_id == "run-0001"  # type: ignore[attr-defined]


async def test_cancel_retry_and_mark_are_confirmed_before_they_are_sent() -> None:
    source = memory_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        app.open_run("run-failed-1")
        await run_screen(app)
        await pilot.press("c")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await until(lambda: isinstance(app.screen, RunScreen))
        await pilot.press("y")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(lambda: source.calls == [("retry", "run-failed-1")])
        dag = app.screen.query_one("#run-dag", DagView)
        dag.selected = "faulty_transform"
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, MarkScreen))
        app.screen.query_one("#output", TextArea).load_text('{"value": 1}')
        await pilot.click("#succeeded")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(lambda: len(source.calls) == 2)
        assert source.calls[1] == ("mark", "run-failed-1", "faulty_transform", "succeeded",
                                   {"value": 1})


async def test_a_lost_deployment_shows_a_banner_and_keeps_the_last_state_until_it_is_back() -> None:
    source = memory_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        banner = app.query_one(Banner)
        await until(lambda: app.follower.syncs == 1)
        assert not banner.display
        source.go_down("lost NATS at memory; reconnecting")
        await until(lambda: banner.display and "lost NATS" in text_of(banner))
        await pilot.press("r")
        assert app.query_one("#runs-table", DataTable).row_count == 2  # last state kept
        source.come_back()
        await until(lambda: not banner.display and app.follower.syncs == 2)


async def test_agents_and_problems_are_listed() -> None:
    source = memory_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        agents = app.query_one("#agents-table", DataTable)
        await until(lambda: agents.row_count == 2)
        first = [str(cell) for cell in agents.get_row_at(0)]
        assert first[0] == "agent-1" and first[4] == "1/4" and first[6] == "3 s ago"
        source.push(AgentInfo(**{**msgspec.structs.asdict(source.agent_list[0]),
                                 "agent_id": "agent-3", "slots_busy": 4}))
        await until(lambda: agents.row_count == 3)
        await pilot.press("p")
        problems = app.query_one("#problems-table", DataTable)
        await until(lambda: problems.row_count == 1)
        assert "oops" in text_of(app.query_one("#problem-detail", Static))


async def test_the_command_palette_offers_views_flows_and_runs() -> None:
    app = app_for(memory_source())
    async with app.run_test(size=SIZE):
        await until(lambda: app.follower.syncs == 1)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Show runs" in titles and "Trigger pipeline_simple" in titles
        assert "Open run run-failed-1" in titles


async def test_a_running_task_shows_its_progress_and_last_checkpoint() -> None:
    app = app_for(memory_source())
    async with app.run_test(size=SIZE):
        app.open_run("run-running-2")
        dag = (await run_screen(app)).query_one("#run-dag", DagView)
        await until(lambda: dag.dag is not None)
        dag.selected = "clean_data"
        await until(lambda: "50%" in panel_text(app, "#run-task"))
        assert "merged 2 sources" in panel_text(app, "#run-task")
        assert running_run().run.run_id in panel_text(app, "#run-head")


async def test_a_running_task_s_box_shows_its_progress_and_follows_it() -> None:
    source = memory_source()
    app = app_for(source)
    async with app.run_test(size=SIZE):
        app.open_run("run-running-2")
        dag = (await run_screen(app)).query_one("#run-dag", DagView)
        await until(lambda: dag.dag is not None)
        assert dag.dag is not None
        inner = dag.dag.boxes["clean_data"].w - 2

        def edge(fraction: float) -> str:  # clean_data's bottom edge
            return f"╰{progress_edge(fraction, inner)}╯"

        await until(lambda: edge(0.5) in shown(dag))
        source.push(TaskRecord(run_id="run-running-2", task="clean_data",
                               status=TaskStatus.RUNNING, attempt=1, progress=0.8))
        await until(lambda: edge(0.8) in shown(dag))
        source.push(TaskRecord(run_id="run-running-2", task="clean_data",
                               status=TaskStatus.SUCCEEDED, attempt=1, progress=0.8))
        await until(lambda: "✓ clean_data" in shown(dag))
        assert "%" not in shown(dag)  # a finished task's box is plain again


async def palette(app: DashboardApp, pilot: Pilot[None], search: str) -> None:
    """Open the command palette, paste ``search`` and run the first command it offers.

    Pasted rather than pressed key by key: each simulated key waits for the app to go idle
    (about 0.1 s), and what is found by the search is the point, not the typing.
    """
    await pilot.press("ctrl+p")
    await until(lambda: isinstance(app.screen, CommandPalette))
    app.screen.query_one(CommandInput).post_message(events.Paste(search))
    results = app.screen.query_one(CommandList)
    await until(lambda: results.option_count > 0 and search.lower() in
                str(results.get_option_at_index(0).prompt).lower())
    await pilot.press("enter")


async def test_the_command_palette_cancels_retries_and_marks_in_the_selected_run() -> None:
    source = memory_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        table = app.query_one("#runs-table", DataTable)
        await until(lambda: table.row_count == 2)  # run-running-2 highlighted
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Cancel run run-running-2" in titles and "Retry run run-running-2" in titles
        await palette(app, pilot, "cancel")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(lambda: source.calls == [("cancel", "run-running-2")])

        app.open_run("run-failed-1")
        dag = (await run_screen(app)).query_one("#run-dag", DagView)
        await until(lambda: dag.dag is not None)
        dag.selected = "faulty_transform"
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Cancel run run-failed-1" not in titles  # it has finished
        assert "Mark faulty_transform of run run-failed-1" in titles
        assert "Mark publish_results of run run-failed-1" in titles  # any task, by search
        await palette(app, pilot, "retry")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(lambda: source.calls[-1] == ("retry", "run-failed-1"))
        await palette(app, pilot, "mark pub")
        await until(lambda: isinstance(app.screen, MarkScreen))
        await pilot.click("#failed")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(lambda: source.calls[-1][:4] == ("mark", "run-failed-1", "publish_results",
                                                     "failed"))


async def test_the_schedules_view_lists_schedules_and_pauses_resumes_and_runs_one_now() -> None:
    source = memory_source()
    app = app_for(source)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w")
        table = app.query_one("#schedules-table", DataTable)
        await until(lambda: table.row_count == 2)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(2)]
        assert rows[0][0] == "every-15m" and rows[0][5] == "paused: source system down"
        assert rows[1][:3] == ["nightly-ml", "pipeline_simple_ml", "cron '30 2 * * *' Europe/Paris"]
        assert rows[1][3] == "2026-01-01T02:30:00+01:00" and rows[1][5] == "active"
        assert "added from the CLI" in text_of(app.query_one("#schedule-detail", Static))
        await pilot.press("u")  # the paused one: resume, once confirmed
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(lambda: ("resume_schedule", "every-15m") in source.calls)
        await until(lambda: str(table.get_row_at(0)[5]) == "active")
        await pilot.press("n")
        await until(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(lambda: ("trigger_schedule", "every-15m") in source.calls)
        source.push(ScheduleEvent(name="nightly-ml", state=source.schedule_states["nightly-ml"],
                                  fires=[FireRecord(schedule="nightly-ml", nominal=T0,
                                                    last_nominal=T0, outcome=FireOutcome.MISSED,
                                                    reason="outside the catch-up window")]))
        await until(lambda: str(table.get_row_at(1)[4]) == "missed")
        source.push(ScheduleEvent(name="nightly-ml", state=source.schedule_states["nightly-ml"],
                                  fires=[FireRecord(schedule="nightly-ml", nominal=T0 + 86400,
                                                    last_nominal=T0 + 86400, run_id="sched-1",
                                                    outcome=FireOutcome.STARTED)]))
        await until(lambda: str(table.get_row_at(1)[4]) == "started")
        source.push(RunRecord(run_id="sched-1", flow="pipeline_simple_ml", version="v",
                              status=RunStatus.FAILED, schedule="nightly-ml",
                              scheduled_for=T0 + 86400))
        await until(lambda: str(table.get_row_at(1)[4]) == "failed")  # the last run's state
        source.push(ScheduleEvent(name="every-15m", state=None))
        await until(lambda: table.row_count == 1)
