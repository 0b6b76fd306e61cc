"""Sensors that print one line per reading on a serial port."""

from __future__ import annotations

from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.families import DeviceFamily
from device_drivers.serial_sensor.profile import SerialSensorProfile

FAMILY = DeviceFamily(
    kind="serial-sensor",
    profile=SerialSensorProfile,
    settings=EnvironmentSettings,
    driver="device_drivers.serial_sensor.driver:create",
    environment=True,
)
