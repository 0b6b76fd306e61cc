"""Line sensor parsing, without I/O: one line of text in, its measured values out.

:func:`parse_line` checks the line's checksum (when the profile has one), matches the
profile's pattern and turns each named group into a value. A line that is not the
sensor's format raises :class:`LineRejectedError`; a single value outside the sensor's
range is refused on its own (in :attr:`LineResult.rejects`), so one faulty probe does
not discard the other quantities of the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Final

from device_drivers.base import ProtocolError
from device_drivers.serial_sensor.profile import LineField, LineFormat
from storegate.wire import Quantity

_HEX: Final = frozenset(b"0123456789abcdefABCDEF")


class LineRejectedError(ProtocolError):
    """The line is not in the sensor's format (garbled, bad checksum, not matching, no value)."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """One parsed value of one quantity."""

    quantity: Quantity
    value: float


@dataclass(frozen=True, slots=True)
class LineResult:
    """What one line held: the good values, and why any others were refused."""

    measurements: tuple[Measurement, ...]
    rejects: tuple[str, ...]


def xor_checksum(payload: bytes) -> bytes:
    """The NMEA-style checksum of ``payload``: XOR of its bytes, as two upper-case hex digits."""
    value = 0
    for byte in payload:
        value ^= byte
    return b"%02X" % value


def with_checksum(payload: bytes) -> bytes:
    """``payload`` followed by ``*HH``, as a sensor with an NMEA-style checksum prints it."""
    return payload + b"*" + xor_checksum(payload)


def strip_checksum(line: bytes) -> bytes:
    """The payload of a ``[$]payload*HH`` line whose checksum is right; raises LineRejectedError otherwise."""
    body = line[1:] if line.startswith(b"$") else line
    payload, star, given = body.rpartition(b"*")
    if not star:
        raise LineRejectedError("no '*HH' checksum")
    if len(given) != 2 or not set(given) <= _HEX:
        raise LineRejectedError(f"checksum {given[:8]!r} is not two hex digits")
    expected = xor_checksum(payload)
    if given.upper() != expected:
        raise LineRejectedError(f"checksum {given.upper().decode()} does not match {expected.decode()}")
    return payload


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _value(field: LineField, text: str) -> float:
    try:
        number = Decimal(text.strip())
        # Decimal keeps 214 * 0.1 at 21.4 rather than 21.400000000000002.
        value = float(number * Decimal(repr(field.scale)))
    except (ArithmeticError, ValueError):  # decimal.InvalidOperation and Overflow are ArithmeticErrors
        raise LineRejectedError(f"{field.quantity.value}: {text[:32]!r} is not a number") from None
    if not math.isfinite(value):
        raise LineRejectedError(f"{field.quantity.value}: {text[:32]!r} is not a finite number")
    return value


def parse_line(line: bytes, fmt: LineFormat) -> LineResult:
    """The values in one line (without its terminator); raises LineRejectedError for a line not in ``fmt``."""
    line = line.strip()
    if fmt.checksum == "nmea-xor":
        line = strip_checksum(line)  # over the bytes as sent, before any decoding
    try:
        text = line.decode(fmt.encoding)
    except UnicodeDecodeError:
        raise LineRejectedError(f"not {fmt.encoding} text") from None
    match = _compiled(fmt.pattern).fullmatch(text)
    if match is None:
        raise LineRejectedError(f"does not match the sensor's format: {text[:40]!r}")
    measurements: list[Measurement] = []
    rejects: list[str] = []
    for field in fmt.fields:
        found = match.group(field.group_name)
        if found is None:
            continue  # an optional group: this line does not carry the quantity
        value = _value(field, found)
        if (field.min is not None and value < field.min) or (field.max is not None and value > field.max):
            rejects.append(f"{field.quantity.value} {value} is outside {field.min}..{field.max}")
            continue
        measurements.append(Measurement(field.quantity, value))
    if not measurements and not rejects:
        raise LineRejectedError("the line carries no value")
    return LineResult(tuple(measurements), tuple(rejects))
