"""The inventory ledger and what derives from it, restock tasks, stock policies, hub commands,
rules, alerts with their history, excursions, notifications and webhooks; store coordinates.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written from the models, then frozen: later changes go into new revisions, never into this one.
UTC_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the tables of inventory, restock, commands and monitoring."""
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(length=36), nullable=False),
        sa.Column("store_id", sa.String(length=63), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("rule_kind", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("subject_kind", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.String(length=200), nullable=False),
        sa.Column("active_key", sa.String(length=351), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("opened_at", UTC_TS, nullable=False),
        sa.Column("last_seen_at", UTC_TS, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("snapshot_ref", sa.String(length=1024), nullable=True),
        sa.Column("escalate_after_s", sa.JSON(), nullable=False),
        sa.Column("escalation_level", sa.Integer(), server_default="0", nullable=False),
        sa.Column("acknowledged_by", sa.String(length=128), nullable=True),
        sa.Column("acknowledged_at", UTC_TS, nullable=True),
        sa.Column("resolved_by", sa.String(length=128), nullable=True),
        sa.Column("resolved_at", UTC_TS, nullable=True),
        sa.Column("resolution_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("active_key", name=op.f("uq_alerts_active_key")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_status_opened", ["status", "opened_at"], unique=False)
        batch_op.create_index("ix_alerts_store_opened", ["store_id", "opened_at"], unique=False)

    op.create_table(
        "chain_rules",
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", name=op.f("pk_chain_rules")),
    )
    op.create_table(
        "commands",
        sa.Column("command_id", sa.String(length=36), nullable=False),
        sa.Column("store_id", sa.String(length=63), nullable=False),
        sa.Column("gateway_id", sa.String(length=63), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=True),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("issued_at", UTC_TS, nullable=False),
        sa.Column("expires_at", UTC_TS, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sent_at", UTC_TS, nullable=True),
        sa.Column("result_detail", sa.Text(), nullable=True),
        sa.Column("result_at", UTC_TS, nullable=True),
        sa.PrimaryKeyConstraint("command_id", name=op.f("pk_commands")),
    )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_commands_status"), ["status"], unique=False)
        batch_op.create_index("ix_commands_store_issued", ["store_id", "issued_at"], unique=False)

    op.create_table(
        "excursions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("store_id", sa.String(length=63), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.String(length=32), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("limit_value", sa.Float(), nullable=False),
        sa.Column("started_at", UTC_TS, nullable=False),
        sa.Column("ended_at", UTC_TS, nullable=False),
        sa.Column("peak", sa.Float(), nullable=False),
        sa.Column("peak_at", UTC_TS, nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("readings", sa.Integer(), nullable=False),
        sa.Column("gaps", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.String(length=36), nullable=True),
        sa.Column("recorded_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_excursions")),
        sa.UniqueConstraint(
            "store_id", "rule_id", "started_at", name=op.f("uq_excursions_store_id_rule_id_started_at")
        ),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("excursions", schema=None) as batch_op:
        batch_op.create_index("ix_excursions_store_started", ["store_id", "started_at"], unique=False)

    op.create_table(
        "ledger",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.String(length=63), nullable=False),
        sa.Column("sku_id", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("at", UTC_TS, nullable=False),
        sa.Column("shelf_id", sa.String(length=128), nullable=True),
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column("level", sa.Integer(), nullable=True),
        sa.Column("unit_price", sa.Numeric(precision=12, scale=4), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("recorded_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger")),
        sa.UniqueConstraint("event_id", "line", name=op.f("uq_ledger_event_id_line")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_store_kind_at", ["store_id", "kind", "at"], unique=False)
        batch_op.create_index("ix_ledger_store_sku_at", ["store_id", "sku_id", "at"], unique=False)

    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("alert_id", sa.String(length=36), nullable=False),
        sa.Column("store_id", sa.String(length=63), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("mqtt_published", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("mqtt_published_at", UTC_TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_unpublished", ["mqtt_published", "id"], unique=False)

    op.create_table(
        "restock_tasks",
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("store_id", sa.String(length=63), nullable=False),
        sa.Column("shelf_id", sa.String(length=128), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("sku_id", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("open_key", sa.String(length=199), nullable=True),
        sa.Column("level_at_open", sa.Integer(), nullable=False),
        sa.Column("min_quantity", sa.Integer(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("opened_at", UTC_TS, nullable=False),
        sa.Column("opening_event_id", sa.String(length=36), nullable=False),
        sa.Column("closed_at", UTC_TS, nullable=True),
        sa.Column("closing_event_id", sa.String(length=36), nullable=True),
        sa.Column("level_at_close", sa.Integer(), nullable=True),
        sa.Column("command_id", sa.String(length=36), nullable=True),
        sa.Column("print_status", sa.String(length=16), nullable=False),
        sa.Column("print_detail", sa.Text(), nullable=True),
        sa.Column("pick_list", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_restock_tasks")),
        sa.UniqueConstraint("open_key", name=op.f("uq_restock_tasks_open_key")),
    )
    with op.batch_alter_table("restock_tasks", schema=None) as batch_op:
        batch_op.create_index("ix_restock_tasks_store_opened", ["store_id", "opened_at"], unique=False)

    op.create_table(
        "shelf_levels",
        sa.Column("store_id", sa.String(length=63), nullable=False),
        sa.Column("shelf_id", sa.String(length=128), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("sku_id", sa.String(length=63), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("at", UTC_TS, nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("store_id", "shelf_id", "slot", name=op.f("pk_shelf_levels")),
    )
    op.create_table(
        "shrink_records",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("store_id", sa.String(length=63), nullable=False),
        sa.Column("sku_id", sa.String(length=63), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("value", sa.Numeric(precision=12, scale=4), nullable=False),
        sa.Column("picked_at", UTC_TS, nullable=False),
        sa.Column("expired_at", UTC_TS, nullable=False),
        sa.Column("event_ids", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shrink_records")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("shrink_records", schema=None) as batch_op:
        batch_op.create_index("ix_shrink_records_store_sku", ["store_id", "sku_id", "expired_at"], unique=False)

    op.create_table(
        "stock_policies",
        sa.Column("store_id", sa.String(length=63), nullable=False),
        sa.Column("sku_id", sa.String(length=63), nullable=False),
        sa.Column("max_stock", sa.Integer(), nullable=False),
        sa.Column("reorder_point", sa.Integer(), nullable=True),
        sa.Column("lead_time_days", sa.Integer(), server_default="0", nullable=False),
        sa.Column("safety_stock", sa.Integer(), server_default="0", nullable=False),
        sa.Column("on_order", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.CheckConstraint("lead_time_days >= 0", name=op.f("ck_stock_policies_lead_time_not_negative")),
        sa.CheckConstraint("max_stock >= 0", name=op.f("ck_stock_policies_max_stock_not_negative")),
        sa.CheckConstraint("safety_stock >= 0", name=op.f("ck_stock_policies_safety_stock_not_negative")),
        sa.PrimaryKeyConstraint("store_id", "sku_id", name=op.f("pk_stock_policies")),
    )
    op.create_table(
        "stock_positions",
        sa.Column("store_id", sa.String(length=63), nullable=False),
        sa.Column("sku_id", sa.String(length=63), nullable=False),
        sa.Column("on_hand", sa.Integer(), nullable=False),
        sa.Column("counted_at", UTC_TS, nullable=True),
        sa.Column("last_variance", sa.Integer(), server_default="0", nullable=False),
        sa.Column("variance_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_movement_at", UTC_TS, nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("store_id", "sku_id", name=op.f("pk_stock_positions")),
    )
    op.create_table(
        "store_rule_overrides",
        sa.Column("store_id", sa.String(length=63), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("store_id", "rule_id", name=op.f("pk_store_rule_overrides")),
    )
    op.create_table(
        "unplaced_events",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("store_id", sa.String(length=63), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", UTC_TS, nullable=False),
        sa.Column("recorded_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_unplaced_events")),
    )
    with op.batch_alter_table("unplaced_events", schema=None) as batch_op:
        batch_op.create_index("ix_unplaced_events_store_at", ["store_id", "at"], unique=False)

    op.create_table(
        "webhooks",
        sa.Column("webhook_id", sa.String(length=36), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("secret", sa.String(length=256), nullable=False),
        sa.Column("store_ids", sa.JSON(), nullable=True),
        sa.Column("events", sa.JSON(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default="1", nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("webhook_id", name=op.f("pk_webhooks")),
    )
    op.create_table(
        "alert_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.String(length=36), nullable=False),
        sa.Column("at", UTC_TS, nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("level", sa.Integer(), nullable=True),
        sa.Column("recorded_at", UTC_TS, nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.alert_id"], name=op.f("fk_alert_history_alert_id_alerts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_history")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("alert_history", schema=None) as batch_op:
        batch_op.create_index("ix_alert_history_alert", ["alert_id", "id"], unique=False)

    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "notification_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False
        ),
        sa.Column("webhook_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", UTC_TS, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("delivered_at", UTC_TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["notification_id"], ["notifications.id"], name=op.f("fk_webhook_deliveries_notification_id_notifications")
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"], ["webhooks.webhook_id"], name=op.f("fk_webhook_deliveries_webhook_id_webhooks")
        ),
        sa.PrimaryKeyConstraint("notification_id", "webhook_id", name=op.f("pk_webhook_deliveries")),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_deliveries_due", ["status", "next_attempt_at"], unique=False)

    with op.batch_alter_table("store_profiles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("latitude", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("longitude", sa.Float(), nullable=True))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("store_profiles", schema=None) as batch_op:
        batch_op.drop_column("longitude")
        batch_op.drop_column("latitude")

    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_due")

    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("alert_history", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_history_alert")

    op.drop_table("alert_history")
    op.drop_table("webhooks")
    with op.batch_alter_table("unplaced_events", schema=None) as batch_op:
        batch_op.drop_index("ix_unplaced_events_store_at")

    op.drop_table("unplaced_events")
    op.drop_table("store_rule_overrides")
    op.drop_table("stock_positions")
    op.drop_table("stock_policies")
    with op.batch_alter_table("shrink_records", schema=None) as batch_op:
        batch_op.drop_index("ix_shrink_records_store_sku")

    op.drop_table("shrink_records")
    op.drop_table("shelf_levels")
    with op.batch_alter_table("restock_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_restock_tasks_store_opened")

    op.drop_table("restock_tasks")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_unpublished")

    op.drop_table("notifications")
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_store_sku_at")
        batch_op.drop_index("ix_ledger_store_kind_at")

    op.drop_table("ledger")
    with op.batch_alter_table("excursions", schema=None) as batch_op:
        batch_op.drop_index("ix_excursions_store_started")

    op.drop_table("excursions")
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index("ix_commands_store_issued")
        batch_op.drop_index(batch_op.f("ix_commands_status"))

    op.drop_table("commands")
    op.drop_table("chain_rules")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_store_opened")
        batch_op.drop_index("ix_alerts_status_opened")

    op.drop_table("alerts")
