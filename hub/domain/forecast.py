"""Daily demand of one SKU in one store, forecast from its sales history.

The model is simple exponential smoothing of a level with multiplicative weekday seasonality
(Holt-Winters without a trend): the forecast for a day is ``level * index[weekday]``, the seven
indexes averaging 1. Days are the store's local calendar days; the caller buckets sales by them.

- A day without sales is a zero, not a missing value: gaps in the history are filled with zeros.
- Returns are not negative demand: a day whose net quantity is below zero counts as zero.
- Fewer than :data:`MIN_SEASONAL_DAYS` days: no seasonality, the level is the plain mean of the
  days seen (smoothing from a single first day would be noisier than the mean). No history: no model.
- Intermittent demand (a sale on fewer than half the days, by a smoothed share of sale days): a
  weekday pattern learnt from a few scattered sales is noise, and dividing a sale by a weekday's small
  index inflates the level. So the level is then plain exponential smoothing of the daily quantity,
  zeros included (the mean rate, which is what days of cover need), and the forecast is flat; the
  indexes keep learning and apply again once the item sells on most days. The seasonal update is
  bounded too: an index never exceeds 7 (a whole week's demand on one day).

:func:`update` folds in one more day, and is exactly what :func:`fit` does day by day, so the hub can
keep a model per store and SKU and update it nightly without refitting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Final

DAYS_PER_WEEK: Final = 7
# Two full weeks give each weekday two observations to start its index from.
MIN_SEASONAL_DAYS: Final = 2 * DAYS_PER_WEEK
DEFAULT_ALPHA: Final = 0.2
DEFAULT_GAMMA: Final = 0.1
# Indexes are non-negative and average 1, so none can exceed 7 (a whole week's demand on one weekday);
# a day selling more than that is a spike, and it may only push its index to that bound.
_MAX_INDEX: Final = float(DAYS_PER_WEEK)
# Below this smoothed share of days with a sale, demand is intermittent and the forecast flat. Half is a
# judgement: a weekday pattern from fewer sale days than zero days is mostly noise, while a store
# closed two days a week still sells on 5 of 7 days.
INTERMITTENT_BELOW: Final = 0.5
# A weekday selling under a tenth of an average day (a store closed on Sundays) says little about the
# level: dividing its sales by a tiny index would turn one odd sale into a huge level.
_MIN_INFORMATIVE_INDEX: Final = 0.1
_FLAT: Final[tuple[float, ...]] = (1.0,) * DAYS_PER_WEEK


@dataclass(frozen=True, slots=True, kw_only=True)
class DemandModel:
    """The smoothed daily demand of one SKU in one store, up to and including ``last_day``."""

    level: float
    weekday_indexes: tuple[float, ...]  # Monday first, as date.weekday(); mean 1
    alpha: float
    gamma: float
    last_day: date
    days_observed: int
    sale_day_share: float = 1.0  # smoothed share of days with a sale (over the warmup: the plain share)
    # The daily quantities seen so far while the history is shorter than MIN_SEASONAL_DAYS: the
    # seasonal start needs them, so an update on day 14 gives the same model as a fit on 14 days.
    warmup_sales: tuple[float, ...] = ()

    @property
    def is_seasonal(self) -> bool:
        """Whether the weekday indexes come from the data (enough history) rather than being flat."""
        return self.days_observed >= MIN_SEASONAL_DAYS

    @property
    def is_intermittent(self) -> bool:
        """Whether the item sells on too few days for a weekday pattern to mean anything."""
        return self.sale_day_share < INTERMITTENT_BELOW

    def daily_demand(self, day: date) -> float:
        """The forecast quantity for one day."""
        if self.is_intermittent:
            return self.level
        return self.level * self.weekday_indexes[day.weekday()]


def fit(
    daily_sales: Sequence[tuple[date, Decimal | int]],
    *,
    alpha: float = DEFAULT_ALPHA,
    gamma: float = DEFAULT_GAMMA,
) -> DemandModel | None:
    """A demand model from (local day, quantity) pairs in any order, summed per day; None without history."""
    _check_smoothing(alpha=alpha, gamma=gamma)
    if not daily_sales:
        return None
    totals: dict[date, Decimal] = {}
    for day, quantity in daily_sales:
        totals[day] = totals.get(day, Decimal(0)) + Decimal(quantity)
    first_day = min(totals)
    model = DemandModel(
        level=0.0,
        weekday_indexes=_FLAT,
        alpha=alpha,
        gamma=gamma,
        last_day=first_day - timedelta(days=1),
        days_observed=0,
    )
    day = first_day
    for _ in range((max(totals) - first_day).days + 1):
        model = _observe(model, float(totals.get(day, 0)))
        day += timedelta(days=1)
    return model


def update(model: DemandModel, day: date, quantity: Decimal | int) -> DemandModel:
    """The model with one more closed local day folded in; skipped days since ``last_day`` count as zero."""
    if day <= model.last_day:
        raise ValueError(f"{day} is already in the model (last day {model.last_day}); refit to change the past")
    for _ in range((day - model.last_day).days - 1):
        model = _observe(model, 0.0)
    return _observe(model, float(quantity))


def forecast(model: DemandModel, start: date, days: int) -> list[float]:
    """The forecast quantity for each of ``days`` local days from ``start``."""
    if days < 0:
        raise ValueError(f"days must not be negative, got {days}")
    return [model.daily_demand(start + timedelta(days=offset)) for offset in range(days)]


def _check_smoothing(*, alpha: float, gamma: float) -> None:
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")


def _observe(model: DemandModel, quantity: float) -> DemandModel:
    """Fold in the day after ``model.last_day``."""
    day = model.last_day + timedelta(days=1)
    demand = max(quantity, 0.0)
    if model.days_observed + 1 < MIN_SEASONAL_DAYS:
        warmup = (*model.warmup_sales, demand)
        return dataclasses.replace(
            model,
            level=sum(warmup) / len(warmup),
            last_day=day,
            days_observed=len(warmup),
            sale_day_share=_sale_day_share(warmup),
            warmup_sales=warmup,
        )
    if model.days_observed + 1 == MIN_SEASONAL_DAYS:
        return _start_seasonal(model, (*model.warmup_sales, demand), day)
    level, indexes = _smooth(model, day.weekday(), demand)
    return dataclasses.replace(
        model,
        level=level,
        weekday_indexes=indexes,
        last_day=day,
        days_observed=model.days_observed + 1,
        sale_day_share=model.alpha * (demand > 0) + (1 - model.alpha) * model.sale_day_share,
    )


def _start_seasonal(model: DemandModel, first_days: tuple[float, ...], last_day: date) -> DemandModel:
    """Level and indexes from the first two weeks: overall mean, and each weekday's mean over it."""
    level = sum(first_days) / len(first_days)
    indexes = _FLAT
    if level > 0:
        first_day = last_day - timedelta(days=len(first_days) - 1)
        per_weekday = [0.0] * DAYS_PER_WEEK
        for offset, demand in enumerate(first_days):
            per_weekday[(first_day + timedelta(days=offset)).weekday()] += demand
        weeks = len(first_days) / DAYS_PER_WEEK
        indexes = _normalised(tuple(total / weeks / level for total in per_weekday))
    return dataclasses.replace(
        model,
        level=level,
        weekday_indexes=indexes,
        last_day=last_day,
        days_observed=len(first_days),
        sale_day_share=_sale_day_share(first_days),
        warmup_sales=(),
    )


def _smooth(model: DemandModel, weekday: int, demand: float) -> tuple[float, tuple[float, ...]]:
    """One Holt-Winters step (no trend) for a day of the given weekday; plain smoothing when intermittent."""
    index = model.weekday_indexes[weekday]
    level = model.level
    if model.is_intermittent:
        level = model.alpha * demand + (1 - model.alpha) * level
    elif index >= _MIN_INFORMATIVE_INDEX:
        level = model.alpha * (demand / index) + (1 - model.alpha) * level
    if level <= 0:
        return level, model.weekday_indexes  # nothing sold for long: no ratio to learn a weekday from
    ratio = min(demand / level, _MAX_INDEX)
    indexes = list(model.weekday_indexes)
    indexes[weekday] = model.gamma * ratio + (1 - model.gamma) * index
    return level, _normalised(tuple(indexes))


def _sale_day_share(days: tuple[float, ...]) -> float:
    return sum(1 for demand in days if demand > 0) / len(days)


def _normalised(indexes: tuple[float, ...]) -> tuple[float, ...]:
    """The indexes scaled to average 1 (flat if they are all zero)."""
    total = sum(indexes)
    if total <= 0:
        return _FLAT
    return tuple(index * DAYS_PER_WEEK / total for index in indexes)
