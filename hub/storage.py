"""Writing what gateways send into the database: stores and gateways, presence, health, rejected messages.

Events, loss records and stream marks are in :mod:`hub.eventlog`. Every function here runs
inside the caller's transaction and never commits; the consumer (:mod:`hub.ingest`) commits
and only then acknowledges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import (
    PAYLOAD_EXCERPT_BYTES,
    TOPIC_LENGTH,
    Gateway,
    GatewayPresence,
    RejectedMessage,
    Store,
)
from storegate import wire

DETAIL_MAX_CHARS: Final = 2000

InsertFactory = Callable[[Any], sqlite.Insert | postgresql.Insert]
_INSERT_OF_DIALECT: Final[dict[str, InsertFactory]] = {
    "sqlite": sqlite.insert,
    "postgresql": postgresql.insert,
}


class UnsupportedDatabaseError(RuntimeError):
    """A database for which the hub has no upsert statement."""


def dialect_insert(session: AsyncSession) -> InsertFactory:
    """The insert construct of the session's database, for upserts."""
    dialect = session.get_bind().dialect.name
    try:
        return _INSERT_OF_DIALECT[dialect]
    except KeyError:
        raise UnsupportedDatabaseError(f"the hub supports SQLite and PostgreSQL, not {dialect}") from None


def later(column: Any, value: datetime) -> Any:
    """SQL for the later of a nullable timestamp column and ``value`` (portable GREATEST)."""
    return case((column.is_(None), value), (column < value, value), else_=column)


# --------------------------------------------------------------------------- rejections


def payload_excerpt(payload: bytes) -> str:
    """The first 2 KB of a payload as text that any database accepts (no NUL characters)."""
    text = payload[:PAYLOAD_EXCERPT_BYTES].decode("utf-8", errors="backslashreplace")
    return text.replace("\x00", "\\x00")


def clean_text(value: str, limit: int) -> str:
    """``value`` without NUL characters, cut to ``limit`` characters."""
    value = value.replace("\x00", "\\x00")
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message, or one event of a batch, that the hub refuses to store."""

    topic: str
    reason: str
    detail: str
    payload: bytes
    received_at: datetime


async def record_rejections(session: AsyncSession, rejections: Sequence[Rejection], *, keep: int) -> None:
    """Insert rejected_messages rows and prune all but the newest ``keep``."""
    if not rejections:
        return
    await session.execute(
        insert(RejectedMessage),
        [
            {
                "received_at": r.received_at,
                "topic": clean_text(r.topic, TOPIC_LENGTH),
                "reason": r.reason,
                "detail": clean_text(r.detail, DETAIL_MAX_CHARS),
                "payload_excerpt": payload_excerpt(r.payload),
                "payload_bytes": len(r.payload),
            }
            for r in rejections
        ],
    )
    newest = (await session.execute(select(func.max(RejectedMessage.id)))).scalar_one_or_none()
    if newest is not None and newest > keep:
        await session.execute(delete(RejectedMessage).where(RejectedMessage.id <= newest - keep))


# --------------------------------------------------------------------------- stores and gateways


async def ensure_store(session: AsyncSession, store_id: str, *, now: datetime) -> None:
    """Create the store's row if it does not exist yet."""
    stmt = dialect_insert(session)(Store).values(store_id=store_id, first_seen=now, event_count=0)
    await session.execute(stmt.on_conflict_do_nothing(index_elements=[Store.store_id]))


@dataclass(frozen=True, slots=True)
class GatewaySeen:
    """What touching a gateway found: whether it is new, and the store it belonged to before."""

    created: bool
    moved_from: str | None


async def touch_gateway(
    session: AsyncSession, *, store_id: str, gateway_id: str, seen_at: datetime, now: datetime
) -> GatewaySeen:
    """Create the gateway (and its store) or move its last_seen_at forward; follow a move to another store."""
    await ensure_store(session, store_id, now=now)
    known = (
        await session.execute(select(Gateway.store_id).where(Gateway.gateway_id == gateway_id))
    ).scalar_one_or_none()
    if known is None:
        await session.execute(
            dialect_insert(session)(Gateway)
            .values(
                gateway_id=gateway_id, store_id=store_id, online=None, first_seen=now, last_seen_at=seen_at, devices=[]
            )
            .on_conflict_do_nothing(index_elements=[Gateway.gateway_id])
        )
        return GatewaySeen(created=True, moved_from=None)
    values: dict[str, Any] = {"last_seen_at": later(Gateway.last_seen_at, seen_at)}
    if known != store_id:
        values["store_id"] = store_id
    await session.execute(update(Gateway).where(Gateway.gateway_id == gateway_id).values(**values))
    return GatewaySeen(created=False, moved_from=known if known != store_id else None)


def seen_time(reported: datetime, received_at: datetime, *, retained: bool) -> datetime:
    """When the gateway was last heard of, given a message: a retained one is old news, not a sign of life."""
    return min(reported, received_at) if retained else received_at


# --------------------------------------------------------------------------- presence and health


@dataclass(frozen=True, slots=True)
class Transition:
    """A gateway went online or offline."""

    store_id: str
    gateway_id: str
    online: bool
    reason: str
    at: datetime  # when the gateway was last heard of as the message says (see seen_time)


async def apply_status(
    session: AsyncSession, status: wire.GatewayStatus, *, received_at: datetime, retained: bool, now: datetime
) -> Transition | None:
    """Record a birth or last-will message; a change of online state is appended to gateway_presence."""
    seen_at = seen_time(status.ts, received_at, retained=retained)
    await touch_gateway(session, store_id=status.store_id, gateway_id=status.gateway_id, seen_at=seen_at, now=now)
    was_online = (
        await session.execute(select(Gateway.online).where(Gateway.gateway_id == status.gateway_id))
    ).scalar_one_or_none()
    values: dict[str, Any] = {}
    if status.agent_version is not None:
        values["agent_version"] = status.agent_version
    if status.config_hash is not None:
        values["config_hash"] = status.config_hash
    if status.reason == "birth":
        values["devices"] = list(status.devices)
    transition: Transition | None = None
    if was_online is not status.online:
        values |= {"online": status.online, "last_status_reason": status.reason, "status_changed_at": seen_at}
        await session.execute(
            insert(GatewayPresence).values(
                gateway_id=status.gateway_id,
                store_id=status.store_id,
                online=status.online,
                reason=status.reason,
                reported_at=status.ts,
                recorded_at=now,
            )
        )
        transition = Transition(status.store_id, status.gateway_id, status.online, status.reason, seen_at)
    if values:
        await session.execute(update(Gateway).where(Gateway.gateway_id == status.gateway_id).values(**values))
    return transition


async def apply_health(
    session: AsyncSession, health: wire.GatewayHealth, *, received_at: datetime, retained: bool, now: datetime
) -> None:
    """Keep the gateway's latest health report."""
    seen_at = seen_time(health.ts, received_at, retained=retained)
    await touch_gateway(session, store_id=health.store_id, gateway_id=health.gateway_id, seen_at=seen_at, now=now)
    await session.execute(
        update(Gateway)
        .where(Gateway.gateway_id == health.gateway_id)
        .values(last_health=health.model_dump(mode="json"), last_health_at=seen_at)
    )
