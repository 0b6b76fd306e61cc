"""1-Wire temperature probes (DS18B20) read through the Linux w1 sysfs interface."""

from __future__ import annotations

from device_drivers.environment.settings import EnvironmentSettings
from device_drivers.families import DeviceFamily
from device_drivers.onewire.discovery import port_lister
from device_drivers.onewire.profile import OneWireSensorProfile

# Probes are not USB ports: hot-plug lists them with the family's own lister (the w1 sysfs tree).
FAMILY = DeviceFamily(
    kind="w1-sensor",
    profile=OneWireSensorProfile,
    settings=EnvironmentSettings,
    driver="device_drivers.onewire.driver:create",
    environment=True,
    port_lister=port_lister,
)
