"""A simulated SHT3x behind a simulated smbus2 bus: the I2C seam of the driver, speaking the real protocol.

:meth:`SimulatedSht3x.bus_factory` stands in for ``smbus2.SMBus``: the driver builds real
``smbus2.i2c_msg`` objects and this bus interprets them as the chip does. It ACKs its own
address only, takes the 16-bit commands (single-shot measure, soft reset, heater off/on,
clear status), NACKs a read before the conversion time has passed or without a measurement
pending (as the chip does without clock stretching), and answers with the 6-byte frame of the
current climate sample. Faults: NACKs, frames with a broken CRC, a stuck value, and the
adapter disappearing (``ENODEV`` on every transfer, ``ENOENT`` on opening the bus).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import time
from collections.abc import Callable, Iterator

import smbus2

from device_drivers.sht3x.protocol import (
    CLEAR_STATUS,
    FRAME_LEN,
    HEATER_OFF,
    HEATER_ON,
    MEASURE_HIGH_REPEATABILITY,
    SOFT_RESET,
    encode_measurement,
)
from device_drivers.simulated.climate import ClimateSample, climate_series

CONVERSION_TIME_S = 0.0125  # datasheet typical for high repeatability


def _os_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class SimulatedSht3x:
    """One SHT3x on bus ``bus`` at ``address``, following the recorded climate (offset by ``offset_c``)."""

    def __init__(
        self,
        *,
        bus: int = 1,
        address: int = 0x44,
        offset_c: float = 0.0,
        seed: int = 0,
        interval_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.address = address
        self.interval_s = interval_s
        self._monotonic = monotonic
        self._series: Iterator[ClimateSample] = climate_series(offset_c=offset_c, seed=seed)
        self.sample = next(self._series)
        self.heater_on = False
        self.commands: list[int] = []
        self.nacks_pending = 0
        self.bad_crc_pending = 0
        self.stuck = False
        self.adapter_present = True
        self._measure_started: float | None = None

    # ----------------------------------------------------------------- the simulated world

    def advance(self) -> ClimateSample:
        """Move to the next minute of the climate series (unless stuck); returns the current sample."""
        if not self.stuck:
            self.sample = next(self._series)
        return self.sample

    def nack(self, count: int = 1) -> None:
        """NACK the next ``count`` transfers (EREMOTEIO), as a sensor on a noisy or long bus does."""
        self.nacks_pending += count

    def corrupt(self, count: int = 1) -> None:
        """Send the next ``count`` frames with a flipped bit (the CRC no longer matches)."""
        self.bad_crc_pending += count

    def remove_adapter(self) -> None:
        """The I2C adapter goes away (a USB bridge pulled out): every transfer fails with ENODEV."""
        self.adapter_present = False

    async def run(self) -> None:
        """Advance the climate every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            self.advance()

    # ----------------------------------------------------------------- the bus the driver sees

    def bus_factory(self, bus_number: int) -> SimulatedBus:
        """Open bus ``bus_number`` as ``smbus2.SMBus(bus_number)`` would (ENOENT when it is not there)."""
        if bus_number != self.bus or not self.adapter_present:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), f"/dev/i2c-{bus_number}")
        return SimulatedBus(device=self)

    def transfer(self, message: smbus2.i2c_msg) -> None:
        """One I2C message, as the chip takes it; raises OSError as the i2c-dev ioctl would."""
        if not self.adapter_present:
            raise _os_error(errno.ENODEV)
        if message.addr != self.address:
            raise _os_error(errno.EREMOTEIO)  # nobody at that address
        if self.nacks_pending:
            self.nacks_pending -= 1
            raise _os_error(errno.EREMOTEIO)
        if message.flags & smbus2.smbus2.I2C_M_RD:
            self._read(message)
        else:
            self._write(bytes(message))

    def _write(self, data: bytes) -> None:
        if len(data) != 2:
            raise _os_error(errno.EREMOTEIO)  # the chip NACKs what is not a 16-bit command
        command = int.from_bytes(data, "big")
        self.commands.append(command)
        if command == MEASURE_HIGH_REPEATABILITY:
            self._measure_started = self._monotonic()
        elif command in (SOFT_RESET, CLEAR_STATUS):
            self._measure_started = None
            self.heater_on = self.heater_on and command == CLEAR_STATUS
        elif command in (HEATER_OFF, HEATER_ON):
            self.heater_on = command == HEATER_ON
        else:
            raise _os_error(errno.EREMOTEIO)

    def _read(self, message: smbus2.i2c_msg) -> None:
        started = self._measure_started
        if started is None or self._monotonic() - started < CONVERSION_TIME_S:
            raise _os_error(errno.EREMOTEIO)  # no clock stretching: not ready is a NACK
        self._measure_started = None
        frame = bytearray(encode_measurement(self.sample.temperature_c, self.sample.humidity_pct))
        if self.bad_crc_pending:
            self.bad_crc_pending -= 1
            frame[1] ^= 0x01
        length = min(int(message.len), FRAME_LEN)
        ctypes.memmove(message.buf, bytes(frame[:length]), length)


class SimulatedBus:
    """The ``smbus2.SMBus`` stand-in the driver's bus factory returns."""

    def __init__(self, *, device: SimulatedSht3x) -> None:
        self.device = device
        self.closed = False

    def i2c_rdwr(self, *i2c_msgs: smbus2.i2c_msg) -> None:
        """Run each message against the simulated chip."""
        if self.closed:
            raise _os_error(errno.EBADF)
        for message in i2c_msgs:
            self.device.transfer(message)

    def close(self) -> None:
        """Close (idempotent)."""
        self.closed = True
