"""Gateways' presence as they tell it: when last heard from, birth, last will, devices and health.

Every function here runs inside the caller's transaction and never commits; the consumer
(:mod:`hub.ingest.consumer`) commits and only then acknowledges. Events, loss records and stream
marks are in :mod:`hub.ingest.eventlog`, rejected messages in :mod:`hub.ingest.rejections`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.dialect import later
from hub.db.models import Gateway, GatewayPresence, UtcDateTime
from storegate import wire

# --------------------------------------------------------------------------- gateways heard from


@dataclass(frozen=True, slots=True)
class GatewayTouch:
    """A gateway heard from: when."""

    store_id: str
    gateway_id: str
    seen_at: datetime


async def touch_gateways(session: AsyncSession, touches: Sequence[GatewayTouch], *, now: datetime) -> None:
    """Move each gateway's last_seen_at forward (and set first_seen on first contact), in one statement.

    The gateways are enrolled (the unit admitted them before anything of theirs is written), so each has
    its row; a gateway is (store_id, gateway_id), and nothing of one store's gateway touches another's.
    """
    if not touches:
        return
    # Core executemany: the ORM would take an UPDATE with a list of parameters as an update by primary key.
    connection = await session.connection()
    await connection.execute(
        update(Gateway)
        .where(Gateway.store_id == bindparam("sid"), Gateway.gateway_id == bindparam("gid"))
        .values(
            last_seen_at=later(Gateway.last_seen_at, bindparam("seen", type_=UtcDateTime())),
            first_seen=func.coalesce(Gateway.first_seen, bindparam("now", type_=UtcDateTime())),
        ),
        # In key order, so that concurrent writers lock the rows in the same order.
        [
            {"sid": touch.store_id, "gid": touch.gateway_id, "seen": touch.seen_at, "now": now}
            for touch in sorted(touches, key=lambda touch: (touch.store_id, touch.gateway_id))
        ],
    )


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
    await touch_gateways(session, [GatewayTouch(status.store_id, status.gateway_id, seen_at)], now=now)
    this_gateway = (Gateway.store_id == status.store_id, Gateway.gateway_id == status.gateway_id)
    was_online = (await session.execute(select(Gateway.online).where(*this_gateway))).scalar_one_or_none()
    values: dict[str, Any] = {}
    if status.agent_version is not None:
        values["agent_version"] = status.agent_version
    if status.config_hash is not None:
        values["config_hash"] = status.config_hash
    if status.reason in ("birth", "devices"):
        values["devices"] = list(status.devices)
    transition: Transition | None = None
    if was_online is not status.online:
        values |= {"online": status.online, "last_status_reason": status.reason, "status_changed_at": seen_at}
        await session.execute(
            insert(GatewayPresence).values(
                store_id=status.store_id,
                gateway_id=status.gateway_id,
                online=status.online,
                reason=status.reason,
                reported_at=status.ts,
                recorded_at=now,
            )
        )
        transition = Transition(status.store_id, status.gateway_id, status.online, status.reason, seen_at)
    if values:
        await session.execute(update(Gateway).where(*this_gateway).values(**values))
    return transition


async def apply_health(
    session: AsyncSession, health: wire.GatewayHealth, *, received_at: datetime, retained: bool, now: datetime
) -> None:
    """Keep the gateway's latest health report."""
    seen_at = seen_time(health.ts, received_at, retained=retained)
    await touch_gateways(session, [GatewayTouch(health.store_id, health.gateway_id, seen_at)], now=now)
    await session.execute(
        update(Gateway)
        .where(Gateway.store_id == health.store_id, Gateway.gateway_id == health.gateway_id)
        .values(last_health=health.model_dump(mode="json"), last_health_at=seen_at)
    )
