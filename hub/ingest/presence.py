"""Stores, gateways and their presence as the gateways tell it: birth, last will, devices and health.

Every function here runs inside the caller's transaction and never commits; the consumer
(:mod:`hub.ingest.consumer`) commits and only then acknowledges. Events, loss records and stream
marks are in :mod:`hub.ingest.eventlog`, rejected messages in :mod:`hub.ingest.rejections`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import String, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.dialect import dialect_insert, later
from hub.db.models import Gateway, GatewayPresence, Store, UtcDateTime
from storegate import wire

# --------------------------------------------------------------------------- stores and gateways

# Gateway ids per look-up, well below every driver's limit on bound parameters.
GATEWAYS_PER_LOOKUP: Final = 500


@dataclass(frozen=True, slots=True)
class GatewayTouch:
    """A gateway heard of under a store: what touching it takes."""

    store_id: str
    gateway_id: str
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class GatewaySeen:
    """What touching a gateway found: whether it is new, and the store it belonged to before."""

    created: bool
    moved_from: str | None


async def touch_gateway(
    session: AsyncSession, *, store_id: str, gateway_id: str, seen_at: datetime, now: datetime
) -> GatewaySeen:
    """Create the gateway (and its store) or move its last_seen_at forward; follow a move to another store."""
    (seen,) = await touch_gateways(session, [GatewayTouch(store_id, gateway_id, seen_at)], now=now)
    return seen


async def touch_gateways(session: AsyncSession, touches: Sequence[GatewayTouch], *, now: datetime) -> list[GatewaySeen]:
    """:func:`touch_gateway` for each of ``touches`` in order, in a few statements however many there are.

    A gateway touched again (under another store: a move within a unit) is touched in a later round,
    which sees what the rounds before wrote; gateways do not share rows, so this is the same as touching
    them one by one.
    """
    seen: dict[int, GatewaySeen] = {}
    pending = list(enumerate(touches))
    while pending:
        this_round: dict[str, tuple[int, GatewayTouch]] = {}
        later_rounds: list[tuple[int, GatewayTouch]] = []
        for index, touch in pending:
            if touch.gateway_id in this_round:
                later_rounds.append((index, touch))
            else:
                this_round[touch.gateway_id] = (index, touch)
        found = await _touch_distinct(session, [touch for _, touch in this_round.values()], now=now)
        seen |= {index: found[touch.gateway_id] for index, touch in this_round.values()}
        pending = later_rounds
    return [seen[index] for index in range(len(touches))]


async def _touch_distinct(
    session: AsyncSession, touches: Sequence[GatewayTouch], *, now: datetime
) -> dict[str, GatewaySeen]:
    """Touch gateways that are all different: stores, look-up, new gateways, known ones, a statement each."""
    insert_into = dialect_insert(session)
    # Core executemany: the ORM would take an UPDATE with a list of parameters as an update by primary key.
    connection = await session.connection()
    # Rows in key order, so that concurrent writers lock them in the same order.
    stores = sorted({touch.store_id for touch in touches})
    await connection.execute(
        insert_into(Store).on_conflict_do_nothing(index_elements=[Store.store_id]),
        [{"store_id": store_id, "first_seen": now, "event_count": 0} for store_id in stores],
    )
    ordered = sorted(touches, key=lambda touch: touch.gateway_id)
    known: dict[str, str] = {}
    for start in range(0, len(ordered), GATEWAYS_PER_LOOKUP):
        ids = [touch.gateway_id for touch in ordered[start : start + GATEWAYS_PER_LOOKUP]]
        rows = await session.execute(select(Gateway.gateway_id, Gateway.store_id).where(Gateway.gateway_id.in_(ids)))
        known.update({gateway_id: store_id for gateway_id, store_id in rows})
    created = [touch for touch in ordered if touch.gateway_id not in known]
    if created:
        await connection.execute(
            insert_into(Gateway).on_conflict_do_nothing(index_elements=[Gateway.gateway_id]),
            [
                {
                    "gateway_id": touch.gateway_id,
                    "store_id": touch.store_id,
                    "online": None,
                    "first_seen": now,
                    "last_seen_at": touch.seen_at,
                    "devices": [],
                }
                for touch in created
            ],
        )
    seen: dict[str, GatewaySeen] = {}
    for touch in ordered:
        before = known.get(touch.gateway_id)
        seen[touch.gateway_id] = GatewaySeen(
            created=before is None, moved_from=None if before in (None, touch.store_id) else before
        )
    returning = [touch for touch in ordered if touch.gateway_id in known]
    if returning:
        # One statement for moved and unmoved gateways: a NULL ``moved_to`` leaves store_id as it is.
        await connection.execute(
            update(Gateway)
            .where(Gateway.gateway_id == bindparam("gid"))
            .values(
                last_seen_at=later(Gateway.last_seen_at, bindparam("seen", type_=UtcDateTime())),
                store_id=func.coalesce(bindparam("moved_to", type_=String()), Gateway.store_id),
            ),
            [
                {
                    "gid": touch.gateway_id,
                    "seen": touch.seen_at,
                    "moved_to": None if seen[touch.gateway_id].moved_from is None else touch.store_id,
                }
                for touch in returning
            ],
        )
    return seen


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
    if status.reason in ("birth", "devices"):
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
