"""A simulated Modbus RTU sensor: a pymodbus server on one end of a null-modem cable.

The server holds the profile's registers (plus the XY-MD02's settings registers,
0x0101 address, 0x0102 baud rate, 0x0103/0x0104 offsets, when the map leaves them free)
and answers with real RTU frames. Each read of input registers takes the next minute
of the real climate series (:func:`~device_drivers.simulated.climate.climate_series`,
shifted by ``offset_c`` for a chiller or freezer). The driver opens :attr:`port`.

Faults, for tests and the demo: :attr:`silent` (stops answering), :attr:`stuck` (the
values stop changing), :meth:`inject` (the next responses are garbage, carry a bad CRC,
are exception responses or hold the wrong number of registers), ``fault_rate`` (random
such faults) and :meth:`unplug` (the cable is pulled).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Iterator
from enum import StrEnum
from typing import Final, Self

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerRTU
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from device_drivers.modbus_sensor.profile import ModbusSensorProfile
from device_drivers.modbus_sensor.protocol import FUNCTION_CODES, encode_value
from device_drivers.simulated.climate import ClimateSample, climate_series
from device_drivers.simulated.pty import NullModem
from storegate.wire import Quantity

# The XY-MD02's settings registers (holding): unit id, baud rate, temperature and humidity offsets.
_SETTINGS_REGISTERS: Final = (0x0101, 0x0102, 0x0103, 0x0104)
_BIT_FUNCTIONS: Final = frozenset({1, 2, 5, 15})  # coils and discrete inputs: this sensor has none
_FUNCTION_OF_CODE: Final = {code: name for name, code in FUNCTION_CODES.items()}


class Fault(StrEnum):
    """A fault the simulated sensor can put into its next responses."""

    GARBAGE = "garbage"  # noise on the bus instead of the response
    CRC = "crc"  # the response with a broken CRC
    EXCEPTION = "exception"  # an exception response (device failure)
    WRONG_LENGTH = "wrong-length"  # a well-formed response holding one register too few


def _reframe(frame: bytes) -> bytes:
    """``frame`` (without its CRC) with a correct RTU CRC appended."""
    return frame + FramerRTU.compute_CRC(frame).to_bytes(2, "big")


def _wrong_length(frame: bytes) -> bytes:
    if len(frame) < 7 or frame[1] & 0x80:
        return frame
    body = frame[3:-2][:-2] or b"\x00"
    return _reframe(bytes([frame[0], frame[1], len(body)]) + body)


class ModbusSensorSimulator:
    """A Modbus sensor of ``profile`` answering as unit ``unit``; ``async with`` it or run it as a task."""

    def __init__(
        self,
        *,
        profile: ModbusSensorProfile,
        unit: int | None = None,
        modem: NullModem | None = None,
        offset_c: float = 0.0,
        seed: int = 0,
        fault_rate: float = 0.0,
        samples: Iterator[ClimateSample] | None = None,
    ) -> None:
        self.profile = profile
        self.unit = unit if unit is not None else profile.modbus.unit
        self._own_modem = modem is None
        self.modem = modem if modem is not None else NullModem()
        self._samples = samples if samples is not None else climate_series(offset_c=offset_c, seed=seed)
        self._rng = random.Random(seed)
        self.fault_rate = fault_rate
        self.silent = False
        self.stuck = False
        self.requests = 0  # requests addressed to this unit
        self.responses = 0  # responses actually sent
        self._pending: deque[Fault] = deque()
        self._server: ModbusSerialServer | None = None
        self._image: dict[tuple[str, int], int] = {}
        for field in profile.registers:
            for offset, word in enumerate(encode_value(field, 0.0)):
                self._image[(field.function, field.address + offset)] = word
        settings = (self.unit, profile.serial.baudrate, 0, 0)
        if not any(("holding", address) in self._image for address in _SETTINGS_REGISTERS):
            self._image.update({("holding", a): v for a, v in zip(_SETTINGS_REGISTERS, settings, strict=True)})
        self._advance()

    @property
    def port(self) -> str:
        """The serial port the driver opens."""
        return self.modem.port

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._own_modem:
            self.modem.open()
        link = self.profile.serial
        server = ModbusSerialServer(
            [self._device(self.unit, answering=True), self._device(0, answering=False)],
            framer=FramerType.RTU,
            port=self.modem.device_port,
            baudrate=link.baudrate,
            bytesize=link.bytesize,
            parity=link.parity,
            stopbits=int(link.stopbits),
            reconnect_delay=0,
            trace_packet=self._trace_packet,
        )
        await server.serve_forever(background=True)
        self._server = server
        return self

    async def __aexit__(self, *exc: object) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]
        if self._own_modem:
            await self.modem.close()

    async def run(self) -> None:
        """Serve until cancelled (closing the server and cable only if it started them)."""
        if self._server is not None:
            await asyncio.Event().wait()
        async with self:
            await asyncio.Event().wait()

    def unplug(self) -> None:
        """Pull the cable: the driver's port reports EIO and disappears."""
        self.modem.unplug()

    # ------------------------------------------------------------------ registers and faults

    def inject(self, fault: Fault, times: int = 1) -> None:
        """Put ``fault`` into the next ``times`` responses."""
        self._pending.extend([fault] * times)

    def set_registers(self, function: str, address: int, words: list[int]) -> None:
        """Set raw register words (e.g. a recorded response's); combine with :attr:`stuck` to keep them."""
        for offset, word in enumerate(words):
            self._image[(function, address + offset)] = word & 0xFFFF

    def registers(self, function: str, address: int, count: int) -> list[int]:
        """The raw words the sensor holds now."""
        return [self._image.get((function, address + i), 0) for i in range(count)]

    def _advance(self) -> None:
        sample = next(self._samples)
        values = {Quantity.TEMPERATURE: sample.temperature_c, Quantity.HUMIDITY: sample.humidity_pct}
        for field in self.profile.registers:
            if field.quantity in values:
                self.set_registers(field.function, field.address, encode_value(field, values[field.quantity]))

    def _device(self, unit: int, *, answering: bool) -> SimDevice:
        blocks = {name: self._sim_data(name) for name in ("holding", "input")}
        bits = [SimData(0, values=False, datatype=DataType.BITS)]
        return SimDevice(
            id=unit,
            simdata=(bits, list(bits), blocks["holding"], blocks["input"]),
            action=self._action if answering else self._refuse,
        )

    def _sim_data(self, function: str) -> list[SimData]:
        """Runs of contiguous registers of one function; addresses between runs answer 'illegal address'."""
        addresses = sorted(a for f, a in self._image if f == function) or [0]
        runs: list[SimData] = []
        start = previous = addresses[0]
        for address in [*addresses[1:], None]:
            if address is None or address != previous + 1:
                words = self.registers(function, start, previous - start + 1)
                runs.append(SimData(start, values=words, datatype=DataType.REGISTERS))
                if address is not None:
                    start = address
            if address is not None:
                previous = address
        return runs

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if function_code in _BIT_FUNCTIONS:
            return ExcCodes.ILLEGAL_FUNCTION
        function = _FUNCTION_OF_CODE.get(function_code, "holding")  # 6 and 16 write holding registers
        if function_code == FUNCTION_CODES["input"] and not self.stuck:
            self._advance()
        if set_values is None:  # a read: hand pymodbus the words as they are now
            for offset in range(count):
                registers[address - start_address + offset] = self._image.get((function, address + offset), 0)
        else:  # a write (settings registers): kept and read back, though the unit id does not change
            self.set_registers(function, address, [int(value) for value in set_values])
        return None

    async def _refuse(self, *_args: object) -> ExcCodes | None:
        return ExcCodes.DEVICE_FAILURE  # never sent: responses for other units are dropped in _trace_packet

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            return data
        if not data or data[0] != self.unit:
            return b""  # another unit's request: on a real bus that sensor (absent here) would answer
        self.requests += 1
        if self.silent:
            return b""
        fault = self._pending.popleft() if self._pending else None
        if fault is None and self.fault_rate and self._rng.random() < self.fault_rate:
            fault = self._rng.choice(list(Fault))
        response = self._faulty(fault, data) if fault is not None else data
        self.responses += 1
        return response

    def _faulty(self, fault: Fault, frame: bytes) -> bytes:
        faults = {
            Fault.GARBAGE: lambda: self._rng.randbytes(self._rng.randint(1, 12)),
            Fault.CRC: lambda: frame[:-1] + bytes([frame[-1] ^ 0xA5]),
            Fault.EXCEPTION: lambda: _reframe(bytes([frame[0], frame[1] | 0x80, ExcCodes.DEVICE_FAILURE])),
            Fault.WRONG_LENGTH: lambda: _wrong_length(frame),
        }
        return faults[fault]()
