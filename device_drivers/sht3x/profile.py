"""The profile of this kind of sensor (firmware_configs)."""

from __future__ import annotations

from typing import Literal

from device_drivers.profile_base import ProfileBase


class I2cSensorProfile(ProfileBase):
    """An I2C temperature and humidity sensor read through smbus2."""

    kind: Literal["i2c-sensor"]
