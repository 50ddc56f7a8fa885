"""Experiments in SQLite: points of every attempt kept, each run's final value the latest
attempt's at its highest step, and the table filtered and sorted in SQL."""

from pathlib import Path

import pytest

from coordinator import experiment_store
from coordinator.changes import Changes
from coordinator.experiment_intake import ExperimentWrites
from coordinator.experiment_store import Query
from coordinator.store import Store
from protocol.errors import BadRequest
from protocol.experiment_query import parse_sort, parse_where
from protocol.experiments import MetricPoint
from protocol.messages import TaskMetrics
from protocol.records import RunRecord
from protocol.states import RunStatus


async def _store(tmp_path: Path, runs: dict[str, dict], points: list[tuple]) -> Store:
    """Runs (id -> params) of flow ``f``, and points (run, task, attempt, name, step, value)
    written in separate batches in the order given (as reports would come)."""
    store = await Store.open(tmp_path / "ff.db")
    ch = Changes()
    for i, (run_id, params) in enumerate(runs.items()):
        ch.runs[run_id] = RunRecord(run_id=run_id, flow="f", version="v", params=params,
                                    created_at=float(i), status=RunStatus.SUCCEEDED)
        ch.new_runs.append(run_id)
    await store.commit(ch)
    for run_id, task, attempt, name, step, value in points:
        writes = ExperimentWrites()
        report = TaskMetrics(run_id=run_id, task=task, attempt=attempt, agent_id="a", at=1.0)
        writes.add("f", report, [MetricPoint(name, value, step, 1.0)], [], [])
        await store.commit(Changes(), side=[writes])
    return store


async def _ids(store: Store, where: str | None = None, sort: str | None = None) -> list[str]:
    _, rows = await experiment_store.page(store.database,
                                          Query("f", parse_where(where), parse_sort(sort)),
                                          0, 100, None)
    return [r.run_id for r in rows]


async def test_the_final_value_is_the_latest_attempts_at_its_highest_step(tmp_path: Path) -> None:
    store = await _store(tmp_path, {"r1": {}}, [
        ("r1", "t", 1, "loss", 0, 0.9), ("r1", "t", 1, "loss", 5, 0.5),
        ("r1", "t", 1, "loss", 3, 0.7),  # a lower step logged later: not final
        ("r1", "t", 2, "loss", 0, 0.8),  # a later attempt: final, whatever its step
        ("r1", "t", 1, "loss", 9, 0.1),  # a stale attempt's late point: kept, not final
    ])
    try:
        data = await experiment_store.run_data(store.database, "r1", 100)
        assert data is not None and data.finals == {"loss": 0.8}
        assert [(s.attempt, s.steps, s.values) for s in data.series] == [
            (1, [0, 3, 5, 9], [0.9, 0.7, 0.5, 0.1]), (2, [0], [0.8])]
    finally:
        await store.close()


async def test_rows_are_filtered_and_sorted_in_sql_runs_without_the_key_last(
    tmp_path: Path
) -> None:
    runs = {"a": {"lr": 0.1, "opt": {"name": "adam"}}, "b": {"lr": 0.01, "fast": True},
            "c": {"lr": 0.001}, "d": {}}
    store = await _store(tmp_path, runs, [
        ("a", "t", 1, "acc", 0, 0.7), ("b", "t", 1, "acc", 0, 0.9), ("c", "t", 1, "acc", 0, 0.8)])
    try:
        assert await _ids(store) == ["d", "c", "b", "a"]  # newest first
        assert await _ids(store, sort="-acc") == ["b", "c", "a", "d"]
        assert await _ids(store, sort="acc") == ["a", "c", "b", "d"]
        assert await _ids(store, sort="params.lr") == ["c", "b", "a", "d"]
        assert await _ids(store, sort="-params.lr") == ["a", "b", "c", "d"]
        assert await _ids(store, "params.lr<0.05") == ["c", "b"]
        assert await _ids(store, "metrics.acc>=0.8 and params.lr<=0.01", "acc") == ["c", "b"]
        assert await _ids(store, "params.opt.name=adam") == ["a"]
        assert await _ids(store, "params.fast=true") == ["b"]
        assert await _ids(store, "params.lr=null") == ["d"]
        assert await _ids(store, "params.lr!=null", "-created_at") == ["c", "b", "a"]
        assert await _ids(store, "status=failed") == []
        assert await _ids(store, "run_id='b'") == ["b"]
        with pytest.raises(BadRequest, match="null can only be compared"):
            await _ids(store, "params.lr<null")
        total, rows = await experiment_store.page(
            store.database, Query("f", [], parse_sort("-acc")), 1, 2, ["acc"])
        assert total == 4 and [(r.run_id, r.metrics) for r in rows] == [
            ("c", {"acc": 0.8}), ("a", {"acc": 0.7})]
    finally:
        await store.close()


async def test_a_where_value_is_bound_never_spliced_into_the_sql(tmp_path: Path) -> None:
    store = await _store(tmp_path, {"a": {"name": "x' OR 1=1 --"}}, [])
    try:
        assert await _ids(store, "params.name=\"x' OR 1=1 --\"") == ["a"]
        assert await _ids(store, "params.name='y'") == []
    finally:
        await store.close()
