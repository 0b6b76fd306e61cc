"""Footfall and conversion, pure: which footfall periods count, baskets from checkout scans, hourly rows.

A camera over the entrance states, per counting line and period (a minute by default), how many people
crossed it inwards (``entered``) and outwards (``exited``). Visitors are the people who entered. A sales
transaction is a basket: consecutive ``scan.sale`` scans at one checkout scanner less than ``gap_s`` apart
belong to the same basket, so a new basket starts at a scanner's first scan and at every scan ``gap_s`` or
more after the one before it. Conversion is transactions per visitor.

The database applies the same basket rule in SQL (``hub.footfall.queries``); :func:`basket_starts` is the
rule in Python, which the tests hold the SQL to on real baskets. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final

# A footfall event is stamped by the camera's gateway when the period ends (or while it is being counted):
# a period that does not lie this close around the event's own time was stamped by a clock the hub does not
# believe (the event's time was replaced by its receipt), and where it lies in time is unknown.
PERIOD_SLACK: Final = timedelta(minutes=10)
RATIO_DIGITS: Final = 4


def period_is_plausible(*, period_start: datetime, period_s: int, event_ts: datetime) -> bool:
    """Whether a footfall period lies around the time of the event that carries it (see ``PERIOD_SLACK``)."""
    period_end = period_start + timedelta(seconds=period_s)
    return period_start - PERIOD_SLACK <= event_ts <= period_end + PERIOD_SLACK


def gap_milliseconds(gap_s: float) -> int:
    """The basket gap in whole milliseconds, the unit in which pauses between scans are compared."""
    return round(gap_s * 1000)


def basket_starts(scan_times: Iterable[datetime], *, gap_s: float) -> list[datetime]:
    """The times at which baskets start among one checkout scanner's scans (any order; ties are one basket).

    A pause of exactly ``gap_s`` starts a new basket; pauses are compared in whole milliseconds, as the SQL does.
    """
    gap_ms = gap_milliseconds(gap_s)
    starts: list[datetime] = []
    previous: datetime | None = None
    for at in sorted(scan_times):
        if previous is None or round((at - previous) / timedelta(milliseconds=1)) >= gap_ms:
            starts.append(at)
        previous = at
    return starts


def conversion_rate(transactions: int, visitors: int | None) -> float | None:
    """Transactions per visitor, rounded; none when nobody was counted entering (or nothing was counted)."""
    if not visitors:
        return None
    return round(transactions / visitors, RATIO_DIGITS)


@dataclass(frozen=True, slots=True)
class HourKey:
    """A store's local hour: its local date and wall-clock hour (a fall-back day's repeated hour is one)."""

    store_id: str
    local_date: date
    local_hour: int


@dataclass(frozen=True, slots=True)
class HourFootfall:
    """What the store's entrance cameras counted in one local hour."""

    entered: int
    exited: int
    cameras: int


@dataclass(frozen=True, slots=True)
class HourFigures:
    """Visitors, exits, transactions and conversion of one store in one local hour.

    ``visitors`` and ``exits`` are None when no camera sent counts for the hour (no data, which is not zero).
    """

    key: HourKey
    visitors: int | None
    exits: int | None
    cameras: int
    transactions: int
    units_sold: int
    conversion_rate: float | None


@dataclass(frozen=True, slots=True)
class DayFigures:
    """One store's local day: the sums of its hours.

    ``conversion_rate`` divides only the transactions of the hours with camera data
    (``transactions_in_counted_hours``) by the visitors, so hours a camera missed do not inflate it.
    """

    store_id: str
    local_date: date
    hours_with_data: int
    visitors: int | None
    exits: int | None
    transactions: int
    transactions_in_counted_hours: int
    units_sold: int
    conversion_rate: float | None


def hour_figures(
    footfall: Mapping[HourKey, HourFootfall], transactions: Mapping[HourKey, int], units_sold: Mapping[HourKey, int]
) -> list[HourFigures]:
    """Every hour with camera data, transactions or units sold, in (store, date, hour) order."""
    keys = sorted(
        set(footfall) | set(transactions) | set(units_sold), key=lambda k: (k.store_id, k.local_date, k.local_hour)
    )
    rows: list[HourFigures] = []
    for key in keys:
        counted = footfall.get(key)
        sold = transactions.get(key, 0)
        visitors = None if counted is None else counted.entered
        rows.append(
            HourFigures(
                key=key,
                visitors=visitors,
                exits=None if counted is None else counted.exited,
                cameras=0 if counted is None else counted.cameras,
                transactions=sold,
                units_sold=units_sold.get(key, 0),
                conversion_rate=conversion_rate(sold, visitors),
            )
        )
    return rows


def day_figures(hours: Sequence[HourFigures]) -> list[DayFigures]:
    """The day totals of :func:`hour_figures`' rows, in (store, date) order."""
    days: dict[tuple[str, date], list[HourFigures]] = {}
    for hour in hours:
        days.setdefault((hour.key.store_id, hour.key.local_date), []).append(hour)
    totals: list[DayFigures] = []
    for (store_id, day), rows in sorted(days.items()):
        counted = [row for row in rows if row.visitors is not None]
        visitors = sum(row.visitors or 0 for row in counted) if counted else None
        in_counted = sum(row.transactions for row in counted)
        totals.append(
            DayFigures(
                store_id=store_id,
                local_date=day,
                hours_with_data=len(counted),
                visitors=visitors,
                exits=sum(row.exits or 0 for row in counted) if counted else None,
                transactions=sum(row.transactions for row in rows),
                transactions_in_counted_hours=in_counted,
                units_sold=sum(row.units_sold for row in rows),
                conversion_rate=conversion_rate(in_counted, visitors),
            )
        )
    return totals
