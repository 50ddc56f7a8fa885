"""bench.tui_measure on small sizes: both parts run to the end and the table reads them."""

from bench.tui_measure import big_flow, half_done, measure_follow, measure_open, table


def test_the_big_run_has_a_record_for_every_task_some_running_with_progress() -> None:
    spec = big_flow("big", 40)
    detail = half_done(spec, "run-1")
    assert len(detail.tasks) == 40
    assert {t.progress is not None for t in detail.tasks if t.status.value == "running"} == {True}


async def test_both_measurements_finish_and_fill_the_table() -> None:
    opened = await measure_open(tasks=60, repeat=1)
    followed = await measure_follow(runs=3, run_tasks=4)
    assert len(opened["cold_s"]) == len(opened["warm_s"]) == 1 and opened["VmHWM"] > 0
    assert followed["events"] == 3 * (2 + 4 * 3 * 2)
    text = table(opened, followed)
    assert "60 tasks, 60 records" in text and "for 3 runs x 4 tasks" in text
