"""Barcode scanners: serial (USB CDC-ACM, RS-232) and keyboard wedge (USB HID through evdev)."""

from __future__ import annotations

from device_drivers.barcode.profile import BarcodeProfile, BarcodeSettings
from device_drivers.families import DeviceFamily

FAMILY = DeviceFamily(
    kind="barcode",
    profile=BarcodeProfile,
    settings=BarcodeSettings,
    driver="device_drivers.barcode.driver:create",
)
