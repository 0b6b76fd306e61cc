"""Replenishment of one SKU: days of cover, predicted stock-out, min/max reorder and store-to-store transfers.

Pure functions over a :class:`~hub.domain.forecast.DemandModel` and stock quantities in whole units;
the hub reads the ledger and the catalog and calls these. See ``docs/replenishment.md`` for formulas.

Min/max here treats ``max_stock`` as a limit (the room on the shelf and in the backroom), so an
order is the number of whole packs that brings the inventory position closest to max *without
passing it*, never more. When not even one pack fits, the suggestion says so with a quantity of 0
rather than overfilling or staying silent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final

from hub.domain.forecast import DAYS_PER_WEEK, DemandModel, forecast
from hub.domain.store_hours import StoreHours, open_periods

DEFAULT_HORIZON_DAYS: Final = 366
# Stock for more weeks than this is unlimited for any decision; it also keeps a near-zero demand from
# overflowing the arithmetic.
_UNLIMITED_WEEKS: Final = 1e9
# Forecast sums are floats; a lead-time demand of 30.000000000004 units must not become a reorder point of 31.
_UNIT_ROUNDING_DIGITS: Final = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class ReorderPolicy:
    """Min/max rules of one SKU in one store: a fixed reorder point, or lead time x forecast + safety stock."""

    max_stock: int
    pack_size: int = 1
    reorder_point: int | None = None  # fixed; None: computed from the forecast
    lead_time_days: int = 0
    safety_stock: int = 0

    def __post_init__(self) -> None:
        if self.pack_size < 1:
            raise ValueError(f"pack_size must be at least 1, got {self.pack_size}")
        if self.max_stock < 0 or self.lead_time_days < 0 or self.safety_stock < 0:
            raise ValueError("max_stock, lead_time_days and safety_stock must not be negative")
        if self.reorder_point is not None and self.reorder_point >= self.max_stock:
            raise ValueError(f"reorder_point {self.reorder_point} must be below max_stock {self.max_stock}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReorderSuggestion:
    """How much to order, and why, in words a buyer can check."""

    quantity: int  # a whole number of packs; 0 when not even one pack fits under max
    packs: int
    inventory_position: int  # on hand + on order
    reorder_point: int
    max_stock: int
    days_of_cover: float | None  # None without a forecast
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreStock:
    """One store's stock and limits of the SKU being balanced."""

    store_id: str
    on_hand: int
    reorder_point: int
    max_stock: int
    model: DemandModel | None  # None: the store never sold it, so its stock covers forever
    on_order: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferPolicy:
    """When a store counts as overstocked, how far stock may travel, and the unit it travels in."""

    overstock_days: float
    max_distance_km: float
    pack_size: int = 1

    def __post_init__(self) -> None:
        if self.pack_size < 1:
            raise ValueError(f"pack_size must be at least 1, got {self.pack_size}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferSuggestion:
    """Move ``quantity`` units from an overstocked store to a near one that is short."""

    from_store: str
    to_store: str
    quantity: int
    packs: int
    distance_km: float
    reasons: tuple[str, ...]


def days_of_cover(on_hand: int, model: DemandModel, today: date) -> float:
    """How many days, from the start of ``today``, the stock lasts on the forecast; ``inf`` without demand."""
    if on_hand <= 0:
        return 0.0
    week = forecast(model, today, DAYS_PER_WEEK)
    week_total = sum(week)
    if week_total <= 0:
        return math.inf
    weeks_of_stock = on_hand / week_total
    if weeks_of_stock >= _UNLIMITED_WEEKS:
        return math.inf
    # Whole weeks by division (a slow seller may have years of stock), then the last part day by day.
    weeks = math.floor(weeks_of_stock)
    remaining = on_hand - weeks * week_total
    cover = float(weeks * DAYS_PER_WEEK)
    for demand in week:
        if remaining <= 0:
            break
        if demand >= remaining:
            return cover + remaining / demand
        remaining -= demand
        cover += 1
    return cover


def predicted_stockout(
    on_hand: int,
    model: DemandModel,
    now_local: datetime,
    *,
    hours: StoreHours | None = None,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
) -> datetime | None:
    """When the last unit sells on the forecast, in ``now_local``'s zone; None if not within the horizon.

    Each local day's forecast sells evenly over the time the store is open that day (``hours``), or over
    the whole day without hours; so nothing sells while the store is closed.
    """
    local_zone = now_local.tzinfo
    if local_zone is None or now_local.utcoffset() is None:
        raise ValueError(f"{now_local.isoformat()} is naive; pass the store's local time with its zone")
    if on_hand <= 0:
        return now_local
    now = now_local.astimezone(UTC)
    zone: tzinfo = hours.zone if hours is not None else local_zone
    today = now_local.astimezone(zone).date()
    remaining = float(on_hand)
    for offset in range(horizon_days):
        day = today + timedelta(days=offset)
        periods = _selling_periods(day, zone, hours, not_before=now)
        demand = model.daily_demand(day) * _share(periods, _selling_periods(day, zone, hours, not_before=None))
        if demand <= 0:
            continue
        if demand >= remaining:
            return _instant_after(periods, remaining / demand).astimezone(local_zone)
        remaining -= demand
    return None


def reorder_suggestion(
    *,
    on_hand: int,
    policy: ReorderPolicy,
    model: DemandModel | None,
    today: date,
    on_order: int = 0,
) -> ReorderSuggestion | None:
    """A min/max order when on hand plus on order is at or below the reorder point, else None."""
    position = on_hand + on_order
    point, point_reason = reorder_point(policy, model, today)
    if position > point:
        return None
    room = policy.max_stock - position
    packs = max(room, 0) // policy.pack_size
    quantity = packs * policy.pack_size
    reasons = [
        f"on hand {on_hand} + on order {on_order} = {position}, at or below the reorder point {point}",
        point_reason,
    ]
    if packs:
        reasons.append(
            f"order up to max {policy.max_stock}: {room} needed, {packs} pack(s) of {policy.pack_size} = {quantity}"
            f" bring it to {position + quantity} without passing max"
        )
    else:
        reasons.append(
            f"max {policy.max_stock} leaves room for {room}, less than one pack of {policy.pack_size}:"
            " raise max or lower the reorder point"
        )
    cover = None if model is None else days_of_cover(on_hand, model, today)
    if cover is not None:
        reasons.append(f"on hand covers {_days(cover)} of forecast demand")
    return ReorderSuggestion(
        quantity=quantity,
        packs=packs,
        inventory_position=position,
        reorder_point=point,
        max_stock=policy.max_stock,
        days_of_cover=cover,
        reasons=tuple(reasons),
    )


def transfer_suggestions(
    stores: Sequence[StoreStock],
    *,
    distances_km: Mapping[tuple[str, str], float],
    policy: TransferPolicy,
    today: date,
) -> list[TransferSuggestion]:
    """Transfers of one SKU from overstocked stores to near stores at or below their reorder point.

    Short stores are served most urgent first (fewest days of cover, then store id), each from the
    nearest donors first (then store id); a donor keeps more than its own reorder point, a receiver
    gets no more than brings it to its max, and everything moves in whole packs. Pairs missing from
    ``distances_km`` (either order) are not near.
    """
    cover = {store.store_id: _cover(store, today) for store in stores}
    spare = {
        store.store_id: _whole_packs(store.on_hand - store.reorder_point - 1, policy.pack_size)
        for store in stores
        if cover[store.store_id] > policy.overstock_days
    }
    short = sorted(
        (store for store in stores if store.on_hand + store.on_order <= store.reorder_point),
        key=lambda store: (cover[store.store_id], store.store_id),
    )
    by_id = {store.store_id: store for store in stores}
    given = dict.fromkeys(spare, 0)
    suggestions: list[TransferSuggestion] = []
    for receiver in short:
        position = receiver.on_hand + receiver.on_order
        wanted = _whole_packs(receiver.max_stock - position, policy.pack_size)
        donors = sorted(
            (distance, donor_id)
            for donor_id in spare
            if donor_id != receiver.store_id
            and (distance := _distance(distances_km, donor_id, receiver.store_id)) is not None
            and distance <= policy.max_distance_km
        )
        for distance, donor_id in donors:
            quantity = min(wanted, spare[donor_id])
            if quantity <= 0:
                continue
            donor = by_id[donor_id]
            spare[donor_id] -= quantity
            given[donor_id] += quantity
            wanted -= quantity
            suggestions.append(
                TransferSuggestion(
                    from_store=donor_id,
                    to_store=receiver.store_id,
                    quantity=quantity,
                    packs=quantity // policy.pack_size,
                    distance_km=distance,
                    reasons=(
                        f"{donor_id} has {_days(cover[donor_id])} of cover, above the overstock threshold of"
                        f" {_days(policy.overstock_days)}",
                        f"{receiver.store_id} has {receiver.on_hand} on hand + {receiver.on_order} on order = "
                        f"{position}, at or below its reorder point {receiver.reorder_point}",
                        f"{distance:g} km apart, within {policy.max_distance_km:g} km",
                        f"{donor_id} keeps {donor.on_hand - given[donor_id]}, above its reorder point"
                        f" {donor.reorder_point}",
                    ),
                )
            )
    return suggestions


def reorder_point(policy: ReorderPolicy, model: DemandModel | None, today: date) -> tuple[int, str]:
    """The reorder point and the words explaining where it comes from."""
    if policy.reorder_point is not None:
        return policy.reorder_point, f"fixed reorder point {policy.reorder_point}"
    if model is None:
        return policy.safety_stock, (
            f"reorder point {policy.safety_stock} = safety stock only: no sales history to forecast lead-time demand"
        )
    lead_time_demand = sum(forecast(model, today, policy.lead_time_days))
    point = math.ceil(round(lead_time_demand + policy.safety_stock, _UNIT_ROUNDING_DIGITS))
    return point, (
        f"reorder point {point} = forecast demand over the {policy.lead_time_days}-day lead time"
        f" ({lead_time_demand:.1f}) + safety stock {policy.safety_stock}, rounded up"
    )


def _cover(store: StoreStock, today: date) -> float:
    if store.model is None:
        return math.inf if store.on_hand > 0 else 0.0
    return days_of_cover(store.on_hand, store.model, today)


def _whole_packs(quantity: int, pack_size: int) -> int:
    return max(quantity, 0) // pack_size * pack_size


def _distance(distances_km: Mapping[tuple[str, str], float], a: str, b: str) -> float | None:
    found = distances_km.get((a, b))
    return found if found is not None else distances_km.get((b, a))


def _days(days: float) -> str:
    return "unlimited days" if math.isinf(days) else f"{days:.1f} days"


def _selling_periods(
    day: date, zone: tzinfo, hours: StoreHours | None, *, not_before: datetime | None
) -> list[tuple[datetime, datetime]]:
    """The UTC periods of a local day in which it sells (open hours, or all day), cut to start at ``not_before``."""
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    periods = [(start, end)] if hours is None else open_periods(hours, start, end)
    cut = start if not_before is None else max(start, not_before)
    return [(max(opens, cut), min(closes, end)) for opens, closes in periods if min(closes, end) > max(opens, cut)]


def _seconds(periods: Sequence[tuple[datetime, datetime]]) -> float:
    return sum((closes - opens).total_seconds() for opens, closes in periods)


def _share(part: Sequence[tuple[datetime, datetime]], whole: Sequence[tuple[datetime, datetime]]) -> float:
    """The share of a day's selling time that ``part`` is (0 for a day the store is closed)."""
    total = _seconds(whole)
    return _seconds(part) / total if total > 0 else 0.0


def _instant_after(periods: Sequence[tuple[datetime, datetime]], fraction: float) -> datetime:
    """The instant ``fraction`` of the way through the selling time of ``periods``."""
    target = fraction * _seconds(periods)
    for opens, closes in periods:
        length = (closes - opens).total_seconds()
        if target <= length:
            return opens + timedelta(seconds=target)
        target -= length
    return periods[-1][1]
