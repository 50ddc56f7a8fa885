"""Task records as SQLite rows: the columns the tables of tasks share, and the conversions."""

from collections.abc import Iterable
from typing import Any

import msgspec

from coordinator.child_store import child_row
from protocol.children import CHILD_SEP
from protocol.dag import INSTANCE_SEP
from protocol.records import Attempt, TaskRecord
from protocol.states import TaskStatus

TASK_COLS = (
    "run_id, task, status, attempt, queue, agent_id, queued_at, started_at, finished_at, "
    "output, error_type, error_message, traceback, checkpoint, checkpoint_at, progress, "
    "retry_at, note, history, deadline_at, dispatch, held"
)
_TASK_STATUS = {s.value: s for s in TaskStatus}
_enc = msgspec.json.Encoder()
_history_dec = msgspec.json.Decoder(list[Attempt])


def task_row(r: TaskRecord) -> tuple[Any, ...]:
    return (
        r.run_id, r.task, r.status.value, r.attempt, r.queue, r.agent_id, r.queued_at,
        r.started_at, r.finished_at, bytes(r.output),
        r.error_type, r.error_message, r.traceback, r.checkpoint, r.checkpoint_at,
        r.progress, r.retry_at, r.note, _enc.encode(r.history) if r.history else None,
        r.deadline_at, r.dispatch, int(r.held),
    )


def split_rows(records: Iterable[TaskRecord]) -> tuple[list[Any], list[Any], list[Any]]:
    """Rows of a batch's tasks: the runs' own, mapped instances (``T~3``: task and index
    apart) and children (``T/0``: parent and spawn number apart)."""
    tasks, instances, children = [], [], []
    for r in records:
        row = task_row(r)
        if CHILD_SEP in r.task:
            children.append(child_row(row, r.task))
        elif INSTANCE_SEP in r.task:
            task, _, index = r.task.rpartition(INSTANCE_SEP)
            instances.append((row[0], task, int(index), *row[2:]))
        else:
            tasks.append(row)
    return tasks, instances, children


def task_from_row(row: tuple[Any, ...]) -> TaskRecord:
    return TaskRecord(
        run_id=row[0], task=row[1], status=_TASK_STATUS[row[2]], attempt=row[3], queue=row[4],
        agent_id=row[5], queued_at=row[6], started_at=row[7], finished_at=row[8],
        output=msgspec.Raw(row[9] or b"null"), error_type=row[10],
        error_message=row[11], traceback=row[12], checkpoint=row[13], checkpoint_at=row[14],
        progress=row[15], retry_at=row[16], note=row[17],
        history=_history_dec.decode(row[18]) if row[18] else [], deadline_at=row[19],
        dispatch=row[20] or row[3], held=bool(row[21]),
    )
