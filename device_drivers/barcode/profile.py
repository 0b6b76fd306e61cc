"""Barcode scanners' profiles (firmware_configs) and per-device settings (agent config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from device_drivers.profile_base import ProfileBase, SerialLink, SettingsBase


class BarcodeProfile(ProfileBase):
    """A barcode scanner in serial (CDC-ACM, RS-232) or keyboard-wedge (HID) mode."""

    kind: Literal["barcode"]
    serial: SerialLink = Field(default_factory=SerialLink)


class BarcodeSettings(SettingsBase):
    """What a scan means at this scanner (checkout, receiving, stock count)."""
