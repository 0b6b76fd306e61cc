"""Modbus RTU temperature and humidity sensors (XY-MD02 / SHT20 class)."""

from __future__ import annotations

from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.families import DeviceFamily
from device_drivers.modbus_sensor.profile import ModbusSensorProfile

FAMILY = DeviceFamily(
    kind="modbus-sensor",
    profile=ModbusSensorProfile,
    settings=EnvironmentSettings,
    driver="device_drivers.modbus_sensor.driver:create",
    environment=True,
)
