"""The profile of this kind of sensor (firmware_configs)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from device_drivers.profile_base import ProfileBase, SerialLink


class SerialSensorProfile(ProfileBase):
    """A sensor that prints one line per reading on a serial port."""

    kind: Literal["serial-sensor"]
    serial: SerialLink = Field(default_factory=SerialLink)
