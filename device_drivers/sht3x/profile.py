"""The profile of this kind of sensor (firmware_configs)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from device_drivers.profile_base import ProfileBase


class I2cSensorProfile(ProfileBase):
    """An I2C temperature and humidity sensor read through smbus2."""

    kind: Literal["i2c-sensor"]
    chip: Literal["sht3x"] = Field(default="sht3x", description="the register protocol (Sensirion SHT30/31/35)")
    default_address: int = Field(default=0x44, ge=0x03, le=0x77, description="7-bit address when none is given")
    measurement_wait_s: float = Field(
        default=0.02, gt=0, le=1, description="wait between the measure command and the read (datasheet max 15.5 ms)"
    )
    soft_reset_on_open: bool = Field(default=True, description="send a soft reset (0x30A2) when the driver opens")
    heater_off_on_open: bool = Field(default=True, description="switch the internal heater off (0x3066) on open")
