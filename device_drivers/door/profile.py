"""Door contacts' profiles (firmware_configs) and per-device settings (agent config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from device_drivers.profile_base import ProfileBase, SerialLink, SettingsBase


class DoorProfile(ProfileBase):
    """A door contact on a GPIO input or a Modbus discrete input."""

    kind: Literal["door"]
    input: Literal["gpio", "modbus"] = Field(description="gpio: a pin of the gateway; modbus: an RTU I/O module")
    pull_up: bool = Field(default=True, description="gpio: internal pull-up, the contact switches the pin to ground")
    serial: SerialLink | None = Field(default=None, description="modbus: the RS-485 line (default 9600 8N1)")
    response_timeout_s: float = Field(default=0.5, gt=0, le=10, description="modbus: wait for an answer this long")
    max_missed_polls: int = Field(
        default=5, ge=1, le=1000, description="modbus: unanswered polls in a row before the module counts as gone"
    )

    @model_validator(mode="after")
    def _serial_only_for_modbus(self) -> DoorProfile:
        if self.input == "gpio" and self.serial is not None:
            raise ValueError("'serial' is for input = 'modbus' only")
        return self


class DoorSettings(SettingsBase):
    """Which door it is, and how long a change must hold to count."""

    zone: str | None = Field(default=None, min_length=1, max_length=64, description="e.g. 'back-door'")
    debounce_s: float = Field(default=0.05, ge=0, le=10, description="a change counts once stable this long")
    normally_open: bool = Field(
        default=False,
        description="false: the contact conducts while the door is closed (NC loop, the usual); "
        "true: it conducts while the door is open",
    )
    unit: int = Field(default=1, ge=1, le=247, description="modbus: the I/O module's unit (slave) id")
    input_index: int = Field(default=0, ge=0, le=65535, description="modbus: discrete input address, from 0")
    poll_interval_s: float = Field(default=0.2, gt=0, le=60, description="modbus: seconds between polls")
