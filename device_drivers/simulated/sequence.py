"""A simulated device that numbers its readings 1..count and can replay them: the exactly-once probe.

Reading ``n`` carries ``source_seq = n`` and a payload that is a pure function of
``n`` and the seed, so a replayed reading is identical to the original, and whoever
receives it can tell which number it is (:func:`reading_number`):

- ``environment.reading``: a temperature of ``n / 100`` Cel (``n = round(value * 100)``);
- any other kind: ``{"n": n, "value": <repeatable pseudo-random number of (seed, n)>}``.

Like a device that keeps a history, it resumes after the number the agent says it has
committed (:meth:`SimulatedSequenceDevice.resume_after`). Readings come at
``rate_per_s`` on a token bucket (the schedule does not drift with the consumer's
pace), and after reading ``count`` the device goes quiet.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from device_drivers.base import DeviceUnavailableError, DriverHealth, Reading
from device_drivers.toolkit.commands import answer_ping
from device_drivers.toolkit.health import HealthRecord
from storegate.clock import SYSTEM_CLOCK, Clock
from storegate.wire import (
    PAYLOAD_MODELS,
    UNIT_OF,
    Command,
    CommandResult,
    DeviceId,
    EnvironmentReading,
    EventKind,
    EventKindName,
    Quantity,
)

# Saved-up readings at most, as a fraction of a second's worth: a consumer that stalled
# gets a short burst afterwards, not everything it missed at once.
_BURST_S: Final = 0.1
_TOKEN_EPSILON: Final = 1e-9


class SimulatedSequenceConfig(BaseModel):
    """Config of one simulated sequence device (a ``[[devices]]`` entry with this driver)."""

    model_config = ConfigDict(extra="forbid")

    device_id: DeviceId
    driver: Literal["simulated-sequence"]
    kind: EventKindName = Field(default=EventKind.ENVIRONMENT_READING, description="event kind of every reading")
    count: int = Field(gt=0, le=10**12, description="readings in all, numbered 1..count")
    rate_per_s: float = Field(default=10.0, gt=0, le=100_000, description="readings per second")
    seed: int = Field(default=0, description="seeds the free-form payloads' values, so runs repeat")

    @model_validator(mode="after")
    def _kind_has_a_payload_of_ours(self) -> SimulatedSequenceConfig:
        if self.kind != EventKind.ENVIRONMENT_READING and self.kind in PAYLOAD_MODELS:
            raise ValueError(f"kind {self.kind!r} has a payload schema this device cannot fill")
        return self


def payload_of(kind: str, n: int, *, seed: int) -> dict[str, JsonValue]:
    """The payload of reading ``n``: a pure function of the kind, ``n`` and the seed."""
    if kind == EventKind.ENVIRONMENT_READING:
        value = round(n / 100, 2)
        return EnvironmentReading(
            quantity=Quantity.TEMPERATURE, value=value, unit=UNIT_OF[Quantity.TEMPERATURE]
        ).model_dump(mode="json", exclude_none=True)
    # A Random per reading (not one per device) so that a replay from any n repeats exactly.
    return {"n": n, "value": round(random.Random(seed * 1_000_003 + n).uniform(0, 100), 2)}


def reading_number(kind: str, payload: dict[str, JsonValue]) -> int:
    """The device's number of a reading, recovered from its payload (inverse of :func:`payload_of`)."""
    if kind == EventKind.ENVIRONMENT_READING:
        value = payload["value"]
        if not isinstance(value, int | float):
            raise ValueError(f"environment reading without a numeric value: {payload!r}")
        return round(value * 100)
    n = payload["n"]
    if not isinstance(n, int):
        raise ValueError(f"reading without an integer 'n': {payload!r}")
    return n


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; pure, driven by the caller's clock."""

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._tokens = 1.0
        self._at = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when one was there, else the seconds until one will be (nothing taken)."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        # With a tolerance: after sleeping exactly the time asked for, rounding may leave 0.9999999.
        if self._tokens >= 1.0 - _TOKEN_EPSILON:
            self._tokens = max(self._tokens - 1.0, 0.0)
            return 0.0
        return (1.0 - self._tokens) / self.rate


class SimulatedSequenceDevice:
    """A Driver emitting readings numbered 1..count at a steady rate, resumable after any number."""

    def __init__(self, *, config: SimulatedSequenceConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self._clock = clock
        self._next = 1
        self.record = HealthRecord()

    def resume_after(self, source_seq: int | None) -> None:
        """Start the next ``readings()`` after reading ``source_seq`` (from 1 when None)."""
        self._next = (source_seq or 0) + 1

    async def __aenter__(self) -> Self:
        self.record.up()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.record.closed()

    def reading(self, n: int) -> Reading:
        """Reading number ``n``, timestamped now."""
        ts = self._clock.now()
        self.record.read(ts)
        return Reading(
            device_id=self.config.device_id,
            kind=self.config.kind,
            ts=ts,
            payload=payload_of(self.config.kind, n, seed=self.config.seed),
            source_seq=n,
        )

    async def readings(self) -> AsyncIterator[Reading]:
        """Readings from the resume point to ``count`` at ``rate_per_s``, then silence until closed."""
        if not self.record.is_up:
            raise DeviceUnavailableError(f"{self.config.device_id} is not open")
        clock = self._clock
        rate = self.config.rate_per_s
        bucket = TokenBucket(rate=rate, burst=rate * _BURST_S, now=clock.monotonic())
        while self._next <= self.config.count and self.record.is_up:
            wait_s = bucket.take(clock.monotonic())
            if wait_s > 0:
                await clock.sleep(wait_s)
                continue
            n = self._next
            self._next += 1
            yield self.reading(n)
        # Quiet, like a device with nothing more to say: the supervisor cancels this when the agent stops.
        await asyncio.Event().wait()

    async def execute(self, command: Command) -> CommandResult:
        """Answers ``ping``; the device has no other commands."""
        return answer_ping(command, device_id=self.config.device_id, now=self._clock.now())

    def health(self) -> DriverHealth:
        """State, last reading time and count; a simulated device never fails on its own."""
        return self.record.snapshot()
