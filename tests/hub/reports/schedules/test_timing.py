"""When schedules fire and which period a run reports: pure, across DST changes (issue 16)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.reports.schedules.timing import When, due_runs, parse_local_time, zone_of

NEW_YORK = ZoneInfo("America/New_York")
TAIPEI = ZoneInfo("Asia/Taipei")
LONDON = ZoneInfo("Europe/London")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_daily_fires_at_the_local_time_and_reports_yesterday_in_the_schedules_zone() -> None:
    when = When(cadence="daily", at=time(6, 30), zone=TAIPEI)
    fire = when.next_after(utc(2025, 3, 3, 23, 0))  # 07:00 on the 4th in Taipei: today's 06:30 is past
    assert fire == utc(2025, 3, 4, 22, 30)  # 06:30 on the 5th in Taipei
    assert when.period_of(fire) == (date(2025, 3, 4), date(2025, 3, 4))
    # Strictly after: at the fire time itself the next one is a day later.
    assert when.next_after(fire) == fire + timedelta(days=1)


def test_weekly_fires_on_its_weekday_and_reports_last_monday_to_sunday() -> None:
    when = When(cadence="weekly", at=time(7, 0), zone=LONDON, weekday=0)
    fire = when.next_after(utc(2025, 3, 5, 12, 0))  # a Wednesday
    assert fire == utc(2025, 3, 10, 7, 0)  # Monday, GMT
    assert when.period_of(fire) == (date(2025, 3, 3), date(2025, 3, 9))
    wednesday = When(cadence="weekly", at=time(7, 0), zone=LONDON, weekday=2)
    assert wednesday.period_of(utc(2025, 3, 12, 7, 0)) == (date(2025, 3, 3), date(2025, 3, 9))


def test_a_time_skipped_by_spring_forward_fires_once_after_the_gap() -> None:
    # 2025-03-09: New York's clocks go from 02:00 EST to 03:00 EDT; 02:30 does not exist that day.
    when = When(cadence="daily", at=time(2, 30), zone=NEW_YORK)
    fire = when.next_after(utc(2025, 3, 8, 12, 0))
    assert fire == utc(2025, 3, 9, 7, 30)  # 03:30 EDT: as far past the change as 02:30 was into the gap
    assert fire.astimezone(NEW_YORK).date() == date(2025, 3, 9)
    following = when.next_after(fire)
    assert following == utc(2025, 3, 10, 6, 30)  # 02:30 EDT the next day
    assert when.period_of(fire) == (date(2025, 3, 8), date(2025, 3, 8))


def test_a_time_repeated_by_fall_back_fires_once_at_its_first_occurrence() -> None:
    # 2025-11-02: New York's clocks go from 02:00 EDT back to 01:00 EST; 01:30 happens twice.
    when = When(cadence="daily", at=time(1, 30), zone=NEW_YORK)
    fire = when.next_after(utc(2025, 11, 1, 12, 0))
    assert fire == utc(2025, 11, 2, 5, 30)  # 01:30 EDT, the first
    assert when.next_after(fire) == utc(2025, 11, 3, 6, 30)  # not 01:30 EST the same day: the next day's


def test_catch_up_after_downtime_sends_only_the_newest_runs() -> None:
    when = When(cadence="daily", at=time(6, 0), zone=ZoneInfo("UTC"))
    first = utc(2025, 3, 1, 6, 0)
    now = utc(2025, 3, 11, 7, 0)  # ten runs missed, the 1st to the 11th: eleven fire times
    due = due_runs(when, first, now, max_catch_up=3)
    assert due.fires == (utc(2025, 3, 9, 6, 0), utc(2025, 3, 10, 6, 0), utc(2025, 3, 11, 6, 0))
    assert due.skipped == 8
    assert due.next_run_at == utc(2025, 3, 12, 6, 0)


def test_catch_up_after_a_year_walks_a_few_days_only() -> None:
    when = When(cadence="weekly", at=time(6, 0), zone=ZoneInfo("UTC"), weekday=0)
    first = utc(2024, 1, 1, 6, 0)  # a Monday
    now = utc(2025, 1, 1, 12, 0)  # a Wednesday, 52 Mondays later
    due = due_runs(when, first, now, max_catch_up=2)
    assert due.fires == (utc(2024, 12, 23, 6, 0), utc(2024, 12, 30, 6, 0))
    assert due.skipped + len(due.fires) == 53  # every Monday from 2024-01-01 to 2024-12-30
    assert due.next_run_at == utc(2025, 1, 6, 6, 0)


def test_nothing_due_before_the_fire_time() -> None:
    when = When(cadence="daily", at=time(6, 0), zone=ZoneInfo("UTC"))
    due = due_runs(when, utc(2025, 3, 1, 6, 0), utc(2025, 3, 1, 5, 59), max_catch_up=3)
    assert due == due_runs(when, utc(2025, 3, 1, 6, 0), utc(2025, 3, 1, 5, 0), max_catch_up=3)
    assert due.fires == ()
    assert due.skipped == 0
    assert due.next_run_at == utc(2025, 3, 1, 6, 0)


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../../etc/passwd", "/etc/localtime", "UTC+8", "x" * 100])
def test_zone_names_that_are_not_iana_zones_are_refused_in_words(name: str) -> None:
    with pytest.raises(ValueError, match="is not an IANA time zone"):
        zone_of(name)


@pytest.mark.parametrize("text", ["24:00", "6:00", "06:60", "06:00:00", "noon", "", "06-00"])
def test_times_that_are_not_hh_mm_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_local_time(text)


def test_a_weekly_schedule_needs_a_weekday_and_a_daily_one_takes_none() -> None:
    with pytest.raises(ValueError, match="weekday"):
        When(cadence="weekly", at=time(6, 0), zone=LONDON)
    with pytest.raises(ValueError, match="no weekday"):
        When(cadence="daily", at=time(6, 0), zone=LONDON, weekday=1)


ZONES = st.sampled_from(["America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Taipei", "UTC"])
MOMENTS = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(zone=ZONES, hour=st.integers(0, 23), minute=st.sampled_from([0, 15, 30, 45]), moment=MOMENTS)
def test_daily_fires_once_every_local_date_after_the_moment(
    zone: str, hour: int, minute: int, moment: datetime
) -> None:
    when = When(cadence="daily", at=time(hour, minute), zone=ZoneInfo(zone))
    fire = when.next_after(moment)
    following = when.next_after(fire)
    assert moment < fire < following
    # One run a local date, on consecutive dates: none skipped, none twice.
    assert following.astimezone(when.zone).date() - fire.astimezone(when.zone).date() == timedelta(days=1)
    assert fire - moment <= timedelta(days=1, hours=1)
    # At the wall-clock time, unless a DST change skipped it (then within the change's length after it).
    local = fire.astimezone(when.zone)
    wall = datetime.combine(local.date(), time(hour, minute))
    assert timedelta(0) <= local.replace(tzinfo=None) - wall <= timedelta(hours=1)
    first, last = when.period_of(fire)
    assert first == last == local.date() - timedelta(days=1)


@settings(max_examples=200, deadline=None)
@given(zone=ZONES, weekday=st.integers(0, 6), moment=MOMENTS)
def test_weekly_fires_on_its_weekday_every_seven_local_days(zone: str, weekday: int, moment: datetime) -> None:
    when = When(cadence="weekly", at=time(2, 30), zone=ZoneInfo(zone), weekday=weekday)
    fire = when.next_after(moment)
    following = when.next_after(fire)
    assert fire.astimezone(when.zone).weekday() == weekday
    assert following.astimezone(when.zone).date() - fire.astimezone(when.zone).date() == timedelta(days=7)
    first, last = when.period_of(fire)
    assert first.weekday() == 0
    assert last - first == timedelta(days=6)
    assert last < fire.astimezone(when.zone).date()


@settings(max_examples=200, deadline=None)
@given(
    start_day=st.integers(0, 400),
    behind_days=st.integers(0, 120),
    max_catch_up=st.integers(0, 10),
    hour=st.integers(0, 23),
)
def test_catch_up_plans_at_most_the_bound_and_counts_the_rest(
    start_day: int, behind_days: int, max_catch_up: int, hour: int
) -> None:
    when = When(cadence="daily", at=time(hour, 0), zone=NEW_YORK)
    first = when.next_after(utc(2024, 1, 1) + timedelta(days=start_day))
    now = first + timedelta(days=behind_days, hours=3)
    due = due_runs(when, first, now, max_catch_up=max_catch_up)
    missed = (now.astimezone(NEW_YORK).date() - first.astimezone(NEW_YORK).date()).days + 1
    if when.fire_time(now.astimezone(NEW_YORK).date()) > now:
        missed -= 1
    assert len(due.fires) == min(missed, max_catch_up)
    assert due.skipped == missed - len(due.fires)
    assert all(fire <= now for fire in due.fires)
    assert list(due.fires) == sorted(due.fires)
    assert due.next_run_at > now
    assert due.next_run_at == when.next_after(due.fires[-1] if due.fires else now)
