"""Running the hub's Alembic migrations from code, without an alembic.ini."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.db.engine import make_database_file_private

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic Config for the hub's migrations on ``database_url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as an attribute, not as sqlalchemy.url: ConfigParser would interpolate '%' in passwords.
    config.attributes["database_url"] = database_url
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite:///unused")).get_current_head()
    if head is None:
        raise RuntimeError(f"no Alembic revisions in {MIGRATIONS_DIR}")
    return head


def _open_sqlite_file(database_url: str) -> None:
    """Open a SQLite file once with the standard library, so an unusable path fails here with a plain message."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database:
        return
    path = Path(url.database)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {path.parent} does not exist")
    make_database_file_private(path)  # before SQLite creates it by the umask
    sqlite3.connect(path).close()


def _upgrade(database_url: str) -> None:
    _open_sqlite_file(database_url)
    command.upgrade(alembic_config(database_url), "head")


async def upgrade_to_head(database_url: str) -> None:
    """Bring the database schema to the newest revision; runs in a worker thread (env.py has its own loop)."""
    await asyncio.to_thread(_upgrade, database_url)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
