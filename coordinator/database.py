"""One SQLite connection on a thread of its own: each call is handed to that thread, in order."""

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Row = tuple[Any, ...]


class Database:
    """A ``sqlite3`` connection used only from one thread (its objects must stay on the thread
    that made them), without blocking the event loop.

    ``run`` hands a whole function over: a batch of statements and its transaction cost one
    hand-over (the hot path: a Python loop of awaited statements is a thread hop each), and
    no other call runs in the middle of it, so nothing reads a transaction half done.
    """

    def __init__(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._executor = executor
        self._closed = False

    @classmethod
    async def open(cls, path: Path, pragmas: Iterable[str] = ()) -> "Database":
        """Connect in autocommit mode (transactions are explicit ``BEGIN``/``COMMIT``)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowforge-sqlite")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(
                executor, partial(_connect, path, tuple(pragmas)))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(conn, executor)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the connection's thread."""
        if self._closed:
            raise sqlite3.ProgrammingError("the database is closed")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, partial(fn, self._conn, *args))

    async def fetchone(self, sql: str, args: Iterable[Any] = ()) -> Row | None:
        return await self.run(_fetchone, sql, tuple(args))

    async def fetchall(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        return await self.run(_fetchall, sql, tuple(args))

    async def close(self) -> None:
        """Close once the calls handed over before are done; closing twice is a no-op."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=False)


def _connect(path: Path, pragmas: tuple[str, ...]) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in pragmas:
            conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        conn.close()
        raise
    return conn


def _fetchone(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> Row | None:
    with contextlib.closing(conn.execute(sql, args)) as cur:
        return cur.fetchone()


def _fetchall(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[Row]:
    with contextlib.closing(conn.execute(sql, args)) as cur:
        return cur.fetchall()
