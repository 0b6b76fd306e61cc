"""The profile of a sensor that prints one line per reading (firmware_configs): its line format.

The format is data: a regular expression whose named groups hold the values, a
``[[line.fields]]`` entry per quantity (which group, a scale, the sensor's range) and an
optional checksum scheme. Another line sensor is another file.

Per-device settings are :class:`~device_drivers.environment.settings.EnvironmentSettings`;
for a sensor that prints on its own, ``poll_interval_s`` is the most often its readings
are reported (a sensor printing every second is not sent to the hub every second).
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from device_drivers.profile_base import ProfileBase, ProfileModel, SerialLink
from storegate.wire import Quantity


class LineField(ProfileModel):
    """One quantity in the line: which named group holds it and how its text becomes a value."""

    quantity: Quantity
    group: str | None = Field(default=None, description="named group of the pattern; default: the quantity's name")
    scale: float = Field(default=1.0, description="value = number in the line * scale, e.g. 0.1 for tenths")
    min: float | None = Field(default=None, description="values below this are a sensor fault, not a reading")
    max: float | None = Field(default=None, description="values above this are a sensor fault, not a reading")

    @property
    def group_name(self) -> str:
        """The pattern group this field reads."""
        return self.group or self.quantity.value

    @model_validator(mode="after")
    def _sane(self) -> LineField:
        if not math.isfinite(self.scale) or self.scale == 0:
            raise ValueError("scale must be a finite, non-zero number")
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class LineFormat(ProfileModel):
    """How one line of the sensor reads."""

    pattern: str = Field(min_length=1, max_length=1000, description="regex the whole line (sans checksum) matches")
    checksum: Literal["none", "nmea-xor"] = Field(
        default="none", description="nmea-xor: the line ends '*HH', the XOR of its bytes (after a leading '$')"
    )
    encoding: Literal["ascii", "utf-8", "latin-1"] = "ascii"
    max_length: int = Field(default=256, ge=8, le=4096, description="longer lines are noise and dropped")
    silence_s: float = Field(default=30.0, gt=0, le=3600, description="no line for this long counts a timeout")
    fields: list[LineField] = Field(min_length=1, max_length=16)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
        return value

    @model_validator(mode="after")
    def _groups_exist(self) -> LineFormat:
        groups = re.compile(self.pattern).groupindex
        for field in self.fields:
            if field.group_name not in groups:
                raise ValueError(f"the pattern has no group named {field.group_name!r} (for {field.quantity.value})")
        quantities = [field.quantity for field in self.fields]
        if len(set(quantities)) != len(quantities):
            raise ValueError("each quantity may appear once")
        return self


class SerialSensorProfile(ProfileBase):
    """A sensor that prints one line per reading on a serial port."""

    kind: Literal["serial-sensor"]
    serial: SerialLink = Field(default_factory=SerialLink)
    line: LineFormat
