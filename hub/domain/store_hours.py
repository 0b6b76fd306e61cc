"""A store's opening hours as data, and when the store is open, in its own time zone.

Hours are wall-clock times in the store's IANA time zone. An interval belongs to the day it opens on;
one whose closing time is not after its opening time runs past midnight into the next day, and one
whose closing time equals its opening time lasts 24 hours. A holiday exception replaces the intervals
that *open* on its date (an empty list: closed), so the overnight tail of the day before still counts.

Daylight saving time: a wall time is turned into an instant the way :mod:`zoneinfo` does with
``fold=0``. A time skipped by the spring-forward gap (02:30 in Berlin on the last Sunday of March)
is read with the offset before the change, i.e. it lands as far after the gap as it was into it
(02:30 -> 03:30 summer time). A time repeated by the fall-back change means its first occurrence.
So hours are always what the clock on the store's wall says, and an overnight interval across a
change lasts one hour less (spring) or more (autumn) than usual.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# An interval lasts at most 24 hours, so only the intervals opening on the day before and on the
# day itself can cover a given moment.
_LOOKBEHIND_DAYS: Final = 1
DEFAULT_HORIZON: Final = timedelta(days=14)


class Weekday(StrEnum):
    """A day of the week, as keys of the weekly hours."""

    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


_WEEKDAY_BY_INDEX: Final = tuple(Weekday)  # date.weekday(): Monday is 0


class OpeningInterval(BaseModel):
    """One opening period of a day, wall-clock times; ``closes <= opens`` runs past midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    opens: time
    closes: time

    @field_validator("opens", "closes")
    @classmethod
    def _naive_wall_time(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("a wall-clock time takes no time zone; the store's time zone applies")
        return value

    @property
    def length(self) -> timedelta:
        """How long the interval lasts by the wall clock (a DST change makes the real span differ)."""
        minutes = (self.closes.hour * 60 + self.closes.minute) - (self.opens.hour * 60 + self.opens.minute)
        seconds = minutes * 60 + self.closes.second - self.opens.second
        return timedelta(seconds=seconds % 86_400 or 86_400)


class StoreHours(BaseModel):
    """A store's weekly opening hours and dated exceptions, in its IANA time zone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = Field(description="IANA name, e.g. 'Europe/Berlin'")
    weekly: dict[Weekday, tuple[OpeningInterval, ...]] = Field(
        default_factory=dict, description="intervals per weekday; a missing day is closed"
    )
    exceptions: dict[date, tuple[OpeningInterval, ...]] = Field(
        default_factory=dict, description="intervals replacing a date's (holidays); an empty list closes the day"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown IANA time zone {value!r}") from err
        return value

    @model_validator(mode="after")
    def _no_overlaps_within_a_day(self) -> StoreHours:
        days: list[tuple[str, tuple[OpeningInterval, ...]]] = [(d.value, ivs) for d, ivs in self.weekly.items()]
        days += [(d.isoformat(), ivs) for d, ivs in self.exceptions.items()]
        for label, intervals in days:
            spans = sorted((_wall_offset(iv.opens), _wall_offset(iv.opens) + iv.length) for iv in intervals)
            for (_, end), (start, _) in itertools.pairwise(spans):
                if start < end:
                    raise ValueError(f"{label}: opening intervals overlap")
        return self

    @property
    def zone(self) -> ZoneInfo:
        """The store's time zone."""
        return ZoneInfo(self.timezone)

    def intervals_opening_on(self, day: date) -> tuple[OpeningInterval, ...]:
        """The intervals that open on a local date: the exception for it, else its weekday's."""
        if day in self.exceptions:
            return self.exceptions[day]
        return self.weekly.get(_WEEKDAY_BY_INDEX[day.weekday()], ())


def _wall_offset(at: time) -> timedelta:
    return timedelta(hours=at.hour, minutes=at.minute, seconds=at.second)


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} is a naive datetime; pass an aware one (UTC)")


def _instant(day: date, wall: time, zone: ZoneInfo) -> datetime:
    # fold=0: a skipped wall time is read with the offset before the change, a repeated one is its first pass.
    return datetime.combine(day, wall, tzinfo=zone).astimezone(UTC)


def open_periods(hours: StoreHours, start_utc: datetime, end_utc: datetime) -> list[tuple[datetime, datetime]]:
    """The store's open periods overlapping ``[start_utc, end_utc)``, in UTC, sorted and merged where they touch."""
    _require_aware(start_utc)
    _require_aware(end_utc)
    zone = hours.zone
    first_day = start_utc.astimezone(zone).date() - timedelta(days=_LOOKBEHIND_DAYS)
    last_day = end_utc.astimezone(zone).date()
    periods: list[tuple[datetime, datetime]] = []
    day = first_day
    while day <= last_day:
        for interval in hours.intervals_opening_on(day):
            opens = _instant(day, interval.opens, zone)
            closes = _instant(day + timedelta(days=interval.closes <= interval.opens), interval.closes, zone)
            if closes > start_utc and opens < end_utc and closes > opens:
                periods.append((opens, closes))
        day += timedelta(days=1)
    periods.sort()
    merged: list[tuple[datetime, datetime]] = []
    for opens, closes in periods:
        if merged and opens <= merged[-1][1]:  # back-to-back intervals are one open period, not a change
            merged[-1] = (merged[-1][0], max(merged[-1][1], closes))
        else:
            merged.append((opens, closes))
    return merged


def is_open(hours: StoreHours, at_utc: datetime) -> bool:
    """Whether the store is open at an instant."""
    return any(opens <= at_utc < closes for opens, closes in open_periods(hours, at_utc, at_utc + timedelta(seconds=1)))


def next_change(hours: StoreHours, at_utc: datetime, *, horizon: timedelta = DEFAULT_HORIZON) -> datetime | None:
    """The next instant after ``at_utc`` at which the store opens or closes; None if none within ``horizon``."""
    for opens, closes in open_periods(hours, at_utc, at_utc + horizon):
        if opens > at_utc:
            return opens
        if closes > at_utc:
            # An open period reaching past the horizon still closes then; report it only inside the horizon.
            return closes if closes <= at_utc + horizon else None
    return None
