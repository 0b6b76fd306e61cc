"""The migrations create exactly the models' schema, on SQLite and PostgreSQL; datetimes come back UTC."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import JSON, Column, Integer, MetaData, Table, bindparam, event, func, insert, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

import hub.db.schema  # noqa: F401 - every table on Base.metadata
from hub.db.engine import create_engine
from hub.db.migrate import alembic_config, current_revision, head_revision, upgrade_to_head
from hub.db.models import (
    Base,
    DataLossRecord,
    Gateway,
    GatewayPresence,
    GatewayStream,
    OutgoingCommand,
    Store,
    StoredEvent,
    UtcDateTime,
)


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


def _typed(sql: str, times: tuple[str, ...] = (), documents: tuple[str, ...] = ()) -> Any:
    """A statement whose times are bound as the hub stores them (UTC) and whose documents as JSON."""
    return text(sql).bindparams(
        *(bindparam(name, type_=UtcDateTime()) for name in times),
        *(bindparam(name, type_=JSON()) for name in documents),
    )


class MigrationBrokenOnPurpose(RuntimeError):
    """Stands for the power cut: the hub process gone in the middle of an upgrade."""


async def test_an_upgrade_stopped_halfway_leaves_the_database_as_it_was(empty_database_url: str) -> None:
    """0005 sets its tables aside, drops them and copies the rows back: stopped after the drops, an upgrade run
    statement by statement would leave the gateways gone and their copies behind, and every later start would
    fail on "table data_losses_0004 already exists" (found by the chaos test, whose kill once landed there)."""
    database_url = empty_database_url
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), "0004")
    engine = create_engine(database_url)
    t0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                _typed("INSERT INTO stores (store_id, first_seen, event_count) VALUES ('s-1', :t, 0)", ("t",)),
                {"t": t0},
            )
            await connection.execute(
                _typed(
                    "INSERT INTO gateways (gateway_id, store_id, online, first_seen, last_seen_at, devices)"
                    " VALUES ('gw-1', 's-1', true, :t, :t, :devices)",
                    ("t",),
                    ("devices",),
                ),
                {"t": t0, "devices": []},
            )

        def break_the_copy_back(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.lstrip().startswith("INSERT INTO gateways"):  # 0005, after its DROP TABLEs
                raise MigrationBrokenOnPurpose("stopped between the drops and the copy")

        event.listen(Engine, "before_cursor_execute", break_the_copy_back)
        try:
            with pytest.raises(MigrationBrokenOnPurpose):
                await asyncio.to_thread(command.upgrade, alembic_config(database_url), "head")
        finally:
            event.remove(Engine, "before_cursor_execute", break_the_copy_back)

        assert await current_revision(engine) == "0004"
        async with engine.connect() as connection:
            tables = set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
            assert not {name for name in tables if name.endswith("_0004")}
            assert (await connection.execute(text("SELECT gateway_id, store_id FROM gateways"))).all() == [
                ("gw-1", "s-1")
            ]

        await upgrade_to_head(database_url)  # the next start upgrades as if nothing had happened
        assert await current_revision(engine) == head_revision()
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT store_id, gateway_id FROM gateways"))).all() == [
                ("s-1", "gw-1")
            ]
    finally:
        await engine.dispose()


async def test_0005_keys_gateways_by_store_and_carries_every_row_over(empty_database_url: str) -> None:
    """A 0004 database where gw-1 sent from two stores (its row last moved to s-2) becomes three gateways."""
    database_url = empty_database_url
    await asyncio.to_thread(command.upgrade, alembic_config(database_url), "0004")
    engine = create_engine(database_url)
    t0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
    at = [t0 + timedelta(minutes=n) for n in range(10)]
    stream_a, stream_b, stream_c = (str(uuid.UUID(int=n)) for n in (0xA, 0xB, 0xC))
    try:
        async with engine.begin() as connection:
            for store_id in ("s-1", "s-2"):
                await connection.execute(
                    _typed("INSERT INTO stores (store_id, first_seen, event_count) VALUES (:s, :t, 0)", ("t",)),
                    {"s": store_id, "t": t0},
                )
            await connection.execute(
                _typed(
                    "INSERT INTO gateways (gateway_id, store_id, online, last_status_reason, status_changed_at,"
                    " first_seen, last_seen_at, agent_version, config_hash, devices, last_health, last_health_at)"
                    " VALUES (:g, :s, :online, :reason, :changed, :first, :last, '1.0', 'h', :devices, :health, :last)",
                    ("changed", "first", "last"),
                    ("devices", "health"),
                ),
                [
                    {
                        "g": "gw-1",
                        "s": "s-2",
                        "online": True,
                        "reason": "birth",
                        "changed": at[5],
                        "first": t0,
                        "last": at[6],
                        "devices": ["cam-1"],
                        "health": {"outbox_depth": 2},
                    },
                    {
                        "g": "gw-2",
                        "s": "s-1",
                        "online": None,
                        "reason": None,
                        "changed": None,
                        "first": t0,
                        "last": at[1],
                        "devices": [],
                        "health": None,
                    },
                ],
            )
            event = _typed(
                "INSERT INTO events (event_id, store_id, gateway_id, stream, seq, device_id, kind, device_ts,"
                " received_at, payload) VALUES (:e, :s, :g, :stream, :seq, 'd', 'door.opened', :t, :t, :p)",
                ("t",),
                ("p",),
            )
            rows = [
                ("s-1", "gw-1", stream_a, 1, at[1]),
                ("s-1", "gw-1", stream_a, 2, at[2]),
                ("s-2", "gw-1", stream_b, 1, at[4]),
                ("s-2", "gw-1", stream_b, 2, at[5]),
                ("s-2", "gw-1", stream_b, 3, at[6]),
                ("s-1", "gw-2", stream_c, 1, at[1]),
                ("s-1", "gw-2", stream_c, 2, at[1]),  # deleted below: its id must never be handed out again
            ]
            for n, (s, g, st, q, t) in enumerate(rows, start=1):  # one by one: ids 1 to 7 from the sequence
                await connection.execute(
                    event, {"e": str(uuid.UUID(int=n)), "s": s, "g": g, "stream": st, "seq": q, "t": t, "p": {}}
                )
            await connection.execute(text("DELETE FROM events WHERE id = 7"))
            await connection.execute(
                _typed(
                    "INSERT INTO gateway_presence (gateway_id, store_id, online, reason, reported_at, recorded_at)"
                    " VALUES (:g, :s, :online, :reason, :t, :t)",
                    ("t",),
                ),
                [
                    {"g": "gw-1", "s": "s-1", "online": True, "reason": "birth", "t": at[1]},
                    {"g": "gw-1", "s": "s-1", "online": False, "reason": "lost", "t": at[3]},
                    {"g": "gw-1", "s": "s-2", "online": True, "reason": "birth", "t": at[5]},
                ],
            )
            await connection.execute(
                _typed(
                    "INSERT INTO data_losses (store_id, gateway_id, stream, first_seq, last_seq, count, reason, detail,"
                    " by_kind, event_id, reported_at, recorded_at)"
                    " VALUES ('s-1', 'gw-1', :stream, 3, 4, 2, 'evicted', '', :by_kind, :e, :t, :t)",
                    ("t",),
                    ("by_kind",),
                ),
                {"stream": stream_a, "by_kind": {}, "e": str(uuid.uuid4()), "t": at[3]},
            )
            await connection.execute(
                _typed(
                    "INSERT INTO gateway_streams (gateway_id, stream, through_seq, max_seq, updated_at)"
                    " VALUES (:g, :stream, :through, :top, :t)",
                    ("t",),
                ),
                [
                    {"g": "gw-1", "stream": stream_a, "through": 4, "top": 4, "t": at[3]},
                    {"g": "gw-1", "stream": stream_b, "through": 3, "top": 3, "t": at[6]},
                    {"g": "gw-2", "stream": stream_c, "through": 2, "top": 2, "t": at[1]},
                ],
            )
            await connection.execute(
                _typed(
                    "INSERT INTO commands (command_id, store_id, gateway_id, name, args, issued_at, status)"
                    " VALUES (:c, 's-1', 'gw-1', 'print', :args, :t, 'sent')",
                    ("t",),
                    ("args",),
                ),
                {"c": str(uuid.uuid4()), "args": {}, "t": at[2]},
            )

        await upgrade_to_head(database_url)

        async with engine.connect() as connection:
            assert await schema_diff(engine, Base.metadata) == []
            gateways = (
                await connection.execute(
                    select(
                        Gateway.store_id,
                        Gateway.gateway_id,
                        Gateway.online,
                        Gateway.last_status_reason,
                        Gateway.first_seen,
                        Gateway.last_seen_at,
                        Gateway.devices,
                        Gateway.last_health,
                        Gateway.enrolment,
                        Gateway.revoked_at,
                    ).order_by(Gateway.store_id, Gateway.gateway_id)
                )
            ).all()
            events = (
                await connection.execute(
                    select(StoredEvent.id, StoredEvent.store_id, StoredEvent.gateway_id, StoredEvent.seq).order_by(
                        StoredEvent.id
                    )
                )
            ).all()
            marks = (
                await connection.execute(
                    select(
                        GatewayStream.store_id,
                        GatewayStream.gateway_id,
                        GatewayStream.stream,
                        GatewayStream.through_seq,
                    )
                )
            ).all()
            presence = (
                await connection.execute(
                    select(GatewayPresence.store_id, GatewayPresence.gateway_id, GatewayPresence.online)
                )
            ).all()
            losses = (await connection.execute(select(DataLossRecord.store_id, DataLossRecord.gateway_id))).all()
            commands = (await connection.execute(select(OutgoingCommand.store_id, OutgoingCommand.gateway_id))).all()

        assert [tuple(row) for row in gateways] == [
            # gw-1 of s-1: its presence from its own history, its contact times from its own rows.
            ("s-1", "gw-1", False, "lost", at[1], at[3], [], None, "migrated", None),
            ("s-1", "gw-2", None, None, t0, at[1], [], None, "migrated", None),
            # gw-1 of s-2: the old row, which every message had moved to the store that sent it.
            ("s-2", "gw-1", True, "birth", t0, at[6], ["cam-1"], {"outbox_depth": 2}, "migrated", None),
        ]
        assert [tuple(row) for row in events] == [
            (1, "s-1", "gw-1", 1),
            (2, "s-1", "gw-1", 2),
            (3, "s-2", "gw-1", 1),
            (4, "s-2", "gw-1", 2),
            (5, "s-2", "gw-1", 3),
            (6, "s-1", "gw-2", 1),
        ]
        assert sorted(tuple(row) for row in marks) == [
            ("s-1", "gw-1", stream_a, 4),
            ("s-1", "gw-2", stream_c, 2),
            ("s-2", "gw-1", stream_b, 3),
        ]
        assert sorted(tuple(row) for row in presence) == [
            ("s-1", "gw-1", False),
            ("s-1", "gw-1", True),
            ("s-2", "gw-1", True),
        ]
        assert [tuple(row) for row in losses] == [("s-1", "gw-1")]
        assert [tuple(row) for row in commands] == [("s-1", "gw-1")]

        # Ids go on past the highest ever handed out (7, deleted), so keyset cursors stay valid.
        async with engine.begin() as connection:
            await connection.execute(
                insert(StoredEvent).values(
                    event_id=str(uuid.uuid4()),
                    store_id="s-1",
                    gateway_id="gw-2",
                    stream=stream_c,
                    seq=3,
                    device_id="d",
                    kind="door.opened",
                    device_ts=at[7],
                    received_at=at[7],
                    payload={},
                )
            )
            new_id = (await connection.execute(select(func.max(StoredEvent.id)))).scalar_one()
        assert new_id == 8
        with pytest.raises(RuntimeError, match="cannot be undone"):
            await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0004")
    finally:
        await engine.dispose()


async def test_0008_flags_stored_events_stamped_before_2020_and_can_be_undone(empty_database_url: str) -> None:
    """A 1970 event stored before 0008 is flagged by it; a 2025 one is not; down to 0007 drops the column."""
    database_url = empty_database_url
    config = alembic_config(database_url)
    await asyncio.to_thread(command.upgrade, config, "0007")
    engine = create_engine(database_url)
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    stamps = {1: datetime(1970, 1, 1, 0, 1, tzinfo=UTC), 2: datetime(2025, 3, 1, 12, tzinfo=UTC)}
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(Store).values(store_id="s-1", first_seen=now, event_count=2))
            await connection.execute(
                insert(Gateway).values(
                    store_id="s-1", gateway_id="gw-1", enrolled_at=now, enrolled_by="test", enrolment="operator"
                )
            )
            await connection.execute(
                insert(StoredEvent),
                [
                    {
                        "event_id": str(uuid.UUID(int=seq)),
                        "store_id": "s-1",
                        "gateway_id": "gw-1",
                        "stream": "a",
                        "seq": seq,
                        "device_id": "d",
                        "kind": "door.opened",
                        "device_ts": device_ts,
                        "received_at": now,
                        "payload": {},
                    }
                    for seq, device_ts in stamps.items()
                ],
            )

        await upgrade_to_head(database_url)
        async with engine.connect() as connection:
            flags = (await connection.execute(select(StoredEvent.seq, StoredEvent.clock_issue))).all()
        assert sorted(tuple(row) for row in flags) == [(1, "before_earliest"), (2, None)]

        await asyncio.to_thread(command.downgrade, config, "0007")
        async with engine.connect() as connection:
            columns = await connection.run_sync(lambda sync: inspect(sync).get_columns("events"))
            indexes = await connection.run_sync(lambda sync: inspect(sync).get_indexes("events"))
        assert "clock_issue" not in {c["name"] for c in columns}
        assert not [i["name"] for i in indexes if "received" in str(i["name"])]
        await upgrade_to_head(database_url)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_0009_drops_the_gateway_and_kind_indexes_of_events_and_can_be_undone(empty_database_url: str) -> None:
    """0009 drops the two device-time indexes no query needs; down to 0008 creates them again, over stored rows."""
    database_url = empty_database_url
    config = alembic_config(database_url)
    dropped = {"ix_events_gateway_ts", "ix_events_kind_ts"}
    engine = create_engine(database_url)

    async def event_indexes() -> set[str]:
        async with engine.connect() as connection:
            indexes = await connection.run_sync(lambda sync: inspect(sync).get_indexes("events"))
        return {str(index["name"]) for index in indexes}

    try:
        await asyncio.to_thread(command.upgrade, config, "0008")
        assert dropped <= await event_indexes()
        await upgrade_to_head(database_url)
        kept = await event_indexes()
        assert not dropped & kept
        assert {"ix_events_device_ts", "ix_events_store_ts", "ix_events_received", "ix_events_store_received"} <= kept

        now = datetime(2026, 12, 1, 12, tzinfo=UTC)
        async with engine.begin() as connection:
            await connection.execute(insert(Store).values(store_id="s-1", first_seen=now, event_count=1))
            await connection.execute(
                insert(Gateway).values(
                    store_id="s-1", gateway_id="gw-1", enrolled_at=now, enrolled_by="test", enrolment="operator"
                )
            )
            await connection.execute(
                insert(StoredEvent).values(
                    event_id=str(uuid.UUID(int=1)),
                    store_id="s-1",
                    gateway_id="gw-1",
                    stream="a",
                    seq=1,
                    device_id="d",
                    kind="door.opened",
                    device_ts=now,
                    received_at=now,
                    payload={},
                )
            )
        await asyncio.to_thread(command.downgrade, config, "0008")
        assert dropped <= await event_indexes()
        await upgrade_to_head(database_url)
        assert await current_revision(engine) == head_revision()
        assert not dropped & await event_indexes()
    finally:
        await engine.dispose()
