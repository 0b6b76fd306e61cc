"""The monitoring tables: rules in force, alerts and their history, excursions, notifications and webhooks.

Migrations ``0004``, ``0007`` (sealed webhook secrets, delivery timing), ``0010`` (rule states shared by N
workers) and ``0015`` (alerts newest first) create the same schema.
``alert_history`` is append-only: the hub inserts into it and never updates or deletes a row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.models import ID_LENGTH, UUID_LENGTH, Base, BigId

RULE_ID_LENGTH: Final = 64
SUBJECT_LENGTH: Final = 200
ACTOR_LENGTH: Final = 128
URL_LENGTH: Final = 2048


class ChainRule(Base):
    """One rule of the chain's rule set, as validated data (``hub.domain.rules.Rule``)."""

    __tablename__ = "chain_rules"

    rule_id: Mapped[str] = mapped_column(String(RULE_ID_LENGTH), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))


class StoreRuleOverride(Base):
    """One store's changes to one chain rule (fields to change; ``enabled: false`` disables it there)."""

    __tablename__ = "store_rule_overrides"

    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    rule_id: Mapped[str] = mapped_column(String(RULE_ID_LENGTH), primary_key=True)
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))


class AlertRow(Base):
    """One alert: its dedupe key, current status and counters (its transitions are in alert_history)."""

    __tablename__ = "alerts"
    __table_args__ = (
        # One live alert per (store, rule, subject): set while open or acknowledged, cleared on resolve.
        UniqueConstraint("active_key"),
        Index("ix_alerts_store_opened", "store_id", "opened_at"),
        Index("ix_alerts_status_opened", "status", "opened_at"),
        # The console's list, newest first across stores and states (migration 0015).
        Index("ix_alerts_opened", "opened_at", "alert_id"),
    )

    alert_id: Mapped[str] = mapped_column(String(UUID_LENGTH), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    rule_id: Mapped[str] = mapped_column(String(RULE_ID_LENGTH))
    # The rule's kind when it opened (after_hours_motion, environment_range, ...): reports group by it.
    rule_kind: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(16))  # "security" or "environment" or "operations"
    subject_kind: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[str] = mapped_column(String(SUBJECT_LENGTH))
    active_key: Mapped[str | None] = mapped_column(String(ID_LENGTH + RULE_ID_LENGTH + SUBJECT_LENGTH + 24))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    count: Mapped[int] = mapped_column(Integer)
    evidence: Mapped[list[str]] = mapped_column(JSON)
    snapshot_ref: Mapped[str | None] = mapped_column(String(1024))
    escalate_after_s: Mapped[list[float]] = mapped_column(JSON)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    acknowledged_by: Mapped[str | None] = mapped_column(String(ACTOR_LENGTH))
    acknowledged_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(ACTOR_LENGTH))
    resolved_at: Mapped[datetime | None]
    resolution_note: Mapped[str | None] = mapped_column(Text)


class AlertHistoryRow(Base):
    """One transition of an alert (opened, acknowledged, escalated, resolved); never changed once written."""

    __tablename__ = "alert_history"
    __table_args__ = (
        Index("ix_alert_history_alert", "alert_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(UUID_LENGTH), ForeignKey("alerts.alert_id"))
    at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    level: Mapped[int | None] = mapped_column(Integer)
    recorded_at: Mapped[datetime]


class ExcursionRow(Base):
    """A closed environment excursion: a zone beyond its range from start to end, with its worst value."""

    __tablename__ = "excursions"
    __table_args__ = (
        UniqueConstraint("store_id", "rule_id", "started_at"),
        Index("ix_excursions_store_started", "store_id", "started_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    rule_id: Mapped[str] = mapped_column(String(RULE_ID_LENGTH))
    zone: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(8))  # "high" or "low"
    limit_value: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime]
    peak: Mapped[float] = mapped_column(Float)
    peak_at: Mapped[datetime]
    duration_s: Mapped[float] = mapped_column(Float)
    readings: Mapped[int] = mapped_column(Integer)
    gaps: Mapped[int] = mapped_column(Integer)
    # The alert it raised, if it lasted long enough to raise one.
    alert_id: Mapped[str | None] = mapped_column(String(UUID_LENGTH))
    recorded_at: Mapped[datetime]


class RuleStateRow(Base):
    """One store's rule states, shared by N hub workers (hub.alerting.shared_states); unused by one hub process.

    ``version`` goes up by one with every write, made under the store's advisory lock: a worker whose copy has
    the same version keeps its copy instead of decoding the row again.
    """

    __tablename__ = "rule_states"

    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    version: Mapped[int] = mapped_column(BigId)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime]


class NotificationRow(Base):
    """An alert transition to tell the outside world about (webhooks, the MQTT alert topic).

    Written in the same transaction as the transition, so nothing is announced that did not happen
    and nothing that happened is left unannounced; the dispatcher delivers from this table.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_unpublished", "mqtt_published", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # "alert.opened", "alert.acknowledged", "alert.escalated", "alert.resolved"
    event: Mapped[str] = mapped_column(String(32))
    alert_id: Mapped[str] = mapped_column(String(UUID_LENGTH))
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    mqtt_published: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    mqtt_published_at: Mapped[datetime | None]


class Webhook(Base):
    """An HTTPS endpoint that receives alert notifications, signed with its secret (HMAC-SHA256)."""

    __tablename__ = "webhooks"

    webhook_id: Mapped[str] = mapped_column(String(UUID_LENGTH), primary_key=True)
    url: Mapped[str] = mapped_column(String(URL_LENGTH))
    # The signing secret, encrypted with the hub's key (hub.alerting.secret_box); opened only to sign.
    secret_sealed: Mapped[str | None] = mapped_column(Text)
    # A secret stored in plain text before migration 0007; the hub seals it at start and empties this ("":
    # the column stays NOT NULL, as SQLite cannot drop that without rebuilding a referenced table).
    legacy_secret: Mapped[str] = mapped_column(String(256), default="")
    # Only these stores' alerts (None: every store), only these events (None: all).
    store_ids: Mapped[list[str] | None] = mapped_column(JSON)
    events: Mapped[list[str] | None] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))


class WebhookDelivery(Base):
    """One notification to one webhook: attempts, the next retry, and how it ended."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    notification_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("notifications.id"), primary_key=True, autoincrement=False
    )
    webhook_id: Mapped[str] = mapped_column(String(UUID_LENGTH), ForeignKey("webhooks.webhook_id"), primary_key=True)
    # "pending" (waiting for its next attempt), "delivered", "failed" (gave up after the last retry)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    # When the last attempt started and how long it took (never the receiver's answer: only its status).
    last_attempt_at: Mapped[datetime | None]
    last_duration_ms: Mapped[int | None] = mapped_column(Integer)
    delivered_at: Mapped[datetime | None]
