"""A Sensirion SHT3x on I2C through smbus2: temperature and humidity every ``poll_interval_s``.

Address: ``i2c-<bus>:<7-bit address>``, e.g. ``i2c-1:0x44`` (ADDR pin low; ``0x45`` when high),
``/dev/i2c-1:0x44`` also works. Each poll writes the single-shot command, waits for the
conversion and reads the 6-byte frame with one ``i2c_rdwr`` per message (the I2C plain-read
path; SMBus block reads would send a register byte the SHT3x does not have). Bus I/O blocks
for a few milliseconds, so it runs in a worker thread.

Errors, by errno (:data:`ERRNO_REASONS`): a NACK or bus glitch is counted and the poll skipped
(a sensor that keeps NACKing shows up as ``device.stale silent`` through the monitor); an adapter
that is gone (``ENODEV``, ``ENOENT``: a USB-I2C bridge pulled out) raises DeviceUnavailableError.
A frame with a bad CRC is counted, logged and skipped.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Final, Protocol, Self

import smbus2
import structlog

from device_drivers.base import DeviceUnavailableError, DriverError, Reading
from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.ports import DeviceBinding
from device_drivers.sht3x.profile import I2cSensorProfile
from device_drivers.sht3x.protocol import (
    FRAME_LEN,
    HEATER_OFF,
    MEASURE_HIGH_REPEATABILITY,
    SOFT_RESET,
    SOFT_RESET_TIME_S,
    FrameError,
    I2cAddress,
    command_bytes,
    parse_address,
    parse_measurement,
)
from device_drivers.toolkit.commands import answer_ping
from device_drivers.toolkit.sensor import SensorDriver
from storegate.clock import SYSTEM_CLOCK, Clock
from storegate.wire import Command, CommandResult, Quantity

log = structlog.get_logger(__name__)


# What an OSError from the i2c-dev ioctl means. "gone" ends the driver; the others are one bad poll.
ERRNO_REASONS: Final[dict[int, str]] = {
    errno.EREMOTEIO: "nack",  # i2c-bcm2835 and most adapters: no ACK from the device
    errno.ENXIO: "nack",  # some adapters (i2c-designware, i2c-tiny-usb) report a NACK so
    errno.EIO: "bus_error",
    errno.ETIMEDOUT: "bus_timeout",
    errno.EAGAIN: "arbitration_lost",
    errno.ENODEV: "gone",
    errno.ENOENT: "gone",
    errno.ESHUTDOWN: "gone",
}
_GONE: Final = "gone"


class I2cBus(Protocol):
    """What the driver needs of ``smbus2.SMBus`` (the seam the simulator and tests fill)."""

    def i2c_rdwr(self, *i2c_msgs: smbus2.i2c_msg) -> None:
        """Run the messages as one combined transaction."""
        ...

    def close(self) -> None:
        """Close the bus device."""
        ...


BusFactory = Callable[[int], I2cBus]


class _BusError(Exception):
    """One failed transfer that is not fatal; ``reason`` from ERRNO_REASONS."""

    def __init__(self, reason: str, err: OSError) -> None:
        super().__init__(f"{reason}: {err}")
        self.reason = reason


class Sht3xDriver(SensorDriver):
    """One SHT3x sensor; a Driver."""

    def __init__(
        self,
        *,
        profile: I2cSensorProfile,
        binding: DeviceBinding,
        settings: EnvironmentSettings,
        bus_factory: BusFactory = smbus2.SMBus,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(binding=binding, settings=settings, clock=clock, logger=log, reject_noun="polls")
        self.profile = profile
        self._bus_factory = bus_factory
        self._bus: I2cBus | None = None
        self._address: I2cAddress | None = None

    async def __aenter__(self) -> Self:
        self.record.opening()
        try:
            self._address = parse_address(self.binding.address, default_address=self.profile.default_address)
        except ValueError as err:
            self.record.down(err)
            raise DriverError(str(err)) from err
        try:
            self._bus = await asyncio.to_thread(self._bus_factory, self._address.bus)
        except OSError as err:
            raise self.record.unavailable(f"cannot open I2C bus {self._address.bus}: {err}") from err
        try:
            for wanted, command in (
                (self.profile.soft_reset_on_open, SOFT_RESET),
                (self.profile.heater_off_on_open, HEATER_OFF),
            ):
                if wanted:
                    await self._send_tolerant(command)
                    await self._clock.sleep(SOFT_RESET_TIME_S)
        except DeviceUnavailableError:
            await self._close_bus()
            raise
        self.record.up()
        return self

    async def _send_tolerant(self, command: int) -> None:
        # A sensor that does not answer on open is not fatal: it may be powered later, and the
        # monitor reports it silent meanwhile. A missing adapter is.
        try:
            await self._transfer(self._write_message(command))
        except _BusError as err:
            self.rejects.reject(err.reason, f"command {command:#06x} on open: {err}", address=self.binding.address)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close_bus()
        self.record.closed()

    async def _close_bus(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            try:
                bus.close()
            except OSError as err:  # an adapter already gone cannot be closed any further
                log.debug("i2c_close_failed", device_id=self.binding.device_id, error=str(err))

    def _write_message(self, command: int) -> smbus2.i2c_msg:
        assert self._address is not None
        return smbus2.i2c_msg.write(self._address.address, command_bytes(command))

    async def _transfer(self, message: smbus2.i2c_msg) -> None:
        bus = self._bus
        if bus is None:
            raise DeviceUnavailableError(f"{self.binding.device_id} is not open")
        try:
            await asyncio.to_thread(bus.i2c_rdwr, message)
        except OSError as err:
            reason = ERRNO_REASONS.get(err.errno or 0, "bus_error")
            if reason == _GONE:
                raise self.record.unavailable(f"I2C adapter of {self.binding.address} is gone: {err}") from err
            raise _BusError(reason, err) from err

    async def measure(self) -> bytes | None:
        """One single-shot measurement frame, or None when the bus failed (counted)."""
        assert self._address is not None
        read = smbus2.i2c_msg.read(self._address.address, FRAME_LEN)
        try:
            await self._transfer(self._write_message(MEASURE_HIGH_REPEATABILITY))
            await self._clock.sleep(self.profile.measurement_wait_s)
            await self._transfer(read)
        except _BusError as err:
            self.rejects.reject(err.reason, str(err), address=self.binding.address)
            return None
        return bytes(read)

    async def read_once(self) -> list[Reading]:
        """One poll: a temperature and a humidity reading, or nothing when it was rejected."""
        frame = await self.measure()
        if frame is None:
            return []
        try:
            measurement = parse_measurement(frame)
        except FrameError as err:
            self.rejects.reject(err.reason, err.detail, address=self.binding.address, frame=frame.hex())
            return []
        self.rejects.accepted()
        ts = self._clock.now()
        return [
            self.reading(Quantity.TEMPERATURE, measurement.temperature_c, ts),
            self.reading(Quantity.HUMIDITY, measurement.humidity_pct, ts),
        ]

    def readings(self) -> AsyncIterator[Reading]:
        """Two readings every ``poll_interval_s`` (drift-free); raises DeviceUnavailableError if the bus goes."""
        return self.polled(self._poll)

    async def _poll(self) -> AsyncIterator[Reading]:
        for reading in await self.read_once():
            yield reading

    async def execute(self, command: Command) -> CommandResult:
        """``ping``: reports the driver's state and the last reading time, without bus traffic."""
        return answer_ping(
            command,
            device_id=self.binding.device_id,
            now=self._clock.now(),
            detail=f"{self.record.state.value}, last reading {self.record.last_reading_at}",
            ok=self.record.is_up,
        )


def create(*, profile: I2cSensorProfile, binding: DeviceBinding, settings: EnvironmentSettings) -> Sht3xDriver:
    """The driver of one SHT3x at ``binding.address`` (``i2c-1:0x44``)."""
    return Sht3xDriver(profile=profile, binding=binding, settings=settings)
