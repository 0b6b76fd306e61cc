"""Excursions: delay before alarming, hysteresis before clearing, peaks, gaps and out-of-order readings."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hub.domain.excursions import (
    Excursion,
    ExcursionState,
    Reading,
    ZoneRange,
    chiller_range,
    feed,
    freezer_range,
    humidity_range,
)
from storegate.wire import Quantity

T0 = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
# A chiller alarming after 10 minutes beyond 0..5 °C, clearing 0.5 °C inside, continuity lost after 15 minutes.
CHILLER = chiller_range("chiller-1", alarm_after_s=600, max_gap_s=900)


def at(minute: float) -> datetime:
    return T0 + timedelta(minutes=minute)


def run(limits: ZoneRange, readings: list[tuple[float, float]]) -> tuple[list[float], list[Excursion], list[str]]:
    """Feed (minute, value) readings; return the minutes at which it raised, the cleared excursions, rejections."""
    state = ExcursionState()
    raised: list[float] = []
    cleared: list[Excursion] = []
    rejected: list[str] = []
    for minute, value in readings:
        step = feed(limits, state, Reading(at=at(minute), value=value, event_id=f"e{minute:g}"))
        state = step.state
        if step.raised is not None:
            raised.append(minute)
        if step.cleared is not None:
            cleared.append(step.cleared)
        if step.rejected is not None:
            rejected.append(step.rejected)
    return raised, cleared, rejected


# (start minute, end minute, peak, gaps) of each cleared excursion
Cleared = tuple[float, float, float, int]


@pytest.mark.parametrize(
    ("limits", "readings", "raised_at", "cleared"),
    [
        pytest.param(CHILLER, [(0, 3.0), (5, 4.9), (10, 5.0), (20, 0.0)], [], [], id="in range, limits inclusive"),
        pytest.param(CHILLER, [(0, 6.0), (5, 6.5), (8, 4.0)], [], [], id="door blip shorter than the delay"),
        pytest.param(
            CHILLER,
            [(0, 6.0), (5, 7.0), (10, 6.5), (15, 4.8), (20, 4.4)],
            [10],
            [(0, 20, 7.0, 0)],
            id="raised after the delay, cleared only past the hysteresis",
        ),
        pytest.param(CHILLER, [(0, -1.0), (10, -2.0), (15, 0.2), (16, 0.5)], [10], [(0, 16, -2.0, 0)], id="too cold"),
        pytest.param(
            CHILLER,
            [(0, 6.0), (5, 4.0), (6, 6.0), (12, 6.0), (16, 6.0)],
            [16],
            [],
            id="dipping back inside restarts the delay",
        ),
        pytest.param(
            CHILLER,
            [(0, 6.0), (20, 6.0), (25, 6.0), (30, 6.0)],
            [30],
            [],
            id="a gap while pending restarts the delay after the gap",
        ),
        pytest.param(
            CHILLER,
            [(0, 6.0), (10, 6.0), (40, 9.0), (45, 3.0)],
            [10],
            [(0, 45, 9.0, 1)],
            id="a gap while raised keeps it raised and is counted",
        ),
        pytest.param(
            CHILLER,
            [(0, 6.0), (10, 6.0), (11, -1.0), (21, -1.0), (22, 2.0)],
            [10, 21],
            [(0, 11, 6.0, 0), (11, 22, -1.0, 0)],
            id="from too warm straight to too cold",
        ),
        pytest.param(
            freezer_range("freezer-1", alarm_after_s=300),
            [(0, -20.0), (1, -17.0), (6, -15.0), (7, -18.2), (8, -18.6)],
            [6],
            [(1, 8, -15.0, 0)],
            id="freezer: peak is the warmest",
        ),
        pytest.param(
            chiller_range("chiller-1", alarm_after_s=0),
            [(0, 5.1), (1, 4.0)],
            [0],
            [(0, 1, 5.1, 0)],
            id="no delay raises at once",
        ),
        pytest.param(
            humidity_range("floor", alarm_after_s=60),
            [(0, 75.0), (1, 80.0), (2, 69.0), (3, 67.5)],
            [1],
            [(0, 3, 80.0, 0)],
            id="humidity hysteresis of 2 %RH",
        ),
    ],
)
def test_excursions(
    limits: ZoneRange, readings: list[tuple[float, float]], raised_at: list[float], cleared: list[Cleared]
) -> None:
    got_raised, got_cleared, rejected = run(limits, readings)
    assert got_raised == raised_at
    assert [(e.start, e.end, e.peak, e.gaps) for e in got_cleared] == [
        (at(start), at(end), peak, gaps) for start, end, peak, gaps in cleared
    ]
    for excursion in got_cleared:
        assert excursion.end is not None
        assert excursion.duration == excursion.end - excursion.start
    assert rejected == []


def test_an_excursion_carries_its_readings_as_evidence_and_its_limit() -> None:
    _, cleared, _ = run(CHILLER, [(0, 6.0), (10, 7.0), (12, 4.0)])
    assert cleared[0].evidence == ("e0", "e10")
    assert (cleared[0].direction, cleared[0].limit, cleared[0].peak_at) == ("high", 5.0, at(10))
    assert cleared[0].duration == timedelta(minutes=12)


@pytest.mark.parametrize("minute", [pytest.param(4, id="earlier"), pytest.param(5, id="same time")])
def test_a_reading_not_after_the_last_is_rejected_and_changes_nothing(minute: float) -> None:
    state = feed(CHILLER, ExcursionState(), Reading(at=at(0), value=6.0)).state
    state = feed(CHILLER, state, Reading(at=at(5), value=6.0)).state
    step = feed(CHILLER, state, Reading(at=at(minute), value=20.0))
    assert step.state == state
    assert step.raised is None
    assert step.rejected is not None
    assert "not after the last accepted one" in step.rejected


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"zone": "z", "quantity": "temperature"}, "needs a low or a high"),
        ({"zone": "z", "quantity": "temperature", "low": 5, "high": 0}, "must be below high"),
        ({"zone": "z", "quantity": "temperature", "high": 5, "hysteresis": -1}, "hysteresis"),
    ],
)
def test_invalid_ranges_are_refused(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        ZoneRange.model_validate(data)


def test_presets() -> None:
    assert (CHILLER.low, CHILLER.high, CHILLER.quantity) == (0.0, 5.0, Quantity.TEMPERATURE)
    assert (freezer_range("f").low, freezer_range("f").high) == (None, -18.0)
    assert humidity_range("h").quantity is Quantity.HUMIDITY


def test_results_are_frozen() -> None:
    step = feed(CHILLER, ExcursionState(), Reading(at=at(0), value=9.0))
    with pytest.raises(FrozenInstanceError):
        step.state.phase = "normal"  # type: ignore[misc]


@given(st.lists(st.tuples(st.integers(1, 300), st.floats(-5, 12, allow_nan=False)), min_size=1, max_size=60))
def test_every_cleared_excursion_is_consistent_with_its_readings(steps: list[tuple[int, float]]) -> None:
    """Peak is the worst reading inside the excursion, it lasted at least the delay, and it began with a breach."""
    limits = chiller_range("c", alarm_after_s=600, max_gap_s=1200)
    state = ExcursionState()
    readings: list[Reading] = []
    now = T0
    for gap_s, value in steps:
        now += timedelta(seconds=gap_s * 10)
        reading = Reading(at=now, value=value)
        readings.append(reading)
        step = feed(limits, state, reading)
        state = step.state
        if step.cleared is None:
            continue
        ex = step.cleared
        inside = [r.value for r in readings if ex.start <= r.at < ex.end] if ex.end else []
        worst = max(inside) if ex.direction == "high" else min(inside)
        assert ex.peak == worst
        assert ex.duration is not None
        assert ex.duration >= timedelta(seconds=limits.alarm_after_s)
        assert limits.breach(inside[0]) == ex.direction
        assert limits.cleared(ex.direction, value)
