"""Barcode scanners' profiles (firmware_configs) and per-device settings (agent config).

The profile says how the scanner model is *programmed* to talk (serial or keyboard wedge,
line terminator, AIM symbology identifiers, the symbologies it reads, character encoding,
keyboard country); the
settings say what a scan *means* at this scanner (checkout, receiving, stock count), how
long a repeated code counts as a double read, and how in-store variable-measure EAN-13s
(prefix 02 and 20-29) are laid out at this store.
"""

from __future__ import annotations

from typing import Final, Literal, Self

from pydantic import Field, field_validator, model_validator

from device_drivers.barcode.keymap import KEY_CODES
from device_drivers.barcode.symbology import GUESS_ORDER, SymbologyName
from device_drivers.profile_base import ProfileBase, ProfileModel, SerialLink, SettingsBase
from storegate.wire import ScanMode

Interface = Literal["serial", "hid"]
Terminator = Literal["cr", "lf", "crlf"]

# The bytes a serial scanner ends each scan with (its programmed suffix).
TERMINATOR_BYTES: Final[dict[str, bytes]] = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n"}


class BarcodeProfile(ProfileBase):
    """A barcode scanner in serial (USB CDC-ACM, RS-232) or keyboard-wedge (USB HID through evdev) mode."""

    kind: Literal["barcode"]
    interface: Interface = Field(default="serial", description="serial: a tty; hid: an evdev keyboard node")
    serial: SerialLink = Field(default_factory=SerialLink)
    terminator: Terminator = Field(default="cr", description="suffix the scanner sends after each code (serial)")
    aim_ids: bool = Field(default=True, description="the scanner prefixes each code with its AIM id (]E0, ]C1...)")
    symbologies: tuple[SymbologyName, ...] = Field(
        default=GUESS_ORDER,
        min_length=1,
        description="symbologies the scanner is programmed to read: the only ones a code without AIM id is tried as",
    )
    encoding: Literal["latin-1", "utf-8"] = Field(
        default="latin-1", description="serial bytes to text; Code 128 carries ISO 8859-1 through FNC4"
    )
    keyboard: Literal["us"] = Field(default="us", description="keyboard country the scanner types in (HID)")
    gs_key: str | None = Field(
        default=None,
        pattern=r"^KEY_[A-Z0-9_]{1,24}$",
        description="evdev key the scanner sends for FNC1/GS in HID mode besides Ctrl+], e.g. 'KEY_F8'",
    )
    max_length: int = Field(default=512, ge=8, le=512, description="longer scans are rejected")

    @field_validator("gs_key")
    @classmethod
    def _known_key(cls, value: str | None) -> str | None:
        if value is not None and value not in KEY_CODES:
            raise ValueError(f"unknown key {value!r}; one of linux input-event-codes' KEY_ names, e.g. 'KEY_F8'")
        return value


class VariableMeasureRule(ProfileModel):
    """How in-store EAN-13s with some prefixes carry a price or a weight.

    Layout on the 13 digits: prefix (2), item number (``item_digits``), an optional price
    check digit, the value (the rest: 4 or 5 digits), the EAN check digit.
    """

    prefixes: tuple[str, ...] = Field(min_length=1, description="e.g. ['20', '21']; 02 or 20-29")
    measure: Literal["price", "weight_g"]
    decimals: int = Field(default=2, ge=0, le=4, description="price decimals (ignored for weight, always grams)")
    item_digits: Literal[4, 5] = 5
    price_check_digit: bool = Field(default=False, description="a GS1 price/weight check digit precedes the value")

    @model_validator(mode="after")
    def _layout(self) -> Self:
        for prefix in self.prefixes:
            if prefix != "02" and not (len(prefix) == 2 and prefix[0] == "2" and prefix[1].isdigit()):
                raise ValueError(f"prefix {prefix!r} is not an in-store prefix (02 or 20-29)")
        if self.value_digits not in (4, 5):
            raise ValueError("item_digits and price_check_digit must leave a 4 or 5 digit value")
        return self

    @property
    def value_digits(self) -> int:
        """How many digits the price or weight has."""
        return 10 - self.item_digits - int(self.price_check_digit)


# A common layout: 02 and 20-24 carry a price with 2 decimals, 25-29 a weight in grams,
# item number of 5 digits, value of 5 digits, no price check digit.
DEFAULT_VARIABLE_MEASURE: Final = (
    VariableMeasureRule(prefixes=("02", "20", "21", "22", "23", "24"), measure="price", decimals=2),
    VariableMeasureRule(prefixes=("25", "26", "27", "28", "29"), measure="weight_g"),
)


class BarcodeSettings(SettingsBase):
    """What a scan means at this scanner (checkout, receiving, stock count)."""

    mode: ScanMode = Field(default="checkout", description="checkout: scan.sale; receiving; stock_count: scan.count")
    double_read_window_s: float = Field(
        default=1.0, ge=0, le=60, description="the same code again within this many seconds is a double read"
    )
    gs1_strict: bool = Field(
        default=False, description="reject GS1 symbols whose element strings break GS1 syntax (else keep them)"
    )
    variable_measure: tuple[VariableMeasureRule, ...] = Field(default=DEFAULT_VARIABLE_MEASURE)

    @model_validator(mode="after")
    def _prefixes_once(self) -> Self:
        seen: set[str] = set()
        for rule in self.variable_measure:
            for prefix in rule.prefixes:
                if prefix in seen:
                    raise ValueError(f"variable_measure: prefix {prefix!r} is in more than one rule")
                seen.add(prefix)
        return self
