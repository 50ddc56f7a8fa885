"""The scheduler's part for mapped tasks, driven directly (no I/O): retries, restarts, cancel,
marks, chunks and the window, each case from a review that found it wrong."""

import msgspec

from protocol.flows import ParamSpec
from protocol.states import RunStatus, TaskStatus
from tests.map_harness import RUN_ID, H, flow, t


def mapped_param(**kw):
    return flow(t("m", map_over="param:xs", params=(ParamSpec(name="xs"),), **kw),
                t("after", "m", inputs=("m",)))


def test_a_retry_after_a_cancel_mid_map_runs_every_item_of_the_cancelled_chunks():
    h = H(mapped_param(chunk=10), params={"xs": list(range(30))})
    assert sorted(d.task for d in h.pending_msgs()) == ["m~0", "m~10", "m~20"]
    h.cancel()
    assert h.run.status is RunStatus.CANCELLED
    h.retry()
    ran = []
    while msgs := h.pending_msgs():
        for d in msgs:
            items = d.chunk or []
            ran += [d.first_index + i for i in range(len(items))]
            h.chunk_report(d.task, [(d.first_index + i, True) for i in range(len(items))])
    m = h.rec("m")
    print("ran items:", sorted(ran), "m:", m.status, m.note, bytes(m.output))
    assert m.status is TaskStatus.SUCCEEDED
    assert sorted(ran) == list(range(30)), f"items never run: {sorted(set(range(30)) - set(ran))}"


def _in_flight(h):
    ms = h.sched.run_state(RUN_ID).maps["m"]
    return [r.task for r in ms.active.values() if r.status in (TaskStatus.QUEUED, TaskStatus.RUNNING)]


def test_failed_items_of_a_chunk_retry_within_max_active():
    h = H(mapped_param(chunk=10, max_active=1, retries=2), params={"xs": list(range(20))})
    [d] = h.pending_msgs()
    h.start(d.task)
    h.chunk_report(d.task, [(i, False) for i in range(10)])   # every item fails once
    h.fire_all()                                               # retry delays run out
    flying = _in_flight(h)
    print("queued or running at once:", flying)
    assert len(flying) <= 1, f"{len(flying)} instance messages in flight with max_active=1"


def test_a_chunk_gets_its_items_timeouts_together_as_its_deadline():
    # items take 3 s each (within their 5 s timeout): a chunk of 10 needs 30 s
    h = H(mapped_param(chunk=10, timeout_s=5.0), params={"xs": list(range(10))})
    [d] = h.pending_msgs()
    assert d.timeout_s == 5.0          # the agent applies it to each item
    h.start(d.task)
    rec = h.rec("m~0")
    print("chunk started", rec.started_at, "deadline", rec.deadline_at,
          "backstop", h.sched.settings.backstop_s)
    assert rec.deadline_at == rec.started_at + 10 * 5.0 + h.sched.settings.backstop_s
    h.fire("m~0", at=rec.started_at + 9 * 3.0)  # the agent is on item 9 of 10 (not lost)
    rec = h.rec("m~0") or h.db["m~0"]
    assert rec.error_type != "AgentLost"


def _mark(h, task, status, output=b"null"):
    from coordinator.changes import Changes
    ch = Changes()
    h.now += 1
    rec = h.sched.mark(h.run, h.compiled, h.tasks(), task, status, msgspec.Raw(output), h.now, ch)
    h._take(ch)
    return rec


def test_marking_a_running_mapped_task_stops_its_instances_and_the_mark_stands():
    h = H(flow(t("m", map_over="param:xs", params=(ParamSpec(name="xs"),), max_active=2),
               t("slow"), t("after", "m", inputs=("m",))), params={"xs": list(range(6))})
    _mark(h, "m", TaskStatus.FAILED)
    assert h.rec("m").status is TaskStatus.FAILED
    ms = h.sched.run_state(RUN_ID).maps.get("m")
    print("map state after the mark:", ms is not None and sorted(ms.active))
    # the instances go on: the agent reports them, new ones are dispatched
    while msgs := [d for d in h.pending_msgs() if "~" in d.task]:
        for d in msgs:
            h.succeed(d.task, b"%d" % d.first_index)
    m = h.rec("m")
    print("m after its instances ended:", m.status, m.note, m.error_message, bytes(m.output))
    state = h.sched.run_state(RUN_ID)
    print("after:", h.rec("after").status, "failed_count", state.failed_count,
          "waiting", state.waiting)
    assert m.status is TaskStatus.FAILED, "the operator's mark was overruled"


def test_a_mark_succeeded_keeps_its_output_when_instances_report_after_it():
    h = H(flow(t("m", map_over="param:xs", params=(ParamSpec(name="xs"),)),
               t("slow"), t("after", "m", "slow", inputs=("m",))), params={"xs": [1, 2]})
    _mark(h, "m", TaskStatus.SUCCEEDED, b'"by hand"')
    for d in [d for d in h.pending_msgs() if "~" in d.task]:
        h.succeed(d.task, b"7")
    state = h.sched.run_state(RUN_ID)
    print("m:", bytes(h.rec("m").output), "waiting[after]:", state.waiting["after"])
    assert bytes(h.rec("m").output) == b'"by hand"'
    assert state.waiting["after"] >= 0


def test_a_restart_while_a_retried_map_works_through_its_failed_instances_runs_them():
    h = H(mapped_param(max_active=2), params={"xs": list(range(8))})
    while msgs := h.pending_msgs():      # first expansion: every instance fails
        for d in msgs:
            h.fail(d.task)
    assert h.rec("m").status is TaskStatus.FAILED
    h.retry()                             # 8 to redo, 2 at a time
    assert len(h.pending_msgs()) == 2
    h.restart()                           # kill -9 now
    ran = []
    while msgs := h.pending_msgs():
        for d in msgs:
            ran.append(d.task)
            h.succeed(d.task, b"%d" % d.first_index)
    m = h.rec("m")
    print("re-ran after the restart:", ran, "->", m.status, m.note)
    assert m.status is TaskStatus.SUCCEEDED, m.error_message


def test_a_non_ascii_digit_in_an_instance_name_is_no_instance_and_raises_nothing():
    from coordinator.intake import ReportChecks
    from protocol.messages import TaskSucceeded
    h = H(mapped_param(), params={"xs": [1]})
    checks = ReportChecks(h.sched, "flowforge.report.", {})
    msg = TaskSucceeded(run_id=RUN_ID, task="m~\u00b2", attempt=1, agent_id="x", at=1.0,
                        started_at=1.0, output=msgspec.Raw(b"1"))
    checks.check_result(msg)  # a ValueError here escaped the writer's per-result handler
    assert h.sched.task_record(RUN_ID, "zzz~\u00b9") is None
    assert not h.report(msg)


def test_items_for_a_task_that_is_no_generator_are_not_taken():
    from protocol.messages import TaskItems
    h = H(flow(t("plain"), t("m", "plain", map_over="plain")))
    ids = h.ids("plain")
    sent = 0
    for _ in range(30):   # 30 x 100,000 = 3,000,000 items, past MAX_MAP_ITEMS
        h.report(TaskItems(**ids, first_index=sent, items=[msgspec.Raw(b"0")] * 100_000))
        sent += 100_000
    state = h.sched.run_state(RUN_ID)
    print("items kept for 'plain':", len(state.streams.get("plain", [])),
          "rows to store:", len(h.last.items))
    assert len(state.streams.get("plain", [])) == 0


def test_a_cancelled_run_forgets_the_earlier_instances_of_its_retried_map():
    h = H(flow(t("up"), t("m", "up", map_over="up", max_active=3)))
    h.succeed("up", b"[" + b",".join(b"%d" % i for i in range(50)) + b"]")
    while msgs := [d for d in h.pending_msgs() if "~" in d.task]:
        for d in msgs:
            h.fail(d.task)
    _mark(h, "up", TaskStatus.FAILED)     # the operator: up's output was wrong
    h.retry()                              # up runs again; m waits for it
    h.cancel()
    left = h.sched.mapper._earlier
    print("kept after the cancel:", {k: len(v[0]) for k, v in left.items()})
    assert not left


def test_after_a_restart_a_lone_retrying_item_of_a_chunk_stays_alone():
    h = H(mapped_param(chunk=10, max_active=1, retries=1), params={"xs": list(range(30))})
    [d] = h.pending_msgs()
    h.chunk_report(d.task, [(i, i != 9) for i in range(10)])   # item 9 fails: retry alone
    assert h.rec("m~9").status in (TaskStatus.RETRY_WAIT, TaskStatus.QUEUED)
    h.restart()
    ms = h.sched.run_state(RUN_ID).maps["m"]
    print("sizes after restart:", ms.sizes, "next_index:", ms.next_index)
    h.fire_all()
    [d] = h.pending_msgs()
    assert (d.task, len(d.chunk or [])) == ("m~9", 1), "items 10.. rode on item 9's retry"


def test_a_map_expanded_again_over_new_items_drops_the_old_instances():
    h = H(flow(t("up"), t("m", "up", map_over="up", max_active=2)))
    h.succeed("up", b"[1,2,3,4,5,6]")
    while msgs := [d for d in h.pending_msgs() if "~" in d.task]:
        for d in msgs:   # first expansion: outputs 'old', index 0 fails
            (h.fail if d.first_index == 0 else h.succeed)(d.task, *([] if d.first_index == 0 else [b'"old"']))
    assert h.rec("m").status is TaskStatus.FAILED
    _mark(h, "up", TaskStatus.FAILED)     # the operator: up's output was wrong
    h.retry()
    h.succeed("up", b"[10,20,30,40,50,60]")  # up again: new items, m expands over them
    print("queued after the new expansion:", sorted(d.task for d in h.pending_msgs()))
    h.restart()
    ran = []
    while msgs := [d for d in h.pending_msgs() if "~" in d.task]:
        for d in msgs:
            ran.append(d.first_index)
            h.succeed(d.task, b'"new"')
    m = h.rec("m")
    print("ran after restart:", ran, "->", m.status, bytes(m.output))
    assert b"old" not in bytes(m.output)


def test_an_instance_that_would_get_the_too_many_placeholder_fails_saying_so():
    from coordinator.scheduler import SchedulerSettings
    spec = flow(t("n", map_over="param:xs", params=(ParamSpec(name="xs"),)),
                t("m", "n", map_over="param:xs", params=(ParamSpec(name="xs"),), inputs=("n",)),
                t("plain", "n", inputs=("n",)))
    h = H(spec, params={"xs": list(range(3))}, settings=SchedulerSettings(max_dispatch_bytes=64 * 1024))
    for d in list(h.pending_msgs()):
        h.succeed(d.task, b'"' + b"x" * 30_000 + b'"')   # 90 KB of outputs: too many
    print("n:", h.rec("n").status, bytes(h.rec("n").output)[:60])
    print("plain:", h.rec("plain").status, h.rec("plain").error_type)
    assert not [d for d in h.pending_msgs() if d.task.startswith("m~")], "sent the placeholder"
    assert h.db["m~0"].error_type == "InputsTooLarge"
    assert "ctx.mapped_outputs('n')" in (h.db["m~0"].error_message or "")


def test_each_item_record_of_a_chunk_has_its_own_history():
    h = H(mapped_param(chunk=3, retries=1), params={"xs": [0, 1, 2]})
    [d] = h.pending_msgs()
    h.start(d.task)
    h.chunk_report(d.task, [(0, False), (1, True), (2, True)])
    for i in range(3):
        r = h.db[f"m~{i}"]
        print(i, r.status.value, [(a.attempt, a.outcome, a.error_message) for a in r.history])
    assert [a.outcome for a in h.db["m~1"].history] == ["succeeded"]


def test_a_restart_between_retry_and_expansion_repeats_no_message_id():
    from protocol.subjects import task_msg_id
    h = H(flow(t("up"), t("m", "up", map_over="up")))
    h.succeed("up", b"[1,2,3]")
    first = {task_msg_id(d.run_id, d.task, d.attempt) for d in h.pending_msgs() if "~" in d.task}
    for d in [d for d in h.pending_msgs() if "~" in d.task]:
        h.fail(d.task)
    _mark(h, "up", TaskStatus.FAILED)
    h.retry()            # m waits for up: its earlier attempts are only in Mapper._earlier
    h.restart()          # ... and are gone
    h.succeed("up", b"[1,2,3]")
    again = {task_msg_id(d.run_id, d.task, d.attempt) for d in h.pending_msgs() if "~" in d.task}
    print("repeated ids:", sorted(first & again))
    assert not first & again


def test_a_restart_while_a_lone_item_retry_is_queued_keeps_it_one_item():
    h = H(mapped_param(chunk=10, max_active=1, retries=1), params={"xs": list(range(30))})
    [d] = h.pending_msgs()
    h.chunk_report(d.task, [(i, i != 9) for i in range(10)])   # item 9 fails: retry alone
    h.fire_all()
    [sent] = h.pending_msgs()
    assert sent.task == "m~9" and len(sent.chunk) == 1          # published: one item
    h.restart()                                                  # kill -9
    [again] = h.pending_msgs()
    print("re-published after restart:", again.task, again.attempt, len(again.chunk),
          "(same Nats-Msg-Id: JetStream drops it as a duplicate)")
    h.queued["m~9"] = sent               # the agent runs the message the stream kept
    h.chunk_report("m~9", [(9, True)])   # one result, for the one item it was sent
    assert h.rec("m~9").status is TaskStatus.SUCCEEDED, h.rec("m~9").error_message
    [after] = h.pending_msgs()
    assert (after.task, len(after.chunk or [])) == ("m~10", 10)  # items 10.. as their chunk


def _generator_flow():  # type: ignore[no-untyped-def]
    return flow(t("gen", yields=True), t("m", "gen", map_over="gen"), t("after", "m", inputs=("m",)))


def _yield(h, first: int, n: int):  # type: ignore[no-untyped-def]
    from protocol.messages import TaskItems
    return h.report(TaskItems(**h.ids("gen"), first_index=first,
                              items=[msgspec.Raw(b"%d" % i) for i in range(first, first + n)]))


def test_a_generator_marked_by_hand_while_its_map_started_early_lets_the_map_end() -> None:
    h = H(_generator_flow())
    assert _yield(h, 0, 3)
    assert h.rec("m").status is TaskStatus.RUNNING  # started on the first items
    for d in [d for d in h.pending_msgs() if "~" in d.task]:
        h.succeed(d.task, b"%d" % d.first_index)
    assert h.rec("m").status is TaskStatus.RUNNING  # the generator may still yield
    _mark(h, "gen", TaskStatus.SUCCEEDED, b"3")
    assert h.rec("m").status is TaskStatus.SUCCEEDED
    assert msgspec.json.decode(bytes(h.rec("m").output)) == [0, 1, 2]


def test_a_generator_marked_failed_while_its_map_started_early_stops_the_map() -> None:
    h = H(_generator_flow())
    assert _yield(h, 0, 3)
    _mark(h, "gen", TaskStatus.FAILED)
    assert h.rec("m").status is TaskStatus.UPSTREAM_FAILED
    assert not [d for d in h.pending_msgs() if "~" in d.task]
    assert h.rec("after").status is TaskStatus.UPSTREAM_FAILED
