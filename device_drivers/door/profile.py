"""Door contacts' profiles (firmware_configs) and per-device settings (agent config)."""

from __future__ import annotations

from typing import Literal

from device_drivers.profile_base import ProfileBase, SettingsBase


class DoorProfile(ProfileBase):
    """A door contact on a GPIO input or a Modbus discrete input."""

    kind: Literal["door"]


class DoorSettings(SettingsBase):
    """Which door it is, and how long a change must hold to count."""
