"""The parts every device profile and every family's settings are built from.

Family modules import these (not :mod:`device_drivers.profiles`, which imports the families).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from device_drivers.ports import PortInfo

ProfileId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", description="e.g. 'honeywell-1900g-cdc'")]


class ProfileModel(BaseModel):
    """Base of every part of a profile: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SettingsBase(BaseModel):
    """Base of a family's per-device settings (from the agent config); every field has a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_HEX4: Final = r"^[0-9a-fA-F]{4}$"


class UsbMatch(ProfileModel):
    """One way to recognise the model on USB; every given field must match (globs are case-insensitive)."""

    vendor_id: str = Field(pattern=_HEX4, description="USB vendor id, 4 hex digits")
    product_id: str | None = Field(default=None, pattern=_HEX4, description="USB product id, 4 hex digits")
    product: str | None = Field(default=None, min_length=1, max_length=128, description="glob on the product string")
    manufacturer: str | None = Field(default=None, min_length=1, max_length=128, description="glob on the maker")
    serial_number: str | None = Field(default=None, min_length=1, max_length=128, description="regex, full match")

    @field_validator("vendor_id", "product_id")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return None if value is None else value.lower()

    @field_validator("serial_number")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"not a valid regular expression: {err}") from None
        return value

    def matches(self, port: PortInfo) -> bool:
        """Whether ``port`` is this model by every field given here."""
        ident = port.identity
        if ident.vendor_id != self.vendor_id:
            return False
        if self.product_id is not None and ident.product_id != self.product_id:
            return False
        if self.product is not None and not _glob(self.product, ident.product):
            return False
        if self.manufacturer is not None and not _glob(self.manufacturer, ident.manufacturer):
            return False
        return self.serial_number is None or (
            ident.serial_number is not None and re.fullmatch(self.serial_number, ident.serial_number) is not None
        )

    @property
    def specificity(self) -> int:
        """How many fields this match pins down: the most specific matching profile wins."""
        pinned = (self.product_id, self.product, self.manufacturer, self.serial_number)
        return sum(value is not None for value in pinned)


def _glob(pattern: str, value: str | None) -> bool:
    return value is not None and fnmatch.fnmatchcase(value.casefold(), pattern.casefold())


class SerialLink(ProfileModel):
    """Serial line settings (USB CDC-ACM, USB-serial adapters, RS-232, RS-485)."""

    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600] = 9600
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: float = Field(default=1, description="1, 1.5 or 2")
    rtscts: bool = False
    xonxoff: bool = False

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, value: float) -> float:
        if value not in (1, 1.5, 2):
            raise ValueError("stopbits must be 1, 1.5 or 2")
        return value


class ProfileBase(ProfileModel):
    """What every profile has: identity of the model and how to recognise it."""

    id: ProfileId
    vendor: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=500)
    usb: list[UsbMatch] = Field(default_factory=list, description="USB ids it is recognised by (none: bus devices)")
