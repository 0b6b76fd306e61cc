"""The profile of this kind of sensor (firmware_configs)."""

from __future__ import annotations

from typing import Literal

from device_drivers.profile_base import ProfileBase


class ModbusSensorProfile(ProfileBase):
    """A Modbus RTU sensor (RS-485)"""

    kind: Literal["modbus-sensor"]
