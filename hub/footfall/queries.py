"""The footfall report in SQL: visitors per store and local hour, checkout transactions (baskets), units sold.

Three aggregates, each computed by the database on SQLite and PostgreSQL alike and bucketed by the local hour
of its time in the store's own zone (:class:`hub.db.sqlfunctions.local_timestamp`, DST included):

- footfall: ``footfall_counts`` summed per store and hour of ``period_start`` (every camera and line of the
  store adds up), with the number of cameras that sent counts;
- transactions: ``scan.sale`` events of the event log; a window (``LAG`` over each checkout scanner's scans in
  time order) marks the scans that start a basket, :func:`hub.domain.footfall.basket_starts`' rule, and the
  starts are counted per hour;
- units sold: ledger rows of kind ``sale``, as the sales report counts them.

Python then joins them per hour and sums the days (:mod:`hub.domain.footfall`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from sqlalchemy import ColumnElement, Integer, Select, String, and_, case, cast, func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.catalog.models import StoreProfile
from hub.db.models import StoredEvent
from hub.db.sqlfunctions import local_timestamp, seconds_between
from hub.domain.footfall import DayFigures, HourFigures, HourFootfall, HourKey, day_figures, hour_figures
from hub.domain.ledger import MovementKind
from hub.footfall.models import FootfallCount
from hub.ingest.clock import ClockIssue
from hub.inventory.models import LedgerRow
from hub.reports.queries import FALLBACK_TIME_ZONE, ReportFilter
from storegate.wire import EventKind

# Rows within a day either side of the period, in UTC, are the only candidates for any store's local days
# (offsets lie within -12:00..+14:00); the exact test is on the local date. As in hub.reports.queries.
_UTC_MARGIN: Final = timedelta(days=1)
# The hub applies an event whose device time cannot be true at its receipt (hub.ingest.clock); so do baskets,
# as the ledger does for the sale itself.
_IMPOSSIBLE_CLOCK: Final = tuple(sorted(issue.value for issue in ClockIssue if issue.impossible))
_SALE_SCAN: Final = EventKind.SCAN_SALE.value


@dataclass(frozen=True, kw_only=True)
class FootfallReport:
    """The footfall report's hours and days, and the zone of each store in it."""

    hours: list[HourFigures]
    days: list[DayFigures]
    zones: dict[str, str | None]  # store -> its profile's zone; None: no profile, reported in UTC


def _zone() -> ColumnElement[str]:
    return func.coalesce(StoreProfile.timezone, literal_column(f"'{FALLBACK_TIME_ZONE}'"))


def _midnight_utc(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _utc_window(column: Any, scope: ReportFilter) -> list[ColumnElement[bool]]:
    return [
        column >= _midnight_utc(scope.first_day) - _UTC_MARGIN,
        column < _midnight_utc(scope.last_day + timedelta(days=1)) + _UTC_MARGIN,
    ]


def _hourly(store: Any, at: Any, scope: ReportFilter, measures: list[Any]) -> Select[Any]:
    """``measures`` of the rows of a subquery per store, local date and local hour of ``at``, within the period."""
    local = local_timestamp(at, _zone())
    local_date = func.substr(local, 1, 10, type_=String)
    return (
        select(
            store.label("store_id"),
            local_date.label("local_date"),
            cast(func.substr(local, 12, 2, type_=String), Integer).label("local_hour"),
            *measures,
        )
        .outerjoin(StoreProfile, StoreProfile.store_id == store)
        .where(local_date.between(scope.first_day.isoformat(), scope.last_day.isoformat()))
        .group_by(store, "local_date", "local_hour")
    )


def footfall_statement(scope: ReportFilter) -> Select[Any]:
    """People counted entering and leaving, and cameras counting, per store and local hour of the period."""
    counts = FootfallCount
    statement = _hourly(
        counts.store_id,
        counts.period_start,
        scope,
        [
            func.sum(counts.entered).label("entered"),
            func.sum(counts.exited).label("exited"),
            func.count(func.distinct(counts.gateway_id + literal_column("'/'") + counts.device_id)).label("cameras"),
        ],
    ).select_from(counts)
    statement = statement.where(*_utc_window(counts.period_start, scope))
    if scope.store_id is not None:
        statement = statement.where(counts.store_id == scope.store_id)
    return statement


def basket_starts_statement(scope: ReportFilter, *, gap_s: float) -> Select[Any]:
    """Sales transactions per store and local hour: checkout scans that start a basket (see the module)."""
    events = StoredEvent
    impossible = events.clock_issue.in_(_IMPOSSIBLE_CLOCK)
    believed = or_(events.clock_issue.is_(None), events.clock_issue.not_in(_IMPOSSIBLE_CLOCK))
    scan_at = case((impossible, events.received_at), else_=events.device_ts)
    scans_where: list[ColumnElement[bool]] = [
        events.kind == _SALE_SCAN,
        or_(
            and_(believed, *_utc_window(events.device_ts, scope)),
            and_(impossible, *_utc_window(events.received_at, scope)),
        ),
    ]
    if scope.store_id is not None:
        scans_where.append(events.store_id == scope.store_id)
    scans = (
        select(events.store_id, events.gateway_id, events.device_id, events.id, scan_at.label("at"))
        .where(*scans_where)
        .subquery("sale_scans")
    )
    previous_at = (
        func.lag(scans.c.at)
        .over(partition_by=(scans.c.store_id, scans.c.gateway_id, scans.c.device_id), order_by=(scans.c.at, scans.c.id))
        .label("previous_at")
    )
    marked = select(scans.c.store_id, scans.c.at, previous_at).subquery("marked_scans")
    starts = (
        select(marked.c.store_id, marked.c.at)
        .where(or_(marked.c.previous_at.is_(None), seconds_between(marked.c.previous_at, marked.c.at) >= gap_s))
        .subquery("basket_starts")
    )
    return _hourly(starts.c.store_id, starts.c.at, scope, [func.count().label("transactions")]).select_from(starts)


def units_sold_statement(scope: ReportFilter) -> Select[Any]:
    """Units sold (ledger sale rows) per store and local hour, as the sales report counts them."""
    ledger = LedgerRow
    statement = (
        _hourly(ledger.store_id, ledger.at, scope, [func.sum(-ledger.quantity).label("units")])
        .select_from(ledger)
        .where(ledger.kind == MovementKind.SALE.value, *_utc_window(ledger.at, scope))
    )
    if scope.store_id is not None:
        statement = statement.where(ledger.store_id == scope.store_id)
    return statement


def _key(row: Any) -> HourKey:
    return HourKey(store_id=row.store_id, local_date=date.fromisoformat(row.local_date), local_hour=row.local_hour)


async def footfall_report(session: AsyncSession, scope: ReportFilter, *, basket_gap_s: float) -> FootfallReport:
    """Visitors, exits, transactions, units sold and conversion per store and local hour, and per day."""
    footfall = {
        _key(row): HourFootfall(entered=int(row.entered), exited=int(row.exited), cameras=int(row.cameras))
        for row in await session.execute(footfall_statement(scope))
    }
    transactions = {
        _key(row): int(row.transactions)
        for row in await session.execute(basket_starts_statement(scope, gap_s=basket_gap_s))
    }
    units = {_key(row): int(row.units) for row in await session.execute(units_sold_statement(scope))}
    hours = hour_figures(footfall, transactions, units)
    stores = sorted({hour.key.store_id for hour in hours})
    zones: dict[str, str | None] = dict.fromkeys(stores)
    if stores:
        profiles = await session.execute(
            select(StoreProfile.store_id, StoreProfile.timezone).where(StoreProfile.store_id.in_(stores))
        )
        zones.update({row.store_id: row.timezone for row in profiles})
    return FootfallReport(hours=hours, days=day_figures(hours), zones=zones)
