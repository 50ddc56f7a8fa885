"""Helpers for the tests of query plans: the statements a call sends, and their plans."""

from collections.abc import Iterable
from typing import Any

from coordinator.database import Database

Statement = tuple[str, tuple[Any, ...]]


class Recorder:
    """The statements sent through a Database's reads (passed on unchanged)."""

    def __init__(self, db: Database) -> None:
        self.statements: list[Statement] = []
        fetchall, fetch_together = db.fetchall, db.fetch_together

        async def record_all(sql: str, args: Any = ()) -> Any:
            self.statements.append((sql, tuple(args)))
            return await fetchall(sql, args)

        async def record_together(*queries: Any) -> Any:
            self.statements.extend((sql, tuple(args)) for sql, args in queries)
            return await fetch_together(*queries)

        db.fetchall, db.fetch_together = record_all, record_together  # type: ignore[method-assign]


class WriteRecorder:
    """Stands in for the writer's connection in a ``write(conn)``: keeps each statement with
    its first row of parameters, and runs nothing."""

    def __init__(self) -> None:
        self.statements: list[Statement] = []

    async def executemany(self, sql: str, rows: Iterable[Any]) -> None:
        self.statements.append((sql, tuple(next(iter(rows)))))

    async def execute(self, sql: str, args: Iterable[Any] = ()) -> None:
        self.statements.append((sql, tuple(args)))


async def plans(db: Database, statements: list[Statement]) -> list[str]:
    """The lines of each statement's ``EXPLAIN QUERY PLAN``, in order."""
    return [row[3] for sql, args in statements
            for row in await db.fetchall(f"EXPLAIN QUERY PLAN {sql}", args)]
