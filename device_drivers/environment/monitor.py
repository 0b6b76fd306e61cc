"""Stale-sensor detection and local threshold alarms, wrapped around any environment sensor's driver.

:func:`monitored` passes the inner driver's readings through unchanged and adds, decided
here on the gateway (so they work with no hub at all):

- ``environment.alarm`` (:class:`~storegate.wire.EnvironmentAlarm`) when a value stays beyond a
  :class:`ThresholdAlarm` limit for its delay, and again when it is back inside by the hysteresis;
- ``device.stale`` (:class:`~storegate.wire.DeviceStale`): ``silent`` when no reading came for
  ``stale_after_s``, ``stuck`` when one value keeps arriving with fresh timestamps for
  ``stuck_after_s``, ``recovered`` when it is fine again.

The inner ``readings()`` is pumped by a task into a queue, so the silence timer never cancels
the inner generator's ``__anext__`` (cancelling it would end the generator, and with it the
driver's poll loop). Only transitions are emitted, never the same state twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from types import TracebackType
from typing import Final, Self

import structlog
from pydantic import ValidationError

from device_drivers.base import Driver, DriverHealth, Reading
from device_drivers.environment.rules import AlarmTransition, StaleMachine, StaleTransition, ThresholdMachine
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.ports import DeviceBinding
from storegate.clock import SYSTEM_CLOCK, Clock
from storegate.wire import UNIT_OF, Command, CommandResult, DeviceStale, EnvironmentAlarm, EnvironmentReading, EventKind

log = structlog.get_logger(__name__)

# Readings the pump may run ahead of a slow consumer before it waits (backpressure on the inner driver).
_QUEUE_SIZE: Final = 64


class _End:
    """The inner readings() ended."""


_END: Final = _End()


class MonitoredDriver:
    """A Driver that adds local alarms and stale detection to an inner environment sensor's driver."""

    def __init__(
        self, *, inner: Driver, binding: DeviceBinding, settings: EnvironmentSettings, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.inner = inner
        self._binding = binding
        self._settings = settings
        self._clock = clock
        self._alarms = [ThresholdMachine(rule=rule) for rule in settings.alarms]
        self._stale = StaleMachine(stale_after_s=settings.stale_after_s, stuck_after_s=settings.stuck_after_s)

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)

    async def execute(self, command: Command) -> CommandResult:
        """The inner driver's ``execute``."""
        return await self.inner.execute(command)

    def health(self) -> DriverHealth:
        """The inner driver's ``health``."""
        return self.inner.health()

    async def _pump(self, queue: asyncio.Queue[Reading | _End | Exception]) -> None:
        try:
            async for reading in self.inner.readings():
                await queue.put(reading)
        except Exception as err:  # handed to the consumer, who re-raises it (DeviceUnavailableError...)
            await queue.put(err)
        else:
            await queue.put(_END)

    async def readings(self) -> AsyncIterator[Reading]:
        """The inner readings, each followed by the alarm and stale events it caused; silence by timer."""
        clock = self._clock
        queue: asyncio.Queue[Reading | _End | Exception] = asyncio.Queue(maxsize=_QUEUE_SIZE)
        pump = asyncio.create_task(self._pump(queue), name=f"monitor pump {self._binding.device_id}")
        self._stale.start(ts=clock.now(), at=clock.monotonic())
        getter: asyncio.Task[Reading | _End | Exception] | None = None
        try:
            while True:
                if getter is None:
                    getter = asyncio.create_task(queue.get())
                deadline = self._stale.deadline()
                if deadline is None:
                    await asyncio.wait({getter})
                else:
                    timer = asyncio.create_task(clock.sleep(deadline - clock.monotonic()))
                    try:
                        await asyncio.wait({getter, timer}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        timer.cancel()
                if not getter.done():
                    for change in self._stale.check(at=clock.monotonic()):
                        yield self._stale_reading(change, ts=clock.now())
                    continue
                item = getter.result()
                getter = None
                if isinstance(item, _End):
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
                for derived in self._derive(item):
                    yield derived
        finally:
            for task in (getter, pump):
                if task is not None:
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*(t for t in (getter, pump) if t is not None), return_exceptions=True)

    def _derive(self, reading: Reading) -> list[Reading]:
        at = self._clock.monotonic()
        measured = _measured(reading)
        if measured is None:
            return [self._stale_reading(c, ts=reading.ts) for c in self._stale.observe(ts=reading.ts, at=at)]
        out = [
            self._stale_reading(change, ts=reading.ts, zone=measured.zone)
            for change in self._stale.observe(ts=reading.ts, at=at, quantity=measured.quantity, value=measured.value)
        ]
        for machine in self._alarms:
            if machine.rule.quantity != measured.quantity:
                continue
            for change in machine.observe(measured.value, ts=reading.ts, at=at):
                out.append(self._alarm_reading(change, measured, ts=reading.ts))
        return out

    def _zone(self, zone: str | None) -> str | None:
        return zone if zone is not None else self._settings.zone

    def _stale_reading(self, change: StaleTransition, *, ts: datetime, zone: str | None = None) -> Reading:
        payload = DeviceStale(
            reason=change.reason,
            quantity=change.quantity,
            since=change.since,
            value=change.value,
            zone=self._zone(zone),
        )
        log.warning(
            "sensor_stale" if change.reason != "recovered" else "sensor_recovered",
            device_id=self._binding.device_id,
            reason=change.reason,
            quantity=None if change.quantity is None else change.quantity.value,
            value=change.value,
            since=change.since.isoformat(),
        )
        return Reading(
            device_id=self._binding.device_id,
            kind=EventKind.DEVICE_STALE,
            ts=ts,
            payload=payload.model_dump(mode="json", exclude_none=True),
        )

    def _alarm_reading(self, change: AlarmTransition, measured: EnvironmentReading, *, ts: datetime) -> Reading:
        zone = self._zone(measured.zone)
        payload = EnvironmentAlarm(
            state=change.state,
            quantity=measured.quantity,
            direction=change.direction,
            limit=change.limit,
            value=change.value,
            unit=UNIT_OF[measured.quantity],
            zone=zone,
            since=change.since,
        )
        # A local alarm is logged as well, so it is on the gateway's own record even when the hub is unreachable.
        log.warning(
            "environment_alarm",
            state=change.state,
            device_id=self._binding.device_id,
            zone=zone,
            quantity=measured.quantity.value,
            direction=change.direction,
            limit=change.limit,
            value=change.value,
            since=change.since.isoformat(),
        )
        return Reading(
            device_id=self._binding.device_id,
            kind=EventKind.ENVIRONMENT_ALARM,
            ts=ts,
            payload=payload.model_dump(mode="json", exclude_none=True),
        )


def _measured(reading: Reading) -> EnvironmentReading | None:
    """The reading's measured value, or None for another kind (or a payload that is not one)."""
    if reading.kind != EventKind.ENVIRONMENT_READING:
        return None
    try:
        return EnvironmentReading.model_validate(reading.payload)
    except ValidationError:
        return None


def monitored(
    driver: Driver, *, binding: DeviceBinding, settings: EnvironmentSettings, clock: Clock = SYSTEM_CLOCK
) -> Driver:
    """``driver`` with stale detection and local alarms added to its readings."""
    return MonitoredDriver(inner=driver, binding=binding, settings=settings, clock=clock)
