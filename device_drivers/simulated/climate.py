"""Real indoor climate for the sensor simulators: a month of minute readings, replayed in a loop.

The series is the UCI Occupancy Detection data (Candanedo & Feldheim 2016, CC BY 4.0;
temperature in °C and relative humidity in % every minute, February 2015), read from
the shared data folder when it is there (see :func:`shared_data_dir`). Without it the
simulators fall back to a seeded daily curve, so the demo runs on any machine.
"""

from __future__ import annotations

import csv
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final

_FILES: Final = ("datatraining.txt", "datatest.txt", "datatest2.txt")


def shared_data_dir() -> Path | None:
    """The shared real-data folder: $STOREGATE_SHARED_DATA, else ``shared/data`` beside or above the checkout."""
    configured = os.environ.get("STOREGATE_SHARED_DATA")
    if configured:
        path = Path(configured)
        return path if path.is_dir() else None
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class ClimateSample:
    """One minute of indoor climate."""

    temperature_c: float
    humidity_pct: float


@lru_cache(maxsize=1)
def recorded_climate() -> tuple[ClimateSample, ...]:
    """The recorded series, in time order (empty when the data folder is absent)."""
    folder = shared_data_dir()
    if folder is None:
        return ()
    rows: list[tuple[str, ClimateSample]] = []
    for name in _FILES:
        path = folder / "sensors" / name
        if not path.is_file():
            continue
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            next(reader, None)  # the header names 7 columns; each row starts with an extra row number
            for row in reader:
                try:
                    _, stamp, temperature, humidity = row[:4]
                    sample = ClimateSample(float(temperature), float(humidity))
                except ValueError:
                    continue  # a malformed row of third-party data is skipped, not fatal
                rows.append((stamp, sample))
    rows.sort(key=lambda item: item[0])
    return tuple(sample for _, sample in rows)


def climate_series(*, offset_c: float = 0.0, seed: int = 0) -> Iterator[ClimateSample]:
    """Endless minute samples: the recorded series shifted by ``offset_c`` (a chiller is ~-18 °C from a room).

    Each seed starts at a different point of the recording, so two sensors do not move in lockstep.
    """
    recorded = recorded_climate()
    rng = random.Random(seed)
    if recorded:
        start = rng.randrange(len(recorded))
        index = start
        while True:
            sample = recorded[index]
            yield ClimateSample(round(sample.temperature_c + offset_c, 2), sample.humidity_pct)
            index = (index + 1) % len(recorded)
    minute = rng.randrange(1440)
    while True:
        phase = 2 * math.pi * minute / 1440
        yield ClimateSample(
            round(21.0 + offset_c + 1.5 * math.sin(phase) + rng.gauss(0, 0.05), 2),
            round(35.0 + 5.0 * math.cos(phase) + rng.gauss(0, 0.3), 2),
        )
        minute += 1
