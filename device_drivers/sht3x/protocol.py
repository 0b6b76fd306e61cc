"""The Sensirion SHT3x command set and measurement frame (datasheet SHT3x-DIS, v7). No I/O.

A single-shot measurement: write the 16-bit command ``0x2400`` (high repeatability, no
clock stretching), wait for the conversion (max 15.5 ms), then read 6 bytes:
``T_msb T_lsb CRC RH_msb RH_lsb CRC``. Each CRC is CRC-8 (polynomial 0x31, init 0xFF,
no reflection, no final XOR) over its 2-byte word; the datasheet's vector is
``0xBEEF -> 0x92``. Conversions: ``T = -45 + 175 * raw / 65535`` Cel and
``RH = 100 * raw / 65535`` %. Reading before the conversion is done is NACKed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

MEASURE_HIGH_REPEATABILITY: Final = 0x2400
SOFT_RESET: Final = 0x30A2
HEATER_OFF: Final = 0x3066
HEATER_ON: Final = 0x306D
CLEAR_STATUS: Final = 0x3041
FRAME_LEN: Final = 6
SOFT_RESET_TIME_S: Final = 0.0015  # datasheet: max 1.5 ms before the sensor takes commands again

RejectReason = Literal["length", "crc"]

_ADDRESS: Final = re.compile(r"^(?:/dev/)?i2c-([0-9]{1,3}):(0x[0-9a-fA-F]{1,2}|[0-9]{1,3})$")


class FrameError(ValueError):
    """A measurement frame that is not usable; ``reason`` is a short label for counters."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectReason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Measurement:
    """One temperature and humidity measurement."""

    temperature_c: float
    humidity_pct: float


@dataclass(frozen=True, slots=True)
class I2cAddress:
    """Bus number and 7-bit device address, from ``i2c-1:0x44``."""

    bus: int
    address: int


def parse_address(text: str, *, default_address: int = 0x44) -> I2cAddress:
    """``i2c-1:0x44`` (or ``/dev/i2c-1:0x44``; ``i2c-1`` alone takes ``default_address``); ValueError otherwise."""
    if ":" not in text:
        text = f"{text}:{default_address:#04x}"
    match = _ADDRESS.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an I2C address like 'i2c-1:0x44'")
    bus, raw = int(match.group(1)), match.group(2)
    address = int(raw, 16) if raw.lower().startswith("0x") else int(raw)
    if not 0x03 <= address <= 0x77:
        raise ValueError(f"{address:#04x} is not a 7-bit device address (0x03..0x77)")
    return I2cAddress(bus=bus, address=address)


def command_bytes(command: int) -> bytes:
    """The two bytes of a 16-bit command, most significant first."""
    return command.to_bytes(2, "big")


def crc8(data: bytes) -> int:
    """Sensirion CRC-8: polynomial 0x31, init 0xFF, MSB first, no final XOR."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def parse_measurement(frame: bytes) -> Measurement:
    """The measurement in a 6-byte frame; raises FrameError (and nothing else) for a bad length or CRC."""
    if len(frame) != FRAME_LEN:
        raise FrameError("length", f"expected {FRAME_LEN} bytes, got {len(frame)}")
    for name, word, crc in (("temperature", frame[0:2], frame[2]), ("humidity", frame[3:5], frame[5])):
        expected = crc8(word)
        if crc != expected:
            raise FrameError("crc", f"{name} word {word.hex()} has CRC {crc:#04x}, expected {expected:#04x}")
    raw_t = int.from_bytes(frame[0:2], "big")
    raw_rh = int.from_bytes(frame[3:5], "big")
    return Measurement(
        temperature_c=round(-45 + 175 * raw_t / 65535, 2),
        humidity_pct=round(100 * raw_rh / 65535, 2),
    )


def encode_measurement(temperature_c: float, humidity_pct: float) -> bytes:
    """The frame a sensor sends for these values (the simulator's side), clamped to the sensor's range."""
    raw_t = min(65535, max(0, round((temperature_c + 45) * 65535 / 175)))
    raw_rh = min(65535, max(0, round(humidity_pct * 65535 / 100)))
    t, rh = raw_t.to_bytes(2, "big"), raw_rh.to_bytes(2, "big")
    return t + bytes([crc8(t)]) + rh + bytes([crc8(rh)])
