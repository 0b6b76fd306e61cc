"""A gateway is (store_id, gateway_id); gateways are enrolled before they may send; refused events are kept.

Until 0004 a gateway was keyed by ``gateway_id`` alone, so ``gw-1`` of 300 stores was one row that hopped
from store to store. Here every table keyed by a gateway is rebuilt with (store_id, gateway_id):
``gateways`` (primary key), ``gateway_presence``, ``events`` (unique position and indexes),
``gateway_streams`` (primary key), ``data_losses``. The rows are carried over:

* each (store, gateway) pair found in the gateways row, the events, the presence history or the loss
  records becomes one gateway, enrolled as ``migrated`` (it sent before enrolment existed). The old
  row's presence, software, devices and health belong to the store it last sent from (every message
  moved the row there first); another store's pair takes its presence from its own latest
  ``gateway_presence`` row, and its first and last contact from its own rows;
* a stream mark goes to the store whose events (or loss records) reach highest in that stream, else to
  the old row's store;
* ids and their sequences are kept, so keyset cursors stay valid and ids are never reused.

The old tables are copied aside, dropped and created anew (the same statements on SQLite, which cannot
alter a primary key, and on PostgreSQL); a large events table takes a while: back up first.

``refused_events`` keeps the events set aside from enrolled gateways' batches.

This revision cannot be undone: two stores' ``gw-1`` cannot share one row again. Restore the backup
taken before the upgrade instead.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written by hand, frozen: later changes go into new revisions, never into this one.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_TS = sa.DateTime(timezone=True)
ID = sa.String(63)
UUID_TEXT = sa.String(36)
GATEWAY_FK = ["gateways.store_id", "gateways.gateway_id"]
MIGRATED_BY = "migration 0005"

# Children first: each is dropped before the table it refers to.
REBUILT = ("data_losses", "gateway_streams", "events", "gateway_presence", "gateways")
# Tables whose ids come from a sequence (PostgreSQL) or sqlite_sequence (SQLite's AUTOINCREMENT tables).
WITH_IDS = ("data_losses", "events", "gateway_presence")


def _aside(table: str) -> str:
    return f"{table}_0004"


def _id_high_marks(dialect: str) -> dict[str, int]:
    """The highest id each table has handed out, including ids of rows since deleted."""
    bind = op.get_bind()
    marks: dict[str, int] = {}
    for table in WITH_IDS:
        if dialect == "postgresql":
            sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar()
            if sequence is None:
                continue
            # Names from the catalog, not input.
            last, called = bind.execute(sa.text(f"SELECT last_value, is_called FROM {sequence}")).one()  # noqa: S608
            marks[table] = int(last) if called else int(last) - 1
        else:
            value = bind.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table}).scalar()
            marks[table] = int(value or 0)
    return marks


def _restore_id_high_marks(dialect: str, marks: dict[str, int]) -> None:
    bind = op.get_bind()
    for table in WITH_IDS:
        top = bind.execute(sa.text(f"SELECT COALESCE(MAX(id), 0) FROM {table}")).scalar_one()  # noqa: S608
        value = max(int(top), marks.get(table, 0))
        if value < 1:
            continue
        if dialect == "postgresql":
            bind.execute(sa.text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :v, true)"), {"t": table, "v": value})
        elif table != "gateway_presence":  # not an AUTOINCREMENT table on SQLite: its rowids need no mark
            bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
            bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :v)"), {"t": table, "v": value})


def _create_tables() -> None:
    op.create_table(
        "gateways",
        sa.Column("store_id", ID, nullable=False),
        sa.Column("gateway_id", ID, nullable=False),
        sa.Column("online", sa.Boolean(), nullable=True),
        sa.Column("last_status_reason", sa.String(16), nullable=True),
        sa.Column("status_changed_at", UTC_TS, nullable=True),
        sa.Column("first_seen", UTC_TS, nullable=True),
        sa.Column("last_seen_at", UTC_TS, nullable=True),
        sa.Column("agent_version", sa.String(64), nullable=True),
        sa.Column("config_hash", sa.String(128), nullable=True),
        sa.Column("devices", sa.JSON(), nullable=False),
        sa.Column("last_health", sa.JSON(), nullable=True),
        sa.Column("last_health_at", UTC_TS, nullable=True),
        sa.Column("enrolled_at", UTC_TS, nullable=False),
        sa.Column("enrolled_by", sa.String(128), nullable=False),
        sa.Column("enrolment", sa.String(16), nullable=False),
        sa.Column("revoked_at", UTC_TS, nullable=True),
        sa.Column("revoked_by", sa.String(128), nullable=True),
        sa.ForeignKeyConstraint(["store_id"], ["stores.store_id"], name="fk_gateways_store_id_stores"),
        sa.PrimaryKeyConstraint("store_id", "gateway_id", name="pk_gateways"),
    )
    op.create_table(
        "gateway_presence",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("gateway_id", ID, nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("reported_at", UTC_TS, nullable=False),
        sa.Column("recorded_at", UTC_TS, nullable=False),
        sa.ForeignKeyConstraint(["store_id", "gateway_id"], GATEWAY_FK, name="fk_gateway_presence_store_id_gateways"),
        sa.PrimaryKeyConstraint("id", name="pk_gateway_presence"),
    )
    op.create_table(
        "events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("event_id", UUID_TEXT, nullable=False),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("gateway_id", ID, nullable=False),
        sa.Column("stream", UUID_TEXT, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("device_ts", UTC_TS, nullable=False),
        sa.Column("received_at", UTC_TS, nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["store_id", "gateway_id"], GATEWAY_FK, name="fk_events_store_id_gateways"),
        sa.ForeignKeyConstraint(["store_id"], ["stores.store_id"], name="fk_events_store_id_stores"),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
        sa.UniqueConstraint(
            "store_id", "gateway_id", "stream", "seq", name="uq_events_store_id_gateway_id_stream_seq"
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "gateway_streams",
        sa.Column("store_id", ID, nullable=False),
        sa.Column("gateway_id", ID, nullable=False),
        sa.Column("stream", UUID_TEXT, nullable=False),
        sa.Column("through_seq", sa.BigInteger(), nullable=False),
        sa.Column("max_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.ForeignKeyConstraint(["store_id", "gateway_id"], GATEWAY_FK, name="fk_gateway_streams_store_id_gateways"),
        sa.PrimaryKeyConstraint("store_id", "gateway_id", "stream", name="pk_gateway_streams"),
    )
    op.create_table(
        "data_losses",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("gateway_id", ID, nullable=False),
        sa.Column("stream", UUID_TEXT, nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("by_kind", sa.JSON(), nullable=False),
        sa.Column("event_id", UUID_TEXT, nullable=False),
        sa.Column("reported_at", UTC_TS, nullable=False),
        sa.Column("recorded_at", UTC_TS, nullable=False),
        sa.ForeignKeyConstraint(["store_id", "gateway_id"], GATEWAY_FK, name="fk_data_losses_store_id_gateways"),
        sa.ForeignKeyConstraint(["store_id"], ["stores.store_id"], name="fk_data_losses_store_id_stores"),
        sa.PrimaryKeyConstraint("id", name="pk_data_losses"),
        sa.UniqueConstraint("event_id", "first_seq", name="uq_data_losses_event_id_first_seq"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "refused_events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("gateway_id", ID, nullable=False),
        sa.Column("stream", UUID_TEXT, nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("event_id", UUID_TEXT, nullable=True),
        sa.Column("kind", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("event_json", sa.Text(), nullable=False),
        sa.Column("received_at", UTC_TS, nullable=False),
        sa.Column("recorded_at", UTC_TS, nullable=False),
        sa.ForeignKeyConstraint(["store_id", "gateway_id"], GATEWAY_FK, name="fk_refused_events_store_id_gateways"),
        sa.PrimaryKeyConstraint("id", name="pk_refused_events"),
        sa.UniqueConstraint(
            "store_id", "gateway_id", "stream", "seq", name="uq_refused_events_store_id_gateway_id_stream_seq"
        ),
        sqlite_autoincrement=True,
    )


def _create_indexes() -> None:
    op.create_index("ix_gateway_presence_gateway_recorded", "gateway_presence", ["store_id", "gateway_id", "recorded_at"])
    op.create_index("ix_events_device_ts", "events", ["device_ts", "id"])
    op.create_index("ix_events_store_ts", "events", ["store_id", "device_ts", "id"])
    op.create_index("ix_events_gateway_ts", "events", ["store_id", "gateway_id", "device_ts", "id"])
    op.create_index("ix_events_device_id_ts", "events", ["device_id", "device_ts", "id"])
    op.create_index("ix_events_kind_ts", "events", ["kind", "device_ts", "id"])
    op.create_index("ix_data_losses_stream", "data_losses", ["store_id", "gateway_id", "stream", "first_seq"])
    op.create_index("ix_data_losses_store_reported", "data_losses", ["store_id", "reported_at", "id"])
    op.create_index("ix_data_losses_reported", "data_losses", ["reported_at", "id"])
    op.create_index("ix_refused_events_recorded", "refused_events", ["recorded_at", "id"])
    op.create_index("ix_refused_events_store_recorded", "refused_events", ["store_id", "recorded_at", "id"])


def _copy_gateways(dialect: str) -> None:
    empty_list = "CAST('[]' AS JSON)" if dialect == "postgresql" else "'[]'"
    # The old row, under the store it last sent from.
    op.execute(
        f"""
        INSERT INTO gateways (store_id, gateway_id, online, last_status_reason, status_changed_at, first_seen,
            last_seen_at, agent_version, config_hash, devices, last_health, last_health_at, enrolled_at, enrolled_by,
            enrolment)
        SELECT store_id, gateway_id, online, last_status_reason, status_changed_at, first_seen, last_seen_at,
            agent_version, config_hash, devices, last_health, last_health_at, first_seen, '{MIGRATED_BY}', 'migrated'
        FROM gateways_0004
        """  # noqa: S608 - constants of this migration
    )
    # Every other (store, gateway) pair the old tables name: the same id in another store.
    op.execute(
        f"""
        INSERT INTO gateways (store_id, gateway_id, devices, first_seen, last_seen_at, enrolled_at, enrolled_by,
            enrolment)
        SELECT pairs.store_id, pairs.gateway_id, {empty_list}, MIN(pairs.first_at), MAX(pairs.last_at),
            MIN(pairs.first_at), '{MIGRATED_BY}', 'migrated'
        FROM (
            SELECT store_id, gateway_id, MIN(received_at) AS first_at, MAX(received_at) AS last_at
            FROM events_0004 GROUP BY store_id, gateway_id
            UNION ALL
            SELECT store_id, gateway_id, MIN(recorded_at), MAX(recorded_at)
            FROM gateway_presence_0004 GROUP BY store_id, gateway_id
            UNION ALL
            SELECT store_id, gateway_id, MIN(recorded_at), MAX(recorded_at)
            FROM data_losses_0004 GROUP BY store_id, gateway_id
        ) AS pairs
        WHERE NOT EXISTS (
            SELECT 1 FROM gateways_0004 AS old
            WHERE old.store_id = pairs.store_id AND old.gateway_id = pairs.gateway_id
        )
        GROUP BY pairs.store_id, pairs.gateway_id
        """  # noqa: S608
    )
    # Those pairs' presence, from their own latest transition.
    latest = """
        (SELECT p.{column} FROM gateway_presence_0004 AS p
         WHERE p.store_id = gateways.store_id AND p.gateway_id = gateways.gateway_id
         ORDER BY p.recorded_at DESC, p.id DESC LIMIT 1)
    """
    op.execute(
        f"""
        UPDATE gateways SET online = {latest.format(column="online")},
            last_status_reason = {latest.format(column="reason")},
            status_changed_at = {latest.format(column="reported_at")}
        WHERE online IS NULL AND NOT EXISTS (
            SELECT 1 FROM gateways_0004 AS old
            WHERE old.store_id = gateways.store_id AND old.gateway_id = gateways.gateway_id
        )
        """  # noqa: S608
    )


def _copy_children() -> None:
    op.execute(
        """
        INSERT INTO gateway_presence (id, store_id, gateway_id, online, reason, reported_at, recorded_at)
        SELECT id, store_id, gateway_id, online, reason, reported_at, recorded_at FROM gateway_presence_0004
        """
    )
    op.execute(
        """
        INSERT INTO events (id, event_id, store_id, gateway_id, stream, seq, device_id, kind, device_ts, received_at,
            payload)
        SELECT id, event_id, store_id, gateway_id, stream, seq, device_id, kind, device_ts, received_at, payload
        FROM events_0004
        """
    )
    op.execute(
        """
        INSERT INTO data_losses (id, store_id, gateway_id, stream, first_seq, last_seq, count, reason, detail, by_kind,
            event_id, reported_at, recorded_at)
        SELECT id, store_id, gateway_id, stream, first_seq, last_seq, count, reason, detail, by_kind, event_id,
            reported_at, recorded_at
        FROM data_losses_0004
        """
    )
    # A stream belongs to the store whose events (or loss records) reach highest in it.
    op.execute(
        """
        WITH reach AS (
            SELECT gateway_id, stream, store_id, MAX(seq) AS top FROM events_0004
            GROUP BY gateway_id, stream, store_id
            UNION ALL
            SELECT gateway_id, stream, store_id, MAX(last_seq) FROM data_losses_0004
            GROUP BY gateway_id, stream, store_id
        ), ranked AS (
            SELECT gateway_id, stream, store_id,
                ROW_NUMBER() OVER (PARTITION BY gateway_id, stream ORDER BY top DESC, store_id) AS n
            FROM reach
        )
        INSERT INTO gateway_streams (store_id, gateway_id, stream, through_seq, max_seq, updated_at)
        SELECT COALESCE(ranked.store_id, old.store_id), s.gateway_id, s.stream, s.through_seq, s.max_seq, s.updated_at
        FROM gateway_streams_0004 AS s
        LEFT JOIN ranked ON ranked.gateway_id = s.gateway_id AND ranked.stream = s.stream AND ranked.n = 1
        LEFT JOIN gateways_0004 AS old ON old.gateway_id = s.gateway_id
        """
    )


def upgrade() -> None:
    """Rebuild the gateway-keyed tables with (store_id, gateway_id), carrying every row over; add refused_events."""
    dialect = op.get_bind().dialect.name
    marks = _id_high_marks(dialect)
    for table in REBUILT:
        op.execute(f"CREATE TABLE {_aside(table)} AS SELECT * FROM {table}")  # noqa: S608
    for table in REBUILT:
        op.drop_table(table)
    _create_tables()
    _copy_gateways(dialect)
    _copy_children()
    for table in REBUILT:
        op.drop_table(_aside(table))
    _create_indexes()
    _restore_id_high_marks(dialect, marks)


def downgrade() -> None:
    """Refused: a gateway id used by two stores cannot go back to one row; restore a backup taken before 0005."""
    raise RuntimeError(
        "revision 0005 cannot be undone (gateways are keyed by store and gateway since); "
        "restore the backup taken before the upgrade"
    )
