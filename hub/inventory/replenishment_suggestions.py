"""Reorder and transfer suggestions from the ledger, the stock positions and the stock policies.

The I/O around the pure core (:mod:`hub.domain.forecast`, :mod:`hub.domain.replenishment_policy`): read each
store's daily units sold, on hand and min/max policy, fit the demand models, and hand them to the domain
functions. See ``docs/replenishment.md``.

Days are the store's **local** calendar days. The database sums the sales of each local day itself: the
UTC instants at which the store's local days begin are computed here with :mod:`zoneinfo` and given to
the query, which places each ledger row between two of them with a balanced ``CASE`` (a binary search,
about log2(days) comparisons a row). That needs no time zone support in the database, works alike on
SQLite and PostgreSQL, and is exact for every zone: DST days of 23 or 25 hours, offsets of 30 or 45
minutes, and historical offsets in seconds, where grouping by UTC hour or quarter hour would not be.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Integer, case, func, literal_column, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from hub.catalog.models import Sku, StoreProfile
from hub.catalog.values import OpeningHours
from hub.domain.forecast import DAYS_PER_WEEK, DemandModel, fit, forecast
from hub.domain.ledger import MovementKind
from hub.domain.replenishment_policy import (
    ReorderPolicy,
    ReorderSuggestion,
    StoreStock,
    TransferPolicy,
    TransferSuggestion,
    predicted_stockout,
    reorder_suggestion,
    transfer_suggestions,
)

# The domain's one formula for the reorder point (fixed, or lead-time forecast + safety stock); transfers
# need the number itself, and computing it a second time here could drift from the reorder suggestions.
from hub.domain.replenishment_policy import reorder_point as domain_reorder_point
from hub.domain.store_hours import StoreHours
from hub.errors import HubError
from hub.inventory.models import LedgerRow, StockPolicy, StockPosition

# The longest history fitted on: a year, each weekday seen 52 times. Measured on a retailer's sales
# (bench/forecast_eval.py), a year's history forecast far better than eight weeks, whose weekday indexes
# start from too few weeks; the model's smoothing, not a short window, is what follows a change of demand.
MAX_HISTORY_DAYS: Final = 366
# A store with four weeks of cover holds more than a typical order cycle; it can spare some.
DEFAULT_OVERSTOCK_DAYS: Final = 28.0
# About an hour's drive for a store employee or a delivery van.
DEFAULT_MAX_DISTANCE_KM: Final = 50.0
# The IUGG mean Earth radius; a sphere is within 0.5% of the ellipsoid, plenty for "is it near".
EARTH_RADIUS_KM: Final = 6371.0088
SALE: Final = MovementKind.SALE.value
# Fitted models kept by their exact history: the closed days before today do not change during the day (but for
# a late event, which changes the history and so the key), so a store's suggestions asked for again reuse them.
# A year's fit chooses its smoothing constants from a grid, about 8 ms a SKU; 20,000 entries are a few tens of MB.
FITTED_MODELS_KEPT: Final = 20_000


class UnknownStoreError(HubError, LookupError):
    """No store profile has this id."""


class UnknownSkuError(HubError, LookupError):
    """The catalog has no SKU with this id."""


# --------------------------------------------------------------------------- pure helpers


def local_day_starts(zone: tzinfo, first_day: date, days: int) -> list[datetime]:
    """The UTC instants at which ``days`` local days from ``first_day`` begin, and the end of the last one.

    A midnight skipped by a DST change is read as zoneinfo reads it (fold=0), i.e. the instant of the change.
    """
    return [
        datetime.combine(first_day + timedelta(days=offset), time(0), tzinfo=zone).astimezone(UTC)
        for offset in range(days + 1)
    ]


def history_window(today: date, history_days: int) -> tuple[date, date]:
    """The first and last local day of the history: the ``history_days`` closed days before ``today``."""
    if history_days < 1:
        raise ValueError(f"history_days must be at least 1, got {history_days}")
    return today - timedelta(days=history_days), today - timedelta(days=1)


def history_days_held(today: date, first_sale_day: date | None, *, max_days: int = MAX_HISTORY_DAYS) -> int:
    """How many closed days of history to fit on: all the ledger holds since the first sale, up to ``max_days``.

    At least 1 (a store without sales yet has an empty one-day window). Longer is better for the model up to
    about a year: more weeks to learn each weekday from, while a year-old season no longer says much.
    """
    if max_days < 1:
        raise ValueError(f"max_days must be at least 1, got {max_days}")
    if first_sale_day is None:
        return 1
    return max(1, min((today - first_sale_day).days, max_days))


def demand_per_day(net_ledger: Mapping[date, int]) -> dict[date, int]:
    """Units demanded per local day from the ledger's net sale quantity of each day (sales negative).

    A positive sale row is a return or a cancellation. The ledger does not say which sale it undoes, so the
    rule is by day: it first undoes the day's own sales; what it returns beyond them undoes the previous
    day's (yesterday's order cancelled this morning), down to 0; anything still left is dropped, as a return
    is not negative demand and must not lower a later, unrelated day.
    """
    demand = {day: -net for day, net in net_ledger.items()}
    for day in sorted(demand):
        if demand[day] >= 0:
            continue
        previous = day - timedelta(days=1)
        if demand.get(previous, 0) > 0:
            demand[previous] = max(demand[previous] + demand[day], 0)
        demand[day] = 0
    return demand


def sales_series(
    daily: dict[date, int], *, first_day: date, last_day: date, sold_before: bool
) -> list[tuple[date, int]]:
    """The (local day, units) history a model is fitted on; empty when nothing was ever sold.

    It runs from ``first_day`` when the SKU sold before the window (the quiet days at its start are
    demand too), else from the SKU's first day with a sale, through ``last_day``, with a 0 for every day
    without sales (``fit`` fills the gaps between sales, but not the quiet days before or after them).
    """
    days_with_sales = [day for day in daily if first_day <= day <= last_day]
    if sold_before:
        start = first_day
    elif days_with_sales:
        start = min(days_with_sales)
    else:
        return []
    return [
        (start + timedelta(days=offset), daily.get(start + timedelta(days=offset), 0))
        for offset in range((last_day - start).days + 1)
    ]


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """The great-circle distance between two (latitude, longitude) points in decimal degrees, in km."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def store_hours_of(profile: StoreProfile) -> StoreHours | None:
    """The store's opening hours for the stock-out time; None when the profile gives no open time at all.

    A profile whose every day is blank is taken as hours not given rather than a store that never opens
    (which would never sell out): the demand is then spread over whole days.
    """
    hours = OpeningHours.from_json(profile.opening_hours)
    if not any(hours.days):
        return None
    return hours.to_store_hours(profile.timezone)


# --------------------------------------------------------------------------- sales and models


def _day_index(at: InstrumentedAttribute[datetime], starts: Sequence[datetime], lo: int, hi: int) -> ColumnElement[int]:
    """The day ``at`` falls in, among days ``lo`` to ``hi - 1`` (day d is ``starts[d] <= at < starts[d + 1]``)."""
    if hi - lo == 1:
        return literal_column(str(lo), Integer)
    mid = (lo + hi) // 2
    return case((at < starts[mid], _day_index(at, starts, lo, mid)), else_=_day_index(at, starts, mid, hi))


def _sku_scope(column: InstrumentedAttribute[str], store_id: str, sku_id: str | None) -> ColumnElement[bool]:
    """One SKU, or the SKUs the store has a stock policy for."""
    if sku_id is not None:
        return column == sku_id
    return column.in_(select(StockPolicy.sku_id).where(StockPolicy.store_id == store_id))


async def _daily_sales(
    session: AsyncSession, *, store_id: str, first_day: date, starts: Sequence[datetime], scope: ColumnElement[bool]
) -> dict[str, dict[date, int]]:
    """The ledger's net sale quantity per SKU and local day (sales negative, returns positive), as stored."""
    day = _day_index(LedgerRow.at, starts, 0, len(starts) - 1)
    rows = (
        select(LedgerRow.sku_id.label("sku_id"), day.label("day"), LedgerRow.quantity.label("quantity"))
        .where(
            LedgerRow.store_id == store_id,
            LedgerRow.kind == SALE,
            LedgerRow.at >= starts[0],
            LedgerRow.at < starts[-1],
            scope,
        )
        .subquery()
    )
    # Grouped outside the subquery: PostgreSQL would not match a GROUP BY of the CASE to the SELECT's,
    # each carrying its own bound parameters.
    query = select(rows.c.sku_id, rows.c.day, func.sum(rows.c.quantity)).group_by(rows.c.sku_id, rows.c.day)
    sold: dict[str, dict[date, int]] = {}
    for sku_id, index, total in await session.execute(query):
        sold.setdefault(sku_id, {})[first_day + timedelta(days=int(index))] = int(total)
    return sold


async def daily_sales(
    session: AsyncSession,
    *,
    store_id: str,
    zone: tzinfo,
    first_day: date,
    last_day: date,
    sku_id: str | None = None,
) -> dict[str, dict[date, int]]:
    """Net units sold per SKU (or of one SKU) and local day, from ``first_day`` through ``last_day``.

    Only days with sale rows are present; returns make a day's net smaller, even negative.
    """
    days = (last_day - first_day).days + 1
    if days < 1:
        return {}
    scope = LedgerRow.sku_id == sku_id if sku_id is not None else true()
    starts = local_day_starts(zone, first_day, days)
    net_ledger = await _daily_sales(session, store_id=store_id, first_day=first_day, starts=starts, scope=scope)
    return {sku: {day: -net for day, net in per_day.items()} for sku, per_day in net_ledger.items()}


async def _sold_before(session: AsyncSession, *, store_id: str, before: datetime, sku_id: str | None) -> set[str]:
    """Which SKUs in scope the store sold before ``before`` (one index probe per SKU, not a scan of the past)."""
    earlier = aliased(LedgerRow)
    # Without sku_id the subquery is correlated with the store's stock policies: one probe per policy.
    same_sku = earlier.sku_id == (StockPolicy.sku_id if sku_id is None else sku_id)
    sold = (
        select(earlier.id)
        .where(earlier.store_id == store_id, same_sku, earlier.kind == SALE, earlier.at < before)
        .exists()
    )
    if sku_id is not None:
        return {sku_id} if await session.scalar(select(sold)) else set()
    query = select(StockPolicy.sku_id).where(StockPolicy.store_id == store_id, sold)
    return set((await session.scalars(query)).all())


async def first_sale_day(session: AsyncSession, *, store_id: str, zone: tzinfo) -> date | None:
    """The store's local day of its earliest sale in the ledger (one index probe); None before any sale."""
    first = await session.scalar(
        select(func.min(LedgerRow.at)).where(LedgerRow.store_id == store_id, LedgerRow.kind == SALE)
    )
    return None if first is None else first.astimezone(zone).date()


async def chosen_history_days(
    session: AsyncSession, *, store_id: str, zone: tzinfo, today: date, history_days: int | None
) -> int:
    """``history_days`` when given, else as many closed days as the store's ledger holds, up to the limit."""
    if history_days is not None:
        return history_days
    return history_days_held(today, await first_sale_day(session, store_id=store_id, zone=zone))


async def demand_models(
    session: AsyncSession,
    *,
    store_id: str,
    zone: tzinfo,
    today: date,
    history_days: int | None = None,
    sku_id: str | None = None,
) -> dict[str, DemandModel]:
    """Demand models fitted on the closed local days before ``today``, by SKU; SKUs never sold have none.

    The SKUs are those the store has a stock policy for, or ``sku_id`` alone. The history is ``history_days``
    long, or (None) as long as the ledger holds, up to :data:`MAX_HISTORY_DAYS`.
    """
    history_days = await chosen_history_days(
        session, store_id=store_id, zone=zone, today=today, history_days=history_days
    )
    first_day, last_day = history_window(today, history_days)
    starts = local_day_starts(zone, first_day, history_days)
    scope = _sku_scope(LedgerRow.sku_id, store_id, sku_id)
    sold = await _daily_sales(session, store_id=store_id, first_day=first_day, starts=starts, scope=scope)
    sold_before = await _sold_before(session, store_id=store_id, before=starts[0], sku_id=sku_id)
    histories = {
        sku: tuple(
            sales_series(
                demand_per_day(sold.get(sku, {})),
                first_day=first_day,
                last_day=last_day,
                sold_before=sku in sold_before,
            )
        )
        for sku in sorted(sold.keys() | sold_before)
    }
    # Fitting a store's SKUs takes seconds for thousands of them: off the event loop, which also runs the ingest.
    fitted = await asyncio.to_thread(_fit_all, histories)
    return {sku: model for sku, model in fitted.items() if model is not None}


def _fit_all(histories: Mapping[str, tuple[tuple[date, int], ...]]) -> dict[str, DemandModel | None]:
    return {sku: fitted_model(history) for sku, history in histories.items()}


@functools.lru_cache(maxsize=FITTED_MODELS_KEPT)
def fitted_model(history: tuple[tuple[date, int], ...]) -> DemandModel | None:
    """``fit`` of a (local day, units) history, remembered: the fit is pure, the same history gives the same model."""
    return fit(history)


# --------------------------------------------------------------------------- store data


@dataclass(frozen=True, slots=True, kw_only=True)
class _PolicyView:
    """A stored stock policy with what it needs from the catalog and the stock positions."""

    policy: StockPolicy
    sku: Sku | None
    on_hand: int


async def _policies(session: AsyncSession, store_id: str, sku_id: str | None) -> list[_PolicyView]:
    """The store's stock policies (or the one of ``sku_id``) by SKU, with the SKU and on hand (0 if none)."""
    query = (
        select(StockPolicy, Sku, StockPosition.on_hand)
        .outerjoin(Sku, Sku.sku_id == StockPolicy.sku_id)
        .outerjoin(
            StockPosition,
            (StockPosition.store_id == StockPolicy.store_id) & (StockPosition.sku_id == StockPolicy.sku_id),
        )
        .where(StockPolicy.store_id == store_id)
        .order_by(StockPolicy.sku_id)
    )
    if sku_id is not None:
        query = query.where(StockPolicy.sku_id == sku_id)
    return [
        _PolicyView(policy=policy, sku=sku, on_hand=on_hand or 0)
        for policy, sku, on_hand in (await session.execute(query)).all()
    ]


def _reorder_policy(view: _PolicyView, *, pack_size: int) -> ReorderPolicy:
    """The domain's policy; ValueError when the stored one is inconsistent (written past the import's checks)."""
    return ReorderPolicy(
        max_stock=view.policy.max_stock,
        pack_size=pack_size,
        reorder_point=view.policy.reorder_point,
        lead_time_days=view.policy.lead_time_days,
        safety_stock=view.policy.safety_stock,
    )


async def _profile(session: AsyncSession, store_id: str) -> StoreProfile:
    profile = await session.get(StoreProfile, store_id)
    if profile is None:
        raise UnknownStoreError(f"no store profile {store_id!r}")
    return profile


# --------------------------------------------------------------------------- reorder suggestions


@dataclass(frozen=True, slots=True, kw_only=True)
class ReorderLine:
    """A suggested order of one SKU, with the forecast behind it."""

    sku_id: str
    name: str
    pack_size: int
    on_hand: int
    on_order: int
    suggestion: ReorderSuggestion
    model: DemandModel | None  # None: never sold in the store
    forecast_week: tuple[float, ...]  # units a day from today, 7 days; empty without a model
    predicted_stockout: datetime | None  # store local time; None without demand within a year


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreReorderReport:
    """The reorder suggestions of one store: only SKUs at or below their reorder point."""

    store_id: str
    timezone: str
    generated_at: datetime
    today: date  # the store's local date
    history_first_day: date
    history_last_day: date
    policies_checked: int
    lines: tuple[ReorderLine, ...]
    problems: tuple[str, ...]  # stored policies that could not be used, in words


async def store_reorder_suggestions(
    session: AsyncSession, store_id: str, *, now: datetime, history_days: int | None = None
) -> StoreReorderReport:
    """What the store should order now, by SKU; UnknownStoreError when it has no profile.

    ``history_days`` None: the history is as long as the store's ledger holds, up to :data:`MAX_HISTORY_DAYS`.
    """
    profile = await _profile(session, store_id)
    zone = ZoneInfo(profile.timezone)
    now_local = now.astimezone(zone)
    today = now_local.date()
    history_days = await chosen_history_days(
        session, store_id=store_id, zone=zone, today=today, history_days=history_days
    )
    first_day, last_day = history_window(today, history_days)
    hours = store_hours_of(profile)
    views = await _policies(session, store_id, None)
    models = await demand_models(session, store_id=store_id, zone=zone, today=today, history_days=history_days)
    lines: list[ReorderLine] = []
    problems: list[str] = []
    for view in views:
        sku_id = view.policy.sku_id
        if view.sku is None:
            problems.append(f"stock policy of SKU {sku_id!r}: the SKU is not in the catalog")
            continue
        try:
            policy = _reorder_policy(view, pack_size=view.sku.pack_size)
        except ValueError as err:
            problems.append(f"stock policy of SKU {sku_id!r}: {err}")
            continue
        model = models.get(sku_id)
        suggestion = reorder_suggestion(
            on_hand=view.on_hand, on_order=view.policy.on_order, policy=policy, model=model, today=today
        )
        if suggestion is None:
            continue
        lines.append(
            ReorderLine(
                sku_id=sku_id,
                name=view.sku.name,
                pack_size=view.sku.pack_size,
                on_hand=view.on_hand,
                on_order=view.policy.on_order,
                suggestion=suggestion,
                model=model,
                forecast_week=() if model is None else tuple(forecast(model, today, DAYS_PER_WEEK)),
                predicted_stockout=None
                if model is None
                else predicted_stockout(view.on_hand, model, now_local, hours=hours),
            )
        )
    return StoreReorderReport(
        store_id=store_id,
        timezone=profile.timezone,
        generated_at=now,
        today=today,
        history_first_day=first_day,
        history_last_day=last_day,
        policies_checked=len(views),
        lines=tuple(lines),
        problems=tuple(problems),
    )


# --------------------------------------------------------------------------- transfers


@dataclass(frozen=True, slots=True, kw_only=True)
class SkuTransfer:
    """A suggested transfer of one SKU between two stores."""

    sku_id: str
    transfer: TransferSuggestion


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainTransferReport:
    """Transfers between near stores of the chain, and which stores could not take part and why."""

    generated_at: datetime
    sku_id: str | None  # None: every SKU with stock policies
    overstock_days: float
    max_distance_km: float
    whole_packs: bool
    transfers: tuple[SkuTransfer, ...]
    stores_without_location: tuple[str, ...]  # no coordinates: not candidates
    problems: tuple[str, ...]


def near_pairs(locations: dict[str, tuple[float, float]], max_distance_km: float) -> dict[tuple[str, str], float]:
    """Distances (km, to 0.1 km) of the store pairs at most ``max_distance_km`` apart, each pair once."""
    stores = sorted(locations)
    near: dict[tuple[str, str], float] = {}
    for index, a in enumerate(stores):
        for b in stores[index + 1 :]:
            # Rounded first, so the threshold applies to the distance the reasons show.
            distance = round(haversine_km(locations[a], locations[b]), 1)
            if distance <= max_distance_km:
                near[(a, b)] = distance
    return near


async def chain_transfer_suggestions(
    session: AsyncSession,
    *,
    now: datetime,
    sku_id: str | None = None,
    overstock_days: float = DEFAULT_OVERSTOCK_DAYS,
    max_distance_km: float = DEFAULT_MAX_DISTANCE_KM,
    whole_packs: bool = False,
    history_days: int | None = None,
) -> ChainTransferReport:
    """Transfers from overstocked stores to near short ones, for one SKU or every SKU; UnknownSkuError.

    A store takes part in a SKU's transfers when it has coordinates, a stock policy for the SKU (its
    reorder point and max decide what is short and what is spare) and another such store within reach.
    Units move one by one, or in the SKU's packs with ``whole_packs``.
    """
    if sku_id is not None and await session.get(Sku, sku_id) is None:
        raise UnknownSkuError(f"no SKU {sku_id!r}")
    profiles = list((await session.scalars(select(StoreProfile).order_by(StoreProfile.store_id))).all())
    locations = {
        p.store_id: (p.latitude, p.longitude) for p in profiles if p.latitude is not None and p.longitude is not None
    }
    without_location = tuple(p.store_id for p in profiles if p.store_id not in locations)
    zones = {p.store_id: p.timezone for p in profiles}
    distances = near_pairs(locations, max_distance_km)
    # A store with no neighbour within reach can be in no transfer: its sales are not even read.
    candidates = sorted({store for pair in distances for store in pair})
    stocks: dict[str, list[StoreStock]] = {}
    pack_sizes: dict[str, int] = {}
    problems: list[str] = []
    todays: list[date] = []
    for store_id in candidates:
        zone = ZoneInfo(zones[store_id])
        today = now.astimezone(zone).date()
        todays.append(today)
        views = await _policies(session, store_id, sku_id)
        models = await demand_models(
            session, store_id=store_id, zone=zone, today=today, history_days=history_days, sku_id=sku_id
        )
        for view in views:
            sku = view.sku
            if sku is None:
                problems.append(
                    f"{store_id}: stock policy of SKU {view.policy.sku_id!r}: the SKU is not in the catalog"
                )
                continue
            try:
                policy = _reorder_policy(view, pack_size=sku.pack_size)
            except ValueError as err:
                problems.append(f"{store_id}: stock policy of SKU {sku.sku_id!r}: {err}")
                continue
            model = models.get(sku.sku_id)
            reorder_point, _ = domain_reorder_point(policy, model, today)
            pack_sizes[sku.sku_id] = sku.pack_size if whole_packs else 1
            stocks.setdefault(sku.sku_id, []).append(
                StoreStock(
                    store_id=store_id,
                    on_hand=view.on_hand,
                    on_order=view.policy.on_order,
                    reorder_point=reorder_point,
                    max_stock=policy.max_stock,
                    model=model,
                )
            )
    # Near stores share a local date except around midnight across a zone border; the earlier one then
    # counts the rest of its day in the cover, the cautious side for a donor.
    cover_day = min(todays, default=now.date())
    transfers = [
        SkuTransfer(sku_id=sku, transfer=transfer)
        for sku in sorted(stocks)
        if len(stocks[sku]) > 1
        for transfer in transfer_suggestions(
            stocks[sku],
            distances_km=distances,
            policy=TransferPolicy(
                overstock_days=overstock_days, max_distance_km=max_distance_km, pack_size=pack_sizes[sku]
            ),
            today=cover_day,
        )
    ]
    return ChainTransferReport(
        generated_at=now,
        sku_id=sku_id,
        overstock_days=overstock_days,
        max_distance_km=max_distance_km,
        whole_packs=whole_packs,
        transfers=tuple(transfers),
        stores_without_location=without_location,
        problems=tuple(problems),
    )
