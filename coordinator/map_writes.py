"""What a batch writes about mapped tasks: their instances' rows and generator tasks' items
(side writes of the writer's transaction, kept apart from the runs' own tables)."""

from typing import Any, NamedTuple

import aiosqlite
import msgspec

from protocol.dag import INSTANCE_SEP
from protocol.states import TaskStatus


class DoneInstance(NamedTuple):
    """An instance that succeeded, as a restart or a retry needs it (a full record of each of a
    million would take gigabytes): it reads like a task record's same fields."""

    task: str
    attempt: int
    output: msgspec.Raw
    status: TaskStatus = TaskStatus.SUCCEEDED


def instance_columns(task_cols: str) -> str:
    """The columns of task instances as ``map_instances`` has them: the task's name and the
    instance's index in place of the instance's name (``T``, 3 for ``T~3``)."""
    return task_cols.replace(", task,", ", task, idx,", 1)


def named(task_cols: str) -> str:
    """What to select from ``map_instances`` to read rows as task instances (``T~3``)."""
    return task_cols.replace(", task,", f", task || '{INSTANCE_SEP}' || idx,", 1)


class Instances(list[tuple[Any, ...]]):
    """Rows of mapped tasks' instances: the columns of task instances, the task's name and
    the instance's index in place of the instance's name."""

    def __init__(self, rows: list[tuple[Any, ...]], task_cols: str,
                 reset: list[tuple[str, str]] | None = None) -> None:
        super().__init__(rows)
        self.columns = instance_columns(task_cols)
        self.reset = reset or []
        """Mapped tasks whose stored instances go first (expanded again over new items)."""

    def __bool__(self) -> bool:
        return bool(len(self) or self.reset)

    async def write(self, conn: aiosqlite.Connection) -> None:
        if self.reset:
            await conn.executemany("DELETE FROM map_instances WHERE run_id = ? AND task = ?",
                                   self.reset)
        marks = ", ".join("?" * len(self.columns.split(",")))
        await conn.executemany(
            f"INSERT OR REPLACE INTO map_instances ({self.columns}) VALUES ({marks})", self)


class Items:
    """Items generator tasks yielded (those of a task running again are deleted first)."""

    def __init__(self, reset: list[tuple[str, str]],
                 rows: list[tuple[str, str, int, bytes]]) -> None:
        self.reset, self.rows = reset, rows

    def __bool__(self) -> bool:
        return bool(self.reset or self.rows)

    async def write(self, conn: aiosqlite.Connection) -> None:
        if self.reset:
            await conn.executemany("DELETE FROM map_items WHERE run_id = ? AND task = ?",
                                   self.reset)
        if self.rows:
            await conn.executemany("INSERT OR REPLACE INTO map_items (run_id, task, idx, item) "
                                   "VALUES (?, ?, ?, ?)", self.rows)
