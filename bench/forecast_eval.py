#!/usr/bin/env python3
"""Forecast accuracy on a real retailer's sales (issue 18): the hub's demand model against baselines.

Replays invoice lines (UCI Online Retail columns: InvoiceNo, StockCode, Quantity, InvoiceDate, ...) through the
forecast exactly as the hub runs it, with the hub's own functions: the ledger's net sale quantity per local day
(sales negative, a cancellation ``C...`` line positive, as the ledger would hold a return),
``demand_per_day`` (returns net against their own day, then the day before, never negative demand),
``history_days_held`` (the window the data holds, up to the hub's limit), ``sales_series`` and ``fit``.

Rolling origins: each of the last eight weeks of the file in turn, the model sees every day before the origin and
forecasts the 7 days from it. Baselines in the same run, on the same days:

- ``seasonal_naive``: the same weekday a week before;
- ``ma7`` and ``ma28``: the mean of the last 7 or 28 days, flat;
- ``ets``: statsmodels' Holt-Winters exponential smoothing, additive weekly seasonality, no trend, parameters
  and initial states estimated by maximum likelihood on the whole history (additive because zero days, such as
  the closed Saturdays, rule out the multiplicative form); forecasts below zero read as zero.

Per SKU and origin: MAE over the 7 days; MASE = that MAE / the in-sample MAE of the seasonal naive (lag 7) on
the history before the origin; bias = mean(forecast - actual). A SKU's figure is the mean over its origins.
The SKU sets are the top 20 and top 200 StockCodes by units sold (product codes only: postage, fees and
manual lines are not stock).

Not a test: it prints figures and the time it took; docs/benchmarks.md records them with this command. It needs
no broker or database: the hub's functions it calls are pure.

Usage: .venv/bin/python bench/forecast_eval.py [--data FILE] [--json OUT] [--history-days N] [--top 20,200]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import statistics
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TextIO

from hub.domain.forecast import fit, forecast
from hub.inventory.replenishment_suggestions import (
    MAX_HISTORY_DAYS,
    demand_per_day,
    history_days_held,
    history_window,
    sales_series,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "retail" / "onlineretail_2010-12-01_to_2011-08-31.csv.gz"
HORIZON_DAYS = 7
ORIGINS = 8
SEASON = 7
MODELS = ("hub", "ets", "seasonal_naive", "ma7", "ma28")
BASELINES = MODELS[1:]

Forecaster = Callable[[Sequence[float], date], list[float]]


@dataclass(frozen=True, slots=True)
class Sales:
    """The ledger's net sale quantity per SKU and local day, as the hub's query sums it, and the file's days."""

    net_ledger: dict[str, dict[date, int]]
    units_sold: dict[str, int]
    first_day: date
    last_day: date
    lines: int
    cancellation_lines: int
    skipped_lines: int
    # Cancelled units by how long after the same customer's last sale of the SKU they came: what the hub's rule
    # (undo the same or the previous day) covers, and what it leaves as demand.
    cancelled_units: dict[str, int]


def _open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def read_sales(path: Path) -> Sales:
    """Sale and cancellation lines of product codes, per SKU and day; other lines (stock write-offs) are skipped.

    InvoiceDate is the retailer's wall clock, so its date is the local day the hub would bucket it in.
    A sale is a ledger row of ``-quantity``; a cancellation (invoice ``C...``, negative quantity) a row of
    ``+quantity``, as the ledger holds a return. A line of a non-``C`` invoice with a negative quantity is a
    write-off (damaged, lost), which the ledger records as an adjustment, not a sale.
    """
    net: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    sold: dict[str, int] = defaultdict(int)
    lines = cancellations = skipped = 0
    days: set[date] = set()
    last_sale: dict[tuple[str, str], date] = {}
    cancelled = dict.fromkeys(("same_day", "next_day", "later", "no_sale_before"), 0)
    with _open_text(path) as handle:
        for row in csv.DictReader(handle):
            lines += 1
            code, quantity = row["StockCode"], round(float(row["Quantity"]))
            day = datetime.fromisoformat(row["InvoiceDate"]).date()
            days.add(day)
            is_cancellation = row["InvoiceNo"].startswith("C")
            # Product codes start with a digit; POST, DOT, M, BANK CHARGES and the like are not stock.
            if not code[:1].isdigit() or quantity == 0 or (quantity < 0 and not is_cancellation):
                skipped += 1
                continue
            cancellations += is_cancellation
            net[code][day] -= quantity
            customer = row.get("CustomerID") or ""
            if quantity > 0:
                sold[code] += quantity
                last_sale[(code, customer)] = day
            else:
                cancelled[_lag(last_sale.get((code, customer)), day)] -= quantity
    if not days:
        raise SystemExit(f"{path}: no invoice lines")
    return Sales(
        net_ledger={code: dict(per_day) for code, per_day in net.items()},
        units_sold=dict(sold),
        first_day=min(days),
        last_day=max(days),
        lines=lines,
        cancellation_lines=cancellations,
        skipped_lines=skipped,
        cancelled_units=cancelled,
    )


def _lag(sale_day: date | None, cancelled_on: date) -> str:
    if sale_day is None:
        return "no_sale_before"
    return {0: "same_day", 1: "next_day"}.get((cancelled_on - sale_day).days, "later")


# --------------------------------------------------------------------------- models


def hub_forecaster(net_ledger: dict[date, int], store_first_sale: date, history_days: int | None) -> Forecaster:
    """The hub's forecast at an origin, as ``demand_models`` makes it from the ledger's net per day.

    The window runs from the store's first sale (the whole retailer is one store here) unless fixed; a SKU
    with a ledger row before the window gets every day of it, else its series starts at its first sale.
    """

    def forecast_from(_history: Sequence[float], origin: date) -> list[float]:
        days = history_days if history_days is not None else history_days_held(origin, store_first_sale)
        first_day, last_day = history_window(origin, days)
        in_window = {day: net for day, net in net_ledger.items() if first_day <= day <= last_day}
        sold_before = any(day < first_day for day in net_ledger)
        series = sales_series(
            demand_per_day(in_window), first_day=first_day, last_day=last_day, sold_before=sold_before
        )
        model = fit(series)
        return [0.0] * HORIZON_DAYS if model is None else forecast(model, origin, HORIZON_DAYS)

    return forecast_from


def seasonal_naive(history: Sequence[float], _origin: date) -> list[float]:
    return [history[len(history) - SEASON + offset % SEASON] for offset in range(HORIZON_DAYS)]


def moving_average(days: int) -> Forecaster:
    def forecast_from(history: Sequence[float], _origin: date) -> list[float]:
        recent = history[-days:]
        return [sum(recent) / len(recent)] * HORIZON_DAYS

    return forecast_from


def library_ets(history: Sequence[float], _origin: date) -> list[float]:
    # Imported here: the library is a bench (dev) dependency, and loading it takes a second.
    import numpy as np
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on flat or lumpy series
        fitted = ExponentialSmoothing(
            np.asarray(history, dtype=float),
            trend=None,
            seasonal="add",
            seasonal_periods=SEASON,
            initialization_method="estimated",
        ).fit()
        predicted = fitted.forecast(HORIZON_DAYS)
    return [max(float(value), 0.0) for value in predicted]


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, slots=True)
class SkuScore:
    """One model on one SKU, averaged over the origins."""

    mae: float
    mase: float
    bias: float  # units a day, forecast minus actual
    mean_actual: float


def _naive_scale(history: Sequence[float]) -> float:
    errors = [abs(history[t] - history[t - SEASON]) for t in range(SEASON, len(history))]
    return sum(errors) / len(errors) if errors else 0.0


def _days(first: date, last: date) -> Iterator[date]:
    for offset in range((last - first).days + 1):
        yield first + timedelta(days=offset)


def evaluate_sku(
    net_ledger: dict[date, int], *, first_day: date, last_day: date, history_days: int | None
) -> dict[str, SkuScore] | None:
    """Every model's score on one SKU over the rolling origins; None when a scale is zero (no MASE)."""
    # The actual demand is the hub's bucketing of the whole file; each origin's history is its bucketing of the
    # days before the origin only, so a cancellation on the origin's day cannot reach back into the history.
    demand = demand_per_day(net_ledger)
    series = [float(demand.get(day, 0)) for day in _days(first_day, last_day)]
    forecasters: dict[str, Forecaster] = {
        "hub": hub_forecaster(net_ledger, first_day, history_days),
        "ets": library_ets,
        "seasonal_naive": seasonal_naive,
        "ma7": moving_average(7),
        "ma28": moving_average(28),
    }
    per_model: dict[str, list[tuple[float, float, float]]] = {name: [] for name in MODELS}
    actuals: list[float] = []
    for week in range(ORIGINS, 0, -1):
        cut = len(series) - week * HORIZON_DAYS
        origin = first_day + timedelta(days=cut)
        known = demand_per_day({day: net for day, net in net_ledger.items() if day < origin})
        history = [float(known.get(day, 0)) for day in _days(first_day, origin - timedelta(days=1))]
        actual = series[cut : cut + HORIZON_DAYS]
        scale = _naive_scale(history)
        if scale <= 0:
            return None
        actuals.extend(actual)
        for name, forecaster in forecasters.items():
            predicted = forecaster(history, origin)
            errors = [f - a for f, a in zip(predicted, actual, strict=True)]
            mae = sum(abs(e) for e in errors) / HORIZON_DAYS
            per_model[name].append((mae, mae / scale, sum(errors) / HORIZON_DAYS))
    mean_actual = sum(actuals) / len(actuals)
    return {
        name: SkuScore(
            mae=statistics.fmean(r[0] for r in rows),
            mase=statistics.fmean(r[1] for r in rows),
            bias=statistics.fmean(r[2] for r in rows),
            mean_actual=mean_actual,
        )
        for name, rows in per_model.items()
    }


def summarise(scores: dict[str, dict[str, SkuScore]]) -> dict[str, object]:
    """The set's figures: per model mean and median MASE, MAE and bias; the share of SKUs the hub beats."""
    mean_demand = statistics.fmean(by_model["hub"].mean_actual for by_model in scores.values())
    models: dict[str, dict[str, float]] = {}
    for name in MODELS:
        mases = [by_model[name].mase for by_model in scores.values()]
        bias = statistics.fmean(by_model[name].bias for by_model in scores.values())
        models[name] = {
            "mean_mase": statistics.fmean(mases),
            "median_mase": statistics.median(mases),
            "mean_mae": statistics.fmean(by_model[name].mae for by_model in scores.values()),
            "bias": bias,
            "bias_percent": 100 * bias / mean_demand,
        }
    beats = {
        name: sum(by_model["hub"].mase < by_model[name].mase for by_model in scores.values()) / len(scores)
        for name in BASELINES
    }
    return {"skus": len(scores), "mean_demand": mean_demand, "models": models, "hub_beats_share": beats}


def print_table(label: str, summary: dict[str, object]) -> None:
    models = summary["models"]
    beats = summary["hub_beats_share"]
    assert isinstance(models, dict)
    assert isinstance(beats, dict)
    print(f"\n{label}: {summary['skus']} SKUs, mean demand {summary['mean_demand']:.1f} units/day")
    print(f"{'model':<16}{'mean MASE':>10}{'median':>8}{'MAE':>9}{'bias/day':>10}{'bias %':>8}{'hub beats':>11}")
    for name in MODELS:
        row = models[name]
        share = "" if name == "hub" else f"{100 * beats[name]:.0f}%"
        print(
            f"{name:<16}{row['mean_mase']:>10.3f}{row['median_mase']:>8.3f}{row['mean_mae']:>9.1f}"
            f"{row['bias']:>+10.2f}{row['bias_percent']:>+7.1f}%{share:>11}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="invoice lines, CSV or CSV.gz")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument(
        "--history-days",
        type=int,
        help=f"a fixed hub history (the old default: 56); default: chosen by the data, up to {MAX_HISTORY_DAYS}",
    )
    parser.add_argument("--top", default="20,200", help="SKU set sizes by units sold (default 20,200)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sales = read_sales(args.data)
    span = (sales.last_day - sales.first_day).days + 1
    if span < (ORIGINS + 4) * HORIZON_DAYS:
        raise SystemExit(f"{args.data}: {span} days, too few for {ORIGINS} weekly origins after four weeks")
    print(
        f"{args.data.name}: {sales.lines} lines ({sales.cancellation_lines} cancellations, {sales.skipped_lines}"
        f" skipped), {sales.first_day} to {sales.last_day}; origins: the last {ORIGINS} weeks, horizon"
        f" {HORIZON_DAYS} days; hub history: {args.history_days or 'chosen by the data'}"
    )
    total_cancelled = sum(sales.cancelled_units.values())
    shares = ", ".join(
        f"{100 * units / total_cancelled:.0f}% {lag.replace('_', ' ')}" for lag, units in sales.cancelled_units.items()
    )
    print(f"cancelled units ({total_cancelled}) after the same customer's last sale of the SKU: {shares}")
    ranked = sorted(sales.units_sold, key=lambda code: (-sales.units_sold[code], code))
    sizes = sorted(int(size) for size in args.top.split(","))
    scores: dict[str, dict[str, SkuScore]] = {}
    dropped: list[str] = []
    for code in ranked[: sizes[-1]]:
        score = evaluate_sku(
            sales.net_ledger[code], first_day=sales.first_day, last_day=sales.last_day, history_days=args.history_days
        )
        if score is None:
            dropped.append(code)
        else:
            scores[code] = score
    results: dict[str, object] = {}
    for size in sizes:
        chosen = {code: scores[code] for code in ranked[:size] if code in scores}
        summary = summarise(chosen)
        results[f"top{size}"] = summary
        print_table(f"top {size}", summary)
    elapsed = time.perf_counter() - started
    if dropped:
        print(f"\nleft out (no sale for weeks, so no MASE scale): {', '.join(dropped)}")
    print(f"\n{len(scores) + len(dropped)} SKUs x {ORIGINS} origins in {elapsed:.1f} s")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "data": str(args.data),
                    "history_days": args.history_days,
                    "origins": ORIGINS,
                    "horizon_days": HORIZON_DAYS,
                    "seconds": round(elapsed, 1),
                    "cancelled_units": sales.cancelled_units,
                    "sets": results,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
