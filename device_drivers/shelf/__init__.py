"""The smart shelf: the Storegate shelf controller (load cells per slot) on a serial line."""

from __future__ import annotations

from device_drivers.families import DeviceFamily
from device_drivers.shelf.profile import ShelfProfile, ShelfSettings

FAMILY = DeviceFamily(
    kind="shelf",
    profile=ShelfProfile,
    settings=ShelfSettings,
    driver="device_drivers.shelf.driver:create",
)
