"""Creating the async engine for SQLite or PostgreSQL, and describing a database URL without its password."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

# How long SQLite waits for another writer (the API never writes, but migrations and a second process may).
SQLITE_BUSY_TIMEOUT_MS: Final = 5000
POSTGRES_CONNECT_TIMEOUT_S: Final = 5.0


def redacted(database_url: str) -> str:
    """The URL with its password masked, for logs and messages to people."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is not echoed at all: it may hold a secret
        return "<unparsable database URL>"


def _sqlite_pragmas(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets the API read while the consumer writes.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # FULL, not NORMAL: an acknowledged event must survive a power cut, since the agent deletes it.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def create_engine(database_url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for ``database_url`` (sqlite+aiosqlite or postgresql+asyncpg), tuned for the hub."""
    url = make_url(database_url)
    kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True}
    if url.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"timeout": POSTGRES_CONNECT_TIMEOUT_S}
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """Run ``SELECT 1``; raises whatever the driver raises when the database is unreachable."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
