"""The daily store summary (one store, one local day) and the chain roll-up (one row per store, chain totals).

The summary gathers what the other reports compute: sales by local hour and by SKU (:func:`queries.sales`),
slots below their minimum now, restock tasks closed in the day, alerts raised in the day by severity and how
many are still open, and each zone's cold-chain compliance (:mod:`hub.reports.cold_chain`). A day that is not
over stops at now, as every report does. The roll-up is the summaries' headline figures, one row per store the
reader may see, with totals per currency (stores of a chain may sell in several).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Final

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.alerting.models import AlertRow
from hub.catalog.models import Sku, StoreProfile
from hub.catalog.values import money_text
from hub.db.models import Store
from hub.domain.alerts import Severity
from hub.inventory import levels
from hub.inventory.models import RestockTask, ShelfLevel
from hub.reports import queries
from hub.reports.cold_chain import ColdChainReport, ReportModel, cold_chain_report, stop_at_now
from hub.reports.queries import ReportFilter

PERCENT_DIGITS: Final = 2
SEVERITIES: Final = tuple(severity.value for severity in Severity)


class HourSales(ReportModel):
    """Units and revenue of one local hour."""

    hour: int = Field(description="0-23, the store's wall clock")
    units: int
    revenue: Decimal


class SkuSales(ReportModel):
    """Units and revenue of one SKU over the day."""

    sku_id: str
    name: str | None
    units: int
    revenue: Decimal


class SlotBelowMinimum(ReportModel):
    """A shelf slot whose latest count is below the planogram's minimum."""

    shelf_id: str
    slot: int
    sku_id: str
    name: str | None
    quantity: int
    min_quantity: int


class RestockDone(ReportModel):
    """A restock task closed in the day (the shelf reported the slot refilled)."""

    shelf_id: str
    slot: int
    sku_id: str
    name: str | None
    quantity: int = Field(description="items the pick list asked for")
    opened_at: datetime
    closed_at: datetime


class AlertCount(ReportModel):
    """Alerts of one severity raised in the day."""

    severity: str
    raised: int
    open_now: int = Field(description="of these, how many are not resolved now")


class ZoneCompliance(ReportModel):
    """One zone and quantity covered by environment rules: how long it was in range."""

    zone: str
    quantity: str
    unit: str
    readings: int
    low_limit: float | None
    high_limit: float | None
    time_outside_s: float
    time_in_range_s: float = Field(description="the day so far (to `until`) less the time outside")
    compliance_percent: float = Field(description="time in range / the day so far, in percent")
    excursions: int = Field(description="recorded excursions of the zone overlapping the day")


class DailySummary(ReportModel):
    """One store's local day."""

    store_id: str
    store_name: str | None
    region: str | None
    date: date
    timezone: str
    timezone_assumed: bool
    currency: str | None
    day_start: datetime
    until: datetime = Field(description="where the figures stop: the day's end, or now while the day lasts")
    generated_at: datetime
    units_sold: int
    revenue: Decimal = Field(description="in the store's currency")
    sales_by_hour: list[HourSales] = Field(description="the hours with sales")
    sales_by_sku: list[SkuSales] = Field(description="by revenue, largest first")
    below_minimum: list[SlotBelowMinimum] = Field(description="now (stock is a present state, not a history)")
    restock_done: list[RestockDone]
    alerts: list[AlertCount] = Field(description="raised in the day, one line per severity")
    alerts_raised: int
    alerts_open: int
    cold_chain: list[ZoneCompliance]
    excursions: int
    notes: list[str]


class StoreLine(ReportModel):
    """A store's headline figures of the day, a row of the chain roll-up."""

    store_id: str
    store_name: str | None
    region: str | None
    timezone: str
    currency: str | None
    units_sold: int
    revenue: Decimal
    below_minimum: int
    restock_done: int
    alerts_raised: int
    alerts_critical: int
    alerts_open: int
    zones_out_of_range: int = Field(description="zones with any time outside their range")
    lowest_compliance_percent: float | None
    excursions: int


class CurrencyTotal(ReportModel):
    """The roll-up's totals of the stores selling in one currency."""

    currency: str | None
    stores: int
    units_sold: int
    revenue: Decimal


class ChainSummary(ReportModel):
    """The chain's day: one line per store the reader may see, and totals."""

    date: date
    generated_at: datetime
    region: str | None
    stores: list[StoreLine]
    totals: list[CurrencyTotal] = Field(description="per currency: revenue is never added across currencies")
    units_sold: int
    alerts_raised: int
    alerts_open: int
    below_minimum: int
    restock_done: int
    excursions: int
    notes: list[str]


# --------------------------------------------------------------------------- pure core


def _money(amount: Decimal, currency: str | None) -> Decimal:
    return Decimal(money_text(amount, currency or ""))


def compliance(report: ColdChainReport) -> list[ZoneCompliance]:
    """The zones of a cold-chain report that rules cover, with time in range over the day so far."""
    elapsed = (report.until - report.day_start).total_seconds()
    lines = []
    for zone in report.zones:
        if zone.time_outside_s is None:
            continue
        outside = min(zone.time_outside_s, elapsed)
        inside = max(elapsed - outside, 0.0)
        lines.append(
            ZoneCompliance(
                zone=zone.zone,
                quantity=zone.quantity,
                unit=zone.unit,
                readings=zone.readings,
                low_limit=zone.low_limit,
                high_limit=zone.high_limit,
                time_outside_s=outside,
                time_in_range_s=inside,
                compliance_percent=round(100 * inside / elapsed, PERCENT_DIGITS) if elapsed > 0 else 100.0,
                excursions=sum(1 for e in report.excursions if e.zone == zone.zone and e.quantity == zone.quantity),
            )
        )
    return lines


def store_line(summary: DailySummary) -> StoreLine:
    """A summary's headline figures."""
    return StoreLine(
        store_id=summary.store_id,
        store_name=summary.store_name,
        region=summary.region,
        timezone=summary.timezone,
        currency=summary.currency,
        units_sold=summary.units_sold,
        revenue=summary.revenue,
        below_minimum=len(summary.below_minimum),
        restock_done=len(summary.restock_done),
        alerts_raised=summary.alerts_raised,
        alerts_critical=sum(a.raised for a in summary.alerts if a.severity == Severity.CRITICAL.value),
        alerts_open=summary.alerts_open,
        zones_out_of_range=sum(1 for zone in summary.cold_chain if zone.time_outside_s > 0),
        lowest_compliance_percent=min((zone.compliance_percent for zone in summary.cold_chain), default=None),
        excursions=summary.excursions,
    )


def roll_up(
    day: date, lines: Sequence[StoreLine], *, region: str | None, generated_at: datetime, notes: Iterable[str] = ()
) -> ChainSummary:
    """The chain's day from its stores' lines; revenue totalled per currency."""
    by_currency: dict[str | None, list[StoreLine]] = defaultdict(list)
    for line in lines:
        by_currency[line.currency].append(line)
    totals = [
        CurrencyTotal(
            currency=currency,
            stores=len(group),
            units_sold=sum(line.units_sold for line in group),
            revenue=_money(sum((line.revenue for line in group), Decimal(0)), currency),
        )
        for currency, group in sorted(by_currency.items(), key=lambda item: item[0] or "")
    ]
    return ChainSummary(
        date=day,
        generated_at=generated_at.astimezone(UTC),
        region=region,
        stores=list(lines),
        totals=totals,
        units_sold=sum(line.units_sold for line in lines),
        alerts_raised=sum(line.alerts_raised for line in lines),
        alerts_open=sum(line.alerts_open for line in lines),
        below_minimum=sum(line.below_minimum for line in lines),
        restock_done=sum(line.restock_done for line in lines),
        excursions=sum(line.excursions for line in lines),
        notes=list(notes),
    )


# --------------------------------------------------------------------------- reading the database


async def store_ids(session: AsyncSession, *, region: str | None = None) -> list[str]:
    """Every store the hub knows (a profile or events), or those of a region (by profile), sorted."""
    if region is not None:
        found = await session.scalars(select(StoreProfile.store_id).where(StoreProfile.region == region))
        return sorted(found)
    profiles = await session.scalars(select(StoreProfile.store_id))
    seen = await session.scalars(select(Store.store_id))
    return sorted({*profiles, *seen})


async def _below_minimum(session: AsyncSession, store_id: str) -> list[SlotBelowMinimum]:
    rows = await session.execute(levels.below_minimum(store_id).order_by(ShelfLevel.shelf_id, ShelfLevel.slot))
    return [
        SlotBelowMinimum(
            shelf_id=level.shelf_id,
            slot=level.slot,
            sku_id=level.sku_id,
            name=name,
            quantity=level.quantity,
            min_quantity=minimum,
        )
        for level, minimum, _capacity, name in rows
    ]


async def _restock_done(session: AsyncSession, store_id: str, start: datetime, until: datetime) -> list[RestockDone]:
    rows = await session.execute(
        select(RestockTask, Sku.name)
        .outerjoin(Sku, Sku.sku_id == RestockTask.sku_id)
        .where(RestockTask.store_id == store_id, RestockTask.closed_at >= start, RestockTask.closed_at < until)
        .order_by(RestockTask.closed_at, RestockTask.task_id)
    )
    tz = start.tzinfo
    return [
        RestockDone(
            shelf_id=task.shelf_id,
            slot=task.slot,
            sku_id=task.sku_id,
            name=name,
            quantity=task.quantity,
            opened_at=task.opened_at.astimezone(tz),
            closed_at=task.closed_at.astimezone(tz),
        )
        for task, name in rows
        if task.closed_at is not None
    ]


async def _alerts(session: AsyncSession, store_id: str, start: datetime, until: datetime) -> list[AlertCount]:
    rows = await session.execute(
        select(
            AlertRow.severity,
            func.count().label("raised"),
            func.count().filter(AlertRow.resolved_at.is_(None)).label("open_now"),
        )
        .where(AlertRow.store_id == store_id, AlertRow.opened_at >= start, AlertRow.opened_at < until)
        .group_by(AlertRow.severity)
    )
    found = {row.severity: AlertCount(severity=row.severity, raised=row.raised, open_now=row.open_now) for row in rows}
    order = {severity: i for i, severity in enumerate(reversed(SEVERITIES))}  # critical first
    return sorted(found.values(), key=lambda a: (order.get(a.severity, len(order)), a.severity))


async def daily_summary(session: AsyncSession, store_id: str, day: date, *, now: datetime) -> DailySummary | None:
    """The summary of ``store_id``'s local date ``day``, stopping at ``now``; None when the hub knows no such store."""
    cold = await cold_chain_report(session, store_id, day, generated_at=now)
    if cold is None:
        return None
    profile = await session.get(StoreProfile, store_id)
    start = cold.day_start
    until = stop_at_now(start, cold.day_end, now)
    sales = await queries.sales(session, ReportFilter(first_day=day, last_day=day, store_id=store_id, until=now))
    currency = profile.currency if profile is not None else None
    hours: dict[int, tuple[int, Decimal]] = {}
    skus: dict[str, tuple[str | None, int, Decimal]] = {}
    notes = list(cold.notes)
    for line in sales:
        units, revenue = hours.get(line.local_hour, (0, Decimal(0)))
        hours[line.local_hour] = (units + line.units, revenue + line.revenue)
        name, units, revenue = skus.get(line.sku_id, (line.name, 0, Decimal(0)))
        skus[line.sku_id] = (name, units + line.units, revenue + line.revenue)
        if currency is None:
            currency = line.currency
        elif line.currency not in (None, currency):
            notes.append(f"SKU {line.sku_id} is priced in {line.currency}, not the store's {currency}")
    alerts = await _alerts(session, store_id, start, until)
    zones = compliance(cold)
    return DailySummary(
        store_id=store_id,
        store_name=cold.store_name,
        region=profile.region if profile is not None else None,
        date=day,
        timezone=cold.timezone,
        timezone_assumed=cold.timezone_assumed,
        currency=currency,
        day_start=start,
        until=cold.until,
        generated_at=cold.generated_at,
        units_sold=sum(units for units, _ in hours.values()),
        revenue=_money(sum((revenue for _, revenue in hours.values()), Decimal(0)), currency),
        sales_by_hour=[
            HourSales(hour=hour, units=units, revenue=_money(revenue, currency))
            for hour, (units, revenue) in sorted(hours.items())
        ],
        sales_by_sku=[
            SkuSales(sku_id=sku, name=name, units=units, revenue=_money(revenue, currency))
            for sku, (name, units, revenue) in sorted(skus.items(), key=lambda item: (-item[1][2], item[0]))
        ],
        below_minimum=await _below_minimum(session, store_id),
        restock_done=await _restock_done(session, store_id, start, until),
        alerts=alerts,
        alerts_raised=sum(a.raised for a in alerts),
        alerts_open=sum(a.open_now for a in alerts),
        cold_chain=zones,
        excursions=len(cold.excursions),
        notes=notes,
    )


async def chain_summary(
    session: AsyncSession,
    stores: Sequence[str],
    day: date,
    *,
    now: datetime,
    region: str | None = None,
) -> ChainSummary:
    """The roll-up of ``stores`` (already narrowed to what the reader may see) for their local date ``day``."""
    lines = []
    for store_id in stores:
        summary = await daily_summary(session, store_id, day, now=now)
        if summary is not None:
            lines.append(store_line(summary))
    notes = [] if lines else ["no store to report"]
    return roll_up(day, lines, region=region, generated_at=now, notes=notes)
