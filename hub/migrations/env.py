"""Alembic environment: runs the hub's migrations through the async engine.

The hub runs them in code (:mod:`hub.db.migrate`), passing the URL in
``config.attributes["database_url"]``; a developer running ``alembic`` by hand sets
``sqlalchemy.url`` instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.pool import ConnectionPoolEntry

import hub.db.schema  # noqa: F401 - registers every table on Base.metadata
from hub.db.engine import create_engine
from hub.db.models import Base

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: set config.attributes['database_url'] or sqlalchemy.url")
    return str(url)


def _driver_begins_nothing(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
    dbapi_connection.isolation_level = None


def _begin_sqlite(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def _configure(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=sqlite,
        # SQLite's DDL is transactional too (see _run_online): an upgrade is all or nothing on both databases.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(_database_url())
    if engine.dialect.name == "sqlite":
        # The sqlite3 module opens a transaction only before DML, so DDL ran outside any: a hub stopped in the
        # middle of an upgrade (a power cut, a kill) left it half done, tables dropped and their copies behind,
        # and could not start again. With the module's own BEGIN off and one issued here, the whole upgrade is
        # one SQLite transaction, DDL included (SQLAlchemy's recipe for pysqlite and aiosqlite).
        event.listen(engine.sync_engine, "connect", _driver_begins_nothing)
        event.listen(engine.sync_engine, "begin", _begin_sqlite)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
            await connection.commit()
    finally:
        await engine.dispose()


def _run_offline() -> None:
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
else:
    # hub.db.migrate runs this in a worker thread, which has no event loop of its own.
    asyncio.run(_run_online())
