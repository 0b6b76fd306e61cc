"""Judging a gateway's clock (hub.ingest.clock): pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from hub.ingest.clock import BatchClock, ClockIssue, EventClockSettings

RECEIVED = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
SETTINGS = EventClockSettings()


@pytest.mark.parametrize(
    ("device_ts", "sent_at", "expected"),
    [
        # A Pi without a real-time clock, before NTP answered.
        (datetime(1970, 1, 1, 0, 0, 42, tzinfo=UTC), RECEIVED, ClockIssue.BEFORE_EARLIEST),
        (RECEIVED + timedelta(days=365 * 30), RECEIVED, ClockIssue.AHEAD_OF_HUB),
        (RECEIVED + timedelta(minutes=6), RECEIVED, ClockIssue.AHEAD_OF_HUB),
        # Within the tolerance: clocks and transit are never exact.
        (RECEIVED + timedelta(minutes=4), RECEIVED, None),
        # Store-and-forward: buffered for two days while the hub was away, sent now, is not skew.
        (RECEIVED - timedelta(days=2), RECEIVED - timedelta(seconds=1), None),
        # The broker held the batch for a day while the hub was down: an old sent_at proves nothing.
        (RECEIVED - timedelta(days=2), RECEIVED - timedelta(days=1), None),
        # Older than any outbox waits: fake-hwclock restored a months-old time.
        (RECEIVED - timedelta(days=40), RECEIVED, ClockIssue.OLDER_THAN_OUTBOX),
        # A plausible stamp, but the clock that made it sent the batch an hour ahead of the hub.
        (RECEIVED - timedelta(minutes=1), RECEIVED + timedelta(hours=1), ClockIssue.GATEWAY_CLOCK_AHEAD),
        (RECEIVED - timedelta(minutes=1), RECEIVED, None),
    ],
)
def test_issue_of_a_device_time(device_ts: datetime, sent_at: datetime, expected: ClockIssue | None) -> None:
    judge = BatchClock.of(SETTINGS, sent_at=sent_at, received_at=RECEIVED)
    assert judge.issue_of(device_ts) == expected


def test_only_an_impossible_device_time_is_replaced_when_applied() -> None:
    assert {issue for issue in ClockIssue if issue.impossible} == {ClockIssue.BEFORE_EARLIEST, ClockIssue.AHEAD_OF_HUB}


def test_the_limits_are_settings() -> None:
    strict = EventClockSettings(
        max_ahead_s=10, max_delivery_delay_s=3600, earliest_device_time=datetime(2026, 1, 1, tzinfo=UTC)
    )
    judge = BatchClock.of(strict, sent_at=RECEIVED, received_at=RECEIVED)
    assert judge.issue_of(RECEIVED + timedelta(seconds=11)) == ClockIssue.AHEAD_OF_HUB
    assert judge.issue_of(RECEIVED - timedelta(hours=2)) == ClockIssue.OLDER_THAN_OUTBOX
    assert judge.issue_of(datetime(2025, 12, 31, tzinfo=UTC)) == ClockIssue.BEFORE_EARLIEST


def test_an_earliest_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ValidationError, match="with a time zone"):
        EventClockSettings(earliest_device_time=datetime(2020, 1, 1))
