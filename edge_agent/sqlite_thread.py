"""A SQLite file the agent uses from asyncio through one thread of its own: the outbox and the print jobs.

sqlite3 calls block, and a connection belongs to the thread that made it; so each file gets a
single-thread executor, every operation runs there one at a time (no locking between them), and
the event loop only awaits. This base holds that lifecycle; the subclass opens its file in
``_open_sync`` (on that thread) and keeps the connection in ``_conn``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import ClassVar, Self, TypeVar

T = TypeVar("T")


class SqliteOnItsThread:
    """One SQLite connection, used only on its own thread. Async context manager: open, then ``close()``."""

    thread_name: ClassVar[str] = "sqlite"

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def __aenter__(self) -> Self:
        await self._open_thread()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Wait for the running operation, then close the file; idempotent."""
        await self._close_thread()

    def _open_sync(self) -> None:
        """Open the file and set ``_conn`` (runs on the thread); raises the subclass's own error."""
        raise NotImplementedError

    async def _open_thread(self) -> None:
        """Start the thread and open the file on it; on failure the thread is gone again."""
        if self._executor is not None:
            raise RuntimeError(f"{type(self).__name__} is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)
        try:
            await self._run(self._open_sync)
        except BaseException:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=False)
            raise

    async def _close_thread(self) -> None:
        """Wait for the running operation, close the connection and let the thread go; idempotent."""
        executor = self._executor
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_sync)
        finally:
            self._executor = None
            executor.shutdown(wait=False)

    async def _run(self, operation: Callable[..., T], *args: object) -> T:
        """Run ``operation(*args)`` on the thread, after the operations queued before it."""
        if self._executor is None:
            raise RuntimeError(f"{type(self).__name__} is not open; use it as an async context manager")
        return await asyncio.get_running_loop().run_in_executor(self._executor, operation, *args)

    def _db(self) -> sqlite3.Connection:
        """The connection (on the thread only)."""
        if self._conn is None:
            raise RuntimeError(f"{type(self).__name__} is not open; use it as an async context manager")
        return self._conn

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
