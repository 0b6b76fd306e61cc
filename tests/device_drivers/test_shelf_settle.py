"""Settling, counting and load-cell faults of one slot, on made-up timestamps (no clock, no I/O)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator

import pytest

from device_drivers.shelf.settle import (
    CountChange,
    FaultCleared,
    FaultRaised,
    Sample,
    SlotConfig,
    SlotEvent,
    SlotTracker,
    count_items,
)

RATE_HZ = 10
CONFIG = SlotConfig(
    unit_weight_g=250.0,
    settle_window_s=1.0,
    settle_tolerance_g=5.0,
    count_tolerance=0.3,
    stuck_s=10.0,
    negative_drift_g=25.0,
    out_of_range_g=5500.0,
)
_raw_noise = itertools.count()


@dataclasses.dataclass(frozen=True)
class Hold:
    """``grams`` for ``seconds``; ``jitter`` alternates +/- (noise, or a hand's tremor when large)."""

    grams: float
    seconds: float
    jitter: float = 0.8


def samples(*holds: Hold, start: float = 0.0) -> Iterator[Sample]:
    """Samples at RATE_HZ through each hold in turn; raw values always differ, as a live cell's do."""
    t = start
    for hold in holds:
        for i in range(round(hold.seconds * RATE_HZ)):
            grams = hold.grams + (hold.jitter if i % 2 else -hold.jitter)
            yield Sample(t=t, grams=grams, raw=round(grams * 420) + next(_raw_noise) % 7)
            t += 1 / RATE_HZ


def feed(tracker: SlotTracker, stream: Iterable[Sample]) -> list[SlotEvent]:
    """Every event the samples produce, in order, with weights rounded to whole grams (the jitter's mean is not 0)."""
    events = [event for sample in stream for event in tracker.observe(sample)]
    return [dataclasses.replace(e, weight_g=round(e.weight_g)) if isinstance(e, CountChange) else e for e in events]


@pytest.mark.parametrize(
    ("weight", "unit", "expected"),
    [
        (0.0, 250.0, 0),
        (2000.0, 250.0, 8),
        (2070.0, 250.0, 8),  # 8.28 units: within 0.3 of 8
        (2080.0, 250.0, None),  # 8.32: a label or a crushed pack, not a count
        (2180.0, 250.0, 9),  # 8.72: within 0.3 of 9
        (2125.0, 250.0, None),  # exactly between 8 and 9
        (125.0, 250.0, None),
        (-10.0, 250.0, 0),  # noise around an empty slot
        (-100.0, 250.0, None),
        (-200.0, 250.0, None),  # nearest is -1: never a count
        (37.5, 12.5, 3),
    ],
)
def test_count_items(weight: float, unit: float, expected: int | None) -> None:
    assert count_items(weight, unit, 0.3) == expected


@pytest.mark.parametrize(
    ("holds", "expected", "final_count"),
    [
        pytest.param([Hold(2000, 5)], [], 8, id="noise alone: baseline, no event"),
        pytest.param([Hold(2000, 2), Hold(1500, 2)], [CountChange(-2, 6, 1500.0)], 6, id="pick of two"),
        pytest.param([Hold(2000, 2), Hold(2250, 2)], [CountChange(1, 9, 2250.0)], 9, id="put of one"),
        pytest.param(
            [Hold(2000, 2), Hold(1750, 2), Hold(2000, 2)],
            [CountChange(-1, 7, 1750.0), CountChange(1, 8, 2000.0)],
            8,
            id="pick and put back",
        ),
        pytest.param([Hold(2000, 2), Hold(2300, 0.8, jitter=0), Hold(2000, 2)], [], 8, id="still hand under a window"),
        pytest.param([Hold(2000, 2), Hold(2300, 4, jitter=15), Hold(2000, 2)], [], 8, id="trembling hand for 4 s"),
        pytest.param([Hold(2000, 2), Hold(2125, 3), Hold(2000, 2)], [], 8, id="between counts: refused"),
        pytest.param([Hold(2000, 2), Hold(2125, 3), Hold(1750, 2)], [CountChange(-1, 7, 1750.0)], 7, id="refused then"),
        pytest.param([Hold(2000, 2), Hold(1000, 0.5), Hold(2000, 2)], [], 8, id="bump shorter than a window"),
        pytest.param([Hold(0, 2), Hold(250, 2)], [CountChange(1, 1, 250.0)], 1, id="first item on an empty slot"),
        pytest.param([Hold(2000, 0.9)], [], None, id="window never full: no baseline"),
    ],
)
def test_settling_and_counting(holds: list[Hold], expected: list[SlotEvent], final_count: int | None) -> None:
    tracker = SlotTracker(config=CONFIG)
    events = feed(tracker, samples(*holds))
    assert events == expected
    assert tracker.count == final_count


def test_slot_without_unit_weight_reports_weight_but_never_counts() -> None:
    tracker = SlotTracker(config=dataclasses.replace(CONFIG, unit_weight_g=None))
    assert feed(tracker, samples(Hold(2000, 2), Hold(1500, 2))) == []
    assert tracker.count is None
    stock = tracker.stock()
    assert stock is not None
    assert stock[0] is None
    assert stock[1] == pytest.approx(1500, abs=1)


def test_stock_is_the_committed_count_and_the_settled_weight() -> None:
    tracker = SlotTracker(config=CONFIG)
    assert tracker.stock() is None  # nothing settled yet
    feed(tracker, samples(Hold(1750, 2)))
    stock = tracker.stock()
    assert stock is not None
    assert stock[0] == 7
    assert stock[1] == pytest.approx(1750, abs=1)


def test_stuck_cell_is_raised_after_stuck_time_and_cleared_when_it_moves() -> None:
    tracker = SlotTracker(config=CONFIG)
    feed(tracker, samples(Hold(2000, 2)))
    frozen = [Sample(t=2.0 + i / RATE_HZ, grams=2000.0, raw=840_000) for i in range(int(10 * RATE_HZ))]
    assert feed(tracker, frozen) == []  # exactly stuck_s of identical values is not yet "longer than"
    events = feed(tracker, [Sample(t=12.1, grams=2000.0, raw=840_000)])
    assert events == [FaultRaised("stuck", "raw ADC value 840000 unchanged for 10 s")]
    assert tracker.stock() is None  # a faulty slot reports no stock
    events = feed(tracker, samples(Hold(1500, 2), start=12.2))
    assert events == [FaultCleared("stuck cleared")]  # and re-baselined at 1500 g, no pick
    assert tracker.count == 6


def test_overload_for_a_whole_window_is_out_of_range_and_suppresses_counts() -> None:
    tracker = SlotTracker(config=CONFIG)
    feed(tracker, samples(Hold(2000, 2)))
    assert feed(tracker, samples(Hold(6000, 0.5), start=2)) == []  # a slammed box: shorter than a window
    events = feed(tracker, samples(Hold(6000, 2), start=2.5))
    assert len(events) == 1
    assert isinstance(events[0], FaultRaised)
    assert events[0].fault == "out_of_range"
    assert events[0].detail in {"5999 g is beyond the limit of 5500 g", "6001 g is beyond the limit of 5500 g"}
    events = feed(tracker, samples(Hold(1750, 2), start=4.5))
    assert events == [FaultCleared("out_of_range cleared")]  # the pick while overloaded is not an event
    assert tracker.count == 7


def test_negative_drift_has_hysteresis() -> None:
    tracker = SlotTracker(config=dataclasses.replace(CONFIG, unit_weight_g=100.0))
    feed(tracker, samples(Hold(0, 2)))
    events = feed(tracker, samples(Hold(-30, 2), start=2))
    assert len(events) == 1
    assert isinstance(events[0], FaultRaised)
    assert events[0].fault == "negative_drift"
    assert events[0].detail.startswith("settled at -30.")
    assert feed(tracker, samples(Hold(-20, 2), start=4)) == []  # back inside the limit but not by half
    assert feed(tracker, samples(Hold(-5, 2), start=6)) == [FaultCleared("negative_drift cleared")]
    assert tracker.count == 0


def test_disconnected_cell_from_the_controller_and_its_recovery() -> None:
    tracker = SlotTracker(config=CONFIG)
    feed(tracker, samples(Hold(2000, 2)))
    assert tracker.hardware_error("DISC") == [
        FaultRaised("disconnected", "the controller reports no load cell on this slot")
    ]
    assert tracker.hardware_error("DISC") == []  # the controller repeats E lines: one event
    blank = [Sample(t=2 + i / RATE_HZ, grams=None, raw=None) for i in range(20)]
    assert feed(tracker, blank) == []
    assert tracker.hardware_error("NONE") == [FaultCleared("disconnected cleared")]
    # Items were taken while the cell was off: the new weight is a new baseline, not a pick.
    assert feed(tracker, samples(Hold(1500, 2), start=4)) == []
    assert tracker.count == 6


def test_a_value_after_a_hardware_error_clears_it_even_without_the_none_line() -> None:
    tracker = SlotTracker(config=CONFIG)
    tracker.hardware_error("DISC")
    assert feed(tracker, samples(Hold(2000, 0.1))) == [FaultCleared("disconnected cleared")]


def test_saturated_adc_is_out_of_range_until_the_controller_says_none() -> None:
    tracker = SlotTracker(config=CONFIG)
    feed(tracker, samples(Hold(2000, 2)))
    assert tracker.hardware_error("SAT") == [
        FaultRaised("out_of_range", "the controller reports the slot's ADC saturated")
    ]
    assert tracker.hardware_error("NONE") == [FaultCleared("out_of_range cleared")]


def test_cleared_only_when_every_fault_has_cleared() -> None:
    tracker = SlotTracker(config=dataclasses.replace(CONFIG, unit_weight_g=100.0))
    feed(tracker, samples(Hold(0, 2)))
    feed(tracker, samples(Hold(-40, 2), start=2))
    assert set(tracker.faults) == {"negative_drift"}
    assert tracker.hardware_error("DISC") == [
        FaultRaised("disconnected", "the controller reports no load cell on this slot")
    ]
    assert tracker.hardware_error("NONE") == []  # still drifting: the slot cannot be trusted yet
    assert set(tracker.faults) == {"negative_drift"}
    assert feed(tracker, samples(Hold(0, 2), start=4)) == [FaultCleared("negative_drift cleared")]


def test_rebaseline_after_a_tare_is_not_a_pick() -> None:
    tracker = SlotTracker(config=CONFIG)
    feed(tracker, samples(Hold(2000, 2)))
    tracker.rebaseline()
    assert feed(tracker, samples(Hold(0, 2), start=2)) == []
    assert tracker.count == 0
