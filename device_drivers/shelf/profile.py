"""The smart shelf's profile (firmware_configs) and per-device settings (agent config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from device_drivers.profile_base import ProfileBase, SerialLink, SettingsBase


class ShelfProfile(ProfileBase):
    """A shelf controller: load cells per slot behind a serial line protocol."""

    kind: Literal["shelf"]
    serial: SerialLink = Field(default_factory=SerialLink)


class ShelfSettings(SettingsBase):
    """Which SKU each slot holds, set per shelf by the store's planogram."""
