"""Sensirion SHT3x temperature and humidity sensors on I2C, through smbus2."""

from __future__ import annotations

from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.families import DeviceFamily
from device_drivers.sht3x.profile import I2cSensorProfile

FAMILY = DeviceFamily(
    kind="i2c-sensor",
    profile=I2cSensorProfile,
    settings=EnvironmentSettings,
    driver="device_drivers.sht3x.driver:create",
    environment=True,
)
