"""Creating the async engine for SQLite or PostgreSQL; describing a database URL without its password, and a
database error without its SQL."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Final

import pydantic_core
import structlog
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from hub.db.sqlfunctions import register_sqlite_functions
from storegate.private_files import private_sqlite_files

log = structlog.get_logger(__name__)

# How long a writer waits for SQLite's one write lock, held in turn by the consumer's units, the API's changes,
# the command and notification senders, the rules ticker and migrations.
SQLITE_BUSY_TIMEOUT_MS: Final = 5000
# Page cache per connection (negative: KiB). The events table has seven indexes; with SQLite's 2 MiB
# default, index pages are evicted and read again on every unit of work.
SQLITE_CACHE_KIB: Final = 64 * 1024
# Checkpoint the WAL every ~40 MiB instead of every 4 MiB: an index page written by several units is
# copied into the database file once. Durability is unchanged: every commit still fsyncs the WAL.
SQLITE_WAL_AUTOCHECKPOINT_PAGES: Final = 10_000
# After a checkpoint, the WAL file is truncated to this size rather than left at its largest.
SQLITE_JOURNAL_SIZE_LIMIT_BYTES: Final = 64 * 1024 * 1024
POSTGRES_CONNECT_TIMEOUT_S: Final = 5.0


def json_text(value: Any) -> str:
    """``value`` as compact JSON text, the way every JSON column of the hub is written.

    pydantic-core's serializer is several times faster than ``json.dumps`` on the ingest path;
    NaN and infinities, which ``wire.decode`` refuses in messages, would be written as ``json.dumps`` writes them.
    """
    return pydantic_core.to_json(value, inf_nan_mode="constants").decode()


def redacted(database_url: str) -> str:
    """The URL with its password masked, for logs and messages to people."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is not echoed at all: it may hold a secret
        return "<unparsable database URL>"


def describe_error(err: BaseException) -> str:
    """A one-line description of a database error, without SQL or bound parameters (they may hold payloads)."""
    cause = err.orig if isinstance(err, DBAPIError) and err.orig is not None else err
    line = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    line = line[:300]
    return f"{type(cause).__name__}: {line}" if line else type(cause).__name__


def _sqlite_pragmas(dbapi_connection: Any, connection_record: ConnectionPoolEntry, *, autocheckpoint: bool) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets the API read while the consumer writes.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # FULL, not NORMAL: an acknowledged event must survive a power cut, since the agent deletes it.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        # 0 when a WalCheckpointer runs: a checkpoint then never lands inside an ingest commit.
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES if autocheckpoint else 0}")
        cursor.execute(f"PRAGMA journal_size_limit={SQLITE_JOURNAL_SIZE_LIMIT_BYTES}")
    finally:
        cursor.close()
    # Time zones for the reports (PostgreSQL has them built in).
    register_sqlite_functions(dbapi_connection)


def sqlite_path(database_url: str) -> Path | None:
    """The database file of a SQLite URL, or None for any other database."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    return Path(url.database)


def make_database_file_private(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does, and tighten an existing one and its -wal and -shm.

    SQLite creates a database with the process's umask (0644 under the usual 022) and gives its
    -wal, -shm and -journal files the mode of the database file; the hub's database holds every
    event and the webhook secrets. A missing directory is left for SQLite to report.
    """
    if not path.parent.is_dir():
        return
    try:
        tightened = private_sqlite_files(path)
    except PermissionError:  # another user's file: SQLite says so if it matters
        log.warning("database_file_not_private", path=str(path), fix=f"chmod 600 {path}*")
        return
    for file, was in tightened:
        log.warning("database_file_made_private", path=str(file), was=f"{was:04o}")


def create_engine(database_url: str, *, echo: bool = False, background_checkpoint: bool = False) -> AsyncEngine:
    """An async engine for ``database_url`` (sqlite+aiosqlite or postgresql+asyncpg), tuned for the hub.

    ``background_checkpoint``: the caller runs a :class:`~hub.db.checkpoint.WalCheckpointer`, so
    SQLite's automatic checkpoints are turned off on this engine's connections.
    """
    url = make_url(database_url)
    kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True, "json_serializer": json_text}
    if url.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"timeout": POSTGRES_CONNECT_TIMEOUT_S}
    database_file = sqlite_path(database_url)
    if database_file is not None and url.database != ":memory:" and not url.query.get("uri"):
        make_database_file_private(database_file)
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", partial(_sqlite_pragmas, autocheckpoint=not background_checkpoint))
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """Run ``SELECT 1``; raises whatever the driver raises when the database is unreachable."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
