"""The profile of a Modbus RTU sensor model (firmware_configs): its line settings and register map.

The register map is data: each ``[[registers]]`` entry names the quantity it holds, its
function (``input`` registers, function code 4, or ``holding`` registers, code 3), its
address, how many 16-bit words it spans, and how the raw number becomes a value
(two's complement or not, times ``scale``). Another Modbus sensor model is another file.

Per-device settings are :class:`~device_drivers.environment.settings.EnvironmentSettings`
(zone, poll interval, alarms); the unit id comes from the profile's ``[modbus] unit`` and
can be overridden per device in its address (``/dev/ttyUSB0#unit=3``, see
:func:`split_address`).
"""

from __future__ import annotations

import math
import re
from typing import Final, Literal

from pydantic import Field, model_validator

from device_drivers.profile_base import ProfileBase, ProfileModel, SerialLink
from storegate.wire import Quantity

# Modbus allows at most 125 registers in one read (the response's byte count is one byte).
MAX_REGISTERS_PER_READ: Final = 125

_UNIT_SUFFIX: Final = re.compile(r"#unit=(?P<unit>\d{1,3})$")


class RegisterField(ProfileModel):
    """Where one quantity sits in the sensor's registers and how its raw number becomes a value."""

    quantity: Quantity
    function: Literal["input", "holding"] = Field(
        default="input", description="input registers (function code 4) or holding registers (code 3)"
    )
    address: int = Field(ge=0, le=0xFFFF, description="register address as on the wire (0-based)")
    count: Literal[1, 2] = Field(default=1, description="16-bit words: 1, or 2 for a 32-bit value")
    word_order: Literal["big", "little"] = Field(default="big", description="which word of a 32-bit value is first")
    signed: bool = Field(default=False, description="two's complement (negative temperatures)")
    scale: float = Field(default=1.0, description="value = raw * scale, e.g. 0.1 for tenths")
    min: float | None = Field(default=None, description="values below this are a sensor fault, not a reading")
    max: float | None = Field(default=None, description="values above this are a sensor fault, not a reading")

    @model_validator(mode="after")
    def _sane(self) -> RegisterField:
        if not math.isfinite(self.scale) or self.scale == 0:
            raise ValueError("scale must be a finite, non-zero number")
        if self.address + self.count - 1 > 0xFFFF:
            raise ValueError("the register runs past address 0xFFFF")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class ModbusLink(ProfileModel):
    """How the sensor is addressed on its RS-485 bus."""

    unit: int = Field(default=1, ge=1, le=247, description="unit id (slave address); 1 is the usual factory default")
    timeout_s: float = Field(default=1.0, gt=0, le=30, description="how long to wait for each response")


class ModbusSensorProfile(ProfileBase):
    """A Modbus RTU sensor (RS-485 through a USB adapter) and its register map."""

    kind: Literal["modbus-sensor"]
    serial: SerialLink = Field(default_factory=SerialLink)
    modbus: ModbusLink = Field(default_factory=ModbusLink)
    registers: list[RegisterField] = Field(min_length=1, max_length=32)

    @model_validator(mode="after")
    def _no_overlap(self) -> ModbusSensorProfile:
        if self.serial.stopbits not in (1, 2):
            raise ValueError("serial.stopbits must be 1 or 2 for Modbus RTU")
        taken: set[tuple[str, int]] = set()
        for field in self.registers:
            for word in range(field.address, field.address + field.count):
                if (field.function, word) in taken:
                    raise ValueError(f"{field.function} register {word:#06x} is mapped twice")
                taken.add((field.function, word))
        quantities = [field.quantity for field in self.registers]
        if len(set(quantities)) != len(quantities):
            raise ValueError("each quantity may be mapped once")
        return self


def split_address(address: str) -> tuple[str, int | None]:
    """The port and the unit id of an address: ``/dev/ttyUSB0#unit=3`` is ``("/dev/ttyUSB0", 3)``.

    Without a ``#unit=N`` suffix the unit is None (the profile's ``[modbus] unit`` applies).
    Raises ValueError for a unit outside 1..247.
    """
    match = _UNIT_SUFFIX.search(address)
    if match is None:
        return address, None
    unit = int(match["unit"])
    if not 1 <= unit <= 247:
        raise ValueError(f"unit id {unit} in {address!r} is outside 1..247")
    return address[: match.start()], unit
