"""``/stores/{store_id}``: one store on one page, and the small answers its scripts and htmx ask for.

The page shows who the store is (name, id, region, local time, currency), its gateways and their devices with what
is wrong in words, the backlog and losses of its gateways, shelf slots below their minimum, open restock tasks,
today's visitors and sales by local hour, the latest events with product names, and the charts of its zones.
Each part is one query on an index of its table (docs/console.md, "Store page"); the three costly parts load after
the page: the climate charts (``/console/stores/{store_id}/climate.json``, downsampled in SQL to at most
:data:`MAX_POINTS` points per zone), today's visitors and sales (a fragment: the footfall report groups the day's
scans into baskets) and the reorder suggestions (a fragment: they fit a demand model per SKU).

The pure parts (what a gateway's state means, an event in words, bucket sizes, a zone's thresholds) are plain
functions below the queries, tested on their own.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import BigInteger, cast, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.alerting.models import AlertRow
from hub.alerting.rules_db import load_store_rules
from hub.api.deps import NowDep, RuntimeDep, SessionDep
from hub.api.listings import GatewayView, LossSummary, latest_events, list_gateways, loss_summaries
from hub.catalog.models import Sku, Slot, StoreProfile
from hub.console.i18n import unit_text
from hub.console.templating import ReaderDep, fragment, page
from hub.db.models import Store, StoredEvent, UtcDateTime
from hub.db.sqlfunctions import seconds_between
from hub.domain.alerts import AlertStatus
from hub.domain.ledger import MovementKind
from hub.domain.rules import EnvironmentRangeRule, Rule
from hub.footfall.console import today_by_store
from hub.inventory import levels
from hub.inventory.models import LedgerRow, RestockTask, ShelfLevel
from hub.inventory.replenishment_suggestions import UnknownStoreError, store_reorder_suggestions
from hub.reports.queries import FALLBACK_TIME_ZONE
from storegate.gtin import normalise_gtin
from storegate.wire import SEGMENT_PATTERN, UNIT_OF, EventKind, Quantity

router = APIRouter(tags=["dashboard"])

# The latest events the page lists.
RECENT_EVENTS: Final = 25
# Slots below minimum and open restock tasks shown (a store has a few hundred slots at most).
MAX_SLOTS_SHOWN: Final = 200
MAX_TASKS_SHOWN: Final = 100
# The charts: how far back they may look, and how many points a zone's line may have at most. A week of
# one-minute readings is 10,080 per zone: the database averages them into buckets of whole minutes.
MAX_CHART_HOURS: Final = 7 * 24
DEFAULT_CHART_HOURS: Final = 24
MAX_POINTS: Final = 300
# Chart answers kept (per hub process) for the minute they stay good.
CHART_CACHE_ENTRIES: Final = 256
# The quantities charted, in the order the page shows them.
CHARTED: Final = (Quantity.TEMPERATURE, Quantity.HUMIDITY)
# A gateway whose outbox holds more than this has a backlog worth saying (events waiting for the hub).
BACKLOG_EVENTS: Final = 100
# A gateway's health report older than this is stale (it reports every minute or so).
HEALTH_STALE_S: Final = 600
_LIVE_ALERT: Final = (AlertStatus.OPEN.value, AlertStatus.ACKNOWLEDGED.value)

StoreIdPath = Annotated[
    str, Path(max_length=63, pattern=SEGMENT_PATTERN, description="store id: lower case letters, digits, '-', '_'")
]


# --------------------------------------------------------------------------- what the page shows


@dataclass(frozen=True, slots=True)
class StoreHeader:
    """Who the store is; ``profiled`` False when the catalog has no profile for it (UTC, no currency)."""

    store_id: str
    name: str | None
    region: str | None
    timezone: str
    currency: str | None
    profiled: bool
    first_seen: datetime | None
    last_event_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeviceLine:
    """One device of a gateway and the live alerts about it."""

    device_id: str
    alerts: Sequence[AlertRow]


@dataclass(frozen=True, slots=True)
class GatewayLine:
    """A gateway of the store with its state, backlog and problems in words (message ids with values)."""

    view: GatewayView
    state: str  # online, silent, offline, unknown, revoked
    backlog: int | None
    oldest_unacked: timedelta | None
    problems: Sequence[Problem]
    devices: Sequence[DeviceLine]


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong, as a message id of the console's catalogs and the values it names."""

    message: str
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SlotLine:
    """A shelf slot below its minimum."""

    shelf_id: str
    slot: int
    sku_id: str
    name: str | None
    quantity: int
    min_quantity: int
    capacity: int
    at: datetime


@dataclass(frozen=True, slots=True)
class EventLine:
    """An event as people read it: its kind, the product it concerns (by the catalog) and its payload's values."""

    event: StoredEvent
    product: str | None
    sku_id: str | None


# --------------------------------------------------------------------------- pure parts


def _(message: str) -> str:
    """Mark a message for the console's catalogs; the page's template translates it when it renders."""
    return message


def gateway_problems(view: GatewayView, *, now: datetime) -> tuple[str, list[Problem]]:
    """A gateway's state and what is wrong with it, in words the page translates."""
    gateway = view.gateway
    problems: list[Problem] = []
    if gateway.revoked_at is not None:
        revoked = Problem(_("Revoked by %(who)s: the hub accepts nothing from it"), {"who": gateway.revoked_by})
        return "revoked", [revoked]
    state = view.connectivity
    if state == "unknown":
        problems.append(Problem(_("Never connected since it was enrolled")))
    elif state == "offline":
        problems.append(Problem(_("Offline: it said goodbye or its connection dropped")))
    elif state == "silent":
        problems.append(Problem(_("Silent: says online but nothing heard for a while")))
    health = gateway.last_health or {}
    depth = health.get("outbox_depth")
    if isinstance(depth, int) and depth > BACKLOG_EVENTS:
        problems.append(Problem(_("Backlog: %(count)s events wait to reach the hub"), {"count": depth}))
    if view.events_lost:
        problems.append(Problem(_("Events lost for good: %(count)s"), {"count": view.events_lost}))
    stale = gateway.last_health_at is not None and (now - gateway.last_health_at).total_seconds() > HEALTH_STALE_S
    if stale and state == "online":
        problems.append(Problem(_("No health report for over 10 minutes")))
    for text in health.get("problems") or ():
        if isinstance(text, str) and text:
            problems.append(Problem(_("Gateway says: %(text)s"), {"text": text[:300]}))
    return state, problems


def device_alerts(device_id: str, alerts: Iterable[AlertRow]) -> list[AlertRow]:
    """The live alerts about one device: its own subject, or a door or zone of it (``device/zone``)."""
    return [a for a in alerts if a.subject_id == device_id or a.subject_id.startswith(f"{device_id}/")]


def gtin_of(payload: Mapping[str, Any]) -> str | None:
    """The GTIN-14 a scan names: its parsed ``gtin``, else its code when that is a GTIN; None otherwise."""
    gtin = payload.get("gtin")
    if isinstance(gtin, str) and len(gtin) == 14 and gtin.isdigit():
        return gtin
    code = payload.get("code")
    if isinstance(code, str) and code.isdigit() and len(code) in (8, 12, 13, 14):
        try:
            return normalise_gtin(code)
        except ValueError:  # a check digit that does not add up: not a GTIN
            return None
    return None


def bucket_seconds(hours: int, *, max_points: int = MAX_POINTS) -> int:
    """Whole minutes per chart point, so ``hours`` of readings make at most ``max_points`` points."""
    return max(60, math.ceil(hours * 3600 / max_points / 60) * 60)


def zone_thresholds(rules: Mapping[str, Rule], zone: str, quantity: str) -> list[dict[str, Any]]:
    """The limits the store's rules in force set for one zone and quantity, by rule id."""
    found = []
    for rule_id in sorted(rules):
        rule = rules[rule_id]
        if isinstance(rule, EnvironmentRangeRule) and rule.quantity == quantity and rule.matches(zone):
            found.append({"rule_id": rule_id, "severity": rule.severity, "low": rule.low, "high": rule.high})
    return found


# --------------------------------------------------------------------------- queries


async def store_header(session: AsyncSession, store_id: str) -> StoreHeader:
    """Who the store is; 404 in words when the hub knows neither a gateway nor a profile of it."""
    profile = await session.get(StoreProfile, store_id)
    store = await session.get(Store, store_id)
    if profile is None and store is None:
        raise HTTPException(
            status_code=404,
            detail=f"no store {store_id!r}: no gateway of it ever spoke and the catalog has no profile of it",
        )
    return StoreHeader(
        store_id=store_id,
        name=profile.name if profile else None,
        region=profile.region if profile else None,
        timezone=profile.timezone if profile else FALLBACK_TIME_ZONE,
        currency=profile.currency if profile else None,
        profiled=profile is not None,
        first_seen=store.first_seen if store else None,
        last_event_at=store.last_event_at if store else None,
    )


async def live_alerts(session: AsyncSession, store_id: str) -> list[AlertRow]:
    """The store's open and acknowledged alerts, newest first (ix_alerts_store_opened)."""
    rows = await session.scalars(
        select(AlertRow)
        .where(AlertRow.store_id == store_id, AlertRow.status.in_(_LIVE_ALERT))
        .order_by(AlertRow.opened_at.desc())
        .limit(200)
    )
    return list(rows)


def gateway_lines(views: Sequence[GatewayView], alerts: Sequence[AlertRow], *, now: datetime) -> list[GatewayLine]:
    """The gateways with their problems and their devices' alerts; revoked ones last."""
    lines = []
    for view in views:
        state, problems = gateway_problems(view, now=now)
        health = view.gateway.last_health or {}
        depth = health.get("outbox_depth")
        oldest = health.get("oldest_unacked_age_s")
        lines.append(
            GatewayLine(
                view=view,
                state=state,
                backlog=depth if isinstance(depth, int) else None,
                oldest_unacked=timedelta(seconds=float(oldest)) if isinstance(oldest, int | float) else None,
                problems=problems,
                devices=[
                    DeviceLine(device_id=device, alerts=device_alerts(device, alerts))
                    for device in sorted(view.gateway.devices or ())
                ],
            )
        )
    return sorted(lines, key=lambda line: (line.state == "revoked", not line.problems, line.view.gateway.gateway_id))


async def slots_below_minimum(session: AsyncSession, store_id: str) -> list[SlotLine]:
    """Slots whose shelf counts fewer items than the planogram's minimum, emptiest first."""
    rows = await session.execute(
        levels.below_minimum(store_id)
        .order_by(ShelfLevel.quantity, ShelfLevel.shelf_id, ShelfLevel.slot)
        .limit(MAX_SLOTS_SHOWN)
    )
    return [
        SlotLine(
            shelf_id=level.shelf_id,
            slot=level.slot,
            sku_id=level.sku_id,
            name=name,
            quantity=level.quantity,
            min_quantity=minimum,
            capacity=capacity,
            at=level.at,
        )
        for level, minimum, capacity, name in rows
    ]


async def slot_count(session: AsyncSession, store_id: str) -> int:
    """How many slots of the store's shelves report a count (pk_shelf_levels)."""
    return int(await session.scalar(select(func.count()).where(ShelfLevel.store_id == store_id)) or 0)


async def open_restock_tasks(session: AsyncSession, store_id: str) -> list[tuple[RestockTask, str | None]]:
    """The store's open restock tasks, oldest first, with their SKU's name."""
    rows = await session.execute(
        select(RestockTask, Sku.name)
        .outerjoin(Sku, Sku.sku_id == RestockTask.sku_id)
        .where(RestockTask.store_id == store_id, RestockTask.status == "open")
        .order_by(RestockTask.opened_at)
        .limit(MAX_TASKS_SHOWN)
    )
    return [(task, name) for task, name in rows]


def _slot_of(event: StoredEvent) -> int | None:
    slot = event.payload.get("slot")
    return slot if isinstance(slot, int) and not isinstance(slot, bool) else None


async def _skus_by_code(
    session: AsyncSession, gtins: set[str], codes: set[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """SKU ids by GTIN-14, and names by SKU id, of the SKUs scanned by GTIN or by the retailer's own code."""
    by_gtin: dict[str, str] = {}
    names: dict[str, str] = {}
    if gtins or codes:
        rows = await session.execute(
            select(Sku.sku_id, Sku.gtin, Sku.name).where(or_(Sku.gtin.in_(gtins), Sku.sku_id.in_(codes)))
        )
        for sku_id, gtin, name in rows:
            names[sku_id] = name
            if gtin is not None:
                by_gtin[gtin] = sku_id
    return by_gtin, names


async def _skus_by_slot(session: AsyncSession, store_id: str, shelves: set[str]) -> dict[tuple[str, int], str]:
    """The SKU the planogram puts on each slot of these shelves."""
    if not shelves:
        return {}
    rows = await session.execute(
        select(Slot.shelf_id, Slot.slot, Slot.sku_id).where(Slot.store_id == store_id, Slot.shelf_id.in_(shelves))
    )
    return {(shelf, slot): sku for shelf, slot, sku in rows}


def _sku_of(event: StoredEvent, by_gtin: Mapping[str, str], by_slot: Mapping[tuple[str, int], str]) -> str | None:
    """The SKU an event concerns: a scan's by GTIN or code, a shelf's by the planogram, else as the shelf named it."""
    if event.kind.startswith("scan."):
        gtin = gtin_of(event.payload)
        if gtin is not None and gtin in by_gtin:
            return by_gtin[gtin]
        code = event.payload.get("code")
        return code if isinstance(code, str) else None
    if event.kind.startswith("shelf."):
        slot = _slot_of(event)
        planned = by_slot.get((event.device_id, slot)) if slot is not None else None
        named = event.payload.get("sku")
        return planned or (named if isinstance(named, str) else None)
    return None


async def event_lines(session: AsyncSession, store_id: str) -> list[EventLine]:
    """The latest events of the store, each scan and shelf movement with its product's name (few look-ups)."""
    events = await latest_events(session, store_id, limit=RECENT_EVENTS)
    scans = [e for e in events if e.kind.startswith("scan.")]
    gtins = {g for e in scans if (g := gtin_of(e.payload)) is not None}
    codes = {c for e in scans if isinstance(c := e.payload.get("code"), str)}
    by_gtin, names = await _skus_by_code(session, gtins, codes)
    shelves = {e.device_id for e in events if e.kind.startswith("shelf.") and _slot_of(e) is not None}
    by_slot = await _skus_by_slot(session, store_id, shelves)
    skus = {e.event_id: _sku_of(e, by_gtin, by_slot) for e in events}
    missing = {sku for sku in skus.values() if sku is not None and sku not in names} - codes
    if missing:
        rows = await session.execute(select(Sku.sku_id, Sku.name).where(Sku.sku_id.in_(missing)))
        names |= {sku_id: name for sku_id, name in rows}
    lines = []
    for event in events:
        sku_id = skus[event.event_id]
        known = sku_id if sku_id in names else None
        lines.append(EventLine(event=event, product=names.get(sku_id) if sku_id else None, sku_id=known))
    return lines


async def sales_today(session: AsyncSession, store_id: str, *, since: datetime) -> tuple[Decimal, int]:
    """The value and units sold since the store's local midnight (ix_ledger_store_kind_at)."""
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(-LedgerRow.quantity * LedgerRow.unit_price), 0),
                func.coalesce(func.sum(-LedgerRow.quantity), 0),
            ).where(LedgerRow.store_id == store_id, LedgerRow.kind == MovementKind.SALE.value, LedgerRow.at >= since)
        )
    ).one()
    return Decimal(str(row[0])), int(row[1])


def _local_midnight(now: datetime, timezone: str) -> datetime:
    local = now.astimezone(ZoneInfo(timezone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


# --------------------------------------------------------------------------- routes


@router.get(
    "/stores/{store_id}",
    response_class=HTMLResponse,
    summary="A store's page",
    description="The store's gateways and devices with their health, backlog and losses, shelf slots below their "
    "minimum, open restock tasks, today's visitors and sales, the latest events with product names, and charts of "
    "its zones' temperature and humidity with their thresholds.",
    include_in_schema=False,
)
async def store_page(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    now: NowDep,
    reader: ReaderDep,
    store_id: StoreIdPath,
) -> HTMLResponse:
    """The store's page; 404 for a store the hub does not know (403 for one outside the reader's scope)."""
    header = await store_header(session, store_id)
    grace_s = runtime.settings.gateway_offline_grace_s
    alerts = await live_alerts(session, store_id)
    gateways = gateway_lines(await list_gateways(session, now=now, grace_s=grace_s, store_id=store_id), alerts, now=now)
    losses: list[LossSummary] = (
        await loss_summaries(session, store_id) if any(g.view.events_lost for g in gateways) else []
    )
    return page(
        "store.html",
        reader,
        request,
        store=header,
        now=now,
        gateways=gateways,
        alerts=alerts,
        losses=losses,
        slots=await slots_below_minimum(session, store_id),
        slot_count=await slot_count(session, store_id),
        tasks=await open_restock_tasks(session, store_id),
        events=await event_lines(session, store_id),
        chart_hours=DEFAULT_CHART_HOURS,
    )


@router.get(
    "/console/stores/{store_id}/today",
    response_class=HTMLResponse,
    summary="A store's today, as a piece of its page",
    include_in_schema=False,
)
async def today_fragment(
    runtime: RuntimeDep, session: SessionDep, now: NowDep, reader: ReaderDep, store_id: StoreIdPath
) -> HTMLResponse:
    """Visitors and conversion by local hour beside sales, and what was sold today (the footfall report's day)."""
    header = await store_header(session, store_id)
    basket_gap_s = runtime.settings.footfall.basket_gap_s
    today = (await today_by_store(session, [store_id], now=now, basket_gap_s=basket_gap_s)).get(store_id)
    sold_value, sold_units = await sales_today(session, store_id, since=_local_midnight(now, header.timezone))
    return fragment(
        "_store_today.html", reader, store=header, today=today, sold_value=sold_value, sold_units=sold_units
    )


Series = dict[tuple[str, str], dict[str, list[Any]]]


async def zone_series(
    session: AsyncSession, store_id: str, *, since: datetime, until: datetime, bucket_s: int
) -> Series:
    """Each zone's readings of each charted quantity in ``[since, until)``, averaged per bucket in the database.

    A bucket's point sits at its middle (seconds since 1970), with the bucket's minimum, maximum and count.
    """
    zone = func.coalesce(StoredEvent.payload["zone"].as_string(), StoredEvent.device_id).label("zone")
    quantity = StoredEvent.payload["quantity"].as_string().label("quantity")
    value = StoredEvent.payload["value"].as_float()
    # Whole seconds since ``since``, then whole buckets: integer division on both databases.
    offset = cast(seconds_between(literal(since, UtcDateTime()), StoredEvent.device_ts), BigInteger)
    bucket = (offset // bucket_s).label("bucket")
    # ix_events_store_ts (store_id, device_ts, id) bounds the rows; the kind is checked on those.
    rows = await session.execute(
        select(zone, quantity, bucket, func.avg(value), func.min(value), func.max(value), func.count())
        .where(
            StoredEvent.store_id == store_id,
            StoredEvent.device_ts >= since,
            StoredEvent.device_ts < until,
            StoredEvent.kind == EventKind.ENVIRONMENT_READING.value,
            quantity.in_([q.value for q in CHARTED]),
        )
        .group_by(zone, quantity, bucket)
        .order_by(zone, quantity, bucket)
    )
    series: Series = {}
    start = since.timestamp()
    for zone_name, quantity_name, index, mean, low, high, count in rows:
        points = series.setdefault((zone_name, quantity_name), {"t": [], "avg": [], "min": [], "max": [], "n": []})
        points["t"].append(round(start + (int(index) + 0.5) * bucket_s))
        points["avg"].append(round(float(mean), 3))
        points["min"].append(float(low))
        points["max"].append(float(high))
        points["n"].append(int(count))
    return series


@dataclass
class ChartCache:
    """Recent series by (store, hours, minute), so the viewers of one store within a minute share one scan.

    A store's readings lie scattered among every store's events, so a week of them is read from some 30,000
    pages of the events table (docs/console.md, "Store page"); a chart a minute old is as good as a fresh one.
    """

    max_entries: int = CHART_CACHE_ENTRIES
    entries: OrderedDict[tuple[str, int, int], tuple[datetime, datetime, Series]] = field(default_factory=OrderedDict)

    def get(self, key: tuple[str, int, int]) -> tuple[datetime, datetime, Series] | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(self, key: tuple[str, int, int], value: tuple[datetime, datetime, Series]) -> None:
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


def chart_cache(request: Request) -> ChartCache:
    """The app's chart cache, made on first use (one per hub process)."""
    cache: ChartCache | None = getattr(request.app.state, "console_chart_cache", None)
    if cache is None:
        cache = ChartCache()
        request.app.state.console_chart_cache = cache
    return cache


@router.get(
    "/console/stores/{store_id}/climate.json",
    summary="A store's zones over time, for its charts",
    description="Temperature and humidity of each zone of the store over the last `hours` (1 to 168), averaged "
    "into buckets of whole minutes (at most 300 points a zone), with each bucket's minimum and maximum and the "
    "limits the store's rules in force set for the zone. Answers may be up to a minute old.",
    include_in_schema=False,
)
async def climate(
    request: Request,
    session: SessionDep,
    now: NowDep,
    store_id: StoreIdPath,
    hours: Annotated[
        int, Query(ge=1, le=MAX_CHART_HOURS, description=f"how far back, 1 to {MAX_CHART_HOURS} hours")
    ] = DEFAULT_CHART_HOURS,
) -> dict[str, Any]:
    """The zones' series; 404 for a store the hub does not know."""
    header = await store_header(session, store_id)
    bucket_s = bucket_seconds(hours)
    cache = chart_cache(request)
    key = (store_id, hours, int(now.timestamp() // 60))
    cached = cache.get(key)
    if cached is None:
        since = now - timedelta(hours=hours)
        cached = (since, now, await zone_series(session, store_id, since=since, until=now, bucket_s=bucket_s))
        cache.put(key, cached)
    since, until, series = cached
    # The thresholds are read every time: a rule changed a moment ago shows at once.
    rules = (await load_store_rules(session, store_id)).rules.in_force
    order = {q.value: i for i, q in enumerate(CHARTED)}
    return {
        "store_id": store_id,
        "timezone": header.timezone,
        "hours": hours,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "bucket_s": bucket_s,
        "zones": [
            {
                "zone": zone_name,
                "quantity": quantity_name,
                "unit": unit_text(UNIT_OF[Quantity(quantity_name)]),
                "points": points,
                "thresholds": zone_thresholds(rules, zone_name, quantity_name),
            }
            for (zone_name, quantity_name), points in sorted(series.items(), key=lambda i: (i[0][0], order[i[0][1]]))
        ],
    }


@router.get(
    "/console/stores/{store_id}/reorder",
    response_class=HTMLResponse,
    summary="A store's reorder suggestions, as a piece of its page",
    include_in_schema=False,
)
async def reorder_fragment(session: SessionDep, now: NowDep, reader: ReaderDep, store_id: StoreIdPath) -> HTMLResponse:
    """The SKUs at or below their reorder point; a store without a profile has none to give."""
    try:
        report = await store_reorder_suggestions(session, store_id, now=now)
    except UnknownStoreError:
        return fragment("_store_reorder.html", reader, report=None, store_id=store_id)
    return fragment("_store_reorder.html", reader, report=report, store_id=store_id)
