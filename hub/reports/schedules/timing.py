"""When a schedule fires and which period each run reports: pure functions of dates, times and zones.

A schedule fires at a wall-clock time (``local_time``) in its own zone, every day or on one weekday. The period a
run reports is read in the **schedule's zone** at the moment it fires: a daily run reports the local date before
(yesterday), a weekly run the Monday-to-Sunday week before the one it fires in (last week). The reports then read
that period as each store's own local dates (docs/reports.md), as the reports of ``/api/v1/reports`` do.

Daylight saving time: a ``local_time`` that a spring-forward change skips fires at the same instant as the time
the clocks jump to (02:30 on a day clocks go from 02:00 to 03:00 fires at 03:30); a ``local_time`` that a fall-back
change repeats fires once, at its first occurrence. Either way a schedule fires once a day (or week), never twice
and never not at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Cadence = Literal["daily", "weekly"]

_HH_MM: Final = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# Enough days to meet any weekday, from a day before, around a change of offset.
_SEARCH_DAYS: Final = 16


def zone_of(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (``Asia/Taipei``); ValueError in words when there is none by that name."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"{name[:64]!r} is not an IANA time zone (e.g. Asia/Taipei, Europe/London, UTC)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. Asia/Taipei, Europe/London, UTC)") from None


def parse_local_time(text: str) -> time:
    """``HH:MM`` on a 24-hour clock as a time; ValueError in words otherwise."""
    match = _HH_MM.match(text)
    if match is None:
        raise ValueError(f"{text[:16]!r} is not a time of day as HH:MM (00:00 to 23:59)")
    return time(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True, slots=True)
class When:
    """When a schedule fires: daily, or weekly on ``weekday`` (0 Monday .. 6 Sunday), at ``at`` in ``zone``."""

    cadence: Cadence
    at: time
    zone: ZoneInfo
    weekday: int | None = None

    def __post_init__(self) -> None:
        if self.cadence == "weekly" and (self.weekday is None or not 0 <= self.weekday <= 6):
            raise ValueError("a weekly schedule needs a weekday, 0 (Monday) to 6 (Sunday)")
        if self.cadence == "daily" and self.weekday is not None:
            raise ValueError("a daily schedule takes no weekday")

    def fires_on(self, day: date) -> bool:
        """Whether it fires on this local date."""
        return self.cadence == "daily" or day.weekday() == self.weekday

    def fire_time(self, day: date) -> datetime:
        """The instant (UTC) it fires on the local date ``day`` (DST handled as the module says)."""
        # fold=0: a repeated time is its first occurrence; a skipped time takes the offset from before the change,
        # which lands after the gap by as much as it fell into it.
        return datetime.combine(day, self.at, tzinfo=self.zone).astimezone(UTC)

    def next_after(self, moment: datetime) -> datetime:
        """The first instant (UTC) it fires strictly after ``moment`` (an aware datetime)."""
        day = moment.astimezone(self.zone).date() - timedelta(days=1)
        for _ in range(_SEARCH_DAYS):
            if self.fires_on(day):
                fire = self.fire_time(day)
                if fire > moment:
                    return fire
            day += timedelta(days=1)
        raise AssertionError("no firing within 16 days")  # unreachable: a weekday recurs every 7 days

    def period_of(self, fire: datetime) -> tuple[date, date]:
        """The first and last local date (inclusive) that a run firing at ``fire`` reports."""
        today = fire.astimezone(self.zone).date()
        if self.cadence == "daily":
            yesterday = today - timedelta(days=1)
            return yesterday, yesterday
        this_monday = today - timedelta(days=today.weekday())
        return this_monday - timedelta(days=7), this_monday - timedelta(days=1)


@dataclass(frozen=True, slots=True)
class DueRuns:
    """The runs to plan now: their fire times (oldest first), how many older ones were skipped, the next fire."""

    fires: tuple[datetime, ...]
    skipped: int
    next_run_at: datetime


def due_runs(when: When, next_run_at: datetime, now: datetime, *, max_catch_up: int) -> DueRuns:
    """The runs from ``next_run_at`` (a fire time) up to ``now`` inclusive: at most ``max_catch_up``, the newest.

    After downtime a schedule catches up on the periods it missed, but only the newest ``max_catch_up`` of them:
    the hub does not send a year of daily reports after a year switched off. ``skipped`` counts the rest.
    """
    step_days = 1 if when.cadence == "daily" else 7
    horizon = timedelta(days=(max_catch_up + 2) * step_days)
    skipped = 0
    fire = next_run_at
    if now - next_run_at > horizon:
        # Far behind: start the walk near now; the runs passed over are counted by their local dates.
        fire = when.next_after(now - horizon)
        days = (fire.astimezone(when.zone).date() - next_run_at.astimezone(when.zone).date()).days
        skipped = days // step_days
    fires: list[datetime] = []
    while fire <= now:
        fires.append(fire)
        fire = when.next_after(fire)
    if len(fires) > max_catch_up:
        skipped += len(fires) - max_catch_up
        fires = fires[len(fires) - max_catch_up :] if max_catch_up > 0 else []
    return DueRuns(fires=tuple(fires), skipped=skipped, next_run_at=fire)
