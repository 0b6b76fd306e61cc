"""Settling, counting and load-cell faults of one shelf slot: pure logic on timestamped samples.

A :class:`SlotTracker` is fed every sample of its slot with the time it arrived (any
monotonic seconds; tests pass made-up times) and answers with the events it implies:

* a **settled** reading is one whose window of the last ``settle_window_s`` seconds is
  full and whose highest and lowest weights differ by at most ``settle_tolerance_g``.
  Noise stays inside the tolerance; a hand resting on the shelf trembles beyond it, and
  a pick or put is a step that leaves the window unstable until the new level has held
  for a whole window. Only a settled reading is counted.
* the **count** is the settled weight in units of the SKU's weight, rounded to the
  nearest item, but only when the weight is within ``count_tolerance`` of a unit from a
  whole count (a price tag or a half-pressed package is not an item). The first count,
  and the first after a fault or a tare, is the baseline; every later change is a
  :class:`CountChange`.
* **faults**: ``stuck`` (the raw ADC value bit-identical for longer than ``stuck_s``: a
  live cell always has noise in its lowest bits), ``out_of_range`` (beyond
  ``out_of_range_g`` for a whole window, or the controller reports the ADC saturated),
  ``negative_drift`` (settled below ``-negative_drift_g``; cleared at half that, so a
  slow drift does not flap) and ``disconnected`` (the controller says so). A slot with
  any fault produces no count changes; once every fault has cleared it re-baselines.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

FaultKind = Literal["stuck", "out_of_range", "negative_drift", "disconnected"]

# What each hardware code of the controller's E line means as a fault.
_HARDWARE_FAULTS: Final[dict[str, tuple[FaultKind, str]]] = {
    "DISC": ("disconnected", "the controller reports no load cell on this slot"),
    "SAT": ("out_of_range", "the controller reports the slot's ADC saturated"),
}


@dataclass(frozen=True, slots=True)
class SlotConfig:
    """How one slot is judged (the profile's calibration, with the shelf's overrides applied)."""

    unit_weight_g: float | None
    settle_window_s: float
    settle_tolerance_g: float
    count_tolerance: float
    stuck_s: float
    negative_drift_g: float
    out_of_range_g: float


@dataclass(frozen=True, slots=True)
class Sample:
    """One weight of the slot at time ``t``; ``grams`` and ``raw`` are None while the controller reports an error."""

    t: float
    grams: float | None
    raw: int | None


@dataclass(frozen=True, slots=True)
class CountChange:
    """The settled count changed by ``delta`` (negative: a pick) to ``count`` at ``weight_g``."""

    delta: int
    count: int
    weight_g: float


@dataclass(frozen=True, slots=True)
class FaultRaised:
    """The slot's cell cannot be trusted: ``fault`` is why."""

    fault: FaultKind
    detail: str


@dataclass(frozen=True, slots=True)
class FaultCleared:
    """Every fault of the slot has cleared; ``detail`` names them."""

    detail: str


SlotEvent = CountChange | FaultRaised | FaultCleared


def count_items(weight_g: float, unit_weight_g: float, tolerance: float) -> int | None:
    """Whole items in ``weight_g``, or None when it is more than ``tolerance`` units from a whole count."""
    units = weight_g / unit_weight_g
    nearest = math.floor(units + 0.5)  # not round(): banker's rounding would make 2.5 and 3.5 differ
    if nearest < 0 or abs(units - nearest) > tolerance:
        return None
    return nearest


class SlotTracker:
    """One slot's settle window, committed count and active faults."""

    def __init__(self, *, config: SlotConfig) -> None:
        self.config = config
        self._window: deque[tuple[float, float]] = deque()
        self._faults: dict[FaultKind, str] = {}
        self._count: int | None = None
        self._settled: float | None = None
        self._last_raw: int | None = None
        self._raw_since = 0.0
        self._hardware: set[str] = set()

    @property
    def faults(self) -> dict[FaultKind, str]:
        """The active faults and their details."""
        return dict(self._faults)

    @property
    def count(self) -> int | None:
        """The committed count (None: no settled count yet, or no unit weight)."""
        return self._count

    @property
    def settled_weight_g(self) -> float | None:
        """The latest settled weight (None until the first settle)."""
        return self._settled

    def stock(self) -> tuple[int | None, float] | None:
        """(count, settled weight) to report, or None while faulty or before the first settle."""
        if self._faults or self._settled is None:
            return None
        if self.config.unit_weight_g is not None and self._count is None:
            return None
        return self._count, round(self._settled, 1)

    def rebaseline(self) -> None:
        """Forget the window and the count (after a tare or calibration moved the zero or the scale)."""
        self._window.clear()
        self._count = None
        self._settled = None

    def hardware_error(self, code: str) -> list[SlotEvent]:
        """The controller's E line for this slot: DISC, SAT, or NONE (fine again)."""
        if code == "NONE":
            return self._clear_hardware()
        fault = _HARDWARE_FAULTS.get(code)
        if fault is None:
            return []
        self._hardware.add(code)
        self._window.clear()
        return self._raise(*fault)

    def observe(self, sample: Sample) -> list[SlotEvent]:
        """Take one sample; returns what it changed (count changes, faults raised or cleared)."""
        if sample.grams is None or sample.raw is None:
            self._window.clear()  # no data: the settle window starts again after the error
            self._last_raw = None
            return []
        events = self._clear_hardware()  # the controller only sends values for a working cell
        events += self._check_stuck(sample.t, sample.raw)
        config = self.config
        self._window.append((sample.t, sample.grams))
        cut = sample.t - config.settle_window_s
        # Keep the newest sample at or before the cut: it proves the window covers the full span.
        while len(self._window) >= 2 and self._window[1][0] <= cut:
            self._window.popleft()
        if self._window[0][0] > cut:
            return events
        weights = [grams for _, grams in self._window]
        low, high = min(weights), max(weights)
        events += self._check_range(low, high)
        if high - low > config.settle_tolerance_g:
            return events
        settled = sum(weights) / len(weights)
        events += self._check_drift(settled)
        self._settled = settled
        if not self._faults:
            events += self._count_at(settled)
        return events

    def _count_at(self, settled: float) -> list[SlotEvent]:
        unit = self.config.unit_weight_g
        if unit is None:
            return []
        count = count_items(settled, unit, self.config.count_tolerance)
        if count is None or count == self._count:
            return []
        previous, self._count = self._count, count
        if previous is None:
            return []  # the baseline: nothing changed that we saw
        return [CountChange(delta=count - previous, count=count, weight_g=round(settled, 1))]

    def _check_stuck(self, t: float, raw: int) -> list[SlotEvent]:
        if raw != self._last_raw:
            self._last_raw, self._raw_since = raw, t
            return self._clear("stuck")
        if t - self._raw_since > self.config.stuck_s and "stuck" not in self._faults:
            return self._raise("stuck", f"raw ADC value {raw} unchanged for {t - self._raw_since:.0f} s")
        return []

    def _check_range(self, low: float, high: float) -> list[SlotEvent]:
        limit = self.config.out_of_range_g
        if low > limit or high < -limit:
            if "out_of_range" not in self._faults:
                weight = low if low > limit else high
                return self._raise("out_of_range", f"{weight:.0f} g is beyond the limit of {limit:.0f} g")
            return []
        if "SAT" not in self._hardware and -limit <= low and high <= limit:
            return self._clear("out_of_range")
        return []

    def _check_drift(self, settled: float) -> list[SlotEvent]:
        limit = self.config.negative_drift_g
        if settled < -limit:
            if "negative_drift" not in self._faults:
                return self._raise("negative_drift", f"settled at {settled:.1f} g, below -{limit:g} g")
            return []
        if settled >= -limit / 2:
            return self._clear("negative_drift")
        return []

    def _clear_hardware(self) -> list[SlotEvent]:
        events: list[SlotEvent] = []
        for code in sorted(self._hardware):
            self._hardware.discard(code)
            events += self._clear(_HARDWARE_FAULTS[code][0])
        return events

    def _raise(self, fault: FaultKind, detail: str) -> list[SlotEvent]:
        if fault in self._faults:
            return []
        self._faults[fault] = detail
        return [FaultRaised(fault=fault, detail=detail)]

    def _clear(self, fault: FaultKind) -> list[SlotEvent]:
        if self._faults.pop(fault, None) is None:
            return []
        if self._faults:
            return []  # still faulty for another reason: "cleared" means the slot can be trusted again
        self.rebaseline()
        return [FaultCleared(detail=f"{fault} cleared")]
