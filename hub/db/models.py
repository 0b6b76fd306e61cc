"""The hub's tables. ``hub/migrations/versions`` creates the same schema; a test keeps the two in step."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Constraint names fixed by convention, so migrations can refer to them on every database.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Widths follow the wire contract: ids are topic segments of at most 63 characters.
ID_LENGTH: Final = 63
DEVICE_ID_LENGTH: Final = 128
KIND_LENGTH: Final = 64
UUID_LENGTH: Final = 36
TOPIC_LENGTH: Final = 1024
REASON_LENGTH: Final = 64
PAYLOAD_EXCERPT_BYTES: Final = 2048

# SQLite makes only "INTEGER PRIMARY KEY" an auto-incrementing rowid; PostgreSQL gets 64 bits.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC and always read back as aware UTC, SQLite included."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes; hand the database UTC (naive for SQLite, which drops offsets)."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} cannot be stored: its time zone is unknown")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to what SQLite returns; normalise what PostgreSQL returns."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the hub's models."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime()}


class Store(Base):
    """A store that has sent something."""

    __tablename__ = "stores"

    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    first_seen: Mapped[datetime]
    # When the hub last stored a new event of this store (the hub's clock, not a device's).
    last_event_at: Mapped[datetime | None]
    # Maintained by the consumer, so listing stores does not count the events table.
    event_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Gateway(Base):
    """An edge gateway and what it last said about itself."""

    __tablename__ = "gateways"

    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("stores.store_id"), index=True)
    # None until the gateway's first status message.
    online: Mapped[bool | None] = mapped_column(Boolean)
    last_status_reason: Mapped[str | None] = mapped_column(String(16))
    status_changed_at: Mapped[datetime | None]
    first_seen: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    agent_version: Mapped[str | None] = mapped_column(String(64))
    config_hash: Mapped[str | None] = mapped_column(String(128))
    devices: Mapped[list[str]] = mapped_column(JSON, default=list)
    last_health: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_health_at: Mapped[datetime | None]


class GatewayPresence(Base):
    """One online/offline transition of a gateway."""

    __tablename__ = "gateway_presence"
    __table_args__ = (Index("ix_gateway_presence_gateway_recorded", "gateway_id", "recorded_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("gateways.gateway_id"))
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    online: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(16))
    # The gateway's timestamp of the status message (its clock; a last will carries its connect time).
    reported_at: Mapped[datetime]
    # When the hub recorded the transition.
    recorded_at: Mapped[datetime]


class StoredEvent(Base):
    """One event of a gateway, stored exactly once."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("gateway_id", "stream", "seq"),
        Index("ix_events_device_ts", "device_ts", "id"),
        Index("ix_events_store_ts", "store_id", "device_ts", "id"),
        Index("ix_events_gateway_ts", "gateway_id", "device_ts", "id"),
        Index("ix_events_device_id_ts", "device_id", "device_ts", "id"),
        Index("ix_events_kind_ts", "kind", "device_ts", "id"),
        # Ids are never reused, so a keyset cursor stays valid.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(UUID_LENGTH), unique=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("stores.store_id"))
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("gateways.gateway_id"))
    stream: Mapped[str] = mapped_column(String(UUID_LENGTH))
    seq: Mapped[int] = mapped_column(BigInteger)
    device_id: Mapped[str] = mapped_column(String(DEVICE_ID_LENGTH))
    kind: Mapped[str] = mapped_column(String(KIND_LENGTH))
    device_ts: Mapped[datetime]
    received_at: Mapped[datetime]
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class GatewayStream(Base):
    """How far one outbox stream of a gateway is accounted for (stored or recorded lost) without a gap."""

    __tablename__ = "gateway_streams"

    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("gateways.gateway_id"), primary_key=True)
    stream: Mapped[str] = mapped_column(String(UUID_LENGTH), primary_key=True)
    through_seq: Mapped[int] = mapped_column(BigInteger)
    # The highest seq stored or recorded lost. While it equals through_seq nothing is held above the
    # mark, and the next batch's mark follows from its own seqs without reading the events back.
    max_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime]


class DataLossRecord(Base):
    """A range of a stream's events the hub will never receive, from an ``outbox.loss`` event.

    One row per range; a loss event's ranges are trimmed of seqs the hub holds or had already
    recorded as lost, so ``count`` adds up to distinct lost events.
    """

    __tablename__ = "data_losses"
    __table_args__ = (
        UniqueConstraint("event_id", "first_seq"),
        Index("ix_data_losses_stream", "gateway_id", "stream", "first_seq"),
        Index("ix_data_losses_store_reported", "store_id", "reported_at", "id"),
        Index("ix_data_losses_reported", "reported_at", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("stores.store_id"))
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("gateways.gateway_id"))
    stream: Mapped[str] = mapped_column(String(UUID_LENGTH))
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)
    # Lost events per kind of the whole loss event, as the gateway reported them (the same on each of its rows).
    by_kind: Mapped[dict[str, int]] = mapped_column(JSON)
    # The outbox.loss event that reported it.
    event_id: Mapped[str] = mapped_column(String(UUID_LENGTH))
    # The loss event's timestamp: when the gateway recorded the loss (its clock).
    reported_at: Mapped[datetime]
    # When the hub stored it.
    recorded_at: Mapped[datetime]


class RejectedMessage(Base):
    """A message, or one event of it, the hub refused, kept for people to inspect."""

    __tablename__ = "rejected_messages"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime]
    topic: Mapped[str] = mapped_column(String(TOPIC_LENGTH))
    reason: Mapped[str] = mapped_column(String(REASON_LENGTH), index=True)
    detail: Mapped[str] = mapped_column(Text)
    payload_excerpt: Mapped[str] = mapped_column(Text)
    payload_bytes: Mapped[int] = mapped_column(Integer)


class OutgoingCommand(Base):
    """A command the hub sent to a gateway (or a device behind it), and the result that came back."""

    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_store_issued", "store_id", "issued_at"),)

    command_id: Mapped[str] = mapped_column(String(UUID_LENGTH), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    device_id: Mapped[str | None] = mapped_column(String(DEVICE_ID_LENGTH))
    name: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    # "pending" (not yet handed to the broker), "sent", then the gateway's "done", "failed", "rejected",
    # "expired"; or "undeliverable" when no gateway of the store can take it.
    status: Mapped[str] = mapped_column(String(16), index=True)
    sent_at: Mapped[datetime | None]
    result_detail: Mapped[str | None] = mapped_column(Text)
    result_at: Mapped[datetime | None]
