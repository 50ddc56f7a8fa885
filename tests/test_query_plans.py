"""The coordinator's statements on tables that grow (runs, tasks, instances, children, fires,
batch items) find their rows through an index that bounds what they read: each runs per task,
run, fill, start or API call, so a scan, or an index that walks past the rows wanted, costs
in proportion to everything ever stored (SQLite plans without ANALYZE statistics, as the
coordinator's). A statement whose plan goes back to a SCAN, or to a poorer index, fails here."""

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from coordinator import batch_store, child_store, instance_store, schedule_store
from coordinator.batch_store import BatchWrites
from coordinator.store import Store
from protocol.batches import ItemStatus
from protocol.children import GetChildResults, ListChildren
from protocol.schedules import FireOutcome
from protocol.states import RunStatus, TaskStatus
from tests.query_plans import Recorder, WriteRecorder, plans

ROWS = 300
Call = Callable[[Store, WriteRecorder], Awaitable[object]]


def _batch_writes(**changes: object) -> Call:
    return lambda store, conn: BatchWrites(**changes).write(conn)  # type: ignore[arg-type]


CASES: list[tuple[str, Call, str]] = [  # (what, the call, what its plan must show)
    ("a run and its tasks", lambda s, _: s.get_run("r1"),
     "task_instances USING PRIMARY KEY (run_id=?)"),
    ("the active runs, at each start", lambda s, _: s.active_runs(),
     "runs USING INDEX runs_by_status (status=?)"),
    ("the runs of a flow in one state", lambda s, _: s.list_runs("f1", RunStatus.FAILED),
     "runs USING INDEX runs_by_flow_status (flow=? AND status=?)"),
    ("the runs of a flow", lambda s, _: s.list_runs("f1"), "runs USING INDEX runs_by_flow (flow=?)"),
    ("the runs in one state", lambda s, _: s.list_runs(status=RunStatus.RUNNING),
     "runs USING INDEX runs_by_status (status=?)"),
    ("a run by its key", lambda s, _: s.run_by_key("f1", "k1"),
     "runs USING INDEX runs_by_key (flow=? AND idempotency_key=?)"),
    ("a restart's mapped instances", lambda s, _: s.instances_of("r1"),
     "map_instances USING PRIMARY KEY (run_id=?)"),
    ("a page of a mapped task's instances", lambda s, _: instance_store.survey(
        s.database, "r1", "m", counts=False, after_index=100, limit=10),
     "map_instances USING PRIMARY KEY (run_id=? AND task=? AND idx>?)"),
    ("a schedule's buffered fires, at each start",
     lambda s, _: schedule_store.waiting_fires(s.database, "s", 10),
     "schedule_fires USING COVERING INDEX schedule_fires_by_outcome (schedule=? AND outcome=?)"),
    ("a schedule's fires of one outcome",
     lambda s, _: schedule_store.fires_of(s.database, "s", 10, FireOutcome.BUFFERED),
     "schedule_fires USING INDEX schedule_fires_by_outcome (schedule=? AND outcome=?)"),
    ("a page of a run's children", lambda s, _: child_store.listing(
        s.database, ListChildren(run_id="r1", after="p/100", limit=10), 1 << 20),
     "t USING PRIMARY KEY (run_id=? AND (parent,seq)>(?,?))"),
    ("a page of one parent's children in one state", lambda s, _: child_store.listing(
        s.database, ListChildren(run_id="r1", parent="p", after="p/100", limit=10,
                                 status=TaskStatus.SUCCEEDED), 1 << 20),
     "t USING PRIMARY KEY (run_id=? AND parent=? AND seq>?)"),
    ("a parent's children's results", lambda s, _: child_store.results(
        s.database, GetChildResults(run_id="r1", parent="p", after=100, upto=110), 1 << 20),
     "t USING PRIMARY KEY (run_id=? AND parent=? AND seq>? AND seq<?)"),
    ("the waiting items of a fill", lambda s, _: batch_store.waiting(s.database, "b1", 100, 10),
     "batch_items USING INDEX batch_items_by_status (batch_id=? AND status=? AND seq>?)"),
    ("the items of a batch in one state", lambda s, _: batch_store.items(
        s.database, "b1", 100, 10, ItemStatus.SUCCEEDED),
     "batch_items USING INDEX batch_items_by_status (batch_id=? AND status=? AND seq>?)"),
    ("items following their runs, at each commit",
     _batch_writes(run_statuses={"r1": ItemStatus.SUCCEEDED}),
     "batch_items USING INDEX batch_items_by_run (run_id=?)"),
    ("a cancelled batch's waiting items", _batch_writes(cancelled={"b1"}),
     "batch_items USING COVERING INDEX batch_items_by_status (batch_id=? AND status=?)"),
    ("a batch's active items reconciled with their runs, at each start",
     _batch_writes(reconcile={"b1"}),
     "batch_items USING INDEX batch_items_by_status (batch_id=? AND status=?)"),
]


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    store = await Store.open(tmp_path / "ff.db")
    conn = store.database.writer
    statuses = ("succeeded", "failed", "running", "pending", "cancelled")
    await conn.executemany(
        "INSERT INTO runs (run_id, flow, version, status, params, created_at, source, counts, "
        "idempotency_key, schedule) VALUES (?, ?, 'v', ?, x'7b7d', ?, 'api', x'7b7d', ?, ?)",
        [(f"r{n}", f"f{n % 3}", statuses[n % 5], n, f"k{n}", "s" if n % 2 else None)
         for n in range(ROWS)])
    await conn.executemany(
        "INSERT INTO task_instances (run_id, task, status, attempt, queue) "
        "VALUES (?, 't', 'succeeded', 1, 'q')", [(f"r{n}",) for n in range(ROWS)])
    await conn.executemany(
        "INSERT INTO map_instances (run_id, task, idx, status, attempt, queue, output) "
        "VALUES ('r1', 'm', ?, 'succeeded', 1, 'q', x'6e756c6c')", [(n,) for n in range(ROWS)])
    for table, cols, values in (("child_tasks", "status, attempt, queue", "'succeeded', 1, 'q'"),
                                ("child_specs", "function, spawn, ident", "'f', x'00', 1")):
        await conn.executemany(
            f"INSERT INTO {table} (run_id, parent, seq, {cols}) VALUES (?, ?, ?, {values})",
            [(f"r{n % 2}", "p", n) for n in range(ROWS)])
    await conn.executemany(
        "INSERT INTO schedule_fires VALUES ('s', ?, ?, 1, ?, '', NULL, 0)",
        [(n, n, "started" if n % 50 else "buffered") for n in range(ROWS)])
    await conn.executemany(
        "INSERT INTO batch_items (batch_id, seq, item_key, params, status, run_id) "
        "VALUES ('b1', ?, ?, x'7b7d', ?, ?)",
        [(n, f"k{n}", statuses[n % 5], f"r{n}") for n in range(ROWS)])
    await conn.commit()
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize(("call", "expected"), [(c, e) for _, c, e in CASES],
                         ids=[what for what, _, _ in CASES])
async def test_a_statement_on_a_growing_table_reads_it_through_an_index_that_bounds_it(
    store: Store, call: Call, expected: str,
) -> None:
    reads, writes = Recorder(store.database), WriteRecorder()
    await call(store, writes)
    statements = [*reads.statements, *writes.statements]
    assert statements
    read = await plans(store.database, statements)
    assert not [p for p in read if p.startswith("SCAN")], read
    assert f"SEARCH {expected}" in read, read
