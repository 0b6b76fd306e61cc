"""``storegate hub backup`` and ``restore`` on SQLite and PostgreSQL: every table survives the round trip row by
row, a backup taken while the hub ingests over real Mosquitto is one consistent snapshot, and bad cases refuse."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, Table, func, insert, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.admin.backup import (
    BackupError,
    BackupReport,
    backup_database,
    pg_connection,
    restore_database,
)
from hub.db.engine import create_engine
from hub.db.migrate import alembic_config, head_revision
from hub.db.models import Store, StoredEvent
from hub.db.schema import metadata
from hub.settings import HubSettings, load_hub_settings
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.hub.conftest import (
    PlainGateway,
    PostgresCopies,
    PostgresDropper,
    RunningHub,
    _create_database,
    batch_of,
    reading,
)

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
STORE = "store-0001"
GATEWAY = "gw-1"
EVENTS_TOPIC = wire.topic(STORE, GATEWAY, wire.Channel.EVENTS)


def at(seconds: float) -> datetime:
    """T0 plus ``seconds``: distinct timestamps, with microseconds, so a lossy round trip shows."""
    return T0 + timedelta(seconds=seconds)


def uid(n: int) -> str:
    return str(uuid.UUID(int=n))


# --------------------------------------------------------------------------- a database with rows everywhere

STREAM = uid(0xA)
EVENT = uid(0xE1)
ALERT = uid(0xA1)
WEBHOOK = uid(0xB1)
SCHEDULE = uid(0xC1)

# At least one valid row for every table of hub.db.schema.metadata, in every column kind the schema uses:
# aware datetimes with microseconds, Decimals, floats, JSON of each shape, booleans, NULLs, non-ASCII text.
ROWS: dict[str, list[dict[str, Any]]] = {
    "stores": [{"store_id": STORE, "first_seen": at(0), "last_event_at": at(1), "event_count": 1}],
    "gateways": [
        {
            "gateway_id": GATEWAY,
            "store_id": STORE,
            "online": True,
            "last_status_reason": "birth",
            "status_changed_at": at(2),
            "first_seen": at(0),
            "last_seen_at": at(3),
            "agent_version": "1.2.3",
            "config_hash": "c0ffee",
            "devices": ["fridge-1", "shelf-1"],
            "last_health": {"cpu": 0.25, "backlog": 0, "ok": True, "broker": None},
            "last_health_at": at(3),
            "enrolled_at": at(0),
            "enrolled_by": "Zoë at head office",
            "enrolment": "operator",
            "revoked_at": None,
            "revoked_by": None,
            "certificate_expires_at": at(5000),
        }
    ],
    "gateway_presence": [
        {
            "id": 1,
            "gateway_id": GATEWAY,
            "store_id": STORE,
            "online": False,
            "reason": "will",
            "reported_at": at(4),
            "recorded_at": at(4.5),
        }
    ],
    "events": [
        {
            "id": 1,
            "event_id": EVENT,
            "store_id": STORE,
            "gateway_id": GATEWAY,
            "stream": STREAM,
            "seq": 1,
            "device_id": "fridge-1",
            "kind": "environment.reading",
            "device_ts": at(5),
            "received_at": at(5.000001),
            "payload": {"quantity": "temperature", "value": 4.25, "unit": "Cel"},
        }
    ],
    "gateway_streams": [
        {
            "store_id": STORE,
            "gateway_id": GATEWAY,
            "stream": STREAM,
            "through_seq": 1,
            "max_seq": 1,
            "updated_at": at(6),
        }
    ],
    "refused_events": [
        {
            "id": 1,
            "store_id": STORE,
            "gateway_id": GATEWAY,
            "stream": STREAM,
            "seq": 2,
            "event_id": uid(0xE3),
            "kind": "shelf.pick",
            "reason": "invalid_event",
            "detail": "Event: payload.count: Input should be greater than or equal to 0",
            "event_json": '{"seq": 2, "payload": {"count": -5}}',
            "received_at": at(5.5),
            "recorded_at": at(5.6),
        }
    ],
    "data_losses": [
        {
            "id": 1,
            "store_id": STORE,
            "gateway_id": GATEWAY,
            "stream": uid(0xB),
            "first_seq": 5,
            "last_seq": 7,
            "count": 3,
            "reason": "evicted",
            "detail": "outbox full",
            "by_kind": {"environment.reading": 3},
            "event_id": uid(0xE2),
            "reported_at": at(7),
            "recorded_at": at(7.5),
        }
    ],
    "snapshots": [
        {
            "store_id": STORE,
            "ref": "ab" * 32,
            "gateway_id": GATEWAY,
            "device_id": "cam-aisle-1",
            "taken_at": at(7.5),
            "received_at": at(7.6),
            "size": 48_213,
            "path": f"{STORE}/ab/{'ab' * 32}.jpg",
            "expires_at": at(7.6) + timedelta(days=30),
        }
    ],
    "rule_states": [
        # What a hub worker writes (hub.alerting.shared_states): bytes with a zero and a high byte, kept exactly.
        {"store_id": STORE, "version": 3, "state": b"\x80\x05\x00state\xff", "updated_at": at(7.75)}
    ],
    "footfall_counts": [
        {
            "store_id": STORE,
            "gateway_id": GATEWAY,
            "device_id": "entrance-cam",
            "line": "entrance",
            "period_start": at(7.8),
            "period_s": 60,
            "entered": 12,
            "exited": 9,
            "event_id": uid(0xF1),
            "recorded_at": at(7.9),
        }
    ],
    "rejected_messages": [
        {
            "id": 1,
            "received_at": at(8),
            "topic": "storegate/v1/store-0001/gw-1/events",
            "reason": "malformed_json",
            "detail": "Expecting value: line 1 column 1",
            "payload_excerpt": "not json",
            "payload_bytes": 8,
        }
    ],
    "commands": [
        {
            "command_id": uid(0xC1),
            "store_id": STORE,
            "gateway_id": GATEWAY,
            "device_id": "printer-1",
            "name": "print",
            "args": {"lines": ["Pick list", "Milch 1 l: 10 Stück"]},
            "issued_at": at(9),
            "expires_at": at(609),
            "status": "done",
            "sent_at": at(9.1),
            "result_detail": "printed",
            "result_at": at(10),
        }
    ],
    "skus": [
        {
            "sku_id": "sku-1",
            "gtin": "00012345678905",
            "name": "Vollmilch 1 l — Bio",
            "unit_weight_g": Decimal("1030.500"),
            "pack_size": 6,
            "price": Decimal("1.2900"),
            "currency": "EUR",
            "updated_at": at(11),
        }
    ],
    "store_profiles": [
        {
            "store_id": STORE,
            "name": "Berlin Mitte",
            "timezone": "Europe/Berlin",
            "currency": "EUR",
            "opening_hours": {
                "mon": ["08:00-20:00"],
                "tue": ["08:00-20:00"],
                "wed": ["08:00-12:00", "13:00-20:00"],
                "thu": ["08:00-20:00"],
                "fri": ["08:00-22:00"],
                "sat": ["09:00-18:00"],
                "sun": [],
            },
            "latitude": 52.520008,
            "longitude": 13.404954,
            "region": "east",
            "updated_at": at(12),
        }
    ],
    "shelves": [{"store_id": STORE, "shelf_id": "shelf-1"}],
    "slots": [
        {
            "store_id": STORE,
            "shelf_id": "shelf-1",
            "slot": 1,
            "sku_id": "sku-1",
            "capacity": 12,
            "min_quantity": 3,
            "camera_id": "cam-aisle-1",
            "updated_at": at(13),
        }
    ],
    "ledger": [
        {
            "id": 1,
            "event_id": uid(0xE3),
            "line": 0,
            "store_id": STORE,
            "sku_id": "sku-1",
            "kind": "sale",
            "quantity": -2,
            "at": at(14),
            "shelf_id": None,
            "slot": None,
            "level": None,
            "unit_price": Decimal("1.2900"),
            "actor": None,
            "note": None,
            "recorded_at": at(14.5),
        },
        {
            "id": 2,
            "event_id": uid(0xE4),
            "line": 0,
            "store_id": STORE,
            "sku_id": "sku-1",
            "kind": "adjustment",
            "quantity": 5,
            "at": at(15),
            "shelf_id": "shelf-1",
            "slot": 1,
            "level": 8,
            "unit_price": None,
            "actor": "jürgen",
            "note": "found in the back room",
            "recorded_at": at(15.5),
        },
    ],
    "stock_positions": [
        {
            "store_id": STORE,
            "sku_id": "sku-1",
            "on_hand": 10,
            "counted_at": at(16),
            "last_variance": -1,
            "variance_total": -3,
            "last_movement_at": at(15),
            "updated_at": at(16),
        }
    ],
    "shelf_levels": [
        {
            "store_id": STORE,
            "shelf_id": "shelf-1",
            "slot": 1,
            "sku_id": "sku-1",
            "quantity": 8,
            "at": at(15),
            "updated_at": at(15.5),
        }
    ],
    "unplaced_events": [
        {
            "event_id": uid(0xE5),
            "store_id": STORE,
            "device_id": "till-1",
            "kind": "scan.item",
            "reason": "unknown code 4006381333931",
            "at": at(17),
            "recorded_at": at(17.5),
        }
    ],
    "shrink_records": [
        {
            "id": 1,
            "store_id": STORE,
            "sku_id": "sku-1",
            "quantity": 1,
            "value": Decimal("1.2900"),
            "picked_at": at(18),
            "expired_at": at(1818),
            "event_ids": [uid(0xE6)],
        }
    ],
    "stock_policies": [
        {
            "store_id": STORE,
            "sku_id": "sku-1",
            "max_stock": 40,
            "reorder_point": None,
            "lead_time_days": 2,
            "safety_stock": 4,
            "on_order": 12,
            "updated_at": at(19),
        }
    ],
    "restock_tasks": [
        {
            "task_id": uid(0x71),
            "store_id": STORE,
            "shelf_id": "shelf-1",
            "slot": 1,
            "sku_id": "sku-1",
            "status": "open",
            "open_key": f"{STORE}/shelf-1/1",
            "level_at_open": 2,
            "min_quantity": 3,
            "capacity": 12,
            "quantity": 10,
            "opened_at": at(20),
            "opening_event_id": uid(0xE7),
            "closed_at": None,
            "closing_event_id": None,
            "level_at_close": None,
            "command_id": uid(0xC1),
            "print_status": "sent",
            "print_detail": None,
            "pick_list": {"sku_id": "sku-1", "quantity": 10, "slot": 1},
        }
    ],
    "chain_rules": [
        {
            "rule_id": "fridge-range",
            "definition": {"kind": "environment_range", "quantity": "temperature", "high": 7.0, "low": None},
            "updated_at": at(21),
            "updated_by": "ops",
        }
    ],
    "store_rule_overrides": [
        {
            "store_id": STORE,
            "rule_id": "fridge-range",
            "changes": {"high": 8.5},
            "updated_at": at(22),
            "updated_by": "store manager",
        }
    ],
    "alerts": [
        {
            "alert_id": ALERT,
            "store_id": STORE,
            "rule_id": "fridge-range",
            "rule_kind": "environment_range",
            "category": "environment",
            "subject_kind": "zone",
            "subject_id": "fridge-1",
            "active_key": f"{STORE}|fridge-range|fridge-1",
            "severity": "warning",
            "status": "acknowledged",
            "message": "fridge-1 at 9.5 °C, above 8.5 °C",
            "opened_at": at(23),
            "last_seen_at": at(24),
            "count": 2,
            "evidence": [EVENT],
            "snapshot_ref": None,
            "escalate_after_s": [600.0, 1800.0],
            "escalation_level": 1,
            "acknowledged_by": "ops",
            "acknowledged_at": at(25),
            "resolved_by": None,
            "resolved_at": None,
            "resolution_note": None,
        }
    ],
    "alert_history": [
        {
            "id": 1,
            "alert_id": ALERT,
            "at": at(23),
            "action": "opened",
            "actor": "hub",
            "status": "open",
            "note": None,
            "level": 0,
            "recorded_at": at(23.5),
        },
        {
            "id": 2,
            "alert_id": ALERT,
            "at": at(25),
            "action": "acknowledged",
            "actor": "ops",
            "status": "acknowledged",
            "note": "on it",
            "level": None,
            "recorded_at": at(25.5),
        },
    ],
    "excursions": [
        {
            "id": 1,
            "store_id": STORE,
            "rule_id": "fridge-range",
            "zone": "fridge-1",
            "quantity": "temperature",
            "direction": "high",
            "limit_value": 8.5,
            "started_at": at(23),
            "ended_at": at(623),
            "peak": 9.5,
            "peak_at": at(300),
            "duration_s": 600.0,
            "readings": 10,
            "gaps": 1,
            "alert_id": ALERT,
            "recorded_at": at(624),
        }
    ],
    "notifications": [
        {
            "id": 1,
            "event": "alert.opened",
            "alert_id": ALERT,
            "store_id": STORE,
            "body": {"alert_id": ALERT, "severity": "warning", "count": 1},
            "created_at": at(23.5),
            "mqtt_published": True,
            "mqtt_published_at": at(24),
        }
    ],
    "operators": [
        {
            "operator_id": 1,
            "username": "alice",
            "role": "admin",
            "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
            "store_ids": None,
            "regions": ["east"],
            "disabled": False,
            "created_at": at(0),
            "created_by": "cli:root",
        }
    ],
    "operator_sessions": [
        {
            "session_digest": "a" * 64,
            "operator_id": 1,
            "csrf_digest": "b" * 64,
            "created_at": at(1),
            "expires_at": at(2),
            "client": "10.0.0.7",
        }
    ],
    "api_tokens": [
        {
            "token_id": "00000000-0000-0000-0000-0000000000a1",
            "name": "prometheus",
            "token_digest": "c" * 64,
            "role": "viewer",
            "store_ids": [STORE],
            "regions": None,
            "created_at": at(0),
            "created_by": "alice",
            "expires_at": at(9),
            "revoked_at": at(3),
            "revoked_by": "alice",
            "last_used_at": at(2),
        }
    ],
    "audit_log": [
        {
            "id": 1,
            "at": at(3),
            "actor": "alice",
            "actor_kind": "user",
            "action": "DELETE /api/v1/tokens/{token_id}",
            "target": "token:00000000-0000-0000-0000-0000000000a1",
            "store_id": None,
            "outcome": "200",
            "client": "10.0.0.7",
            "before": {"revoked_at": None},
            "after": {"revoked_at": "2025-03-01T12:00:03Z"},
            "detail": None,
        }
    ],
    "webhooks": [
        {
            "webhook_id": WEBHOOK,
            "url": "https://ops.example.net/hooks/storegate",
            "legacy_secret": "",
            "secret_sealed": "gAAAAABnS2VhbGVkLXNlY3JldC1zdGFuZC1pbg==",  # opaque to a backup: any text
            "store_ids": [STORE],
            "events": None,
            "enabled": True,
            "created_at": at(1),
            "created_by": "ops",
        }
    ],
    "webhook_deliveries": [
        {
            "notification_id": 1,
            "webhook_id": WEBHOOK,
            "status": "pending",
            "attempts": 1,
            "next_attempt_at": at(60),
            "last_error": "HTTP 503",
            "last_status_code": 503,
            "last_attempt_at": at(30),
            "last_duration_ms": 1200,
            "delivered_at": None,
        }
    ],
    "report_schedules": [
        {
            "schedule_id": SCHEDULE,
            "name": "日報 cold chain",
            "kind": "cold-chain",
            "format": "pdf",
            "store_scope": "stores",
            "region": None,
            "store_ids": [STORE],
            "cadence": "weekly",
            "weekday": 0,
            "local_time": "06:30",
            "timezone": "Asia/Taipei",
            "webhook_url": "https://ops.example.net/hooks/reports",
            "webhook_secret_sealed": "gAAAAABnS2VhbGVkLXJlcG9ydC1zZWNyZXQ=",  # opaque to a backup: any text
            "email_to": ["ops@example.net"],
            "enabled": True,
            "next_run_at": at(3600),
            "created_at": at(2),
            "created_by": "ops",
            "updated_at": at(3),
        }
    ],
    "report_deliveries": [
        {
            "id": 1,
            "schedule_id": SCHEDULE,
            "period_start": date(2025, 2, 24),
            "period_end": date(2025, 3, 2),
            "channel": "webhook",
            "status": "pending",
            "attempts": 2,
            "next_attempt_at": at(900),
            "last_error": "HTTP 503",
            "last_attempt_at": at(300),
            "filename": "cold-chain_store-0001_2025-02-24.pdf",
            "bytes": 20480,
            "scheduled_for": at(240),
            "created_at": at(240),
            "delivered_at": None,
        }
    ],
    "gateway_configs": [
        {
            "id": 1,
            "store_id": STORE,
            "gateway_id": GATEWAY,
            "version": 1,
            "toml": 'store_id = "store-0001"\ngateway_id = "gw-1"\n# Grüße\n',
            "toml_sha256": "0" * 64,
            "probation_s": 120.0,
            "pushed_by": "tech-mei",
            "pushed_at": at(12),
            "command_id": uid(0xC2),
            "status": "rolled_back",
            "detail": "rolled back: the broker at hub:8883 was not reached",
            "result_at": at(140),
        }
    ],
    "selftest_reports": [
        {
            "id": 1,
            "store_id": STORE,
            "gateway_id": GATEWAY,
            "received_at": at(30),
            "started_at": at(10),
            "finished_at": at(29),
            "passed": False,
            "failed": 1,
            "report": {
                "v": 1,
                "store_id": STORE,
                "gateway_id": GATEWAY,
                "started_at": "2025-03-01T08:00:10Z",
                "finished_at": "2025-03-01T08:00:29Z",
                "results": [{"device_id": "shelf-1", "outcome": "failed", "reason": "slot 1 read +0 g, not 500 g"}],
            },
        }
    ],
    "releases": [
        {
            "version": "0.2.0",
            "sha256": "ab" * 32,
            "size": 123456,
            "path": "/var/lib/storegate-hub/releases/storegate-0.2.0-py3-none-any.whl",
            "uploaded_at": at(4),
            "uploaded_by": "admin",
        }
    ],
    "rollouts": [
        {
            "rollout_id": "00000000-0000-0000-0000-000000000001",
            "version": "0.2.0",
            "status": "running",
            "stages": {"unit": "gateways", "sizes": [1, 100], "counts": [1]},
            "stage": 0,
            "probation_s": 300,
            "max_failed": 0,
            "answer_within_s": 900,
            "selection": {"stores": "all", "region": None, "store_ids": None},
            "reason": None,
            "created_at": at(5),
            "created_by": "admin",
            "updated_at": at(6),
        }
    ],
    "rollout_targets": [
        {
            "rollout_id": "00000000-0000-0000-0000-000000000001",
            "store_id": STORE,
            "gateway_id": GATEWAY,
            "stage": 0,
            "outcome": "sent",
            "command_id": "00000000-0000-0000-0000-000000000002",
            "sent_at": at(7),
            "finished_at": None,
            "detail": None,
        }
    ],
    "enrolment_tokens": [
        {
            "token_id": "0123456789abcdef",
            "secret_digest": "d" * 64,
            "store_id": STORE,
            "gateway_id": GATEWAY,
            "created_at": at(0),
            "created_by": "tech-li",
            "expires_at": at(9),
            "used_at": at(2),
            "used_from": "192.0.2.7",
            "certificate_serial": "1f" * 20,
            "revoked_at": None,
            "revoked_by": None,
        }
    ],
}

Snapshot = dict[str, list[tuple[Any, ...]]]


def test_the_fixture_covers_every_table() -> None:
    missing = sorted(set(metadata.tables) - set(ROWS))
    assert not missing, f"add rows for {missing} to ROWS: a backup test must cover every table"
    assert set(ROWS) == set(metadata.tables)


async def fill_every_table(engine: AsyncEngine) -> None:
    """Insert ROWS, parents first (foreign keys are enforced).

    Serial ids are left to the database (they come out as in ROWS: 1, 2, ...), so its sequences move as in
    real use and a restore must carry their positions too.
    """
    async with engine.begin() as connection:
        for table in metadata.sorted_tables:
            serial = "id" in table.c and table.c.id.autoincrement is True
            rows = [{k: v for k, v in row.items() if not (serial and k == "id")} for row in ROWS[table.name]]
            await connection.execute(insert(table), rows)


def ordered(table: Table) -> Any:
    return select(table).order_by(*table.primary_key.columns)


async def snapshot(engine: AsyncEngine) -> Snapshot:
    """Every row of every table, all columns, ordered by primary key; plus the migration revision."""
    async with engine.connect() as connection:
        rows: Snapshot = {
            table.name: [tuple(row) for row in await connection.execute(ordered(table))]
            for table in metadata.sorted_tables
        }
        rows["alembic_version"] = [
            tuple(row) for row in await connection.execute(text("SELECT * FROM alembic_version"))
        ]
    return rows


async def snapshot_of(database_url: str) -> Snapshot:
    engine = create_engine(database_url)
    try:
        return await snapshot(engine)
    finally:
        await engine.dispose()


def is_sqlite(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "sqlite"


@pytest.fixture
async def fresh_url(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A database that does not exist yet (SQLite) or is empty, not even migrated (PostgreSQL), of the same kind."""
    if is_sqlite(database_url):
        (tmp_path / "restored").mkdir()
        yield f"sqlite+aiosqlite:///{tmp_path / 'restored' / 'hub.sqlite3'}"
        return
    dropper: PostgresDropper = request.getfixturevalue("postgres_dropper")
    name, url = await _create_database()
    try:
        yield url
    finally:
        dropper.drop(name)


@pytest.fixture
async def full_database(engine: AsyncEngine, database_url: str) -> str:
    """The test's migrated database with ROWS in every table; its engine is disposed, so nothing holds it open."""
    await fill_every_table(engine)
    await engine.dispose()
    return database_url


def backup_file(tmp_path: Path, database_url: str) -> Path:
    return tmp_path / ("hub-backup.sqlite3" if is_sqlite(database_url) else "hub-backup.dump")


# --------------------------------------------------------------------------- round trips


async def test_round_trip_restores_every_table_row_by_row(full_database: str, fresh_url: str, tmp_path: Path) -> None:
    before = await snapshot_of(full_database)
    path = backup_file(tmp_path, full_database)

    backup = await backup_database(full_database, path)

    assert backup.path == path
    assert backup.size_bytes == path.stat().st_size > 0
    assert backup.contents.revision == head_revision()
    assert dict(backup.contents.row_counts) == {name: len(rows) for name, rows in ROWS.items()}
    assert not list(tmp_path.glob(".*.partial")), "the temporary file was left behind"
    assert path.stat().st_mode & 0o077 == 0, "a backup holds secrets: only its owner may read it"

    restored = await restore_database(fresh_url, path)

    assert restored.backup_revision == head_revision()
    assert restored.contents == backup.contents
    after = await snapshot_of(fresh_url)
    for name, rows in before.items():
        assert after[name] == rows, f"table {name} differs after the round trip"
    assert after == before


async def test_restored_ids_continue_after_the_largest_restored_id(
    full_database: str, fresh_url: str, tmp_path: Path
) -> None:
    path = backup_file(tmp_path, full_database)
    await backup_database(full_database, path)
    await restore_database(fresh_url, path)
    next_event = {**ROWS["events"][0], "event_id": uid(0xE9), "seq": 2}
    del next_event["id"]
    engine = create_engine(fresh_url)
    try:
        async with engine.begin() as connection:
            inserted = await connection.execute(insert(StoredEvent).values(next_event).returning(StoredEvent.id))
            new_id = inserted.scalar_one()
    finally:
        await engine.dispose()
    assert new_id == 2


async def test_restore_into_a_migrated_empty_database_needs_no_force(
    full_database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A hub started once on the new database migrated it: that empty schema is not data worth protecting."""
    path = backup_file(tmp_path, full_database)
    await backup_database(full_database, path)
    if is_sqlite(full_database):
        target = f"sqlite+aiosqlite:///{tmp_path / 'migrated.sqlite3'}"
        (tmp_path / "migrated.sqlite3").write_bytes(request.getfixturevalue("migrated_sqlite_file").read_bytes())
        await restore_database(target, path)
        assert await snapshot_of(target) == await snapshot_of(full_database)
        return
    copies: PostgresCopies = request.getfixturevalue("postgres_copies")
    dropper: PostgresDropper = request.getfixturevalue("postgres_dropper")
    name, target = await copies.take()
    try:
        await restore_database(target, path)
        assert await snapshot_of(target) == await snapshot_of(full_database)
    finally:
        dropper.drop(name)


async def test_restore_refuses_a_database_with_rows_unless_forced(full_database: str, tmp_path: Path) -> None:
    path = backup_file(tmp_path, full_database)
    await backup_database(full_database, path)
    at_backup = await snapshot_of(full_database)
    engine = create_engine(full_database)
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(Store).values(store_id="store-0002", first_seen=at(99), event_count=0))
    finally:
        await engine.dispose()
    changed = await snapshot_of(full_database)

    with pytest.raises(BackupError, match=r"holds data \([\d,]+ rows\); restoring would replace it: pass --force"):
        await restore_database(full_database, path)
    assert await snapshot_of(full_database) == changed

    database_file = make_url(full_database).database
    if is_sqlite(full_database):
        Path(str(database_file)).chmod(0o640)

    report = await restore_database(full_database, path, force=True)

    assert report.contents.row_counts["stores"] == 1
    assert await snapshot_of(full_database) == at_backup
    if is_sqlite(full_database):  # the restored file keeps the owner of the one it replaced, not its group access
        assert Path(str(database_file)).stat().st_mode & 0o777 == 0o600


def column_names(connection: Connection, table: str) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns(table)}


async def test_an_older_backup_is_migrated_to_head_on_restore(
    database_url: str, fresh_url: str, tmp_path: Path
) -> None:
    """A backup at 0003 (catalog, no inventory) restored over a database at head comes back at head."""
    old_url = fresh_url
    await asyncio.to_thread(command.upgrade, alembic_config(old_url), "0003")
    old_tables = [metadata.tables[name] for name in ("stores", "skus", "store_profiles", "shelves", "slots")]
    old_rows: dict[str, list[dict[str, Any]]] = {}
    engine = create_engine(old_url)
    try:
        async with engine.begin() as connection:
            for table in old_tables:
                # Only the columns 0003 had (store_profiles gained latitude and longitude in 0004).
                names = await connection.run_sync(column_names, table.name)
                old_rows[table.name] = [{k: v for k, v in row.items() if k in names} for row in ROWS[table.name]]
                await connection.execute(insert(table), old_rows[table.name])
    finally:
        await engine.dispose()
    path = backup_file(tmp_path, old_url)
    backup = await backup_database(old_url, path)
    assert backup.contents.revision == "0003"
    assert "ledger" not in backup.contents.row_counts

    report = await restore_database(database_url, path)  # at head, empty: the test's own database

    assert (report.backup_revision, report.contents.revision) == ("0003", head_revision())
    after = await snapshot_of(database_url)
    for table in old_tables:
        expected = [tuple(row.get(column.name) for column in table.columns) for row in old_rows[table.name]]
        assert after[table.name] == expected, table.name
    assert after["ledger"] == []
    assert after["alembic_version"] == [(head_revision(),)]


async def test_a_backup_newer_than_this_code_is_refused(full_database: str, fresh_url: str, tmp_path: Path) -> None:
    engine = create_engine(full_database)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    finally:
        await engine.dispose()
    path = backup_file(tmp_path, full_database)
    await backup_database(full_database, path)

    with pytest.raises(BackupError, match=r"revision '9999_future'.*does not know.*newer version"):
        await restore_database(fresh_url, path)

    await assert_untouched(fresh_url)


async def assert_untouched(fresh_url: str) -> None:
    """The fresh target was not created (SQLite) or has no tables (PostgreSQL)."""
    if is_sqlite(fresh_url):
        assert list(Path(str(make_url(fresh_url).database)).parent.iterdir()) == []
        return
    engine = create_engine(fresh_url)
    try:
        async with engine.connect() as connection:
            tables = await connection.scalar(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            )
    finally:
        await engine.dispose()
    assert tables == 0


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_kind"])
async def test_a_damaged_backup_is_refused_in_words(
    full_database: str, fresh_url: str, tmp_path: Path, damage: str
) -> None:
    """Past the manifest (removed, --unverified), the file itself is still checked: test_backup_integrity
    has what the manifest catches."""
    path = backup_file(tmp_path, full_database)
    report = await backup_database(full_database, path)
    report.manifest.unlink()
    whole = path.read_bytes()
    sqlite = is_sqlite(full_database)
    if damage == "garbage":
        path.write_bytes(b"this is not a backup\n" * 100)
        expected = "is not a SQLite database" if sqlite else "is not a pg_dump custom-format archive"
    elif damage == "truncated":
        path.write_bytes(whole[: len(whole) // 2])
        expected = "is not a usable SQLite database|integrity check" if sqlite else "pg_restore failed .*: pg_restore"
    else:
        path.write_bytes(b"PGDMP" + whole[5:] if sqlite else b"SQLite format 3\x00" + whole[16:])
        expected = "is a PostgreSQL dump" if sqlite else "is a SQLite database"

    with pytest.raises(BackupError, match=expected) as failure:
        await restore_database(fresh_url, path, unverified=True)

    assert "\n" not in str(failure.value)
    assert str(path) in str(failure.value)
    await assert_untouched(fresh_url)


async def test_backup_refuses_to_overwrite_a_file_unless_forced(full_database: str, tmp_path: Path) -> None:
    path = backup_file(tmp_path, full_database)
    path.write_bytes(b"an older backup")

    with pytest.raises(BackupError, match="exists; pass --force"):
        await backup_database(full_database, path)
    assert path.read_bytes() == b"an older backup"

    report = await backup_database(full_database, path, overwrite=True)
    assert report.size_bytes == path.stat().st_size > len(b"an older backup")


async def test_backup_of_a_missing_database_says_so(database_url: str, tmp_path: Path) -> None:
    if is_sqlite(database_url):
        missing = f"sqlite+aiosqlite:///{tmp_path / 'nowhere.sqlite3'}"
        expected = "does not exist"
    else:
        missing_url = make_url(database_url).set(database="storegate_no_such_db", password="s3cret-pw")
        missing = missing_url.render_as_string(hide_password=False)
        expected = 'database "storegate_no_such_db" does not exist'
    with pytest.raises(BackupError, match=expected) as failure:
        await backup_database(missing, tmp_path / "b")
    assert "s3cret-pw" not in str(failure.value)
    assert not (tmp_path / "nowhere.sqlite3").exists()
    assert not (tmp_path / "b").exists()


def test_pg_tools_get_the_password_in_the_environment_only() -> None:
    connection = pg_connection(
        "postgresql+asyncpg://hub:s%3Acret@db.example.net:6543/storegate?ssl=require", base_environment={}
    )
    assert connection.arguments == (
        "--no-password",
        "--host=db.example.net",
        "--port=6543",
        "--username=hub",
        "--dbname=storegate",
    )
    assert not any("s:cret" in argument for argument in connection.arguments)
    assert connection.environment["PGPASSWORD"] == "s:cret"
    assert connection.environment["PGSSLMODE"] == "require"


# --------------------------------------------------------------------------- while the hub runs


@pytest.fixture
def hub_settings(database_url: str, mqtt_settings: MqttSettings) -> HubSettings:
    """This module's hubs run on SQLite and on PostgreSQL."""
    return load_hub_settings(
        None,
        database_url=database_url,
        mqtt=mqtt_settings,
        client_id=f"hub-{uuid.uuid4().hex[:8]}",
        accept_unknown_gateways=True,
    )


class Publisher:
    """A gateway publishing batches of readings, in sequence, until stopped (in a thread: paho blocks)."""

    def __init__(self, gateway: PlainGateway, *, batch_size: int = 20) -> None:
        self.gateway = gateway
        self.batch_size = batch_size
        self.stream = uuid.uuid4()
        self.published = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test publisher", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                seqs = range(self.published + 1, self.published + self.batch_size + 1)
                batch = batch_of([reading(stream=self.stream, seq=seq) for seq in seqs])
                self.gateway.publish(EVENTS_TOPIC, wire.encode(batch))
                self.published += self.batch_size
        except BaseException as err:
            self.error = err

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the publisher did not stop"


async def stored_events(hub: RunningHub) -> int:
    async with hub.runtime.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(StoredEvent)) or 0)


async def test_backup_while_the_hub_ingests_is_one_consistent_snapshot(
    hub: RunningHub, gateway_client: PlainGateway, database_url: str, fresh_url: str, tmp_path: Path
) -> None:
    path = backup_file(tmp_path, database_url)
    with Publisher(gateway_client) as publisher:
        await eventually(lambda: _at_least(hub, 200), timeout=20, what="the hub to store 200 events")
        backup: BackupReport = await backup_database(database_url, path)
        in_backup = backup.contents.row_counts["events"]
        # The hub went on writing after the snapshot: the backup is a moment in the middle of ingestion.
        await eventually(lambda: _at_least(hub, in_backup + 1), timeout=20, what="events stored after the backup")
    assert publisher.error is None, publisher.error
    source = await snapshot(hub.runtime.engine)

    await restore_database(fresh_url, path)
    restored = await snapshot_of(fresh_url)

    events_table = metadata.tables["events"]
    columns = [column.name for column in events_table.columns]
    restored_events = [dict(zip(columns, row, strict=True)) for row in restored["events"]]
    assert len(restored_events) == in_backup > 0
    assert len(source["events"]) > in_backup
    # Every event in the backup is the source's event, column by column.
    assert restored["events"] == source["events"][:in_backup]
    # One snapshot: the counters written in the same transactions as the events agree with them ...
    store_columns = [column.name for column in metadata.tables["stores"].columns]
    stores = [dict(zip(store_columns, row, strict=True)) for row in restored["stores"]]
    assert sum(store["event_count"] for store in stores) == in_backup
    # ... and so does each stream's mark: a gapless prefix of seqs, through_seq at its end.
    seqs = sorted(event["seq"] for event in restored_events)
    assert seqs == list(range(1, in_backup + 1))
    stream_columns = [column.name for column in metadata.tables["gateway_streams"].columns]
    (stream,) = [dict(zip(stream_columns, row, strict=True)) for row in restored["gateway_streams"]]
    assert stream["through_seq"] == stream["max_seq"] == in_backup
    for name in ("stores", "gateways", "gateway_streams"):
        assert [row[0] for row in restored[name]] == [row[0] for row in source[name]], name


async def _at_least(hub: RunningHub, count: int) -> bool:
    return await stored_events(hub) >= count


async def test_restore_refuses_a_database_the_hub_has_open(
    hub: RunningHub, gateway_client: PlainGateway, database_url: str, tmp_path: Path
) -> None:
    path = backup_file(tmp_path, database_url)
    await backup_database(database_url, path)

    with pytest.raises(BackupError, match=r"in use by .*stop the hub"):
        await restore_database(database_url, path, force=True)

    # The hub's database was left alone: the hub goes on storing what arrives.
    gateway_client.publish(EVENTS_TOPIC, wire.encode(batch_of([reading(stream=uuid.uuid4(), seq=1)])))
    await eventually(lambda: _at_least(hub, 1), timeout=10, what="the hub to store an event after the refusal")


# --------------------------------------------------------------------------- the command line


def storegate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
        env={key: value for key, value in os.environ.items() if not key.upper().startswith("STOREGATE_HUB_")},
    )


async def test_cli_backs_up_and_restores_and_explains_failures(
    full_database: str, fresh_url: str, tmp_path: Path
) -> None:
    path = backup_file(tmp_path, full_database)
    # A password in the URL (ignored by the test server's trust auth) must never be printed.
    source_url = full_database if is_sqlite(full_database) else _with_password(full_database)
    target_url = fresh_url if is_sqlite(fresh_url) else _with_password(fresh_url)
    secrets_dir = tmp_path / "hub-secrets"  # where the backup key is made; never the working directory
    source_config = tmp_path / "source.toml"
    source_config.write_text(f'secrets_dir = "{secrets_dir}"\n')

    backed_up = await asyncio.to_thread(
        storegate, "hub", "backup", "--config", str(source_config), "--database-url", source_url, str(path)
    )

    assert backed_up.returncode == 0, backed_up.stderr
    assert str(path) in backed_up.stdout
    assert f"{path.stat().st_size:,} bytes" in backed_up.stdout
    assert f"database revision {head_revision()}" in backed_up.stdout
    for name, rows in ROWS.items():
        assert any(line.split() == [name, str(len(rows))] for line in backed_up.stdout.splitlines()), name

    assert "signed with the backup key" in backed_up.stdout
    assert (secrets_dir / "backup.key").stat().st_mode & 0o077 == 0

    config = tmp_path / "hub.toml"
    config.write_text(f'database_url = "{target_url}"\nsecrets_dir = "{secrets_dir}"\n')
    restored = await asyncio.to_thread(storegate, "hub", "--config", str(config), "restore", str(path))

    assert restored.returncode == 0, restored.stderr
    assert f"restored {path}" in restored.stdout
    assert "verified: the SHA-256 matches the manifest, and the manifest's HMAC the backup key" in restored.stdout
    assert await snapshot_of(fresh_url) == await snapshot_of(full_database)

    again = await asyncio.to_thread(storegate, "hub", "restore", "--config", str(config), str(path))

    assert again.returncode == 1
    assert again.stderr.count("\n") == 1
    assert again.stderr.startswith("restore failed: ")
    assert "--force" in again.stderr

    (tmp_path / "junk").write_bytes(b"junk")
    junk = await asyncio.to_thread(storegate, "hub", "restore", "-c", str(config), "--force", str(tmp_path / "junk"))

    assert junk.returncode == 1
    assert junk.stderr.count("\n") == 1
    assert "junk" in junk.stderr
    for result in (backed_up, restored, again, junk):
        assert "s3cret-pw" not in result.stdout + result.stderr


def _with_password(database_url: str) -> str:
    return make_url(database_url).set(password="s3cret-pw").render_as_string(hide_password=False)


def test_cli_bad_settings_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text('database_url = "mysql://x/y"\n')
    result = storegate("hub", "backup", "--config", str(config), str(tmp_path / "b"))
    assert result.returncode == 2
    assert "database_url" in result.stderr
    assert "backup" in storegate("hub", "--help").stdout
