"""Environment excursions: a pure state machine per zone, fed readings in time order.

A reading beyond a limit starts a *pending* breach; if the zone is still beyond it ``alarm_after_s``
later (by reading time) the excursion is *raised*, starting at the first breaching reading. It clears
only once a reading is back inside the limit by ``hysteresis``, so a value hovering at the limit does
not flap. Each cleared excursion is recorded with its start, end, peak (the worst value) and duration.

Gaps: readings further apart than ``max_gap_s`` break the evidence of continuity. A pending breach
restarts at the reading after the gap (an alarm needs ``alarm_after_s`` of readings that show it);
a raised excursion stays raised (a gap is no proof the zone recovered) and counts the gap.
Out of order: a reading not after the last accepted one is rejected with a reason and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from storegate.wire import Quantity

Direction = Literal["high", "low"]
Phase = Literal["normal", "pending", "raised"]

DEFAULT_MAX_GAP_S: Final = 600.0


class ZoneRange(BaseModel):
    """The allowed range of one quantity in one zone, with the delay before alarming and the hysteresis to clear."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    zone: str = Field(min_length=1, max_length=64)
    quantity: Quantity
    low: float | None = Field(default=None, allow_inf_nan=False, description="lowest allowed value; None: no floor")
    high: float | None = Field(default=None, allow_inf_nan=False, description="highest allowed value; None: no cap")
    alarm_after_s: float = Field(default=900.0, ge=0, description="how long beyond a limit before it is an excursion")
    hysteresis: float = Field(default=0.5, ge=0, description="how far back inside a limit a reading must be to clear")
    max_gap_s: float = Field(default=DEFAULT_MAX_GAP_S, gt=0, description="readings further apart break continuity")

    @model_validator(mode="after")
    def _a_real_range(self) -> ZoneRange:
        if self.low is None and self.high is None:
            raise ValueError("a range needs a low or a high limit")
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        return self

    def breach(self, value: float) -> Direction | None:
        """Which limit a value is beyond, if any."""
        if self.high is not None and value > self.high:
            return "high"
        if self.low is not None and value < self.low:
            return "low"
        return None

    def cleared(self, direction: Direction, value: float) -> bool:
        """Whether a value is back inside the given limit by the hysteresis."""
        if direction == "high":
            assert self.high is not None  # only a range with a high limit breaches high
            return value <= self.high - self.hysteresis
        assert self.low is not None
        return value >= self.low + self.hysteresis


def chiller_range(zone: str, **overrides: float) -> ZoneRange:
    """A chiller: 0 to 5 °C."""
    return ZoneRange.model_validate(
        {"zone": zone, "quantity": Quantity.TEMPERATURE, "low": 0.0, "high": 5.0} | overrides
    )


def freezer_range(zone: str, **overrides: float) -> ZoneRange:
    """A freezer: at most -18 °C."""
    return ZoneRange.model_validate({"zone": zone, "quantity": Quantity.TEMPERATURE, "high": -18.0} | overrides)


def humidity_range(zone: str, **overrides: float) -> ZoneRange:
    """Relative humidity of a sales floor or store room: 30 to 70 %RH, clearing 2 %RH inside."""
    return ZoneRange.model_validate(
        {"zone": zone, "quantity": Quantity.HUMIDITY, "low": 30.0, "high": 70.0, "hysteresis": 2.0} | overrides
    )


@dataclass(frozen=True, kw_only=True)
class Reading:
    """One measured value of a zone at an instant, with the id of the event that carried it."""

    at: datetime
    value: float
    event_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class Excursion:
    """A period a zone spent beyond a limit: start, end (None while open), the worst value and when."""

    zone: str
    quantity: Quantity
    direction: Direction
    limit: float
    start: datetime
    end: datetime | None
    peak: float
    peak_at: datetime
    gaps: int = 0
    evidence: tuple[str, ...] = ()

    @property
    def duration(self) -> timedelta | None:
        """How long it lasted; None while it is still open."""
        return None if self.end is None else self.end - self.start


@dataclass(frozen=True, kw_only=True)
class ExcursionState:
    """Where a zone's state machine stands: the last accepted reading and any breach in progress."""

    phase: Phase = "normal"
    last_at: datetime | None = None
    current: Excursion | None = None  # pending or raised; None when normal


@dataclass(frozen=True, kw_only=True)
class Step:
    """What feeding one reading did: the new state, a raised or cleared excursion, or why it was rejected."""

    state: ExcursionState
    raised: Excursion | None = None
    cleared: Excursion | None = None
    rejected: str | None = None


def _worse(direction: Direction, value: float, than: float) -> bool:
    return value > than if direction == "high" else value < than


def _begin(limits: ZoneRange, reading: Reading, direction: Direction) -> Excursion:
    limit = limits.high if direction == "high" else limits.low
    assert limit is not None
    return Excursion(
        zone=limits.zone,
        quantity=limits.quantity,
        direction=direction,
        limit=limit,
        start=reading.at,
        end=None,
        peak=reading.value,
        peak_at=reading.at,
        evidence=(reading.event_id,) if reading.event_id else (),
    )


def _extend(excursion: Excursion, reading: Reading, *, gap: bool) -> Excursion:
    worse = _worse(excursion.direction, reading.value, excursion.peak)
    return replace(
        excursion,
        peak=reading.value if worse else excursion.peak,
        peak_at=reading.at if worse else excursion.peak_at,
        gaps=excursion.gaps + gap,
        evidence=excursion.evidence + ((reading.event_id,) if reading.event_id else ()),
    )


def _from_normal(limits: ZoneRange, reading: Reading) -> Step:
    direction = limits.breach(reading.value)
    if direction is None:
        return Step(state=ExcursionState(last_at=reading.at))
    excursion = _begin(limits, reading, direction)
    if limits.alarm_after_s == 0:
        return Step(state=ExcursionState(phase="raised", last_at=reading.at, current=excursion), raised=excursion)
    return Step(state=ExcursionState(phase="pending", last_at=reading.at, current=excursion))


def feed(limits: ZoneRange, state: ExcursionState, reading: Reading) -> Step:
    """Advance a zone's state machine by one reading; readings must come in strictly increasing time."""
    if state.last_at is not None and reading.at <= state.last_at:
        return Step(
            state=state,
            rejected=f"reading at {reading.at.isoformat()} is not after the last accepted one "
            f"at {state.last_at.isoformat()}; readings must arrive in time order",
        )
    gap = state.last_at is not None and (reading.at - state.last_at).total_seconds() > limits.max_gap_s
    current = state.current
    if state.phase == "normal" or current is None:
        return _from_normal(limits, reading)

    if state.phase == "pending":
        if gap or limits.breach(reading.value) != current.direction:
            # Back inside, the other limit, or no continuous evidence: start over from this reading.
            return _from_normal(limits, reading)
        extended = _extend(current, reading, gap=False)
        if (reading.at - extended.start).total_seconds() >= limits.alarm_after_s:
            return Step(state=ExcursionState(phase="raised", last_at=reading.at, current=extended), raised=extended)
        return Step(state=ExcursionState(phase="pending", last_at=reading.at, current=extended))

    # raised
    if limits.cleared(current.direction, reading.value):
        ended = replace(current, end=reading.at, gaps=current.gaps + gap)
        after = _from_normal(limits, reading)  # the same reading may breach the other limit
        return replace(after, cleared=ended)
    extended = _extend(current, reading, gap=gap)
    return Step(state=ExcursionState(phase="raised", last_at=reading.at, current=extended))
