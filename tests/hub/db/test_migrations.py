"""The migrations create exactly the models' schema, on SQLite and PostgreSQL; datetimes come back UTC."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, bindparam, insert, inspect, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

import hub.db.schema  # noqa: F401 - every table on Base.metadata
from hub.db.engine import create_engine
from hub.db.migrate import alembic_config, current_revision, head_revision, upgrade_to_head
from hub.db.models import Base, Gateway, Store, StoredEvent, UtcDateTime


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


async def test_an_empty_database_is_migrated_to_the_models_schema(empty_database_url: str) -> None:
    await upgrade_to_head(empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        assert await current_revision(engine) == head_revision()
        assert await schema_diff(engine, Base.metadata) == []
    finally:
        await engine.dispose()


async def test_0002_fills_max_seq_from_the_stored_events_and_can_be_undone(empty_database_url: str) -> None:
    database_url = empty_database_url
    config = alembic_config(database_url)
    await asyncio.to_thread(command.upgrade, config, "0001")
    engine = create_engine(database_url)
    now = datetime(2025, 3, 1, 12, tzinfo=UTC)
    mark = text(
        "INSERT INTO gateway_streams (gateway_id, stream, through_seq, updated_at) VALUES (:g, :s, :t, :u)"
    ).bindparams(bindparam("u", type_=UtcDateTime()))
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(Store).values(store_id="s-1", first_seen=now, event_count=3))
            await connection.execute(
                insert(Gateway).values(gateway_id="gw-1", store_id="s-1", first_seen=now, last_seen_at=now, devices=[])
            )
            await connection.execute(
                insert(StoredEvent),
                [
                    {
                        "event_id": f"00000000-0000-4000-8000-00000000000{seq}",
                        "store_id": "s-1",
                        "gateway_id": "gw-1",
                        "stream": "a",
                        "seq": seq,
                        "device_id": "d",
                        "kind": "door.contact",
                        "device_ts": now,
                        "received_at": now,
                        "payload": {},
                    }
                    for seq in (1, 2, 7)
                ],
            )
            await connection.execute(
                mark, [{"g": "gw-1", "s": "a", "t": 2, "u": now}, {"g": "gw-1", "s": "b", "t": 0, "u": now}]
            )

        # Up to 0004 and back: 0005 (gateways keyed by store and gateway) cannot be undone.
        await asyncio.to_thread(command.upgrade, config, "0004")

        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT stream, through_seq, max_seq FROM gateway_streams"))).all()
            assert sorted(tuple(row) for row in rows) == [("a", 2, 7), ("b", 0, 0)]
        await asyncio.to_thread(command.downgrade, config, "0001")
        async with engine.connect() as connection:
            assert await current_revision(engine) == "0001"
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
            columns = await connection.run_sync(lambda sync: inspect(sync).get_columns("gateway_streams"))
        assert "data_losses" not in tables
        assert "max_seq" not in {c["name"] for c in columns}
        await upgrade_to_head(database_url)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
