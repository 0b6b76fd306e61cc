"""Store hours: intervals per weekday, past midnight, holidays, and both DST changes in Europe/Berlin."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hub.domain.store_hours import OpeningInterval, StoreHours, Weekday, is_open, next_change

BERLIN = ZoneInfo("Europe/Berlin")


def iv(opens: str, closes: str) -> OpeningInterval:
    return OpeningInterval(opens=time.fromisoformat(opens), closes=time.fromisoformat(closes))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def berlin(text: str, *, fold: int = 0) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN, fold=fold).astimezone(UTC)


WEEKDAY = (iv("08:00", "12:00"), iv("13:00", "20:00"))
HOURS = StoreHours(
    timezone="Europe/Berlin",
    weekly={
        Weekday.MON: WEEKDAY,
        Weekday.TUE: WEEKDAY,
        Weekday.WED: WEEKDAY,
        Weekday.THU: WEEKDAY,
        Weekday.FRI: WEEKDAY,
        # Saturday night opening runs past midnight into Sunday.
        Weekday.SAT: (iv("08:00", "20:00"), iv("22:00", "03:00")),
    },
    exceptions={
        date(2026, 12, 24): (iv("08:00", "14:00"),),
        date(2026, 12, 25): (),
        date(2026, 5, 2): (),  # a closed Saturday: no night opening either
        date(2026, 5, 10): (),  # a closed Sunday: Saturday's night still runs into it
    },
)


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        # 2026-03-02 is a Monday.
        pytest.param(berlin("2026-03-02T07:59:59"), False, id="before opening"),
        pytest.param(berlin("2026-03-02T08:00"), True, id="at opening"),
        pytest.param(berlin("2026-03-02T12:30"), False, id="lunch closure"),
        pytest.param(berlin("2026-03-02T19:59:59"), True, id="just before closing"),
        pytest.param(berlin("2026-03-02T20:00"), False, id="at closing (end is exclusive)"),
        pytest.param(berlin("2026-03-08T12:00"), False, id="sunday closed"),
        pytest.param(berlin("2026-03-07T23:30"), True, id="saturday night"),
        pytest.param(berlin("2026-03-08T02:30"), True, id="saturday night, after midnight"),
        pytest.param(berlin("2026-03-08T03:00"), False, id="saturday night ends"),
        pytest.param(berlin("2026-12-25T10:00"), False, id="holiday closed"),
        pytest.param(berlin("2026-12-24T10:00"), True, id="short day open"),
        pytest.param(berlin("2026-12-24T15:00"), False, id="short day closed early"),
        pytest.param(berlin("2026-05-02T10:00"), False, id="closed saturday"),
        pytest.param(berlin("2026-05-03T01:00"), False, id="closed saturday has no night tail"),
        pytest.param(berlin("2026-05-10T01:00"), True, id="closed sunday keeps saturday's tail"),
        # Spring forward, 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC). Saturday night closes at 03:00 CEST.
        pytest.param(utc("2026-03-29T00:59"), True, id="spring: last minute of the short night"),
        pytest.param(utc("2026-03-29T01:00"), False, id="spring: 03:00 CEST is already closing time"),
        # Fall back, 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC). Saturday night closes at 03:00 CET.
        pytest.param(utc("2026-10-25T01:30"), True, id="fall: 02:30 the second time is still open"),
        pytest.param(utc("2026-10-25T01:59"), True, id="fall: the night is an hour longer"),
        pytest.param(utc("2026-10-25T02:00"), False, id="fall: 03:00 CET closes"),
    ],
)
def test_is_open(at: datetime, expected: bool) -> None:
    assert is_open(HOURS, at) is expected


def test_an_opening_time_in_the_spring_gap_lands_after_the_gap() -> None:
    hours = StoreHours(timezone="Europe/Berlin", exceptions={date(2026, 3, 29): (iv("02:30", "06:00"),)})
    # 02:30 does not exist that night; it is read as 02:30 CET = 03:30 CEST = 01:30 UTC.
    assert not is_open(hours, utc("2026-03-29T01:29"))
    assert is_open(hours, utc("2026-03-29T01:30"))
    assert next_change(hours, utc("2026-03-29T00:00")) == utc("2026-03-29T01:30")


def test_a_closing_time_in_the_fall_back_repeat_means_its_first_pass() -> None:
    hours = StoreHours(timezone="Europe/Berlin", weekly={Weekday.SAT: (iv("22:00", "02:30"),)})
    assert next_change(hours, berlin("2026-10-24T23:00")) == berlin("2026-10-25T02:30", fold=0)
    assert berlin("2026-10-25T02:30", fold=0) == utc("2026-10-25T00:30")
    assert not is_open(hours, berlin("2026-10-25T02:15", fold=1)), "the repeated hour is after closing"


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        pytest.param(berlin("2026-03-02T10:00"), berlin("2026-03-02T12:00"), id="open: next is lunch"),
        pytest.param(berlin("2026-03-02T12:30"), berlin("2026-03-02T13:00"), id="lunch: next is reopening"),
        pytest.param(berlin("2026-03-07T21:00"), berlin("2026-03-07T22:00"), id="saturday evening gap"),
        pytest.param(berlin("2026-03-08T12:00"), berlin("2026-03-09T08:00"), id="sunday: monday opening"),
        pytest.param(utc("2026-03-28T22:00"), utc("2026-03-29T01:00"), id="spring: short night closes"),
        pytest.param(utc("2026-10-24T23:00"), utc("2026-10-25T02:00"), id="fall: long night closes"),
        pytest.param(berlin("2026-12-24T11:00"), berlin("2026-12-24T14:00"), id="short day"),
        pytest.param(berlin("2026-12-24T15:00"), berlin("2026-12-26T08:00"), id="over the holiday"),
    ],
)
def test_next_change(at: datetime, expected: datetime) -> None:
    assert next_change(HOURS, at) == expected


def test_back_to_back_intervals_are_one_open_period() -> None:
    hours = StoreHours(timezone="Europe/Berlin", weekly={Weekday.MON: (iv("08:00", "12:00"), iv("12:00", "18:00"))})
    assert next_change(hours, berlin("2026-03-02T10:00")) == berlin("2026-03-02T18:00")


def test_a_store_never_open_has_no_next_change() -> None:
    assert next_change(StoreHours(timezone="Europe/Berlin"), utc("2026-03-02T10:00")) is None


def test_equal_opening_and_closing_means_open_24_hours() -> None:
    hours = StoreHours(timezone="America/New_York", weekly={Weekday.SUN: (iv("00:00", "00:00"),)})
    # 2026-03-08 is a Sunday and the spring-forward day in New York: the day has 23 hours.
    assert is_open(hours, datetime(2026, 3, 8, 23, 59, tzinfo=ZoneInfo("America/New_York")))
    assert next_change(hours, utc("2026-03-08T12:00")) == datetime(2026, 3, 9, tzinfo=ZoneInfo("America/New_York"))


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"timezone": "Europe/Atlantis"}, "unknown IANA time zone 'Europe/Atlantis'"),
        (
            {
                "timezone": "UTC",
                "weekly": {"mon": [{"opens": "08:00", "closes": "13:00"}, {"opens": "12:00", "closes": "18:00"}]},
            },
            "mon: opening intervals overlap",
        ),
        ({"timezone": "UTC", "weekly": {"someday": []}}, "weekly.someday"),
        ({"timezone": "UTC", "weekly": {"mon": [{"opens": "08:00+01:00", "closes": "18:00"}]}}, "no time zone"),
    ],
)
def test_invalid_hours_are_refused_with_the_field(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        StoreHours.model_validate(data)


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        is_open(HOURS, datetime(2026, 3, 2, 10, 0))


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)))
def test_next_change_is_where_is_open_flips(at: datetime) -> None:
    """Across the year (both DST changes included) the state holds until next_change and flips there."""
    change = next_change(HOURS, at)
    assert change is not None, "these hours change at least weekly"
    assert change > at
    before = is_open(HOURS, at)
    assert is_open(HOURS, change - timedelta(microseconds=1)) is before
    assert is_open(HOURS, at + (change - at) / 2) is before
    assert is_open(HOURS, change) is not before
