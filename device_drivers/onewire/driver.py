"""A DS18B20 (or another ``w1_therm`` thermometer) read through sysfs, polled every ``poll_interval_s``.

Address: the probe's sysfs directory, e.g. ``/sys/bus/w1/devices/28-0316a279b0ff``. Each read of
its ``w1_slave`` runs a conversion that blocks for ~750 ms, so it runs in a worker thread. A
bad read (CRC ``NO``, the 85000 power-on value, all zeros, out of range) is counted, logged and
skipped; the directory vanishing means the probe was unplugged (the kernel drops it after its
next bus search): ``readings()`` raises DeviceUnavailableError and the supervisor takes over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import structlog

from device_drivers.base import DeviceUnavailableError, Reading
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.onewire.profile import OneWireSensorProfile
from device_drivers.onewire.protocol import W1RejectError, parse_w1_slave
from device_drivers.ports import DeviceBinding
from device_drivers.toolkit.commands import answer_ping
from device_drivers.toolkit.sensor import SensorDriver
from storegate.clock import SYSTEM_CLOCK, Clock
from storegate.wire import Command, CommandResult, Quantity

log = structlog.get_logger(__name__)

SLAVE_FILE: Final = "w1_slave"


class OneWireDriver(SensorDriver):
    """One 1-Wire thermometer; a Driver."""

    def __init__(
        self,
        *,
        profile: OneWireSensorProfile,
        binding: DeviceBinding,
        settings: EnvironmentSettings,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(binding=binding, settings=settings, clock=clock, logger=log, reject_noun="reads")
        self.profile = profile
        self._directory = Path(binding.address)

    async def __aenter__(self) -> Self:
        self.record.opening()
        if not await asyncio.to_thread(self._directory.is_dir):
            raise self.record.unavailable(f"{self._directory} is not there (probe unplugged, or w1 not loaded)")
        self.record.up()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.record.closed()

    def _read_slave(self) -> str:
        try:
            return (self._directory / SLAVE_FILE).read_text(encoding="ascii", errors="replace")
        except OSError as err:
            if not self._directory.is_dir():
                raise DeviceUnavailableError(f"{self._directory} vanished: probe unplugged") from err
            raise

    async def read_once(self) -> Reading | None:
        """One conversion: a reading, or None when it was rejected (counted and logged)."""
        try:
            text = await asyncio.to_thread(self._read_slave)
        except DeviceUnavailableError as err:
            self.went_away(err)
            raise
        except OSError as err:  # EIO mid-conversion with the directory still there: a bad read, not a gone probe
            self.rejects.reject("io_error", str(err), path=str(self._directory))
            return None
        try:
            sample = parse_w1_slave(text, min_c=self.profile.min_c, max_c=self.profile.max_c)
        except W1RejectError as err:
            self.rejects.reject(err.reason, err.detail, path=str(self._directory))
            return None
        self.rejects.accepted()
        return self.reading(Quantity.TEMPERATURE, sample.temperature_c, self._clock.now())

    def readings(self) -> AsyncIterator[Reading]:
        """A reading every ``poll_interval_s`` (drift-free); raises DeviceUnavailableError once unplugged."""
        return self.polled(self._poll)

    async def _poll(self) -> AsyncIterator[Reading]:
        reading = await self.read_once()
        if reading is not None:
            yield reading

    async def execute(self, command: Command) -> CommandResult:
        """``ping``: done when the probe's directory is there (no conversion is run)."""
        present = await asyncio.to_thread(self._directory.is_dir)
        return answer_ping(
            command,
            device_id=self.binding.device_id,
            now=self._clock.now(),
            detail=f"{self._directory.name} {'present' if present else 'absent'}",
            ok=present,
        )


def create(*, profile: OneWireSensorProfile, binding: DeviceBinding, settings: EnvironmentSettings) -> OneWireDriver:
    """The driver of one 1-Wire probe at ``binding.address`` (its sysfs directory)."""
    return OneWireDriver(profile=profile, binding=binding, settings=settings)
