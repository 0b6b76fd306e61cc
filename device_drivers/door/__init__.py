"""Door contacts: a reed contact on a GPIO pin (gpiozero) or on a Modbus RTU discrete input."""

from __future__ import annotations

from device_drivers.door.profile import DoorProfile, DoorSettings
from device_drivers.families import DeviceFamily

FAMILY = DeviceFamily(
    kind="door",
    profile=DoorProfile,
    settings=DoorSettings,
    driver="device_drivers.door.driver:create",
)
