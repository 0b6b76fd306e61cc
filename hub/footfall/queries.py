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

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from hub.catalog.models import StoreProfile
from hub.db.models import Store, StoredEvent, UtcDateTime
from hub.db.sqlfunctions import local_timestamp
from hub.domain.footfall import (
    DayFigures,
    HourFigures,
    HourFootfall,
    HourKey,
    day_figures,
    gap_milliseconds,
    hour_figures,
)
from hub.domain.ledger import MovementKind
from hub.footfall.models import FootfallCount
from hub.ingest.clock import ClockIssue
from hub.inventory.models import LedgerRow
from hub.reports.queries import FALLBACK_TIME_ZONE, ReportFilter
from storegate.wire import EventKind

# Rows within a day either side of the period, in UTC, are the only candidates for any store's local days
# (offsets lie within -12:00..+14:00); the exact test is on the local date. As in hub.reports.queries.
_UTC_MARGIN: Final = timedelta(days=1)
_SPARE: Final = timedelta(hours=1)
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


@dataclass(frozen=True, slots=True)
class UtcSpan:
    """The UTC instants that can fall on the period's local dates in any of the stores' zones.

    Rows outside it are never read; the exact test is on each row's local date in its own store's zone.
    """

    start: datetime
    end: datetime

    @classmethod
    def of(cls, scope: ReportFilter, zones: Iterable[str]) -> UtcSpan:
        """From the first local midnight of the period to the last, over ``zones`` (with an hour to spare: a
        zone whose clocks change at midnight has a day that starts at 01:00 or twice)."""
        starts: list[datetime] = []
        ends: list[datetime] = []
        for name in set(zones):
            zone = ZoneInfo(name)
            starts.append(datetime.combine(scope.first_day, time(), zone).astimezone(UTC))
            ends.append(datetime.combine(scope.last_day + timedelta(days=1), time(), zone).astimezone(UTC))
        if not starts:  # no zone known: every offset in use (-12:00..+14:00)
            return cls.anywhere(scope)
        return cls(min(starts) - _SPARE, _until_now(scope, max(ends) + _SPARE))

    @classmethod
    def anywhere(cls, scope: ReportFilter) -> UtcSpan:
        """The period's local dates in any zone at all: a day either side of UTC's."""
        return cls(
            _midnight_utc(scope.first_day) - _UTC_MARGIN,
            _until_now(scope, _midnight_utc(scope.last_day + timedelta(days=1)) + _UTC_MARGIN),
        )

    def earlier_by(self, seconds: float) -> UtcSpan:
        """The span starting ``seconds`` earlier (a basket's previous scan may lie before the period)."""
        return UtcSpan(self.start - timedelta(seconds=seconds), self.end)

    def holds(self, column: Any) -> list[ColumnElement[bool]]:
        """``column`` (UTC) lies within the span: a range the ``(store, ..., time)`` indexes can use."""
        return [column >= self.start, column < self.end]


class milliseconds_after(FunctionElement[int]):
    """``milliseconds_after(earlier, later)``: ``later - earlier`` in whole milliseconds, in the database's C code.

    Whole milliseconds so that a gap of exactly the basket gap compares equal on both databases: SQLite's
    ``julianday`` carries an instant to about 40 us, never exactly; :class:`hub.db.sqlfunctions.seconds_between`
    is exact there but calls Python for every scan of the period, ten times the cost.
    """

    type = BigInteger()
    name = "milliseconds_after"
    inherit_cache = True


@compiles(milliseconds_after, "sqlite")
def _milliseconds_after_sqlite(element: milliseconds_after, compiler: SQLCompiler, **kw: Any) -> str:
    earlier, later = (compiler.process(argument, **kw) for argument in element.clauses)
    return f"CAST(round((julianday({later}) - julianday({earlier})) * 86400000.0) AS INTEGER)"


@compiles(milliseconds_after, "postgresql")
def _milliseconds_after_postgresql(element: milliseconds_after, compiler: SQLCompiler, **kw: Any) -> str:
    earlier, later = (compiler.process(argument, **kw) for argument in element.clauses)
    return f"CAST(round(EXTRACT(EPOCH FROM ({later} - {earlier})) * 1000) AS BIGINT)"


class quarter_hour(FunctionElement[datetime]):
    """``quarter_hour(utc_column)``: the instant rounded down to a quarter hour of UTC, as the column's type."""

    type = UtcDateTime()
    name = "quarter_hour"
    inherit_cache = True


@compiles(quarter_hour, "sqlite")
def _quarter_hour_sqlite(element: quarter_hour, compiler: SQLCompiler, **kw: Any) -> str:
    (at,) = (compiler.process(argument, **kw) for argument in element.clauses)
    # UtcDateTime's text on SQLite, YYYY-MM-DD HH:MM:SS.ffffff: keep the hour, round the minutes down.
    return f"printf('%s%02d:00.000000', substr({at}, 1, 14), (CAST(substr({at}, 15, 2) AS INTEGER) / 15) * 15)"


@compiles(quarter_hour, "postgresql")
def _quarter_hour_postgresql(element: quarter_hour, compiler: SQLCompiler, **kw: Any) -> str:
    (at,) = (compiler.process(argument, **kw) for argument in element.clauses)
    # By the epoch, not date_trunc: date_trunc of a timestamptz works in the session's zone.
    return f"to_timestamp(floor(extract(epoch FROM {at}) / 900) * 900)"


def _zone() -> ColumnElement[str]:
    return func.coalesce(StoreProfile.timezone, literal_column(f"'{FALLBACK_TIME_ZONE}'"))


def _midnight_utc(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _until_now(scope: ReportFilter, end: datetime) -> datetime:
    """A span's end, never past the filter's ``until``: a report of today stops at now."""
    return end if scope.until is None else min(end, scope.until)


async def utc_span(session: AsyncSession, scope: ReportFilter) -> UtcSpan:
    """The span of the zones of the stores the report may cover: the named store's, or every profile's and, if
    a store without a profile has sent anything, UTC's."""
    if scope.store_id is not None:
        zone = await session.scalar(select(StoreProfile.timezone).where(StoreProfile.store_id == scope.store_id))
        return UtcSpan.of(scope, [zone or FALLBACK_TIME_ZONE])
    zones = list(await session.scalars(select(StoreProfile.timezone).distinct()))
    without_profile = await session.scalar(
        select(Store.store_id)
        .outerjoin(StoreProfile, StoreProfile.store_id == Store.store_id)
        .where(StoreProfile.store_id.is_(None))
        .limit(1)
    )
    if without_profile is not None:
        zones.append(FALLBACK_TIME_ZONE)
    return UtcSpan.of(scope, zones)


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


def footfall_statement(scope: ReportFilter, span: UtcSpan | None = None) -> Select[Any]:
    """People counted entering and leaving, and cameras counting, per store and local hour of the period.

    Each camera's periods are summed per quarter hour of UTC first, then the quarters per local hour: every zone's
    offset is a whole number of quarter hours, so a quarter lies within one local hour, and the zone conversion
    (Python on SQLite) runs once a quarter instead of once a minute.
    """
    span = span or UtcSpan.anywhere(scope)
    counts = FootfallCount
    quarters = (
        select(
            counts.store_id,
            counts.gateway_id,
            counts.device_id,
            quarter_hour(counts.period_start).label("quarter"),
            func.sum(counts.entered).label("entered"),
            func.sum(counts.exited).label("exited"),
        )
        .where(*span.holds(counts.period_start))
        .group_by(counts.store_id, counts.gateway_id, counts.device_id, "quarter")
    )
    if scope.store_id is not None:
        quarters = quarters.where(counts.store_id == scope.store_id)
    cameras = quarters.subquery("camera_quarters")
    camera = cameras.c.gateway_id + literal_column("'/'") + cameras.c.device_id
    return _hourly(
        cameras.c.store_id,
        cameras.c.quarter,
        scope,
        [
            func.sum(cameras.c.entered).label("entered"),
            func.sum(cameras.c.exited).label("exited"),
            func.count(func.distinct(camera)).label("cameras"),
        ],
    ).select_from(cameras)


def basket_starts_statement(scope: ReportFilter, *, gap_s: float, span: UtcSpan | None = None) -> Select[Any]:
    """Sales transactions per store and local hour: checkout scans that start a basket (see the module).

    Scans up to ``gap_s`` before the span are read too: the first scan of the period is a basket's start only
    if the scan before it at its scanner is ``gap_s`` or more earlier.
    """
    scans_span = (span or UtcSpan.anywhere(scope)).earlier_by(gap_s)
    events = StoredEvent
    impossible = events.clock_issue.in_(_IMPOSSIBLE_CLOCK)
    believed = or_(events.clock_issue.is_(None), events.clock_issue.not_in(_IMPOSSIBLE_CLOCK))
    scan_at = case((impossible, events.received_at), else_=events.device_ts)
    scans_where: list[ColumnElement[bool]] = [
        events.kind == _SALE_SCAN,
        or_(
            and_(believed, *scans_span.holds(events.device_ts)),
            and_(impossible, *scans_span.holds(events.received_at)),
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
        .where(
            or_(
                marked.c.previous_at.is_(None),
                milliseconds_after(marked.c.previous_at, marked.c.at) >= gap_milliseconds(gap_s),
            )
        )
        .subquery("basket_starts")
    )
    return _hourly(starts.c.store_id, starts.c.at, scope, [func.count().label("transactions")]).select_from(starts)


def units_sold_statement(scope: ReportFilter, span: UtcSpan | None = None) -> Select[Any]:
    """Units sold (ledger sale rows) per store and local hour, as the sales report counts them."""
    span = span or UtcSpan.anywhere(scope)
    ledger = LedgerRow
    statement = (
        _hourly(ledger.store_id, ledger.at, scope, [func.sum(-ledger.quantity).label("units")])
        .select_from(ledger)
        .where(ledger.kind == MovementKind.SALE.value, *span.holds(ledger.at))
    )
    if scope.store_id is not None:
        statement = statement.where(ledger.store_id == scope.store_id)
    return statement


def _key(row: Any) -> HourKey:
    return HourKey(store_id=row.store_id, local_date=date.fromisoformat(row.local_date), local_hour=row.local_hour)


async def footfall_report(session: AsyncSession, scope: ReportFilter, *, basket_gap_s: float) -> FootfallReport:
    """Visitors, exits, transactions, units sold and conversion per store and local hour, and per day."""
    span = await utc_span(session, scope)
    footfall = {
        _key(row): HourFootfall(entered=int(row.entered), exited=int(row.exited), cameras=int(row.cameras))
        for row in await session.execute(footfall_statement(scope, span))
    }
    transactions = {
        _key(row): int(row.transactions)
        for row in await session.execute(basket_starts_statement(scope, gap_s=basket_gap_s, span=span))
    }
    units = {_key(row): int(row.units) for row in await session.execute(units_sold_statement(scope, span))}
    hours = hour_figures(footfall, transactions, units)
    stores = sorted({hour.key.store_id for hour in hours})
    zones: dict[str, str | None] = dict.fromkeys(stores)
    if stores:
        profiles = await session.execute(
            select(StoreProfile.store_id, StoreProfile.timezone).where(StoreProfile.store_id.in_(stores))
        )
        zones.update({row.store_id: row.timezone for row in profiles})
    return FootfallReport(hours=hours, days=day_figures(hours), zones=zones)
