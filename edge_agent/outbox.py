"""The durable outbox: events wait here, in SQLite, until the hub says it has stored them.

The table has the shape of ThingsBoard Gateway's SQLite storage: ``seq INTEGER
PRIMARY KEY AUTOINCREMENT`` (so a sequence number is never reused, even after
every row was deleted), read in order with ``LIMIT``, acknowledged with
``DELETE ... WHERE seq <= ?``. A ``stream`` UUID is created once with the
database; it names this life of the outbox, so the hub can tell a wiped outbox
(whose seq restarts at 1) from a replay.

One :class:`Outbox` owns its file: it holds SQLite's exclusive lock while open,
so a second agent pointed at the same file fails at once instead of sending
and deleting the same events.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Self, TypeVar
from uuid import UUID, uuid4

import aiosqlite
from pydantic import JsonValue

from storegate.wire import Priority, priority_of

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        priority INTEGER NOT NULL,
        ts TEXT NOT NULL,
        payload TEXT NOT NULL
    )""",
)
_COLUMNS: Final = "seq, event_id, device_id, kind, priority, ts, payload"

T = TypeVar("T")


class OutboxError(Exception):
    """The outbox file cannot be used: unreadable, not a database, in use, or from a newer agent."""


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; the outbox assigns its ``seq``."""

    device_id: str
    kind: str
    ts: datetime
    payload: dict[str, JsonValue]
    event_id: UUID = field(default_factory=uuid4)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event in the outbox, with the sequence number it was given."""

    seq: int
    event_id: UUID
    device_id: str
    kind: str
    priority: Priority
    ts: datetime
    payload: dict[str, JsonValue]


def _row_of(event: NewEvent) -> tuple[str, str, str, int, str, str]:
    if event.ts.tzinfo is None:
        raise ValueError(f"event {event.event_id} has a naive ts {event.ts.isoformat()}; timestamps must be aware")
    # allow_nan=False: NaN and Infinity are not JSON, and the hub would reject the whole batch.
    payload = json.dumps(event.payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    ts = event.ts.astimezone(UTC).isoformat()
    return (str(event.event_id), event.device_id, event.kind, int(priority_of(event.kind)), ts, payload)


def _stored_of(row: sqlite3.Row | tuple[object, ...]) -> StoredEvent:
    seq, event_id, device_id, kind, priority, ts, payload = row
    return StoredEvent(
        seq=int(str(seq)),
        event_id=UUID(str(event_id)),
        device_id=str(device_id),
        kind=str(kind),
        priority=Priority(int(str(priority))),
        ts=datetime.fromisoformat(str(ts)),
        payload=json.loads(str(payload)),
    )


class Outbox:
    """The agent's SQLite outbox. Async context manager; every operation is serialised."""

    def __init__(self, *, path: Path) -> None:
        self.path = path
        self._conn: aiosqlite.Connection | None = None
        # One connection, and a transaction spans several awaits: without this lock a
        # read could see another operation's uncommitted rows, which a rollback would
        # then give out again under the same seq.
        self._lock = asyncio.Lock()
        self._stream: UUID | None = None
        self._last_seq = 0
        self._depth = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._conn is not None:
            raise RuntimeError("Outbox is already open")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=1.0)
        except (OSError, sqlite3.Error) as err:
            raise OutboxError(f"cannot open outbox {self.path}: {err}") from err
        try:
            await self._prepare(conn)
        except BaseException as err:
            await conn.close()
            if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
                raise OutboxError(f"outbox {self.path} is in use by another process") from err
            if isinstance(err, sqlite3.Error):
                raise OutboxError(f"cannot use outbox {self.path}: {err}") from err
            raise
        self._conn = conn
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Wait for the running operation, then close the database; idempotent."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()

    async def _prepare(self, conn: aiosqlite.Connection) -> None:
        # Exclusive locking before WAL: no -shm file, and no second process can use the outbox.
        await conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = await self._scalar(conn, "PRAGMA journal_mode=WAL")
        if str(mode).lower() != "wal":
            raise OutboxError(f"outbox {self.path} cannot use WAL journal mode (got {mode!r})")
        # FULL: fsync the WAL at every commit. Until the hub acknowledges an event, this file
        # holds its only copy. With NORMAL a power cut could undo the last commits: those
        # events would be lost, and their seqs handed out again to other events, which the
        # hub (if it got the first ones) would take for duplicates. Group commit keeps the
        # cost to one fsync per batch of readings.
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(str(await self._scalar(conn, "PRAGMA user_version") or 0))
            if version > SCHEMA_VERSION:
                raise OutboxError(
                    f"outbox {self.path} has schema version {version}; this agent knows up to {SCHEMA_VERSION}"
                )
            for statement in _SCHEMA:
                await conn.execute(statement)
            await conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('stream', ?)", (str(uuid4()),))
            await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            stream = await self._scalar(conn, "SELECT value FROM meta WHERE key = 'stream'")
            last_seq = await self._scalar(conn, "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
            depth = await self._scalar(conn, "SELECT COUNT(*) FROM outbox")
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise
        self._stream = UUID(str(stream))
        self._last_seq = int(str(last_seq)) if last_seq is not None else 0
        self._depth = int(str(depth))

    @staticmethod
    async def _scalar(conn: aiosqlite.Connection, sql: str, params: Sequence[object] = ()) -> object:
        # execute_fetchall: one trip to the database thread instead of three (execute, fetch, close).
        rows = list(await conn.execute_fetchall(sql, params))
        return rows[0][0] if rows else None

    def _open_conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("Outbox is not open; use it as an async context manager")
        return self._conn

    async def _serialised(self, operation: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        async def locked() -> T:
            async with self._lock:
                return await operation(self._open_conn())

        # Shielded: a caller cancelled mid-transaction must not leave the database and the
        # in-memory seq and depth disagreeing about whether the transaction happened.
        return await asyncio.shield(locked())

    # ------------------------------------------------------------------ state

    @property
    def stream(self) -> UUID:
        """The UUID of this outbox's life; stable across restarts, new only if the file is wiped."""
        if self._stream is None:
            raise RuntimeError("Outbox is not open")
        return self._stream

    @property
    def last_seq(self) -> int:
        """The highest seq ever assigned (0 for a new outbox), whether or not it was acknowledged since."""
        return self._last_seq

    def depth(self) -> int:
        """How many events wait for the hub's acknowledgement."""
        return self._depth

    async def oldest_ts(self) -> datetime | None:
        """The ``ts`` of the first waiting event (lowest seq), or None when the outbox is empty."""

        async def query(conn: aiosqlite.Connection) -> object:
            return await self._scalar(conn, "SELECT ts FROM outbox ORDER BY seq LIMIT 1")

        value = await self._serialised(query)
        return None if value is None else datetime.fromisoformat(str(value))

    async def first_seq(self) -> int | None:
        """The lowest waiting seq, or None when the outbox is empty."""

        async def query(conn: aiosqlite.Connection) -> object:
            return await self._scalar(conn, "SELECT seq FROM outbox ORDER BY seq LIMIT 1")

        value = await self._serialised(query)
        return None if value is None else int(str(value))

    # ------------------------------------------------------------------ operations

    async def append(self, events: Sequence[NewEvent]) -> list[StoredEvent]:
        """Append events in one transaction and return them with their seqs, in order."""
        if not events:
            return []
        rows = [_row_of(event) for event in events]

        async def insert(conn: aiosqlite.Connection) -> int:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await conn.executemany(
                    "INSERT INTO outbox (event_id, device_id, kind, priority, ts, payload) VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                last = await self._scalar(conn, "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
                await conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise
            last_seq = int(str(last))
            self._last_seq = last_seq
            self._depth += len(rows)
            return last_seq

        last_seq = await self._serialised(insert)
        # Under the lock, AUTOINCREMENT hands out consecutive seqs within one transaction.
        first = last_seq - len(events) + 1
        return [
            StoredEvent(
                seq=first + index,
                event_id=event.event_id,
                device_id=event.device_id,
                kind=event.kind,
                priority=priority_of(event.kind),
                ts=event.ts.astimezone(UTC),
                payload=event.payload,
            )
            for index, event in enumerate(events)
        ]

    async def read_after(self, seq: int, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` waiting events with a seq above ``seq``, in seq order."""
        if limit <= 0:
            return []

        async def query(conn: aiosqlite.Connection) -> list[StoredEvent]:
            rows = await conn.execute_fetchall(
                f"SELECT {_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608 (constant)
                (seq, limit),
            )
            return [_stored_of(row) for row in rows]

        return await self._serialised(query)

    async def ack_through(self, seq: int) -> int:
        """Delete every event with a seq up to ``seq`` (the hub stored them); returns how many went."""

        async def delete(conn: aiosqlite.Connection) -> int:
            async with conn.execute("DELETE FROM outbox WHERE seq <= ?", (seq,)) as cursor:
                deleted = max(cursor.rowcount, 0)
            self._depth -= deleted
            return deleted

        return await self._serialised(delete)
