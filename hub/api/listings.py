"""The shared read queries of the API and the dashboard: stores, gateways and their connectivity, events and data
losses, paged by cursor."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from hub.db.bounds import INT64_MAX
from hub.db.models import DataLossRecord, Gateway, GatewayStream, RefusedEvent, Store, StoredEvent
from hub.errors import HubError

Connectivity = Literal["online", "silent", "offline", "unknown"]


def connectivity(online: bool | None, last_seen_at: datetime | None, *, now: datetime, grace_s: float) -> Connectivity:
    """A gateway's state: its own status, unless it said online and has been silent longer than the grace."""
    if online is None or last_seen_at is None:
        return "unknown"
    if not online:
        return "offline"
    return "online" if now - last_seen_at <= timedelta(seconds=grace_s) else "silent"


# --------------------------------------------------------------------------- stores


@dataclass(frozen=True, slots=True)
class StoreSummary:
    """A store with counts of its gateways and events."""

    store_id: str
    first_seen: datetime
    gateway_count: int
    online_gateway_count: int
    event_count: int
    last_event_at: datetime | None
    events_lost: int


def _lost_by(column: Any) -> Any:
    """A subquery of events recorded lost, summed by ``column`` of data_losses (labelled key, lost)."""
    return select(column.label("key"), func.sum(DataLossRecord.count).label("lost")).group_by(column).subquery()


async def list_stores(session: AsyncSession, *, now: datetime, grace_s: float) -> list[StoreSummary]:
    """Every store, by id."""
    cutoff = now - timedelta(seconds=grace_s)
    online = case((and_(Gateway.online.is_(True), Gateway.last_seen_at >= cutoff), 1), else_=0)
    # A store's gateways are those enrolled and not revoked.
    counts = (
        select(
            Gateway.store_id.label("store_id"),
            func.count().label("gateways"),
            func.coalesce(func.sum(online), 0).label("online"),
        )
        .where(Gateway.revoked_at.is_(None))
        .group_by(Gateway.store_id)
        .subquery()
    )
    lost = _lost_by(DataLossRecord.store_id)
    rows = await session.execute(
        select(
            Store,
            func.coalesce(counts.c.gateways, 0),
            func.coalesce(counts.c.online, 0),
            func.coalesce(lost.c.lost, 0),
        )
        .outerjoin(counts, counts.c.store_id == Store.store_id)
        .outerjoin(lost, lost.c.key == Store.store_id)
        .order_by(Store.store_id)
    )
    return [
        StoreSummary(
            store_id=store.store_id,
            first_seen=store.first_seen,
            gateway_count=int(gateways),
            online_gateway_count=int(online_count),
            event_count=store.event_count,
            last_event_at=store.last_event_at,
            events_lost=int(events_lost),
        )
        for store, gateways, online_count, events_lost in rows
    ]


# --------------------------------------------------------------------------- gateways


@dataclass(frozen=True, slots=True)
class GatewayView:
    """A gateway with its derived connectivity and the mark of its newest stream."""

    gateway: Gateway
    connectivity: Connectivity
    stream: str | None
    through_seq: int | None
    events_lost: int = 0


async def list_gateways(
    session: AsyncSession,
    *,
    now: datetime,
    grace_s: float,
    store_id: str | None = None,
    gateway_id: str | None = None,
) -> list[GatewayView]:
    """Gateways (of one store, of one id, or all), enrolled or revoked, by store and id."""
    stmt = select(Gateway).order_by(Gateway.store_id, Gateway.gateway_id)
    if store_id is not None:
        stmt = stmt.where(Gateway.store_id == store_id)
    if gateway_id is not None:
        stmt = stmt.where(Gateway.gateway_id == gateway_id)
    gateways = (await session.scalars(stmt)).all()
    if not gateways:
        return []
    stores = sorted({g.store_id for g in gateways})
    ids = sorted({g.gateway_id for g in gateways})
    # Narrowed by store and id, then matched by both: a gateway is (store_id, gateway_id).
    streams = await session.scalars(
        select(GatewayStream)
        .where(GatewayStream.store_id.in_(stores), GatewayStream.gateway_id.in_(ids))
        .order_by(GatewayStream.updated_at)
    )
    # Ordered by updated_at, so the last one written per gateway wins: its current stream.
    newest = {(s.store_id, s.gateway_id): s for s in streams}
    lost_rows = await session.execute(
        select(DataLossRecord.store_id, DataLossRecord.gateway_id, func.sum(DataLossRecord.count))
        .where(DataLossRecord.store_id.in_(stores), DataLossRecord.gateway_id.in_(ids))
        .group_by(DataLossRecord.store_id, DataLossRecord.gateway_id)
    )
    lost_of = {(store, gateway): int(count) for store, gateway, count in lost_rows}
    views = []
    for gateway in gateways:
        key = (gateway.store_id, gateway.gateway_id)
        stream = newest.get(key)
        views.append(
            GatewayView(
                gateway=gateway,
                connectivity=connectivity(gateway.online, gateway.last_seen_at, now=now, grace_s=grace_s),
                stream=stream.stream if stream else None,
                through_seq=stream.through_seq if stream else None,
                events_lost=lost_of.get(key, 0),
            )
        )
    return views


# --------------------------------------------------------------------------- events


class CursorError(HubError, ValueError):
    """A pagination cursor that this API did not hand out."""


# The orders a listing pages by, one per time column: a cursor names its order, so one handed out in one order is
# refused in another (it would skip or repeat rows).
Order = Literal["received", "device", "reported", "recorded"]
_ORDER_WORDS: dict[Order, str] = {
    "received": "the time the hub received the events (time=received)",
    "device": "the devices' own timestamps (time=device)",
    "reported": "the time losses were reported",
    "recorded": "the time refused events were recorded",
}
_NOT_A_CURSOR = "not a cursor returned by this API (pass next_cursor unchanged)"


@dataclass(frozen=True, slots=True)
class Cursor:
    """Position after the last row of a page: rows sort by (``order``'s time, id), newest first."""

    order: Order
    ts: datetime
    id: int

    def encode(self) -> str:
        """The opaque string handed to clients."""
        raw = json.dumps([self.order, self.ts.isoformat(), self.id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str, *, order: Order) -> Cursor:
        """Parse a string from :meth:`encode` of a page in ``order``, or raise CursorError."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            cursor_order, ts_text, event_id = json.loads(raw)
            ts = datetime.fromisoformat(ts_text)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            raise CursorError(_NOT_A_CURSOR) from None
        # A list as the order would make the look-up below a TypeError (unhashable), which is a 500.
        if not isinstance(cursor_order, str) or cursor_order not in _ORDER_WORDS:
            raise CursorError(_NOT_A_CURSOR)
        if not isinstance(event_id, int) or isinstance(event_id, bool):
            raise CursorError(_NOT_A_CURSOR)
        # A forged cursor: an id past the BIGINT column, or a time outside the years the database holds, would
        # otherwise fail the query with a 500.
        if ts.tzinfo is None or not 1 <= event_id <= INT64_MAX or not _in_utc_range(ts):
            raise CursorError(_NOT_A_CURSOR)
        if cursor_order != order:
            raise CursorError(
                f"this cursor pages by {_ORDER_WORDS[cursor_order]}, not by {_ORDER_WORDS[order]}: "
                "ask for the same order as the page it came from, or start again without a cursor"
            )
        return cls(order, ts, event_id)


def _in_utc_range(value: datetime) -> bool:
    try:
        value.astimezone(UTC)
    except OverflowError:
        return False
    return True


# Which time of an event sorts a list and bounds since/until: when the hub received it (the default, which a
# gateway's wrong clock cannot move) or the device's own timestamp.
EventTime = Literal["received", "device"]
EVENT_TIME_COLUMNS: dict[EventTime, InstrumentedAttribute[datetime]] = {
    "received": StoredEvent.received_at,
    "device": StoredEvent.device_ts,
}


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to list; ``since`` is inclusive, ``until`` exclusive, both on ``time``."""

    store_id: str | None = None
    gateway_id: str | None = None
    device_id: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    time: EventTime = "received"

    def conditions(self) -> list[ColumnElement[bool]]:
        """The SQL conditions of this filter."""
        conditions: list[ColumnElement[bool]] = []
        equal: Sequence[tuple[Any, str | None]] = (
            (StoredEvent.store_id, self.store_id),
            (StoredEvent.gateway_id, self.gateway_id),
            (StoredEvent.device_id, self.device_id),
            (StoredEvent.kind, self.kind),
        )
        conditions += [column == value for column, value in equal if value is not None]
        at = EVENT_TIME_COLUMNS[self.time]
        if self.since is not None:
            conditions.append(at >= self.since)
        if self.until is not None:
            conditions.append(at < self.until)
        return conditions


# The rows a listing pages through: each has an integer ``id`` that breaks ties between equal times.
Paged = TypeVar("Paged", StoredEvent, DataLossRecord, RefusedEvent)


async def _newest_first(
    session: AsyncSession,
    entity: type[Paged],
    at: InstrumentedAttribute[datetime],
    conditions: Sequence[ColumnElement[bool]],
    *,
    order: Order,
    limit: int,
    cursor: Cursor | None,
) -> tuple[list[Paged], str | None]:
    """Rows of ``entity`` matching ``conditions``, newest ``at`` first (then highest id), ``limit`` at a time after
    ``cursor`` (keyset pagination: a page costs the same however deep); the rows and the next page's cursor."""
    stmt = select(entity).where(*conditions)
    if cursor is not None:
        if cursor.order != order:  # Cursor.decode refuses it first: this is a caller's bug
            raise CursorError(f"a cursor of the {cursor.order} order used for the {order} order")
        stmt = stmt.where(or_(at < cursor.ts, and_(at == cursor.ts, entity.id < cursor.id)))
    stmt = stmt.order_by(at.desc(), entity.id.desc()).limit(limit + 1)
    rows = list(await session.scalars(stmt))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], Cursor(order, getattr(last, at.key), last.id).encode()


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of events and the cursor of the next page (None on the last)."""

    items: list[StoredEvent]
    next_cursor: str | None


async def list_events(
    session: AsyncSession, event_filter: EventFilter, *, limit: int, cursor: Cursor | None = None
) -> EventPage:
    """Events matching the filter, newest (by the filter's ``time``) first, ``limit`` at a time (keyset pagination)."""
    time = event_filter.time
    rows, next_cursor = await _newest_first(
        session,
        StoredEvent,
        EVENT_TIME_COLUMNS[time],
        event_filter.conditions(),
        order=time,
        limit=limit,
        cursor=cursor,
    )
    return EventPage(rows, next_cursor)


async def latest_events(session: AsyncSession, store_id: str, *, limit: int) -> list[StoredEvent]:
    """The ``limit`` events of one store the hub received last (a 1970 device clock cannot keep them on top)."""
    page = await list_events(session, EventFilter(store_id=store_id), limit=limit)
    return page.items


# --------------------------------------------------------------------------- data losses


@dataclass(frozen=True, slots=True)
class LossFilter:
    """Which loss records to list; ``since`` is inclusive, on the time the gateway reported the loss."""

    store_id: str | None = None
    gateway_id: str | None = None
    reason: str | None = None
    since: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The SQL conditions of this filter."""
        conditions: list[ColumnElement[bool]] = []
        equal: Sequence[tuple[Any, str | None]] = (
            (DataLossRecord.store_id, self.store_id),
            (DataLossRecord.gateway_id, self.gateway_id),
            (DataLossRecord.reason, self.reason),
        )
        conditions += [column == value for column, value in equal if value is not None]
        if self.since is not None:
            conditions.append(DataLossRecord.reported_at >= self.since)
        return conditions


@dataclass(frozen=True, slots=True)
class LossPage:
    """One page of loss records and the cursor of the next page (None on the last)."""

    items: list[DataLossRecord]
    next_cursor: str | None


async def list_losses(
    session: AsyncSession, loss_filter: LossFilter, *, limit: int, cursor: Cursor | None = None
) -> LossPage:
    """Loss records matching the filter, newest report first, ``limit`` at a time (keyset pagination)."""
    rows, next_cursor = await _newest_first(
        session,
        DataLossRecord,
        DataLossRecord.reported_at,
        loss_filter.conditions(),
        order="reported",
        limit=limit,
        cursor=cursor,
    )
    return LossPage(rows, next_cursor)


@dataclass(frozen=True, slots=True)
class LossSummary:
    """Events one gateway lost for one reason, for the dashboard."""

    gateway_id: str
    reason: str
    count: int
    last_reported_at: datetime


async def loss_summaries(session: AsyncSession, store_id: str) -> list[LossSummary]:
    """A store's recorded losses summed per gateway and reason, the most recent first."""
    last = func.max(DataLossRecord.reported_at)
    rows = await session.execute(
        select(DataLossRecord.gateway_id, DataLossRecord.reason, func.sum(DataLossRecord.count), last)
        .where(DataLossRecord.store_id == store_id)
        .group_by(DataLossRecord.gateway_id, DataLossRecord.reason)
        .order_by(last.desc(), DataLossRecord.gateway_id)
    )
    return [
        LossSummary(gateway_id=gateway_id, reason=reason, count=int(count), last_reported_at=last_reported_at)
        for gateway_id, reason, count, last_reported_at in rows
    ]


# --------------------------------------------------------------------------- refused events


@dataclass(frozen=True, slots=True)
class RefusedFilter:
    """Which refused events to list."""

    store_id: str | None = None
    gateway_id: str | None = None
    reason: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The SQL conditions of this filter."""
        equal: Sequence[tuple[Any, str | None]] = (
            (RefusedEvent.store_id, self.store_id),
            (RefusedEvent.gateway_id, self.gateway_id),
            (RefusedEvent.reason, self.reason),
        )
        return [column == value for column, value in equal if value is not None]


@dataclass(frozen=True, slots=True)
class RefusedPage:
    """One page of refused events and the cursor of the next page (None on the last)."""

    items: list[RefusedEvent]
    next_cursor: str | None


async def list_refused(
    session: AsyncSession, refused_filter: RefusedFilter, *, limit: int, cursor: Cursor | None = None
) -> RefusedPage:
    """Refused events matching the filter, most recently recorded first, ``limit`` at a time (keyset pagination)."""
    rows, next_cursor = await _newest_first(
        session,
        RefusedEvent,
        RefusedEvent.recorded_at,
        refused_filter.conditions(),
        order="recorded",
        limit=limit,
        cursor=cursor,
    )
    return RefusedPage(rows, next_cursor)
