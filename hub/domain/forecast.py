"""Daily demand of one SKU in one store, forecast from its sales history.

The model is simple exponential smoothing of a level with multiplicative weekday seasonality
(Holt-Winters without a trend): the forecast for a day is ``level * index[weekday]``, the seven
indexes averaging 1. Days are the store's local calendar days; the caller buckets sales by them.

- A day without sales is a zero, not a missing value: gaps in the history are filled with zeros.
- Returns are not negative demand: a day whose net quantity is below zero counts as zero.
- Fewer than :data:`MIN_SEASONAL_DAYS` days: no seasonality, the level is the plain mean of the
  days seen (smoothing from a single first day would be noisier than the mean). No history: no model.
- The level moves by ``alpha`` times the day's error (error-correction form), not by the day divided by
  its weekday's index: dividing by a small, noisy index inflates the level (a ratio's mean exceeds the
  ratio of the means), which over-forecast real sales by a quarter.
- A robust spike guard: a day counts at most :data:`SPIKE_LIMIT` smoothed absolute errors above its
  forecast, so one huge order moves the forecast by a few normal days' worth, not by its size.
- The smoothing constants are chosen by the data unless given: the pair of a small grid with the least
  one-day-ahead error over the history.
- Intermittent demand (a sale on fewer than half the days, by a smoothed share of sale days): a
  weekday pattern learnt from a few scattered sales is noise. So the level is then plain exponential
  smoothing of the daily quantity, zeros included (the mean rate, which is what days of cover need), and
  the forecast is flat; the indexes keep learning and apply again once the item sells on most days. The
  seasonal update is bounded too: an index never exceeds 7 (a whole week's demand on one day).

:func:`update` folds in one more day with the model's constants, and is exactly what :func:`fit` with those
constants does day by day, so the hub can keep a model per store and SKU and update it nightly without refitting.
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
# The smoothing constants a fit chooses from, smoothest first (a tie goes to the smoother pair).
ALPHA_GRID: Final = (0.05, 0.1, 0.2, 0.3, 0.5)
GAMMA_GRID: Final = (0.02, 0.05, 0.1, 0.2)
# Errors of two pairs closer than this (units a day) are a tie, so rounding cannot pick the noisier pair.
_TIE: Final = 1e-9
# The spike guard: a day counts at most this many error scales above its forecast. Measured on the retailer's
# top 20 SKUs (bench/forecast_eval.py): a wholesaler's ordinary lumpy days run to 10-20 scales, and cutting them
# biases the forecast low (-24 % of demand at 4 scales, -5 % at 20, -3 % at 30), while a day of 100x on a
# steady seller is still cut to a fraction of itself.
SPIKE_LIMIT: Final = 30.0
# How fast the error scale follows the errors: about the last ten days. Fed the guarded error, it grows by at
# most 1 + 0.1 x (SPIKE_LIMIT - 1) a day, so a lasting change of demand gets through within days.
_SCALE_SMOOTHING: Final = 0.1
# Room above the forecast of at least a few units: a series that never varied has an error scale of 0 and
# would otherwise cap every day at its forecast, so it could never learn a rise.
_MIN_SPIKE_ALLOWANCE: Final = 4.0
# Indexes are non-negative and average 1, so none can exceed 7 (a whole week's demand on one weekday);
# a day selling more than that is a spike, and it may only push its index to that bound.
_MAX_INDEX: Final = float(DAYS_PER_WEEK)
# Below this smoothed share of days with a sale, demand is intermittent and the forecast flat. Half is a
# judgement: a weekday pattern from fewer sale days than zero days is mostly noise, while a store
# closed two days a week still sells on 5 of 7 days.
INTERMITTENT_BELOW: Final = 0.5
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
    # Smoothed absolute one-day-ahead error, in units: how far a normal day strays from the forecast. The spike
    # guard caps a day at SPIKE_LIMIT of these above the forecast before it may move the level.
    error_scale: float = 0.0
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
    alpha: float | None = None,
    gamma: float | None = None,
) -> DemandModel | None:
    """A demand model from (local day, quantity) pairs in any order, summed per day; None without history.

    A smoothing constant not given is chosen by the data: the pair from :data:`ALPHA_GRID` x :data:`GAMMA_GRID`
    whose one-day-ahead forecasts over the history were closest (least mean absolute error; ties to the
    smoother pair). Given both, the fit is exactly :func:`update` day by day with them.
    """
    _check_smoothing(alpha=alpha, gamma=gamma)
    if not daily_sales:
        return None
    totals: dict[date, Decimal] = {}
    for day, quantity in daily_sales:
        totals[day] = totals.get(day, Decimal(0)) + Decimal(quantity)
    first_day = min(totals)
    series = [
        float(totals.get(first_day + timedelta(days=offset), 0)) for offset in range((max(totals) - first_day).days + 1)
    ]
    alphas = ALPHA_GRID if alpha is None else (alpha,)
    gammas = GAMMA_GRID if gamma is None else (gamma,)
    best: tuple[float, DemandModel] | None = None
    for candidate_alpha in alphas:
        for candidate_gamma in gammas:
            model, error = _run(_empty(first_day, candidate_alpha, candidate_gamma), series)
            if best is None or error < best[0] - _TIE:
                best = (error, model)
    assert best is not None
    return best[1]


def update(model: DemandModel, day: date, quantity: Decimal | int) -> DemandModel:
    """The model with one more closed local day folded in; skipped days since ``last_day`` count as zero.

    The smoothing constants stay those of the model (a refit chooses them afresh).
    """
    if day <= model.last_day:
        raise ValueError(f"{day} is already in the model (last day {model.last_day}); refit to change the past")
    gap = (day - model.last_day).days - 1
    return _run(model, [*([0.0] * gap), float(quantity)])[0]


def forecast(model: DemandModel, start: date, days: int) -> list[float]:
    """The forecast quantity for each of ``days`` local days from ``start``."""
    if days < 0:
        raise ValueError(f"days must not be negative, got {days}")
    return [model.daily_demand(start + timedelta(days=offset)) for offset in range(days)]


def _check_smoothing(*, alpha: float | None, gamma: float | None) -> None:
    if alpha is not None and not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if gamma is not None and not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")


def _empty(first_day: date, alpha: float, gamma: float) -> DemandModel:
    return DemandModel(
        level=0.0,
        weekday_indexes=_FLAT,
        alpha=alpha,
        gamma=gamma,
        last_day=first_day - timedelta(days=1),
        days_observed=0,
    )


def _run(model: DemandModel, quantities: Sequence[float]) -> tuple[DemandModel, float]:
    """The model after the days following ``model.last_day``, and its mean absolute one-day-ahead error.

    The one loop both :func:`fit` and :func:`update` run, on plain floats (the fit runs it once per pair of
    smoothing constants, so it is the hub's hot path). The error counts the seasonal days only.
    """
    alpha, gamma = model.alpha, model.gamma
    level, share, scale = model.level, model.sale_day_share, model.error_scale
    indexes = list(model.weekday_indexes)
    warmup = list(model.warmup_sales)
    observed = model.days_observed
    weekday = (model.last_day.weekday() + 1) % DAYS_PER_WEEK
    first_new_day = model.last_day + timedelta(days=1)
    error_total, error_days = 0.0, 0
    for quantity in quantities:
        demand = quantity if quantity > 0 else 0.0
        observed += 1
        if observed < MIN_SEASONAL_DAYS:
            warmup.append(demand)
            level = sum(warmup) / len(warmup)
            share = _sale_day_share(warmup)
        elif observed == MIN_SEASONAL_DAYS:
            warmup.append(demand)
            last_weekday = weekday
            level, indexes, share, scale = _start_seasonal(warmup, last_weekday)
            warmup = []
        else:
            intermittent = share < INTERMITTENT_BELOW
            index = indexes[weekday]
            expected = level if intermittent else level * index
            error_total += abs(demand - expected)
            error_days += 1
            # The spike guard: a day far above the forecast moves the model as if it sold SPIKE_LIMIT error
            # scales above it (the sale itself stays in the ledger; only its pull on the forecast is bounded).
            limit = expected + max(SPIKE_LIMIT * scale, _MIN_SPIKE_ALLOWANCE)
            guarded = demand if demand <= limit else limit
            scale = _SCALE_SMOOTHING * abs(guarded - expected) + (1 - _SCALE_SMOOTHING) * scale
            # Error-correction form: the level moves by alpha times the day's error, not the error divided by
            # the weekday's index, so a noisy small index cannot inflate it (a ratio's mean is above the
            # ratio of the means) and a weekday that never sells leaves it alone.
            if intermittent:
                level += alpha * (guarded - level)
            else:
                level += alpha * (guarded - expected)
            if level < 0:
                level = 0.0
            if level > 0:
                ratio = guarded / level
                indexes[weekday] = gamma * (ratio if ratio < _MAX_INDEX else _MAX_INDEX) + (1 - gamma) * index
                total = sum(indexes)
                indexes = [value * DAYS_PER_WEEK / total for value in indexes] if total > 0 else list(_FLAT)
            share = alpha * (demand > 0) + (1 - alpha) * share
        weekday = (weekday + 1) % DAYS_PER_WEEK
    result = dataclasses.replace(
        model,
        level=level,
        weekday_indexes=tuple(indexes),
        last_day=first_new_day + timedelta(days=len(quantities) - 1),
        days_observed=observed,
        sale_day_share=share,
        error_scale=scale,
        warmup_sales=tuple(warmup),
    )
    return result, (error_total / error_days if error_days else 0.0)


def _start_seasonal(first_days: Sequence[float], last_weekday: int) -> tuple[float, list[float], float, float]:
    """Level, indexes, sale-day share and error scale from the first two weeks.

    The level is the overall mean and each weekday's index its mean over the two weeks / the level; the
    error scale is the mean absolute difference between each day and that start's forecast of it.
    """
    level = sum(first_days) / len(first_days)
    indexes = list(_FLAT)
    first_weekday = (last_weekday - len(first_days) + 1) % DAYS_PER_WEEK
    if level > 0:
        per_weekday = [0.0] * DAYS_PER_WEEK
        for offset, demand in enumerate(first_days):
            per_weekday[(first_weekday + offset) % DAYS_PER_WEEK] += demand
        weeks = len(first_days) / DAYS_PER_WEEK
        indexes = list(_normalised(tuple(total / weeks / level for total in per_weekday)))
    scale = sum(
        abs(demand - level * indexes[(first_weekday + offset) % DAYS_PER_WEEK])
        for offset, demand in enumerate(first_days)
    ) / len(first_days)
    return level, indexes, _sale_day_share(first_days), scale


def _sale_day_share(days: Sequence[float]) -> float:
    return sum(1 for demand in days if demand > 0) / len(days)


def _normalised(indexes: tuple[float, ...]) -> tuple[float, ...]:
    """The indexes scaled to average 1 (flat if they are all zero)."""
    total = sum(indexes)
    if total <= 0:
        return _FLAT
    return tuple(index * DAYS_PER_WEEK / total for index in indexes)
