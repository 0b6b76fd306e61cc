"""The profile of this kind of sensor (firmware_configs)."""

from __future__ import annotations

from typing import Literal

from device_drivers.profile_base import ProfileBase


class OneWireSensorProfile(ProfileBase):
    """A 1-Wire probe read through the Linux w1 sysfs interface."""

    kind: Literal["w1-sensor"]
