"""Simulated door contacts: a reed contact on a gpiozero mock pin, and a Modbus RTU I/O module.

:class:`SimulatedGpioContact` drives a ``gpiozero.pins.mock`` pin the way a reed contact
with the internal pull-up does (conducting pulls the pin low), including contact bounce.
:class:`SimulatedDoorModule` is a pymodbus RTU server on a serial port (a
:class:`~device_drivers.simulated.pty.NullModem`'s ``device_port``) with discrete inputs the
simulation sets; it can fall silent (stop answering) to simulate a dead module, or refuse
the next requests with an exception response (:meth:`SimulatedDoorModule.refuse`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from device_drivers.door.protocol import door_is_open

_INPUTS = 16  # discrete inputs of the simulated module (a common 16-channel DI module)


class SimulatedGpioContact:
    """A reed contact between a mock pin and ground; ``normally_open`` as in DoorSettings."""

    def __init__(self, *, pin: Any, normally_open: bool = False) -> None:
        self.pin = pin  # a gpiozero MockPin, e.g. MockFactory().pin(17)
        self.normally_open = normally_open

    def set_conducting(self, conducting: bool) -> None:
        """Close (conducting: the pin is pulled low) or open the contact."""
        if conducting:
            self.pin.drive_low()
        else:
            self.pin.drive_high()

    def set_door(self, door_open: bool) -> None:
        """Put the door in this state (the contact follows by its polarity)."""
        # The polarity mapping is its own inverse: conducting = door_open for NO, not door_open for NC.
        self.set_conducting(door_is_open(door_open, normally_open=self.normally_open))

    def bounce(self, door_open: bool, *, flips: int = 5) -> None:
        """Chatter between states (a rattling door, a bouncing reed), ending in ``door_open``."""
        for i in range(flips):
            self.set_door(door_open if i % 2 else not door_open)
        self.set_door(door_open)

    async def run(self, *, mean_interval_s: float = 30.0, seed: int = 0) -> None:
        """Open and close the door at random (seeded) until cancelled."""
        rng = random.Random(seed)
        door_open = False
        while True:
            await asyncio.sleep(rng.expovariate(1 / mean_interval_s))
            door_open = not door_open
            self.set_door(door_open)


class SimulatedDoorModule:
    """A Modbus RTU discrete-input module at ``unit`` on serial ``port`` (run with ``async with`` or :meth:`run`)."""

    def __init__(self, *, port: str, unit: int = 1, baudrate: int = 9600) -> None:
        self.port = port
        self.unit = unit
        self.baudrate = baudrate
        self.inputs = [False] * _INPUTS
        self.silent = False
        self.requests = 0
        self.refusals_pending = 0
        self._server: ModbusSerialServer | None = None

    def set_input(self, index: int, conducting: bool) -> None:
        """Set one discrete input (True: the contact on it conducts)."""
        self.inputs[index] = conducting

    def refuse(self, count: int = 1) -> None:
        """Answer the next ``count`` requests with an exception response (device failure), as a faulty module does."""
        self.refusals_pending += count

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        # pymodbus keeps discrete inputs packed 16 to a register (bit addressing): refresh them from ours.
        self.requests += 1
        for offset in range(len(registers)):
            base = (start_address + offset) * 16
            registers[offset] = sum(1 << bit for bit in range(16) if base + bit < _INPUTS and self.inputs[base + bit])
        if self.silent:
            await asyncio.sleep(3600)  # a module that stopped answering: the request times out
        if self.refusals_pending:
            self.refusals_pending -= 1
            return ExcCodes.DEVICE_FAILURE
        return None

    async def start(self) -> None:
        """Open the port and serve in the background."""
        bits = [SimData(0, values=[False] * _INPUTS, datatype=DataType.BITS)]
        registers = [SimData(0, values=[0], datatype=DataType.REGISTERS)]
        device = SimDevice(id=self.unit, simdata=(bits, list(bits), registers, list(registers)), action=self._action)
        self._server = ModbusSerialServer(device, port=self.port, baudrate=self.baudrate)
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                await server.shutdown()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> SimulatedDoorModule:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
