"""A DS18B20 (or another ``w1_therm`` thermometer) read through sysfs, polled every ``poll_interval_s``.

Address: the probe's sysfs directory, e.g. ``/sys/bus/w1/devices/28-0316a279b0ff``. Each read of
its ``w1_slave`` runs a conversion that blocks for ~750 ms, so it runs in a worker thread. A
bad read (CRC ``NO``, the 85000 power-on value, all zeros, out of range) is counted, logged and
skipped; the directory vanishing means the probe was unplugged (the kernel drops it after its
next bus search): ``readings()`` raises DeviceUnavailableError and the supervisor takes over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import structlog

from device_drivers.base import DeviceUnavailableError, DriverHealth, DriverState, Reading
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.onewire.profile import OneWireSensorProfile
from device_drivers.onewire.protocol import FAMILY_NAMES, W1RejectError, parse_device_name, parse_w1_slave, rom_id
from device_drivers.ports import DeviceBinding, PortInfo
from device_drivers.support import RejectCounter, answer_ping
from storegate.clock import SYSTEM_CLOCK, Clock
from storegate.wire import UNIT_OF, Command, CommandResult, DeviceIdentity, EnvironmentReading, EventKind, Quantity

log = structlog.get_logger(__name__)

SLAVE_FILE: Final = "w1_slave"


def discover(root: Path, family_codes: Iterable[str] = ("28",)) -> list[PortInfo]:
    """The probes of these families present under ``root`` (``/sys/bus/w1/devices``), by device directory.

    Each probe's identity carries its 64-bit ROM id as ``serial_number``; an absent root lists nothing.
    """
    wanted = {code.lower() for code in family_codes}
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []  # no w1 master loaded (or no bus at all): no probes, not an error
    found: list[PortInfo] = []
    for entry in entries:
        parsed = parse_device_name(entry.name)
        if parsed is None or parsed[0] not in wanted:
            continue
        identity = DeviceIdentity(serial_number=rom_id(entry.name), product=FAMILY_NAMES.get(parsed[0]))
        found.append(PortInfo(address=str(entry), identity=identity))
    return found


class OneWireDriver:
    """One 1-Wire thermometer; a Driver."""

    def __init__(
        self,
        *,
        profile: OneWireSensorProfile,
        binding: DeviceBinding,
        settings: EnvironmentSettings,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.profile = profile
        self.binding = binding
        self.settings = settings
        self._clock = clock
        self._directory = Path(binding.address)
        self._state = DriverState.CLOSED
        self._last_reading_at: datetime | None = None
        self._readings_total = 0
        self._last_error: str | None = None
        self.rejects = RejectCounter(logger=log, device_id=binding.device_id)

    @property
    def rejected_total(self) -> int:
        """Reads rejected since the driver was made."""
        return self.rejects.total

    async def __aenter__(self) -> Self:
        self._state = DriverState.OPENING
        if not await asyncio.to_thread(self._directory.is_dir):
            self._state = DriverState.DOWN
            self._last_error = f"{self._directory} is not there (probe unplugged, or w1 not loaded)"
            raise DeviceUnavailableError(self._last_error)
        self._state = DriverState.UP
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._state = DriverState.CLOSED

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
            self._state = DriverState.DOWN
            self._last_error = str(err)
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
        ts = self._clock.now()
        payload = EnvironmentReading(
            quantity=Quantity.TEMPERATURE,
            value=sample.temperature_c,
            unit=UNIT_OF[Quantity.TEMPERATURE],
            zone=self.settings.zone,
        ).model_dump(mode="json", exclude_none=True)
        self._last_reading_at = ts
        self._readings_total += 1
        return Reading(device_id=self.binding.device_id, kind=EventKind.ENVIRONMENT_READING, ts=ts, payload=payload)

    async def readings(self) -> AsyncIterator[Reading]:
        """A reading every ``poll_interval_s`` (drift-free); raises DeviceUnavailableError once unplugged."""
        if self._state is not DriverState.UP:
            raise DeviceUnavailableError(f"{self.binding.device_id} is not open")
        clock = self._clock
        due = clock.monotonic()
        while self._state is DriverState.UP:
            reading = await self.read_once()
            if reading is not None:
                yield reading
            due += self.settings.poll_interval_s
            # A conversion slower than the interval starts the next one at once, without a burst to catch up.
            due = max(due, clock.monotonic())
            await clock.sleep(due - clock.monotonic())

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

    def health(self) -> DriverHealth:
        """State, last error (the last reject when readings are fine) and counts, without I/O."""
        return DriverHealth(
            state=self._state,
            last_error=self._last_error or self.rejects.last_error,
            last_reading_at=self._last_reading_at,
            readings_total=self._readings_total,
        )


def create(*, profile: OneWireSensorProfile, binding: DeviceBinding, settings: EnvironmentSettings) -> OneWireDriver:
    """The driver of one 1-Wire probe at ``binding.address`` (its sysfs directory)."""
    return OneWireDriver(profile=profile, binding=binding, settings=settings)
