"""When a camera is armed: weekly windows in the store's time zone (e.g. outside store hours)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: Final[tuple[Weekday, ...]] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ArmedWindow(BaseModel):
    """Armed from ``start`` to ``end`` (local time) on the given days; ``end`` before ``start`` runs past midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1, description="the start's day")
    start: time
    end: time


class ArmedSchedule(BaseModel):
    """Weekly armed windows; no window means armed all the time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    time_zone: str = Field(default="UTC", description="IANA name, e.g. 'Europe/Berlin'")
    windows: list[ArmedWindow] = Field(default_factory=list, max_length=32)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    def is_armed(self, at: datetime) -> bool:
        """Whether motion at ``at`` (aware) is reported."""
        if not self.windows:
            return True
        local = at.astimezone(ZoneInfo(self.time_zone))
        clock = local.time().replace(tzinfo=None)
        today = WEEKDAYS[local.weekday()]
        yesterday = WEEKDAYS[(local - timedelta(days=1)).weekday()]
        for window in self.windows:
            if window.start <= window.end:
                if today in window.days and window.start <= clock < window.end:
                    return True
            elif (today in window.days and clock >= window.start) or (yesterday in window.days and clock < window.end):
                return True
        return False
