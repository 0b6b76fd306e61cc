"""The profile of this kind of sensor (firmware_configs)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from device_drivers.profile_base import ProfileBase

DEFAULT_SYSFS_ROOT = "/sys/bus/w1/devices"


class OneWireSensorProfile(ProfileBase):
    """A 1-Wire probe read through the Linux w1 sysfs interface (``w1_therm``'s ``w1_slave`` file)."""

    kind: Literal["w1-sensor"]
    family_codes: list[str] = Field(
        default_factory=lambda: ["28"],
        min_length=1,
        description="1-Wire family codes of this model, 2 hex digits (28: DS18B20)",
    )
    sysfs_root: str = Field(default=DEFAULT_SYSFS_ROOT, description="where the kernel lists 1-Wire devices")
    min_c: float = Field(default=-55.0, description="lowest temperature the probe can report, Cel")
    max_c: float = Field(default=125.0, description="highest temperature the probe can report, Cel")

    @model_validator(mode="after")
    def _valid(self) -> OneWireSensorProfile:
        for code in self.family_codes:
            if len(code) != 2 or any(c not in "0123456789abcdef" for c in code):
                raise ValueError(f"family code {code!r} is not 2 lower-case hex digits")
        if self.min_c >= self.max_c:
            raise ValueError(f"min_c ({self.min_c}) must be below max_c ({self.max_c})")
        return self
