"""Receipt printers' profiles (firmware_configs) and per-device settings (agent config).

The profile says what the model is and can do: how it is reached (``usb``: the kernel's
usblp device file ``/dev/usb/lp*``; ``serial``: a tty; ``network``: raw TCP, port 9100),
its paper width in dots and characters per line, the code pages it prints, whether it
prints GB18030 Chinese itself (FS &, on Chinese-market models) or Chinese is sent as a
bitmap, whether it cuts, and whether it answers real-time status (DLE EOT).
"""

from __future__ import annotations

from typing import Final, Literal, Self

from pydantic import Field, field_validator, model_validator

from device_drivers.profile_base import ProfileBase, SerialLink, SettingsBase

Transport = Literal["usb", "serial", "network"]

# ESC t n: the character code table numbers of the Epson ESC/POS reference, by Python codec name.
# Only tables Python has a codec for are listed: a profile names the ones its model prints.
CODE_PAGE_NUMBERS: Final[dict[str, int]] = {
    "cp437": 0,
    "cp850": 2,
    "cp860": 3,
    "cp863": 4,
    "cp865": 5,
    "cp1252": 16,
    "cp866": 17,
    "cp852": 18,
    "cp858": 19,
    "cp737": 14,
    "iso8859_7": 15,
    "cp857": 13,
    "iso8859_2": 39,
    "iso8859_15": 40,
    "cp1250": 45,
    "cp1251": 46,
    "cp1253": 47,
    "cp1254": 48,
    "cp1257": 51,
}

DEFAULT_NETWORK_PORT: Final = 9100


class PrinterProfile(ProfileBase):
    """An ESC/POS receipt printer model: transport, paper, scripts, cutter, status."""

    kind: Literal["printer"]
    transport: Transport = Field(description="usb: /dev/usb/lp* (usblp); serial: a tty; network: raw TCP (9100)")
    serial: SerialLink | None = Field(default=None, description="serial: the line (default 9600 8N1)")
    port: int = Field(default=DEFAULT_NETWORK_PORT, ge=1, le=65535, description="network: TCP port if not in address")
    paper_width_mm: Literal[58, 80] = Field(default=80, description="roll width")
    width_dots: int = Field(default=512, ge=128, le=832, description="printable width in dots (font A)")
    chars_per_line: int = Field(default=48, ge=16, le=64, description="font A characters per line: 48 on 80 mm")
    code_pages: tuple[str, ...] = Field(
        default=("cp437", "cp858", "cp866", "cp1253"),
        min_length=1,
        description="ESC t tables the model prints (Python codec names), tried in order for each line",
    )
    gb18030: bool = Field(default=False, description="prints GB18030 Chinese itself (FS &); else Chinese is a bitmap")
    cutter: bool = Field(default=True, description="has an autocutter (GS V)")
    status: bool = Field(default=True, description="answers DLE EOT real-time status (every Epson-compatible does)")
    escpos_profile: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="python-escpos capability profile, e.g. 'TM-T88V'",
    )
    status_timeout_s: float = Field(default=1.0, gt=0, le=10, description="wait this long for a DLE EOT answer")

    @field_validator("code_pages")
    @classmethod
    def _known_code_pages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in CODE_PAGE_NUMBERS]
        if unknown:
            raise ValueError(f"unknown code page(s) {unknown}; known: {sorted(CODE_PAGE_NUMBERS)}")
        return value

    @model_validator(mode="after")
    def _transport_fields(self) -> Self:
        if self.serial is not None and self.transport != "serial":
            raise ValueError("'serial' is for transport = 'serial' only")
        if self.transport == "network" and self.usb:
            raise ValueError("a network printer is not found on USB: leave out [[usb]]")
        # escpos_profile is checked when a driver opens, not here: importing python-escpos's capabilities makes a
        # temporary directory and configures logging, which every process that loads the catalog would pay for.
        return self


class PrinterSettings(SettingsBase):
    """How often an idle printer's status is read, and what its receipts say on top."""

    status_interval_s: float = Field(default=5.0, gt=0, le=3600, description="DLE EOT poll while idle, seconds")
    header: str | None = Field(default=None, min_length=1, max_length=64, description="e.g. the store's name")
