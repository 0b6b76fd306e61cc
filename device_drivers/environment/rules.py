"""Pure state machines of the environment monitor: local threshold alarms and stale-sensor detection.

No I/O and no clock of their own: the caller passes each reading's wall time ``ts``
(reported in the events) and a monotonic time ``at`` (used for every duration, so an
NTP step on a gateway without a real-time clock neither raises an alarm early nor
hides a stuck sensor). Each method returns the *transitions* it caused, never a state
it is already in, so the monitor emits one event per change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from device_drivers.environment.settings import ThresholdAlarm
from storegate.wire import Quantity

Direction = Literal["high", "low"]


@dataclass(frozen=True, slots=True)
class AlarmTransition:
    """An alarm raised (value beyond the limit for the delay) or cleared (back inside by the hysteresis)."""

    state: Literal["raised", "cleared"]
    direction: Direction
    limit: float
    value: float
    since: datetime


@dataclass(frozen=True, slots=True)
class _Pending:
    direction: Direction
    since: datetime
    since_at: float


class ThresholdMachine:
    """One :class:`ThresholdAlarm` rule: normal -> pending -> raised -> (cleared) normal."""

    def __init__(self, *, rule: ThresholdAlarm) -> None:
        self.rule = rule
        self._pending: _Pending | None = None
        self._raised: Direction | None = None

    @property
    def raised(self) -> Direction | None:
        """The direction of the alarm now raised, or None."""
        return self._raised

    def _limit(self, direction: Direction) -> float:
        limit = self.rule.high if direction == "high" else self.rule.low
        assert limit is not None
        return limit

    def _beyond(self, value: float) -> Direction | None:
        if self.rule.high is not None and value > self.rule.high:
            return "high"
        if self.rule.low is not None and value < self.rule.low:
            return "low"
        return None

    def _back_inside(self, direction: Direction, value: float) -> bool:
        # Hysteresis: a value hovering at the limit does not raise and clear on every reading.
        if direction == "high":
            return value <= self._limit("high") - self.rule.hysteresis
        return value >= self._limit("low") + self.rule.hysteresis

    def observe(self, value: float, *, ts: datetime, at: float) -> list[AlarmTransition]:
        """Feed one reading of the rule's quantity; returns the transitions it caused (at most clear + raise)."""
        out: list[AlarmTransition] = []
        if self._raised is not None:
            direction = self._raised
            if not self._back_inside(direction, value):
                return out
            out.append(AlarmTransition("cleared", direction, self._limit(direction), value, ts))
            self._raised = None
        beyond = self._beyond(value)
        if beyond is None:
            self._pending = None
            return out
        if self._pending is None or self._pending.direction != beyond:
            self._pending = _Pending(beyond, ts, at)
        pending = self._pending
        if at - pending.since_at >= self.rule.delay_s:
            out.append(AlarmTransition("raised", beyond, self._limit(beyond), value, pending.since))
            self._raised = beyond
            self._pending = None
        return out


StaleReason = Literal["silent", "stuck", "recovered"]


@dataclass(frozen=True, slots=True)
class StaleTransition:
    """A sensor fell silent, got stuck on one value, or recovered (``quantity`` None: the whole device)."""

    reason: StaleReason
    since: datetime
    quantity: Quantity | None = None
    value: float | None = None


@dataclass(slots=True)
class _Run:
    """The current run of identical values of one quantity."""

    value: float
    first_ts: datetime
    first_at: float
    last_ts: datetime
    stuck: bool = False


class StaleMachine:
    """Silent (no reading for ``stale_after_s``) and stuck (one value, fresh timestamps, ``stuck_after_s``)."""

    def __init__(self, *, stale_after_s: float, stuck_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self.stuck_after_s = stuck_after_s
        self._silent = False
        self._last_at: float | None = None
        self._last_ts: datetime | None = None
        self._runs: dict[Quantity, _Run] = {}

    @property
    def silent(self) -> bool:
        """Whether the device is silent now."""
        return self._silent

    @property
    def stuck(self) -> frozenset[Quantity]:
        """The quantities stuck now."""
        return frozenset(q for q, run in self._runs.items() if run.stuck)

    def start(self, *, ts: datetime, at: float) -> None:
        """Readings (re)start now: the silence timer runs from here if nothing was heard since."""
        if not self._silent:
            self._last_at, self._last_ts = at, ts

    def deadline(self) -> float | None:
        """The monotonic time at which the device turns silent, or None (already silent, or not started)."""
        if self._silent or self._last_at is None:
            return None
        return self._last_at + self.stale_after_s

    def check(self, *, at: float) -> list[StaleTransition]:
        """Whether the device has fallen silent by ``at``."""
        deadline = self.deadline()
        if deadline is None or at < deadline:
            return []
        self._silent = True
        assert self._last_ts is not None
        return [StaleTransition("silent", since=self._last_ts)]

    def observe(
        self, *, ts: datetime, at: float, quantity: Quantity | None = None, value: float | None = None
    ) -> list[StaleTransition]:
        """Feed one reading (any kind; ``quantity``/``value`` for a measured value); returns its transitions."""
        out: list[StaleTransition] = []
        if self._silent:
            self._silent = False
            out.append(StaleTransition("recovered", since=ts))
        self._last_at, self._last_ts = at, ts
        if quantity is None or value is None:
            return out
        run = self._runs.get(quantity)
        if run is None or run.value != value:
            if run is not None and run.stuck:
                out.append(StaleTransition("recovered", since=ts, quantity=quantity))
            self._runs[quantity] = _Run(value=value, first_ts=ts, first_at=at, last_ts=ts)
            return out
        # Only a fresh timestamp counts: a replayed reading is the same reading, not a stuck sensor.
        if ts <= run.last_ts:
            return out
        run.last_ts = ts
        if not run.stuck and at - run.first_at >= self.stuck_after_s:
            run.stuck = True
            out.append(StaleTransition("stuck", since=run.first_ts, quantity=quantity, value=value))
        return out
