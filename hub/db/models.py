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
    Float,
    ForeignKey,
    ForeignKeyConstraint,
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
CLOCK_ISSUE_LENGTH: Final = 32
UUID_LENGTH: Final = 36
TOPIC_LENGTH: Final = 1024
REASON_LENGTH: Final = 64
ACTOR_LENGTH: Final = 128
# The JSON of a refused event kept for people to inspect (an event is far smaller on the wire).
REFUSED_EVENT_BYTES: Final = 16 * 1024
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
    """A store the hub knows: one of its gateways was enrolled, or sent something before enrolment existed."""

    __tablename__ = "stores"

    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    first_seen: Mapped[datetime]
    # When the hub last stored a new event of this store (the hub's clock, not a device's).
    last_event_at: Mapped[datetime | None]
    # Maintained by the consumer, so listing stores does not count the events table.
    event_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Gateway(Base):
    """An edge gateway of one store: whether it may send (its enrolment) and what it last said about itself.

    A gateway is the pair (store_id, gateway_id): ``gw-1`` of one store and ``gw-1`` of another are two
    gateways. The hub accepts nothing from a gateway without a row here, or from one revoked.
    """

    __tablename__ = "gateways"

    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("stores.store_id"), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    # None until the gateway's first status message.
    online: Mapped[bool | None] = mapped_column(Boolean)
    last_status_reason: Mapped[str | None] = mapped_column(String(16))
    status_changed_at: Mapped[datetime | None]
    # None until the hub first hears from it (an operator enrols a gateway before it is installed).
    first_seen: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    agent_version: Mapped[str | None] = mapped_column(String(64))
    config_hash: Mapped[str | None] = mapped_column(String(128))
    devices: Mapped[list[str]] = mapped_column(JSON, default=list)
    last_health: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_health_at: Mapped[datetime | None]
    # The registry (hub.fleet): who added it and how ("operator", "first_contact" with accept_unknown_gateways,
    # "migrated" for gateways that sent before enrolment existed), and who revoked it.
    enrolled_at: Mapped[datetime]
    enrolled_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    enrolment: Mapped[str] = mapped_column(String(16))
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(ACTOR_LENGTH))
    # The not-after of the newest certificate the hub signed for it (enrolment by token, renewal, an operator's
    # enrolment); None when the hub runs no CA or issued none since this column exists.
    certificate_expires_at: Mapped[datetime | None]


class GatewayPresence(Base):
    """One online/offline transition of a gateway."""

    __tablename__ = "gateway_presence"
    __table_args__ = (
        ForeignKeyConstraint(["store_id", "gateway_id"], [Gateway.store_id, Gateway.gateway_id]),
        Index("ix_gateway_presence_gateway_recorded", "store_id", "gateway_id", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH))
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
        UniqueConstraint("store_id", "gateway_id", "stream", "seq"),
        ForeignKeyConstraint(["store_id", "gateway_id"], [Gateway.store_id, Gateway.gateway_id]),
        # Lists go by the time the hub received an event (a gateway's clock may be decades off), or by device time
        # when asked. Each index costs every insert, so only the selective filters have one, for either time: a
        # gateway's events are read through its store's (a store has a few gateways), a kind's through the
        # unfiltered one (kinds are few). Migration 0009 dropped the gateway's and the kind's device-time indexes.
        Index("ix_events_device_ts", "device_ts", "id"),
        Index("ix_events_store_ts", "store_id", "device_ts", "id"),
        Index("ix_events_device_id_ts", "device_id", "device_ts", "id"),
        Index("ix_events_received", "received_at", "id"),
        Index("ix_events_store_received", "store_id", "received_at", "id"),
        Index("ix_events_device_id_received", "device_id", "received_at", "id"),
        # Ids are never reused, so a keyset cursor stays valid.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(UUID_LENGTH), unique=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("stores.store_id"))
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    stream: Mapped[str] = mapped_column(String(UUID_LENGTH))
    seq: Mapped[int] = mapped_column(BigInteger)
    device_id: Mapped[str] = mapped_column(String(DEVICE_ID_LENGTH))
    kind: Mapped[str] = mapped_column(String(KIND_LENGTH))
    device_ts: Mapped[datetime]
    received_at: Mapped[datetime]
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Why device_ts is not believed (hub.ingest.clock.ClockIssue), or None.
    clock_issue: Mapped[str | None] = mapped_column(String(CLOCK_ISSUE_LENGTH))


class GatewayStream(Base):
    """How far one outbox stream of a gateway is accounted for (stored or recorded lost) without a gap."""

    __tablename__ = "gateway_streams"
    __table_args__ = (ForeignKeyConstraint(["store_id", "gateway_id"], [Gateway.store_id, Gateway.gateway_id]),)

    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
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
        ForeignKeyConstraint(["store_id", "gateway_id"], [Gateway.store_id, Gateway.gateway_id]),
        Index("ix_data_losses_stream", "store_id", "gateway_id", "stream", "first_seq"),
        Index("ix_data_losses_store_reported", "store_id", "reported_at", "id"),
        Index("ix_data_losses_reported", "reported_at", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("stores.store_id"))
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH))
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


class RefusedEvent(Base):
    """An event of an enrolled gateway's batch that the hub set aside: invalid, or refused by the database.

    The rest of its batch is stored and acknowledged. Where its position is known, the seq counts as
    accounted for (like a recorded loss), so the Ack moves past it and the gateway deletes it: one bad
    event never stalls its stream. Kept for people to inspect (``/api/v1/refused-events``).
    """

    __tablename__ = "refused_events"
    __table_args__ = (
        ForeignKeyConstraint(["store_id", "gateway_id"], [Gateway.store_id, Gateway.gateway_id]),
        # One row per position: a batch sent again sets the same event aside again, and it is kept once.
        UniqueConstraint("store_id", "gateway_id", "stream", "seq"),
        Index("ix_refused_events_recorded", "recorded_at", "id"),
        Index("ix_refused_events_store_recorded", "store_id", "recorded_at", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    # Null when the event's own stream or seq could not be read (or the seq is beyond a 64-bit integer).
    stream: Mapped[str | None] = mapped_column(String(UUID_LENGTH))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    event_id: Mapped[str | None] = mapped_column(String(UUID_LENGTH))
    kind: Mapped[str | None] = mapped_column(String(KIND_LENGTH))
    # "invalid_event", "not_of_sender" or "storage_error".
    reason: Mapped[str] = mapped_column(String(REASON_LENGTH))
    detail: Mapped[str] = mapped_column(Text)
    # The event as it arrived (its first 16 KB, NUL characters escaped).
    event_json: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]
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


class GatewayConfig(Base):
    """One version of a gateway's agent.toml pushed by the hub (``config.apply``), and what the gateway made of it.

    ``status``: "pending" until the gateway answers (its command's status says whether it was sent), "accepted"
    while it is on probation, then "applied", "rolled_back" (it failed its probation), "rejected" (refused
    before anything changed), "failed" or "expired" (never reached the gateway).
    """

    __tablename__ = "gateway_configs"
    __table_args__ = (
        UniqueConstraint("store_id", "gateway_id", "version"),
        ForeignKeyConstraint(["store_id", "gateway_id"], [Gateway.store_id, Gateway.gateway_id]),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    toml: Mapped[str] = mapped_column(Text)
    toml_sha256: Mapped[str] = mapped_column(String(64))
    probation_s: Mapped[float] = mapped_column(Float)
    pushed_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    pushed_at: Mapped[datetime]
    command_id: Mapped[str] = mapped_column(String(UUID_LENGTH), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str | None] = mapped_column(Text)
    result_at: Mapped[datetime | None]


class SelftestReportRow(Base):
    """A gateway's self-test report (``storegate provision selftest``), as its gateway uploaded it."""

    __tablename__ = "selftest_reports"
    __table_args__ = (Index("ix_selftest_reports_gateway", "store_id", "gateway_id", "received_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    received_at: Mapped[datetime]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    passed: Mapped[bool] = mapped_column(Boolean)
    failed: Mapped[int] = mapped_column(Integer)
    # The report as sent (storegate.wire.SelftestReport): its devices and the reasons, in words.
    report: Mapped[dict[str, Any]] = mapped_column(JSON)


class Release(Base):
    """A release of the agent software an admin uploaded (hub.releases): a checked wheel kept in the hub's files."""

    __tablename__ = "releases"

    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigId)
    # The wheel's file (absolute) in releases.directory, named by the hub from the version, never by the uploader.
    path: Mapped[str] = mapped_column(Text)
    uploaded_at: Mapped[datetime]
    uploaded_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))


class Rollout(Base):
    """A release offered to a set of gateways in stages (hub.releases.rollouts), and where it stands."""

    __tablename__ = "rollouts"

    rollout_id: Mapped[str] = mapped_column(String(UUID_LENGTH), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), ForeignKey("releases.version"), index=True)
    # "running", "paused", "halted" (past the failure threshold: see reason), "cancelled", "done".
    status: Mapped[str] = mapped_column(String(16), index=True)
    # The stages as asked ({"unit": "gateways"|"percent", "sizes": [5, 100]}) and the number of gateways in each.
    stages: Mapped[dict[str, Any]] = mapped_column(JSON)
    stage: Mapped[int] = mapped_column(Integer)  # the stage being run (0-based)
    probation_s: Mapped[int] = mapped_column(Integer)
    max_failed: Mapped[int] = mapped_column(Integer)
    answer_within_s: Mapped[int] = mapped_column(Integer)
    selection: Mapped[dict[str, Any]] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    updated_at: Mapped[datetime]


class RolloutTarget(Base):
    """One gateway of a rollout: its stage, the ``update`` command it was sent, and its outcome."""

    __tablename__ = "rollout_targets"

    rollout_id: Mapped[str] = mapped_column(String(UUID_LENGTH), ForeignKey("rollouts.rollout_id"), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    stage: Mapped[int] = mapped_column(Integer)
    # "waiting" (its stage has not come), "sent" (its command is out), "done", "failed", "skipped" (cancelled).
    outcome: Mapped[str] = mapped_column(String(16))
    command_id: Mapped[str | None] = mapped_column(String(UUID_LENGTH))
    sent_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    detail: Mapped[str | None] = mapped_column(Text)


class EnrolmentToken(Base):
    """A one-time token that lets one gateway enrol itself (hub.fleet.enrolment): only its secret's SHA-256 is kept.

    It is live until it expires, is used (``used_at``: the one enrolment it made) or is revoked.
    """

    __tablename__ = "enrolment_tokens"
    __table_args__ = (Index("ix_enrolment_tokens_store_created", "store_id", "created_at"),)

    token_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    secret_digest: Mapped[str] = mapped_column(String(64))
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    gateway_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # The address the enrolment came from, and the certificate it was answered with.
    used_from: Mapped[str | None] = mapped_column(String(64))
    certificate_serial: Mapped[str | None] = mapped_column(String(40))
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(ACTOR_LENGTH))
