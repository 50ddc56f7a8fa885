"""The dashboard's state model: snapshot, then events in order; queries the views draw from."""

import msgspec

from protocol.limits import MAX_LOG_KEPT_CHARS
from protocol.messages import ErrorEvent, TaskLog
from protocol.records import RunDetail, RunRecord, TaskRecord
from protocol.states import RunStatus, TaskStatus
from tests.test_tui_support import NOW, T0, agent, failed_run, memory_source, rejected, running_run
from tui.model import Model
from tui.source import LinkDown, LinkUp, Snapshot, load_snapshot


async def loaded() -> Model:
    model = Model()
    model.load(await load_snapshot(memory_source()), NOW)
    return model


async def test_a_snapshot_fills_flows_runs_agents_and_problems() -> None:
    model = await loaded()
    assert [f.name for f in model.flows_view()] == [
        "pipeline_simple", "pipeline_simple_ml", "pipeline_simple_with_failure"]
    assert [r.run_id for r in model.runs_view()] == ["run-running-2", "run-failed-1"]
    assert [a.agent_id for a in model.agents_view()] == ["agent-1", "agent-2"]
    assert model.problems()[0].kind == "rejected"
    assert model.synced_at == NOW


async def test_events_keep_the_latest_record_of_each_run_and_task() -> None:
    model = await loaded()
    run = running_run().run
    done = msgspec.structs.replace(run, status=RunStatus.SUCCEEDED, finished_at=T0 + 20)
    t1 = TaskRecord(run_id=run.run_id, task="clean_data", status=TaskStatus.RUNNING)
    t2 = msgspec.structs.replace(t1, status=TaskStatus.SUCCEEDED)
    dirty = model.apply_all([t1, t2, done], NOW)
    assert model.runs[run.run_id].status is RunStatus.SUCCEEDED
    assert model.tasks[run.run_id]["clean_data"].status is TaskStatus.SUCCEEDED
    assert dirty.runs == {run.run_id} and "runs" in dirty.kinds


async def test_a_run_event_updates_its_flows_last_run() -> None:
    model = await loaded()
    new = RunRecord(run_id="run-new", flow="pipeline_simple", version="v", created_at=T0 + 50,
                    status=RunStatus.RUNNING)
    dirty = model.apply(new, NOW)
    assert "flows" in dirty.kinds
    assert model.flows["pipeline_simple"].last_run_id == "run-new"
    assert model.flows["pipeline_simple"].last_run_status is RunStatus.RUNNING
    older = msgspec.structs.replace(failed_run().run, run_id="run-old", flow="pipeline_simple",
                                    created_at=T0 - 100)
    model.apply(older, NOW)
    assert model.flows["pipeline_simple"].last_run_id == "run-new"


async def test_runs_are_newest_first_and_filter_by_flow_and_status() -> None:
    model = await loaded()
    assert [r.run_id for r in model.runs_view(status="failed")] == ["run-failed-1"]
    assert [r.run_id for r in model.runs_view(flow="pipeline_simple")] == ["run-running-2"]
    assert model.runs_view(flow="pipeline_simple", status=RunStatus.FAILED) == []


async def test_a_run_detail_brings_every_task_instance() -> None:
    model = Model()
    model.set_detail(failed_run())
    assert model.tasks["run-failed-1"]["faulty_transform"].error_type == "NameError"


def test_the_oldest_finished_runs_are_forgotten_beyond_the_limit_but_not_pinned_or_active() -> None:
    model = Model(max_runs=3)
    model.pinned.add("r0")
    for i in range(6):
        status = RunStatus.RUNNING if i == 1 else RunStatus.SUCCEEDED
        model.apply(RunRecord(run_id=f"r{i}", flow="f", version="v", created_at=T0 + i,
                              status=status), NOW)
        model.apply(TaskRecord(run_id=f"r{i}", task="t"), NOW)
    assert set(model.runs) == {"r0", "r1", "r5"}
    assert set(model.tasks) == {"r0", "r1", "r5"}


def test_error_events_join_rejected_messages_newest_first_without_duplicates() -> None:
    model = Model()
    model.load(Snapshot(rejected=[rejected()]), NOW)
    model.apply(ErrorEvent(kind="trigger", subject="flowforge.trigger.x", code="bad_request",
                           reason="same as the kept one", at=T0 + 5, rejected_id=1), NOW)
    model.apply(ErrorEvent(kind="report", subject="flowforge.report.r", code="bad_request",
                           reason="newer", at=T0 + 9), NOW)
    rows = model.problems()
    assert [(p.kind, p.reason) for p in rows] == [
        ("report", "newer"), ("rejected", "params: expected an object, got a string")]
    assert rows[1].raw == b'{"params": "oops"}'


def test_the_link_state_remembers_since_when_it_is_down() -> None:
    model = Model()
    model.apply(LinkDown("lost NATS"), T0)
    model.apply(LinkDown("still lost"), T0 + 5)
    assert (model.link_down, model.down_since) == ("still lost", T0)
    dirty = model.apply(LinkUp(), T0 + 9)
    assert model.link_down is None and dirty.kinds == {"link"}


def test_a_resync_keeps_known_task_records_and_replaces_agents() -> None:
    model = Model()
    model.set_detail(RunDetail(run=running_run().run, tasks=running_run().tasks))
    model.apply(agent("gone"), NOW)
    model.load(Snapshot(runs=[running_run().run], agents=[agent()]), NOW)
    assert "clean_data" in model.tasks["run-running-2"]
    assert list(model.agents) == ["agent-1"]


def test_an_api_answer_does_not_undo_an_event_that_came_after_the_call_was_sent() -> None:
    model = Model()
    stale = running_run()
    since = model.seq
    done = msgspec.structs.replace(stale.run, status=RunStatus.SUCCEEDED)
    task_done = msgspec.structs.replace(stale.tasks[2], status=TaskStatus.SUCCEEDED)
    model.apply_all([done, task_done], NOW)  # events overtake the answer
    model.set_detail(stale, since)
    assert model.runs[done.run_id].status is RunStatus.SUCCEEDED
    assert model.tasks[done.run_id]["clean_data"].status is TaskStatus.SUCCEEDED
    assert model.tasks[done.run_id]["analyze_data"].status is TaskStatus.PENDING
    model.load(Snapshot(runs=[stale.run]), NOW, since)
    assert model.runs[done.run_id].status is RunStatus.SUCCEEDED
    model.set_detail(stale, model.seq)  # asked after the events: the answer is newer
    assert model.runs[done.run_id].status is RunStatus.RUNNING


def test_log_events_reach_only_followed_logs_and_are_not_doubled_by_the_stored_text() -> None:
    model = Model()

    def line(task: str, text: str) -> TaskLog:
        return TaskLog(run_id="r1", task=task, attempt=1, agent_id="a", at=0.0, text=text)

    assert not model.apply(line("t1", "before anyone looked\n"), 0.0)
    buffer, new = model.follow_log("r1", "t1")
    assert new and not buffer.loaded
    model.apply(line("t1", "b\n"), 0.0)  # came while the stored log was being fetched ...
    model.apply(line("t1", "c\n"), 0.0)
    model.apply(line("t2", "other task\n"), 0.0)
    model.set_log("r1", "t1", "a\nb\n", buffer.ask())  # ... "b" was already stored, "c" not
    assert buffer.loaded and buffer.text == "a\nb\nc\n"
    assert model.apply(line("t1", "d\n"), 0.0).runs == {"r1"}
    assert buffer.text == "a\nb\nc\nd\n"
    assert model.follow_log("r1", "t1") == (buffer, False)
    old, new = buffer.ask(), buffer.ask()
    assert model.set_log("r1", "t1", "refetched\n", new)
    assert not model.set_log("r1", "t1", "an older answer\n", old)  # came late: ignored
    assert buffer.text == "refetched\n"
    model.unfollow_logs("r1")
    assert not model.logs


def test_a_followed_log_keeps_only_its_newest_64_kib() -> None:
    model = Model()
    buffer, _ = model.follow_log("r1", "t1")
    model.set_log("r1", "t1", "x" * MAX_LOG_KEPT_CHARS, buffer.ask())
    model.apply(TaskLog(run_id="r1", task="t1", attempt=1, agent_id="a", at=0.0, text="tail"), 0.0)
    assert len(buffer.text) == MAX_LOG_KEPT_CHARS and buffer.text.endswith("tail")
