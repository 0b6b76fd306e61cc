"""The ``w1_slave`` file of the Linux ``w1_therm`` driver, and 1-Wire device names and ROM ids. No I/O.

Reading ``/sys/bus/w1/devices/28-0316a279b0ff/w1_slave`` starts a conversion (~750 ms at
12 bits) and returns two lines, the 9 scratchpad bytes each time::

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125

Line 1 ends ``YES`` when the kernel's CRC check of the scratchpad passed, ``NO`` when it
failed (noise, a long cable, weak pull-up); line 2 has the temperature in milli-degrees.
Quirks rejected here: ``t=85000`` is the power-on-reset value of the scratchpad (the probe
browned out and no conversion ran); nine ``00`` bytes with ``crc=00 YES`` is a shorted or
disconnected data line (the CRC of zeros is zero, so the kernel accepts it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

POWER_ON_RESET_MILLI: Final = 85_000
SCRATCHPAD_LEN: Final = 9

RejectReason = Literal["malformed", "crc", "power_on_reset", "no_data", "out_of_range"]

_CRC_LINE: Final = re.compile(r"^((?:[0-9a-f]{2} ){9}): crc=([0-9a-f]{2}) (YES|NO)$")
_TEMP_LINE: Final = re.compile(r"^((?:[0-9a-f]{2} ){9})t=(-?[0-9]{1,7})$")
_DEVICE_NAME: Final = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{12})$")

# Family codes of the thermometers ``w1_therm`` serves (all print the w1_slave format above).
FAMILY_NAMES: Final[dict[str, str]] = {
    "10": "DS18S20",
    "22": "DS1822",
    "28": "DS18B20",
    "3b": "DS1825",
    "42": "DS28EA00",
}


class W1RejectError(ValueError):
    """A ``w1_slave`` text that is not a usable temperature; ``reason`` is a short label for counters."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectReason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class W1Sample:
    """One good conversion."""

    temperature_c: float
    scratchpad: bytes


def parse_w1_slave(text: str, *, min_c: float = -55.0, max_c: float = 125.0) -> W1Sample:
    """The temperature in ``text``; raises W1RejectError (and nothing else) for anything unusable."""
    lines = text.strip().splitlines()
    if len(lines) != 2:
        raise W1RejectError("malformed", f"expected 2 lines, got {len(lines)}")
    crc_line = _CRC_LINE.match(lines[0].strip())
    temp_line = _TEMP_LINE.match(lines[1].strip())
    if crc_line is None or temp_line is None:
        raise W1RejectError("malformed", f"unexpected text {text[:120]!r}")
    scratchpad = bytes.fromhex(crc_line.group(1))
    if crc_line.group(3) != "YES":
        raise W1RejectError("crc", f"kernel CRC check failed (crc={crc_line.group(2)})")
    if scratchpad == bytes(SCRATCHPAD_LEN):
        raise W1RejectError("no_data", "scratchpad is all zeros: data line shorted or probe disconnected")
    milli = int(temp_line.group(2))
    if milli == POWER_ON_RESET_MILLI:
        raise W1RejectError("power_on_reset", "t=85000 is the power-on value: the probe reset, no conversion ran")
    celsius = milli / 1000
    if not min_c <= celsius <= max_c:
        raise W1RejectError("out_of_range", f"{celsius} Cel is outside {min_c}..{max_c}")
    return W1Sample(temperature_c=celsius, scratchpad=scratchpad)


def dallas_crc8(data: bytes) -> int:
    """The Dallas/Maxim 1-Wire CRC-8 (polynomial x^8+x^5+x^4+1, reflected, init 0)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc


def scratchpad_for(temperature_c: float) -> bytes:
    """A DS18B20 scratchpad holding ``temperature_c`` at 12 bits (1/16 Cel), with its CRC."""
    raw = round(temperature_c * 16) & 0xFFFF
    # TH, TL alarm registers, config 0x7f (12-bit), then the reserved bytes as a real probe has them.
    body = bytes([raw & 0xFF, raw >> 8, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])
    return body + bytes([dallas_crc8(body)])


def scratchpad_celsius(scratchpad: bytes) -> float:
    """The DS18B20 temperature in a scratchpad (signed 1/16 Cel)."""
    return int.from_bytes(scratchpad[:2], "little", signed=True) / 16


def format_w1_slave(scratchpad: bytes) -> str:
    """The ``w1_slave`` text the kernel writes for this scratchpad (what the simulator and tests write)."""
    hexes = " ".join(f"{b:02x}" for b in scratchpad) + " "
    ok = dallas_crc8(scratchpad[:-1]) == scratchpad[-1]
    milli = round(scratchpad_celsius(scratchpad) * 1000)
    return f"{hexes}: crc={scratchpad[-1]:02x} {'YES' if ok else 'NO'}\n{hexes}t={milli}\n"


def parse_device_name(name: str) -> tuple[str, str] | None:
    """``("28", "0316a279b0ff")`` for a sysfs device directory name, None for anything else (bus masters)."""
    match = _DEVICE_NAME.match(name)
    return None if match is None else (match.group(1), match.group(2))


def rom_id(name: str) -> str | None:
    """The 64-bit ROM id (16 hex digits, in bus order: family, serial LSB first, CRC) of a device name.

    The kernel names a device ``<family>-<serial, most significant byte first>``; the ROM on the
    bus is the family byte, the serial least significant byte first, then the CRC of those 7 bytes.
    """
    parsed = parse_device_name(name)
    if parsed is None:
        return None
    family, serial = parsed
    rom = bytes.fromhex(family) + bytes.fromhex(serial)[::-1]
    return (rom + bytes([dallas_crc8(rom)])).hex()
