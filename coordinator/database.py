"""The SQLite file through two aiosqlite connections: the single writer's, and the readers'."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

Row = tuple[Any, ...]
Query = tuple[str, Sequence[Any] | Mapping[str, Any]]
"""A statement and its parameters, by position or by name (``:since``)."""


class Database:
    """Two connections on one WAL file, each with its own aiosqlite thread.

    ``writer`` belongs to the coordinator's single writer (batches, flow registration,
    migrations): a transaction there is a sequence of awaited statements, and no read is
    ever queued between them. Reads go to the other connection, where WAL mode shows each
    read transaction the last commit made before it began — never a transaction half done,
    and anything committed before the read was asked for.

    Each aiosqlite thread keeps the process alive until its connection is closed, so an
    owner that fails between ``open`` and ``close`` (a coordinator failing to start) would
    hang the exit: a guard task closes both connections when the event loop cancels what is
    left at its end (``asyncio.run``), if ``close`` was not called before.
    """

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.writer = writer
        self._reader = reader
        self._reading = asyncio.Lock()
        """Held by every read: a single statement never lands inside another caller's
        snapshot, which would show it that snapshot's older state."""
        self._guard = asyncio.get_running_loop().create_task(self._close_at_loop_end())

    @classmethod
    async def open(cls, path: Path, pragmas: Iterable[str] = ()) -> "Database":
        """The reader in autocommit mode (its read transactions are explicit ``BEGIN``) and
        ``query_only``; the writer opens a transaction by itself before its first change
        (sqlite3's DEFERRED mode: one hand-over to its thread less per batch). Nothing stays
        open when this fails."""
        pragmas = tuple(pragmas)
        writer = await _connect(path, pragmas, begin_implicitly=True)
        try:
            reader = await _connect(path, (*pragmas, "query_only=ON"))
        except BaseException:
            await writer.close()
            raise
        return cls(writer, reader)

    async def fetchall(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        """One statement on the read connection, from the last commit."""
        async with self._reading:
            return _rows(await self._reader.execute_fetchall(sql, args))

    async def fetchone(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        """The first row of one statement (every row is fetched: the statement is finished,
        so no read transaction is left open to hide later commits)."""
        rows = await self.fetchall(sql, args)
        return rows[0] if rows else None

    async def fetch_together(self, *queries: Query) -> list[list[Row]]:
        """Several statements in one read transaction: all from the same commit."""
        async with self._reading:
            try:
                await self._reader.execute("BEGIN")
                return [_rows(await self._reader.execute_fetchall(sql, args))
                        for sql, args in queries]
            finally:  # also when cancelled: queued after the BEGIN, it always ends it
                await self._reader.rollback()

    async def close(self) -> None:
        """Close both connections (their threads end); closing twice is a no-op."""
        try:
            await self._close_connections()
        finally:
            self._guard.cancel()
            await asyncio.wait([self._guard])

    async def _close_connections(self) -> None:
        try:
            await self._reader.close()
        finally:
            await self.writer.close()

    async def _close_at_loop_end(self) -> None:
        try:
            await asyncio.get_running_loop().create_future()  # never done: waits to be cancelled
        finally:
            await self._close_connections()  # a no-op after close()


@contextlib.asynccontextmanager
async def transaction(conn: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """The writer's changes in the block, then ``COMMIT`` (its first change began the
    transaction), or ``ROLLBACK`` when the block (or the commit) fails or is cancelled: the
    rollback is queued after whatever statement was in flight, and is a no-op once the
    commit has gone through."""
    try:
        yield conn
        await conn.commit()
    except BaseException:
        await conn.rollback()
        raise


async def _connect(path: Path, pragmas: tuple[str, ...],
                   begin_implicitly: bool = False) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level="DEFERRED" if begin_implicitly else None)
    try:
        for pragma in pragmas:
            await conn.execute_fetchall(f"PRAGMA {pragma}")
    except BaseException:
        await conn.close()
        raise
    return conn


def _rows(rows: Iterable[Any]) -> list[Row]:
    return rows if isinstance(rows, list) else list(rows)
