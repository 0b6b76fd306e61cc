"""Pure checks and conversions of catalog values: GTINs, currencies, time zones, opening hours.

No I/O here (the time zone database is read lazily, once); the CSV rows and the API build on these.
"""

from __future__ import annotations

import itertools
import re
import zoneinfo
from dataclasses import dataclass
from datetime import time
from decimal import Decimal
from functools import cache
from typing import Final

from hub.domain.store_hours import OpeningInterval, StoreHours, Weekday

# The one GTIN rule (length, check digit, reserved numbers), shared with the scanner driver; re-exported here.
from storegate.gtin import GTIN_LENGTHS as GTIN_LENGTHS
from storegate.gtin import gtin_check_digit as gtin_check_digit
from storegate.gtin import normalise_gtin as normalise_gtin

# Active ISO 4217 currencies a price can be quoted in, with their minor-unit digits (amendment of 2025).
# Fund codes (BOV, CHE, CLF, ...), precious metals (XAU, ...) and withdrawn codes (HRK, ANG, SLL, ZWL) are
# left out on purpose: a shelf price is never in them.
_TWO_DIGIT_CURRENCIES: Final = """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF
    CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD
    HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK
    MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD
    RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS
    UAH USD UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG
"""
_ZERO_DIGIT_CURRENCIES: Final = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF"
_THREE_DIGIT_CURRENCIES: Final = "BHD IQD JOD KWD LYD OMR TND"
CURRENCY_MINOR_UNITS: Final[dict[str, int]] = {
    **dict.fromkeys(_TWO_DIGIT_CURRENCIES.split(), 2),
    **dict.fromkeys(_ZERO_DIGIT_CURRENCIES.split(), 0),
    **dict.fromkeys(_THREE_DIGIT_CURRENCIES.split(), 3),
}

WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY: Final = 24 * 60
_HHMM: Final = re.compile(r"(\d{2}):(\d{2})")


def check_currency(code: str) -> str:
    """``code`` if it is an active ISO 4217 currency (upper case, e.g. GBP); ValueError otherwise."""
    if code not in CURRENCY_MINOR_UNITS:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code (upper case, e.g. GBP, EUR, JPY)")
    return code


def money_text(amount: Decimal, currency: str) -> str:
    """``amount`` written plainly: at least the currency's minor digits, no trailing zeros past them."""
    digits = CURRENCY_MINOR_UNITS.get(currency, 2)
    normal = amount.normalize()
    exponent = normal.as_tuple().exponent
    places = max(digits, -exponent if isinstance(exponent, int) and exponent < 0 else 0)
    return f"{amount:.{places}f}"


def decimal_text(value: Decimal) -> str:
    """``value`` without trailing zeros or an exponent (``Decimal('120.500')`` -> ``'120.5'``)."""
    return f"{value.normalize():f}"


# Files of the system's zoneinfo folder that are not zones a store can be in.
_NOT_ZONES: Final = frozenset({"localtime", "posixrules", "Factory"})


@cache
def _known_time_zones() -> frozenset[str]:
    return frozenset(
        name
        for name in zoneinfo.available_timezones()
        if name not in _NOT_ZONES and not name.startswith(("posix/", "right/"))
    )


def check_time_zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name`` (e.g. Europe/London); ValueError for anything else, paths included."""
    if name not in _known_time_zones():
        raise ValueError(f"{name!r} is not an IANA time zone name (e.g. Europe/London, America/New_York)")
    return zoneinfo.ZoneInfo(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class Interval:
    """Opening time of one day, in minutes since local midnight: ``start`` inclusive, ``end`` exclusive."""

    start: int
    end: int

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes(text: str) -> int:
    match = _HHMM.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time HH:MM")
    hours, minutes = int(match[1]), int(match[2])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes != 0):
        raise ValueError(f"{text!r} is not a time between 00:00 and 24:00")
    return hours * 60 + minutes


def parse_interval(text: str) -> Interval:
    """``"08:30-20:00"`` as an Interval; the end may be 24:00 and must come after the start."""
    start_text, dash, end_text = text.strip().partition("-")
    if not dash:
        raise ValueError(f"{text!r} is not an interval HH:MM-HH:MM")
    start, end = _minutes(start_text.strip()), _minutes(end_text.strip())
    if end <= start:
        raise ValueError(
            f"{text!r} ends before it starts; split a night across midnight, e.g. 22:00-24:00 and 00:00-02:00 "
            "of the next day"
        )
    return Interval(start=start, end=end)


def parse_day(text: str | None) -> tuple[Interval, ...]:
    """One day's hours, ``"08:00-12:00;13:00-20:00"``, in order and not overlapping; blank means closed."""
    if text is None or not text.strip():
        return ()
    intervals = tuple(parse_interval(part) for part in text.split(";"))
    for before, after in itertools.pairwise(intervals):
        if after.start < before.end:
            raise ValueError(f"intervals must be in order and not overlap: {before} then {after}")
    return intervals


def format_day(intervals: tuple[Interval, ...]) -> str:
    """The CSV cell of one day's hours (empty when closed)."""
    return ";".join(str(interval) for interval in intervals)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpeningHours:
    """A store's weekly opening hours in its local time, Monday first."""

    days: tuple[tuple[Interval, ...], ...]

    @classmethod
    def from_json(cls, value: dict[str, list[str]]) -> OpeningHours:
        """From the stored shape ``{"mon": ["08:00-20:00"], ..., "sun": []}``."""
        return cls(days=tuple(parse_day(";".join(value.get(day, []))) for day in WEEKDAYS))

    def to_json(self) -> dict[str, list[str]]:
        """The stored shape: every weekday, each a list of ``"HH:MM-HH:MM"``."""
        return {
            day: [str(interval) for interval in intervals] for day, intervals in zip(WEEKDAYS, self.days, strict=True)
        }

    def to_store_hours(self, timezone: str) -> StoreHours:
        """The same hours as the rules engine reads them (``hub.domain.store_hours``: one notion of "open").

        ``24:00`` becomes a closing at midnight, which the domain model writes as ``00:00``.
        """
        weekly = {
            Weekday(day): tuple(
                OpeningInterval(opens=_wall(interval.start), closes=_wall(interval.end % _MINUTES_PER_DAY))
                for interval in intervals
            )
            for day, intervals in zip(WEEKDAYS, self.days, strict=True)
            if intervals
        }
        return StoreHours(timezone=timezone, weekly=weekly)


_MINUTES_PER_DAY: Final = 24 * 60


def _wall(minutes: int) -> time:
    return time(minutes // 60, minutes % 60)
