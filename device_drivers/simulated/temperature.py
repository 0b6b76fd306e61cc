"""A simulated temperature sensor: a daily sine around a base value plus seeded noise.

The value is a pure function of the reading's time and the seed's noise sequence
(:func:`temperature_at`), so two sensors with the same seed and clock report the
same values. Readings come every ``interval_s`` as ``environment.reading`` events.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from datetime import datetime
from types import TracebackType
from typing import Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from device_drivers.base import DeviceUnavailableError, DriverHealth, Reading
from device_drivers.toolkit.commands import answer_ping
from device_drivers.toolkit.health import HealthRecord
from device_drivers.toolkit.schedule import PollSchedule
from device_drivers.toolkit.sensor import environment_reading
from storegate.clock import SYSTEM_CLOCK, Clock
from storegate.wire import Command, CommandResult, DeviceId, Quantity

_SECONDS_PER_DAY: Final = 86_400.0
# The sine peaks mid-afternoon and bottoms out before dawn, as a store's back room does.
_PEAK_SECOND_OF_DAY: Final = 15 * 3600.0


class SimulatedSensorConfig(BaseModel):
    """Config of one simulated temperature sensor (a ``[[devices]]`` entry with this driver)."""

    model_config = ConfigDict(extra="forbid")

    device_id: DeviceId
    driver: Literal["simulated-temperature"]
    zone: str | None = Field(default=None, min_length=1, max_length=64, description="e.g. 'chiller-1'")
    interval_s: float = Field(default=10.0, gt=0, le=86_400, description="seconds between readings")
    base_celsius: float = Field(default=4.0, ge=-80, le=150, description="daily mean, Cel")
    amplitude_celsius: float = Field(default=1.0, ge=0, le=50, description="half the daily swing, Cel")
    noise_celsius: float = Field(default=0.1, ge=0, le=20, description="standard deviation of the noise, Cel")
    seed: int = Field(default=0, description="seeds the noise, so runs repeat")


def temperature_at(ts: datetime, *, base: float, amplitude: float, noise_sample: float) -> float:
    """The simulated temperature at ``ts`` (UTC time of day), rounded to hundredths of a degree."""
    second_of_day = ts.hour * 3600 + ts.minute * 60 + ts.second + ts.microsecond / 1e6
    phase = 2 * math.pi * (second_of_day - _PEAK_SECOND_OF_DAY) / _SECONDS_PER_DAY
    return round(base + amplitude * math.cos(phase) + noise_sample, 2)


class SimulatedTemperatureSensor:
    """A Driver that produces seeded temperature readings every ``interval_s``."""

    def __init__(self, *, config: SimulatedSensorConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self._clock = clock
        self._rng = random.Random(config.seed)
        self.record = HealthRecord()

    async def __aenter__(self) -> Self:
        self.record.up()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.record.closed()

    def sample(self) -> Reading:
        """Take one reading now (the next value of the noise sequence)."""
        ts = self._clock.now()
        noise = self._rng.gauss(0.0, self.config.noise_celsius) if self.config.noise_celsius > 0 else 0.0
        value = temperature_at(
            ts, base=self.config.base_celsius, amplitude=self.config.amplitude_celsius, noise_sample=noise
        )
        self.record.read(ts)
        return environment_reading(
            device_id=self.config.device_id, quantity=Quantity.TEMPERATURE, value=value, zone=self.config.zone, ts=ts
        )

    async def readings(self) -> AsyncIterator[Reading]:
        """One reading at once, then one every ``interval_s`` on a drift-free schedule."""
        if not self.record.is_up:
            raise DeviceUnavailableError(f"{self.config.device_id} is not open")
        schedule = PollSchedule(interval_s=self.config.interval_s, clock=self._clock)
        while self.record.is_up:
            yield self.sample()
            await schedule.wait()

    async def execute(self, command: Command) -> CommandResult:
        """Answers ``ping``; a temperature sensor has no other commands."""
        return answer_ping(command, device_id=self.config.device_id, now=self._clock.now())

    def health(self) -> DriverHealth:
        """State, last reading time and count; a simulated device never fails on its own."""
        return self.record.snapshot()
