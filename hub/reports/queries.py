"""The hub's reports as SQL: sales, stock flow (turnover, days of supply, sell-through), shrink, alert statistics.

Every figure is aggregated by the database (GROUP BY and window functions, the same statements on SQLite and
PostgreSQL); Python only turns the aggregated rows into ratios and money. See docs/reports.md for the formulas.

Dates and hours are those of each store's own time zone (its store profile; UTC for a store without one),
computed in the database by :class:`hub.db.sqlfunctions.local_timestamp`, DST included. A report covers a
range of local dates, both inclusive: a row belongs to it when the local date of its time, in its own store's
zone, lies within ``[first_day, last_day]``. So one request over two stores gives each its own days.

Money is summed as integers of 1/10 000 (prices have four decimals), so totals are exact on SQLite, whose
numbers are floats, as on PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    SQLColumnExpression,
    String,
    Subquery,
    and_,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    union,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from hub.alerting.models import AlertRow
from hub.catalog.models import Sku, StoreProfile
from hub.catalog.values import money_text
from hub.db.sqlfunctions import local_timestamp, seconds_between
from hub.domain.ledger import (
    ON_HAND_DELTA,  # the domain's one definition of what moves stock
    MovementKind,
)
from hub.errors import HubError
from hub.inventory.models import LedgerRow, ShrinkRecord, StockPosition

# Zone of a store without a profile; its rows say so (timezone_assumed).
FALLBACK_TIME_ZONE: Final = "UTC"
MAX_PERIOD_DAYS: Final = 366
# Prices have four decimals (PRICE_TYPE): money is summed as integers of this fraction.
MONEY_SCALE: Final = 10_000
# UTC offsets in use lie between -12:00 and +14:00. Rows within a day either side of the period, in UTC,
# are the only candidates for any store's local days: that range lets the (store, ..., at) indexes narrow
# the scan before the exact local-date test, which needs each row's store zone.
_UTC_MARGIN: Final = timedelta(days=1)

_SALE: Final = MovementKind.SALE.value
_COUNT: Final = MovementKind.COUNT.value
_RECEIVED: Final = (MovementKind.RECEIPT.value, MovementKind.TRANSFER_IN.value)
# Rows that set (count) or change (the rest) on hand, as hub.domain.ledger.apply replays them.
_LEVEL_KINDS: Final = (_COUNT, *sorted(kind.value for kind in ON_HAND_DELTA))
# Ratios are rounded for people; the counts behind them are exact.
RATIO_DIGITS: Final = 4
DAYS_DIGITS: Final = 2
SECONDS_DIGITS: Final = 3


class ReportPeriodError(HubError, ValueError):
    """A report's period is not acceptable; ``parameter`` names the query parameter at fault."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True, kw_only=True)
class ReportFilter:
    """What a report covers: local dates ``first_day`` to ``last_day`` (inclusive), optionally one store or SKU.

    ``until`` (UTC) is the present when the report is made: nothing at or after it is counted, so a period that
    includes today stops at now (a device whose clock runs ahead cannot add tomorrow's sales), and averages
    per day count only the days that have begun.
    """

    first_day: date
    last_day: date
    store_id: str | None = None
    sku_id: str | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.first_day > self.last_day:
            raise ReportPeriodError("from", f"from ({self.first_day}) is after to ({self.last_day})")
        if self.days > MAX_PERIOD_DAYS:
            raise ReportPeriodError(
                "to", f"the period {self.first_day}..{self.last_day} has {self.days} days; at most {MAX_PERIOD_DAYS}"
            )

    @property
    def days(self) -> int:
        """Local days in the period, both ends counted."""
        return (self.last_day - self.first_day).days + 1

    def days_begun(self, timezone: str) -> int:
        """Days of the period that have begun by ``until`` in ``timezone`` (at least 1; all without ``until``)."""
        if self.until is None:
            return self.days
        today = self.until.astimezone(ZoneInfo(timezone)).date()
        return max(1, (min(self.last_day, today) - self.first_day).days + 1)

    def before_now(self, column: InstrumentedAttribute[datetime]) -> list[ColumnElement[bool]]:
        """``column`` lies before ``until``; nothing when the filter has none."""
        return [] if self.until is None else [column < self.until]


# --------------------------------------------------------------------------- shared SQL


def _store_zone() -> ColumnElement[str]:
    """The zone of the row's store (store_profiles must be joined on the store id)."""
    return func.coalesce(StoreProfile.timezone, literal_column(f"'{FALLBACK_TIME_ZONE}'"))


def _local_date(column: InstrumentedAttribute[datetime]) -> ColumnElement[str]:
    """``YYYY-MM-DD``: the local date of a UTC column in its store's zone."""
    return func.substr(local_timestamp(column, _store_zone()), 1, 10, type_=String)


def _midnight_utc(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _in_period(column: InstrumentedAttribute[datetime], scope: ReportFilter) -> list[ColumnElement[bool]]:
    """The row's local date is in the period (with a UTC pre-filter an index can use)."""
    return [
        column >= _midnight_utc(scope.first_day) - _UTC_MARGIN,
        column < _midnight_utc(scope.last_day + timedelta(days=1)) + _UTC_MARGIN,
        _local_date(column).between(scope.first_day.isoformat(), scope.last_day.isoformat()),
        *scope.before_now(column),
    ]


def _before_day(column: InstrumentedAttribute[datetime], day: date) -> list[ColumnElement[bool]]:
    """The row's local date is before ``day``."""
    return [column < _midnight_utc(day) + _UTC_MARGIN, _local_date(column) < day.isoformat()]


def _of(
    scope: ReportFilter, store: InstrumentedAttribute[str], sku: InstrumentedAttribute[str] | None = None
) -> list[ColumnElement[bool]]:
    """The filter's store and SKU, if it names them."""
    conditions: list[ColumnElement[bool]] = []
    if scope.store_id is not None:
        conditions.append(store == scope.store_id)
    if scope.sku_id is not None and sku is not None:
        conditions.append(sku == scope.sku_id)
    return conditions


def _total(expression: SQLColumnExpression[Any]) -> ColumnElement[int]:
    """SUM as an integer on both databases (PostgreSQL sums bigints to numeric)."""
    return cast(func.sum(expression), BigInteger)


def _money_units(amount: SQLColumnExpression[Any]) -> ColumnElement[int]:
    """A 4-decimal amount as an integer of 1/10 000, exact even from SQLite's floats."""
    return cast(func.round(amount * MONEY_SCALE), BigInteger)


def _money(units: int | None, currency: str | None) -> Decimal:
    """A sum of 1/10 000 units as money, written with the currency's minor digits."""
    amount = Decimal(units or 0).scaleb(-4)
    return Decimal(money_text(amount, currency or ""))


def _zone_name(timezone: str | None) -> str:
    return timezone if timezone is not None else FALLBACK_TIME_ZONE


def _ratio(numerator: float, denominator: float, digits: int) -> float | None:
    """numerator / denominator rounded, or None when the denominator is not positive."""
    return round(numerator / denominator, digits) if denominator > 0 else None


# --------------------------------------------------------------------------- sales


@dataclass(frozen=True, kw_only=True)
class SalesLine:
    """Units and revenue of one SKU in one store in one local hour."""

    store_id: str
    timezone: str
    timezone_assumed: bool
    local_date: date
    local_hour: int
    sku_id: str
    name: str | None
    units: int
    revenue: Decimal
    currency: str | None


def sales_statement(scope: ReportFilter) -> Select[Any]:
    """Sales per store, local date, local hour and SKU: units (-quantity) and revenue (units x unit price)."""
    local = local_timestamp(LedgerRow.at, _store_zone())
    lines = (
        select(
            LedgerRow.store_id,
            LedgerRow.sku_id,
            func.substr(local, 1, 10, type_=String).label("local_date"),
            cast(func.substr(local, 12, 2, type_=String), Integer).label("local_hour"),
            (-LedgerRow.quantity).label("units"),
            (_money_units(LedgerRow.unit_price) * -LedgerRow.quantity).label("revenue_units"),
        )
        .select_from(LedgerRow)
        .outerjoin(StoreProfile, StoreProfile.store_id == LedgerRow.store_id)
        .where(
            LedgerRow.kind == _SALE, *_in_period(LedgerRow.at, scope), *_of(scope, LedgerRow.store_id, LedgerRow.sku_id)
        )
        .subquery("sale_lines")
    )
    hours = (
        select(
            lines.c.store_id,
            lines.c.local_date,
            lines.c.local_hour,
            lines.c.sku_id,
            _total(lines.c.units).label("units"),
            _total(lines.c.revenue_units).label("revenue_units"),
        )
        .group_by(lines.c.store_id, lines.c.local_date, lines.c.local_hour, lines.c.sku_id)
        .subquery("sale_hours")
    )
    return (
        select(
            hours,
            Sku.name,
            StoreProfile.timezone,
            # Sales are valued at the catalog's price, quoted in the SKU's currency (the store's in a
            # one-currency chain); the store's currency only stands in for a SKU the catalog does not know.
            func.coalesce(Sku.currency, StoreProfile.currency).label("currency"),
        )
        .select_from(hours)
        .outerjoin(Sku, Sku.sku_id == hours.c.sku_id)
        .outerjoin(StoreProfile, StoreProfile.store_id == hours.c.store_id)
        .order_by(hours.c.store_id, hours.c.local_date, hours.c.local_hour, hours.c.sku_id)
    )


async def sales(session: AsyncSession, scope: ReportFilter) -> list[SalesLine]:
    """The sales report's rows, by store, local date, local hour and SKU."""
    result = await session.execute(sales_statement(scope))
    return [
        SalesLine(
            store_id=row.store_id,
            timezone=_zone_name(row.timezone),
            timezone_assumed=row.timezone is None,
            local_date=date.fromisoformat(row.local_date),
            local_hour=row.local_hour,
            sku_id=row.sku_id,
            name=row.name,
            units=row.units,
            revenue=_money(row.revenue_units, row.currency),
            currency=row.currency,
        )
        for row in result
    ]


# --------------------------------------------------------------------------- stock flow


def _levels(scope: ReportFilter, *, before: date, name: str) -> Subquery:
    """On hand per store and SKU at the start of the local day ``before``, replayed from the ledger.

    As :func:`hub.domain.ledger.apply` does, in the order (at, event_id, line): the latest count sets on hand,
    movements after it add to it; without a count, every movement adds up from zero. A window numbers the
    counts from the newest back, so the newest count and the movements after it are summed in one GROUP BY.
    """
    newer_counts = func.sum(case((LedgerRow.kind == _COUNT, 1), else_=0)).over(
        partition_by=(LedgerRow.store_id, LedgerRow.sku_id),
        order_by=(LedgerRow.at.desc(), LedgerRow.event_id.desc(), LedgerRow.line.desc()),
        rows=(None, 0),
    )
    moves = (
        select(LedgerRow.store_id, LedgerRow.sku_id, LedgerRow.kind, LedgerRow.quantity, newer_counts.label("newer"))
        .select_from(LedgerRow)
        .outerjoin(StoreProfile, StoreProfile.store_id == LedgerRow.store_id)
        .where(
            LedgerRow.kind.in_(_LEVEL_KINDS),
            *_before_day(LedgerRow.at, before),
            *scope.before_now(LedgerRow.at),
            *_of(scope, LedgerRow.store_id, LedgerRow.sku_id),
        )
        .subquery(f"{name}_moves")
    )
    since_last_count = or_(
        and_(moves.c.newer == 0, moves.c.kind != _COUNT), and_(moves.c.newer == 1, moves.c.kind == _COUNT)
    )
    return (
        select(moves.c.store_id, moves.c.sku_id, _total(moves.c.quantity).label("level"))
        .where(since_last_count)
        .group_by(moves.c.store_id, moves.c.sku_id)
        .subquery(name)
    )


@dataclass(frozen=True, kw_only=True)
class StockFlow:
    """What one SKU did in one store over the period: stock at both ends, sales and receipts, stock now."""

    store_id: str
    timezone: str
    timezone_assumed: bool
    sku_id: str
    name: str | None
    days: int
    on_hand_start: int
    units_received: int
    units_sold: int
    on_hand_end: int
    on_hand_now: int

    @property
    def avg_daily_units(self) -> float:
        """Units sold per local day of the period."""
        return round(self.units_sold / self.days, RATIO_DIGITS)

    @property
    def average_inventory(self) -> float:
        """The mean of on hand at the start and at the end of the period."""
        return (self.on_hand_start + self.on_hand_end) / 2

    @property
    def turnover(self) -> float | None:
        """Units sold / average inventory; None when the average inventory is not positive."""
        return _ratio(self.units_sold, self.average_inventory, RATIO_DIGITS)

    @property
    def days_of_supply(self) -> float | None:
        """On hand now / average daily units sold (negative stock counts as none); None without sales."""
        if self.units_sold <= 0:
            return None
        return round(max(self.on_hand_now, 0) * self.days / self.units_sold, DAYS_DIGITS)

    @property
    def sell_through(self) -> float | None:
        """Units sold / (units sold + on hand at the end, negative counting as none); None when both are 0."""
        return _ratio(self.units_sold, self.units_sold + max(self.on_hand_end, 0), RATIO_DIGITS)


def stock_flow_statement(scope: ReportFilter) -> Select[Any]:
    """Per store and SKU: on hand at the start and end of the period, units sold and received in it, on hand now."""
    moved = (
        select(
            LedgerRow.store_id,
            LedgerRow.sku_id,
            _total(case((LedgerRow.kind == _SALE, -LedgerRow.quantity), else_=0)).label("units_sold"),
            _total(case((LedgerRow.kind.in_(_RECEIVED), LedgerRow.quantity), else_=0)).label("units_received"),
        )
        .select_from(LedgerRow)
        .outerjoin(StoreProfile, StoreProfile.store_id == LedgerRow.store_id)
        .where(
            LedgerRow.kind.in_((_SALE, *_RECEIVED)),
            *_in_period(LedgerRow.at, scope),
            *_of(scope, LedgerRow.store_id, LedgerRow.sku_id),
        )
        .group_by(LedgerRow.store_id, LedgerRow.sku_id)
        .subquery("moved")
    )
    start = _levels(scope, before=scope.first_day, name="start_levels")
    end = _levels(scope, before=scope.last_day + timedelta(days=1), name="end_levels")
    positions = select(StockPosition.store_id, StockPosition.sku_id).where(
        *_of(scope, StockPosition.store_id, StockPosition.sku_id)
    )
    keys = union(
        select(moved.c.store_id, moved.c.sku_id),
        select(start.c.store_id, start.c.sku_id),
        select(end.c.store_id, end.c.sku_id),
        positions,
    ).subquery("stock_keys")

    def joined(table: Subquery) -> ColumnElement[bool]:
        return and_(table.c.store_id == keys.c.store_id, table.c.sku_id == keys.c.sku_id)

    return (
        select(
            keys.c.store_id,
            keys.c.sku_id,
            Sku.name,
            StoreProfile.timezone,
            func.coalesce(start.c.level, 0).label("on_hand_start"),
            func.coalesce(moved.c.units_received, 0).label("units_received"),
            func.coalesce(moved.c.units_sold, 0).label("units_sold"),
            func.coalesce(end.c.level, 0).label("on_hand_end"),
            func.coalesce(StockPosition.on_hand, 0).label("on_hand_now"),
        )
        .select_from(keys)
        .outerjoin(moved, joined(moved))
        .outerjoin(start, joined(start))
        .outerjoin(end, joined(end))
        .outerjoin(
            StockPosition, and_(StockPosition.store_id == keys.c.store_id, StockPosition.sku_id == keys.c.sku_id)
        )
        .outerjoin(Sku, Sku.sku_id == keys.c.sku_id)
        .outerjoin(StoreProfile, StoreProfile.store_id == keys.c.store_id)
        .order_by(keys.c.store_id, keys.c.sku_id)
    )


async def stock_flow(session: AsyncSession, scope: ReportFilter) -> list[StockFlow]:
    """Stock flow rows by store and SKU: every SKU with stock, sales or movements up to the period's end."""
    result = await session.execute(stock_flow_statement(scope))
    return [
        StockFlow(
            store_id=row.store_id,
            timezone=_zone_name(row.timezone),
            timezone_assumed=row.timezone is None,
            sku_id=row.sku_id,
            name=row.name,
            days=scope.days_begun(_zone_name(row.timezone)),
            on_hand_start=row.on_hand_start,
            units_received=row.units_received,
            units_sold=row.units_sold,
            on_hand_end=row.on_hand_end,
            on_hand_now=row.on_hand_now,
        )
        for row in result
    ]


# --------------------------------------------------------------------------- shrink


@dataclass(frozen=True, kw_only=True)
class ShrinkLine:
    """Shrink of one SKU in one store over the period: recorded shrink, and losses found by counts."""

    store_id: str
    timezone: str
    timezone_assumed: bool
    sku_id: str
    name: str | None
    shrink_units: int
    shrink_value: Decimal
    shrink_records: int
    count_loss_units: int
    count_loss_value: Decimal | None
    counts_with_loss: int
    currency: str | None


def _count_losses(scope: ReportFilter) -> Subquery:
    """Per store and SKU: units missing at the counts of the period (negative variances), and how many counts.

    The variance of a count is what hub.domain.ledger.apply records: counted minus the on hand replayed
    just before it. Counts split each SKU's ledger into segments (a window numbers them); on hand at the end
    of a segment is its count plus its movements, and the next count's variance subtracts it (LAG).
    """
    segment = func.sum(case((LedgerRow.kind == _COUNT, 1), else_=0)).over(
        partition_by=(LedgerRow.store_id, LedgerRow.sku_id),
        order_by=(LedgerRow.at, LedgerRow.event_id, LedgerRow.line),
        rows=(None, 0),
    )
    moves = (
        select(
            LedgerRow.store_id,
            LedgerRow.sku_id,
            LedgerRow.kind,
            LedgerRow.quantity,
            _local_date(LedgerRow.at).label("local_date"),
            segment.label("segment"),
        )
        .select_from(LedgerRow)
        .outerjoin(StoreProfile, StoreProfile.store_id == LedgerRow.store_id)
        .where(
            LedgerRow.kind.in_(_LEVEL_KINDS),
            *_before_day(LedgerRow.at, scope.last_day + timedelta(days=1)),
            *scope.before_now(LedgerRow.at),
            *_of(scope, LedgerRow.store_id, LedgerRow.sku_id),
        )
        .subquery("count_moves")
    )
    is_count = moves.c.kind == _COUNT
    segments = (
        select(
            moves.c.store_id,
            moves.c.sku_id,
            moves.c.segment,
            _total(case((is_count, moves.c.quantity), else_=0)).label("counted"),
            _total(case((is_count, 0), else_=moves.c.quantity)).label("moved"),
            func.max(case((is_count, moves.c.local_date))).label("count_day"),
        )
        .group_by(moves.c.store_id, moves.c.sku_id, moves.c.segment)
        .subquery("count_segments")
    )
    expected = func.lag(segments.c.counted + segments.c.moved).over(
        partition_by=(segments.c.store_id, segments.c.sku_id), order_by=segments.c.segment
    )
    variances = select(
        segments.c.store_id,
        segments.c.sku_id,
        segments.c.segment,
        segments.c.count_day,
        (segments.c.counted - func.coalesce(expected, 0)).label("variance"),
    ).subquery("count_variances")
    return (
        select(
            variances.c.store_id,
            variances.c.sku_id,
            _total(-variances.c.variance).label("units"),
            func.count().label("counts"),
        )
        .where(
            variances.c.segment >= 1,
            variances.c.variance < 0,
            variances.c.count_day.between(scope.first_day.isoformat(), scope.last_day.isoformat()),
        )
        .group_by(variances.c.store_id, variances.c.sku_id)
        .subquery("count_losses")
    )


def shrink_statement(scope: ReportFilter) -> Select[Any]:
    """Per store and SKU: shrink records expired in the period (units, value, records) and count losses."""
    recorded = (
        select(
            ShrinkRecord.store_id,
            ShrinkRecord.sku_id,
            _total(ShrinkRecord.quantity).label("units"),
            _total(_money_units(ShrinkRecord.value)).label("value_units"),
            func.count().label("records"),
        )
        .select_from(ShrinkRecord)
        .outerjoin(StoreProfile, StoreProfile.store_id == ShrinkRecord.store_id)
        .where(*_in_period(ShrinkRecord.expired_at, scope), *_of(scope, ShrinkRecord.store_id, ShrinkRecord.sku_id))
        .group_by(ShrinkRecord.store_id, ShrinkRecord.sku_id)
        .subquery("recorded")
    )
    losses = _count_losses(scope)
    keys = union(select(recorded.c.store_id, recorded.c.sku_id), select(losses.c.store_id, losses.c.sku_id)).subquery(
        "shrink_keys"
    )
    return (
        select(
            keys.c.store_id,
            keys.c.sku_id,
            Sku.name,
            Sku.price,
            StoreProfile.timezone,
            func.coalesce(Sku.currency, StoreProfile.currency).label("currency"),
            func.coalesce(recorded.c.units, 0).label("shrink_units"),
            recorded.c.value_units.label("shrink_value_units"),
            func.coalesce(recorded.c.records, 0).label("shrink_records"),
            func.coalesce(losses.c.units, 0).label("count_loss_units"),
            func.coalesce(losses.c.counts, 0).label("counts_with_loss"),
        )
        .select_from(keys)
        .outerjoin(recorded, and_(recorded.c.store_id == keys.c.store_id, recorded.c.sku_id == keys.c.sku_id))
        .outerjoin(losses, and_(losses.c.store_id == keys.c.store_id, losses.c.sku_id == keys.c.sku_id))
        .outerjoin(Sku, Sku.sku_id == keys.c.sku_id)
        .outerjoin(StoreProfile, StoreProfile.store_id == keys.c.store_id)
        .order_by(keys.c.store_id, keys.c.sku_id)
    )


async def shrink(session: AsyncSession, scope: ReportFilter) -> list[ShrinkLine]:
    """The shrink report's rows by store and SKU (only SKUs with shrink or count losses in the period)."""
    result = await session.execute(shrink_statement(scope))
    lines = []
    for row in result:
        # Count losses are valued at today's catalog price: the ledger keeps no price for a count.
        loss_value = None if row.price is None else Decimal(row.count_loss_units) * row.price
        lines.append(
            ShrinkLine(
                store_id=row.store_id,
                timezone=_zone_name(row.timezone),
                timezone_assumed=row.timezone is None,
                sku_id=row.sku_id,
                name=row.name,
                shrink_units=row.shrink_units,
                shrink_value=_money(row.shrink_value_units, row.currency),
                shrink_records=row.shrink_records,
                count_loss_units=row.count_loss_units,
                count_loss_value=None if loss_value is None else Decimal(money_text(loss_value, row.currency or "")),
                counts_with_loss=row.counts_with_loss,
                currency=row.currency,
            )
        )
    return lines


# --------------------------------------------------------------------------- alert statistics


@dataclass(frozen=True, kw_only=True)
class AlertStats:
    """Alerts opened in the period in one store, of one rule kind and severity, and how fast they were handled."""

    store_id: str
    timezone: str
    timezone_assumed: bool
    rule_kind: str
    severity: str
    alerts: int
    acknowledged: int
    mean_time_to_acknowledge_s: float | None
    max_time_to_acknowledge_s: float | None
    resolved: int
    mean_time_to_resolve_s: float | None
    max_time_to_resolve_s: float | None
    open_now: int


def alert_stats_statement(scope: ReportFilter) -> Select[Any]:
    """Per store, rule kind and severity: alerts opened in the period, acknowledge and resolve times, still open."""
    to_acknowledge = seconds_between(AlertRow.opened_at, AlertRow.acknowledged_at)
    to_resolve = seconds_between(AlertRow.opened_at, AlertRow.resolved_at)
    return (
        select(
            AlertRow.store_id,
            AlertRow.rule_kind,
            AlertRow.severity,
            StoreProfile.timezone,
            func.count().label("alerts"),
            func.count(AlertRow.acknowledged_at).label("acknowledged"),
            func.avg(to_acknowledge).label("mean_ack"),
            func.max(to_acknowledge).label("max_ack"),
            func.count(AlertRow.resolved_at).label("resolved"),
            func.avg(to_resolve).label("mean_resolve"),
            func.max(to_resolve).label("max_resolve"),
            _total(case((AlertRow.resolved_at.is_(None), 1), else_=0)).label("open_now"),
        )
        .select_from(AlertRow)
        .outerjoin(StoreProfile, StoreProfile.store_id == AlertRow.store_id)
        .where(*_in_period(AlertRow.opened_at, scope), *_of(scope, AlertRow.store_id))
        .group_by(AlertRow.store_id, AlertRow.rule_kind, AlertRow.severity, StoreProfile.timezone)
        .order_by(AlertRow.store_id, AlertRow.rule_kind, AlertRow.severity)
    )


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(float(value), SECONDS_DIGITS)


async def alert_stats(session: AsyncSession, scope: ReportFilter) -> list[AlertStats]:
    """The alert statistics rows by store, rule kind and severity (the filter's SKU does not apply)."""
    result = await session.execute(alert_stats_statement(scope))
    return [
        AlertStats(
            store_id=row.store_id,
            timezone=_zone_name(row.timezone),
            timezone_assumed=row.timezone is None,
            rule_kind=row.rule_kind,
            severity=row.severity,
            alerts=row.alerts,
            acknowledged=row.acknowledged,
            mean_time_to_acknowledge_s=_seconds(row.mean_ack),
            max_time_to_acknowledge_s=_seconds(row.max_ack),
            resolved=row.resolved,
            mean_time_to_resolve_s=_seconds(row.mean_resolve),
            max_time_to_resolve_s=_seconds(row.max_resolve),
            open_now=row.open_now,
        )
        for row in result
    ]


# The most alerts one alert log lists: a period of a busy chain is cut here, and the report says so.
MAX_ALERT_LOG_ROWS: Final = 50_000


@dataclass(frozen=True, slots=True)
class AlertLogEntry:
    """One alert opened in the period, and who did what with it; times on the store's clock."""

    store_id: str
    timezone: str
    timezone_assumed: bool
    alert_id: str
    opened_at: str
    severity: str
    rule_id: str
    rule_kind: str
    subject: str
    message: str
    status: str
    acknowledged_by: str | None
    acknowledged_at: str | None
    resolved_by: str | None
    resolved_at: str | None
    resolution_note: str | None
    note: str | None = None  # on the last row of a log cut at MAX_ALERT_LOG_ROWS


def alert_log_statement(scope: ReportFilter) -> Select[Any]:
    """Each alert opened in the period, oldest first per store, at most one more than MAX_ALERT_LOG_ROWS."""
    statement: Select[Any] = select(AlertRow, StoreProfile.timezone)  # type: ignore[assignment]  # 2.0 and 2.1 type it apart
    return (
        statement.outerjoin(StoreProfile, StoreProfile.store_id == AlertRow.store_id)
        .where(*_in_period(AlertRow.opened_at, scope), *_of(scope, AlertRow.store_id))
        .order_by(AlertRow.store_id, AlertRow.opened_at, AlertRow.alert_id)
        .limit(MAX_ALERT_LOG_ROWS + 1)
    )


def _local(moment: datetime | None, zone: ZoneInfo) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(zone).isoformat(timespec="seconds")


async def alert_log(session: AsyncSession, scope: ReportFilter) -> list[AlertLogEntry]:
    """The alert log: every alert opened in the period with its acknowledgement and resolution (the filter's SKU
    does not apply); cut at MAX_ALERT_LOG_ROWS, the last row saying so."""
    rows = (await session.execute(alert_log_statement(scope))).all()
    entries: list[AlertLogEntry] = []
    for alert, timezone in rows[:MAX_ALERT_LOG_ROWS]:
        name = _zone_name(timezone)
        zone = ZoneInfo(name)
        entries.append(
            AlertLogEntry(
                store_id=alert.store_id,
                timezone=name,
                timezone_assumed=timezone is None,
                alert_id=alert.alert_id,
                opened_at=_local(alert.opened_at, zone) or "",
                severity=alert.severity,
                rule_id=alert.rule_id,
                rule_kind=alert.rule_kind,
                subject=f"{alert.subject_kind}:{alert.subject_id}",
                message=alert.message,
                status=alert.status,
                acknowledged_by=alert.acknowledged_by,
                acknowledged_at=_local(alert.acknowledged_at, zone),
                resolved_by=alert.resolved_by,
                resolved_at=_local(alert.resolved_at, zone),
                resolution_note=alert.resolution_note,
            )
        )
    if len(rows) > MAX_ALERT_LOG_ROWS and entries:
        entries[-1] = replace(
            entries[-1], note=f"cut at {MAX_ALERT_LOG_ROWS:,} alerts: ask for a shorter period or one store"
        )
    return entries
