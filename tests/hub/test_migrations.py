"""The migrations create exactly the models' schema, on SQLite and PostgreSQL; datetimes come back UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.db.engine import create_engine
from hub.db.migrate import current_revision, head_revision, upgrade_to_head
from hub.db.models import Base, Store


async def schema_diff(engine: AsyncEngine, metadata: MetaData) -> list[Any]:
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata)
        )


async def test_migrated_schema_matches_models(engine: AsyncEngine) -> None:
    assert await current_revision(engine) == head_revision()
    assert await schema_diff(engine, Base.metadata) == []


async def test_comparison_would_see_a_difference(engine: AsyncEngine) -> None:
    """Guard against a vacuous comparison: a table the migrations lack must show up."""
    metadata = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    Table("not_migrated", metadata, Column("id", Integer, primary_key=True))
    diff = await schema_diff(engine, metadata)
    assert [entry[0] for entry in diff] == ["add_table"]


async def test_upgrade_twice_is_harmless(engine: AsyncEngine, database_url: str) -> None:
    await upgrade_to_head(database_url)
    assert await current_revision(engine) == head_revision()


async def test_datetimes_are_stored_and_read_as_utc(engine: AsyncEngine) -> None:
    local = datetime(2025, 3, 1, 13, 30, 15, 123456, tzinfo=timezone(timedelta(hours=1)))
    async with engine.begin() as connection:
        await connection.execute(insert(Store).values(store_id="s-1", first_seen=local, event_count=0))
    async with engine.connect() as connection:
        first_seen = (await connection.execute(select(Store.first_seen))).scalar_one()
        later = (
            await connection.execute(
                select(Store.store_id).where(Store.first_seen > datetime(2025, 3, 1, 12, 30, 15, tzinfo=UTC))
            )
        ).all()
    assert first_seen == local
    assert first_seen.tzinfo is UTC
    assert later == [("s-1",)]


async def test_naive_datetimes_are_refused(engine: AsyncEngine) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        async with engine.begin() as connection:
            await connection.execute(
                insert(Store).values(store_id="s-1", first_seen=datetime(2025, 3, 1), event_count=0)
            )


async def test_sqlite_runs_in_wal_mode_with_busy_timeout(sqlite_url: str) -> None:
    await upgrade_to_head(sqlite_url)
    engine = create_engine(sqlite_url)
    try:
        async with engine.connect() as connection:
            journal = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
            busy = (await connection.execute(text("PRAGMA busy_timeout"))).scalar_one()
            foreign_keys = (await connection.execute(text("PRAGMA foreign_keys"))).scalar_one()
    finally:
        await engine.dispose()
    assert (journal, busy, foreign_keys) == ("wal", 5000, 1)
