"""ExperimentLog and TaskContext.log_*: what a task logs is checked, numbered and capped; bad
input is an error line in the task's log, never an exception."""

import logging
import math
import threading

import pytest

from flowforge.context import TaskContext
from flowforge.experiment_log import MAX_ERROR_LINES, ExperimentLog
from protocol.experiments import differing


def _ctx(**kw: object) -> TaskContext:
    return TaskContext(run_id="r1", flow="f", task="t", attempt=1, params={}, agent_id="a",
                       sink=lambda f, m: None, **kw)  # type: ignore[arg-type]


def test_steps_count_up_per_name_and_an_explicit_step_moves_the_next_one_on() -> None:
    log = ExperimentLog()
    for value in (0.5, 0.4, 0.3):
        log.metric("loss", value)
    log.metric("acc", 0.9)
    log.metric("loss", 0.1, step=10)
    log.metric("loss", 0.05)
    log.metrics({"val.loss": 0.2, "val.acc": 0.8}, step=7)
    points = [(p.name, p.step, p.value) for p in log.take().points]
    assert points == [("loss", 0, 0.5), ("loss", 1, 0.4), ("loss", 2, 0.3), ("acc", 0, 0.9),
                      ("loss", 10, 0.1), ("loss", 11, 0.05), ("val.loss", 7, 0.2),
                      ("val.acc", 7, 0.8)]
    assert not log.take()


@pytest.mark.parametrize(("name", "value", "step", "said"), [
    ("val loss", 1.0, None, "not an identifier"),
    ("1st", 1.0, None, "not an identifier"),
    ("x" * 65, 1.0, None, "over 64 characters"),
    ("loss", math.nan, None, "not finite"),
    ("loss", math.inf, None, "not finite"),
    ("loss", "0.5", None, "not a number"),
    ("loss", True, None, "not a number"),
    ("loss", None, None, "not a number"),
    ("loss", 10**400, None, "does not fit a float"),
    ("loss", 1.0, -1, "not from 0"),
    ("loss", 1.0, 1.5, "not a whole number"),
])
def test_a_bad_point_is_an_error_line_naming_it_and_the_task_goes_on(
    name: str, value: object, step: object, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = _ctx()
    with caplog.at_level(logging.ERROR, logger="flowforge.task"):
        ctx.log_metric(name, value, step)  # type: ignore[arg-type]
        ctx.log_metric("good", 1)
    assert [p.name for p in ctx.experiment.take().points] == ["good"]
    [line] = [r.getMessage() for r in caplog.records]
    assert said in line and repr(name)[:40] in line and "dropped" in line
    assert caplog.records[0].name == "flowforge.task.f.t"


def test_past_the_cap_one_line_says_so_and_the_rest_are_dropped() -> None:
    lines: list[str] = []
    log = ExperimentLog(max_points=5, on_error=lines.append)
    for i in range(50):
        log.metric("loss", i)
    assert len(log.take().points) == 5
    assert log.dropped == 45
    assert len(lines) == 1 and "limit of 5" in lines[0]


def test_a_flood_of_bad_values_writes_a_bounded_number_of_lines() -> None:
    lines: list[str] = []
    log = ExperimentLog(on_error=lines.append)
    for _ in range(1000):
        log.metric("loss", math.nan)
    assert len(lines) == MAX_ERROR_LINES + 1
    assert "without a line each" in lines[-1]


def test_results_and_artifacts_are_kept_and_a_results_metrics_become_points() -> None:
    ctx = _ctx()
    ctx.log_result(algorithm="random_forest", params={"depth": 3},
                   metrics={"accuracy": 0.93}, artifact="s3://bucket/model.pkl",
                   metadata={"rows": 500})
    ctx.log_artifact("/data/plot.png", kind="plot")
    taken = ctx.experiment.take()
    [result] = taken.results
    assert (result.algorithm, result.params, result.metrics, result.artifact,
            result.metadata) == ("random_forest", {"depth": 3}, {"accuracy": 0.93},
                                 "s3://bucket/model.pkl", {"rows": 500})
    assert [(p.name, p.value) for p in taken.points] == [("accuracy", 0.93)]
    assert [(a.uri, a.kind) for a in taken.artifacts] == [("/data/plot.png", "plot")]
    for epoch in range(3):
        ctx.log_metric("loss", 1 / (epoch + 1))
    ctx.log_result(algorithm="x", metrics={"loss": 0.3, "f1": 0.5})  # loss was logged already
    assert [(p.name, p.step) for p in ctx.experiment.take().points] == [
        ("loss", 0), ("loss", 1), ("loss", 2), ("f1", 0)]


def test_a_bad_result_or_artifact_is_dropped_with_a_line(
    caplog: pytest.LogCaptureFixture
) -> None:
    ctx = _ctx()
    with caplog.at_level(logging.ERROR, logger="flowforge.task"):
        ctx.log_result(algorithm="x", metrics={"acc": math.nan})
        ctx.log_result(algorithm="x", metadata={"blob": "y" * 40_000})
        ctx.log_result(algorithm="x", params={"f": object()})
        ctx.log_artifact("")
    assert not ctx.experiment.take()
    said = [r.getMessage() for r in caplog.records]
    assert "not finite" in said[0] and "32,768" in said[1] and "JSON" in said[2]
    assert "log_artifact" in said[3]


def test_logging_from_many_threads_loses_nothing_and_numbers_each_name_once() -> None:
    log = ExperimentLog()
    ready = threading.Event()
    log.on_ready = ready.set

    def work(k: int) -> None:
        for _ in range(500):
            log.metric(f"m{k % 2}", 1.0)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    points = log.take().points
    assert ready.is_set() and len(points) == 4000
    for name in ("m0", "m1"):
        assert sorted(p.step for p in points if p.name == name) == list(range(2000))


def test_what_was_not_sent_goes_back_first_and_nothing_is_kept_after_close() -> None:
    log = ExperimentLog()
    log.metric("a", 1)
    taken = log.take()
    log.metric("b", 2)
    log.put_back(taken)
    assert [p.name for p in log.take().points] == ["a", "b"]
    log.close()
    log.metric("c", 3)
    assert not log.waiting


def test_differing_params_are_those_not_the_same_in_every_row() -> None:
    rows = [{"lr": 0.1, "depth": 3, "opt": {"m": 1}}, {"lr": 0.01, "depth": 3, "opt": {"m": 1}},
            {"lr": 0.1, "depth": 3}]
    assert differing(rows) == ["lr", "opt"]
    assert differing([{"a": 1}]) == []
