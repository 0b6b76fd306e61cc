"""Judging a gateway's clock: which events carry a device time the hub cannot believe.

A Raspberry Pi has no real-time clock: until NTP answers it counts from 1970 (or from the time
fake-hwclock saved at the last shutdown), and a misconfigured one can run hours ahead. Its events are
stored all the same (nothing the gateway recorded is dropped), flagged with the first rule they break:

* ``before_earliest``: stamped before ``earliest_device_time``, which no deployed gateway ever saw (1970).
* ``ahead_of_hub``: stamped later than the hub received it, beyond ``max_ahead_s`` (what NTP-synced clocks
  and the transit allow).
* ``older_than_outbox``: stamped longer before the hub received it than ``max_delivery_delay_s``, more
  than an outbox waits for a hub that is away (an old event is not suspect in itself: the agent keeps
  events for days while the hub is unreachable, and sends them when it is back).
* ``gateway_clock_ahead``: the batch's ``sent_at`` (stamped by the same clock when it was published) is
  later than the hub received it, beyond ``max_ahead_s``: the clock that stamped the batch's events is
  ahead now. A ``sent_at`` far behind proves nothing (the broker holds a batch while the hub is down), so
  only the ahead side is read from it.

The first two make the device time impossible: the hub then applies the event (inventory, rules) at its
receipt, the latest it can have happened. The last two make it doubtful: it is kept and flagged.

Pure: no I/O, the hub's clock is the ``received_at`` handed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ClockIssue(StrEnum):
    """Why an event's device time is not believed (stored in ``events.clock_issue``)."""

    BEFORE_EARLIEST = "before_earliest"
    AHEAD_OF_HUB = "ahead_of_hub"
    OLDER_THAN_OUTBOX = "older_than_outbox"
    GATEWAY_CLOCK_AHEAD = "gateway_clock_ahead"

    @property
    def impossible(self) -> bool:
        """Whether the device time cannot be true (before any gateway ran, or after the hub had the event), as
        opposed to doubtful (an outage longer than the limit, a clock ahead now that may not have been then)."""
        return self in _IMPOSSIBLE


_IMPOSSIBLE: Final = frozenset({ClockIssue.BEFORE_EARLIEST, ClockIssue.AHEAD_OF_HUB})


class EventClockSettings(BaseModel):
    """How far a gateway's clock may be from the hub's before its events are flagged (``[event_clock]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    earliest_device_time: datetime = Field(
        default=datetime(2020, 1, 1, tzinfo=UTC),
        description="a device time before this is a clock that was never set (a Pi without RTC starts at 1970)",
    )
    max_ahead_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="a device time (or a batch's sent_at) later than its receipt by more than this is a clock ahead",
    )
    max_delivery_delay_s: float = Field(
        default=30 * 86_400.0,
        gt=0,
        description=(
            "the longest an event waits in a gateway's outbox for a hub that is away; a device time older than "
            "its receipt by more is a clock behind"
        ),
    )

    @field_validator("earliest_device_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("give earliest_device_time with a time zone, e.g. 2020-01-01T00:00:00Z")
        return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class BatchClock:
    """The limits of one batch's events, from the settings, the batch's ``sent_at`` and its receipt."""

    earliest: datetime
    latest: datetime
    oldest: datetime
    # Set when the batch's own sent_at shows the gateway's clock ahead: every event of it is suspect.
    batch_issue: ClockIssue | None

    @classmethod
    def of(cls, settings: EventClockSettings, *, sent_at: datetime, received_at: datetime) -> BatchClock:
        """The limits for a batch sent at ``sent_at`` (gateway's clock) and received at ``received_at`` (hub's)."""
        latest = received_at + timedelta(seconds=settings.max_ahead_s)
        return cls(
            earliest=settings.earliest_device_time,
            latest=latest,
            oldest=received_at - timedelta(seconds=settings.max_delivery_delay_s),
            batch_issue=ClockIssue.GATEWAY_CLOCK_AHEAD if sent_at > latest else None,
        )

    def issue_of(self, device_ts: datetime) -> ClockIssue | None:
        """The first rule ``device_ts`` breaks, or None for a time the hub believes."""
        if device_ts < self.earliest:
            return ClockIssue.BEFORE_EARLIEST
        if device_ts > self.latest:
            return ClockIssue.AHEAD_OF_HUB
        if device_ts < self.oldest:
            return ClockIssue.OLDER_THAN_OUTBOX
        return self.batch_issue
