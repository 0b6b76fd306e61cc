"""Modbus sensor register decoding, without I/O: which reads to make, and what their registers mean.

The driver asks :func:`plan_reads` which requests cover a profile's register map
(contiguous registers of one function go in ONE request: the XY-MD02's temperature
and humidity, input registers 0x0001..0x0002, are one read), sends them with pymodbus,
and hands the words of each response to :func:`decode_block`. :func:`diagnose_response`
explains, for the log, why bytes that came back were not a usable response.
:func:`encode_value` is the inverse of decoding, for the simulated sensor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from pymodbus.framer import FramerRTU

from device_drivers.base import ProtocolError
from device_drivers.modbus_sensor.profile import MAX_REGISTERS_PER_READ, RegisterField
from storegate.wire import Quantity

FUNCTION_CODES: Final[dict[str, int]] = {"holding": 3, "input": 4}
_WORD: Final = 0x10000


class RegisterDecodeError(ProtocolError):
    """A response's registers cannot be decoded as the profile's register map says."""


@dataclass(frozen=True, slots=True)
class Measurement:
    """One decoded value of one quantity."""

    quantity: Quantity
    value: float


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers of one function from ``address``, and the fields in them."""

    function: str  # "input" or "holding"
    address: int
    count: int
    fields: tuple[RegisterField, ...]

    @property
    def function_code(self) -> int:
        """The Modbus function code of the read (4 for input, 3 for holding registers)."""
        return FUNCTION_CODES[self.function]


@dataclass(frozen=True, slots=True)
class BlockResult:
    """What one response's registers held: the good values, and why any others were refused."""

    measurements: tuple[Measurement, ...]
    rejects: tuple[str, ...]


def plan_reads(fields: Iterable[RegisterField]) -> tuple[ReadBlock, ...]:
    """The fewest read requests covering ``fields``: contiguous registers of one function share a request.

    Registers between fields are not read (a sensor may answer "illegal address" for them),
    and a request never exceeds the 125 registers Modbus allows.
    """
    ordered = sorted(fields, key=lambda f: (f.function, f.address))
    blocks: list[ReadBlock] = []
    for field in ordered:
        last = blocks[-1] if blocks else None
        if (
            last is not None
            and last.function == field.function
            and last.address + last.count == field.address
            and last.count + field.count <= MAX_REGISTERS_PER_READ
        ):
            blocks[-1] = ReadBlock(last.function, last.address, last.count + field.count, (*last.fields, field))
        else:
            blocks.append(ReadBlock(field.function, field.address, field.count, (field,)))
    return tuple(blocks)


def raw_value(words: Sequence[int], *, signed: bool, word_order: str = "big") -> int:
    """The integer that 1 or 2 register words hold (two's complement when ``signed``)."""
    ordered = list(words) if word_order == "big" else list(reversed(words))
    raw = 0
    for word in ordered:
        if not 0 <= word < _WORD:
            raise RegisterDecodeError(f"register word {word} is not 16-bit")
        raw = raw * _WORD + word
    bits = 16 * len(ordered)
    if signed and raw >= 1 << (bits - 1):
        raw -= 1 << bits
    return raw


def decode_field(field: RegisterField, words: Sequence[int]) -> float:
    """The value of one field from its words; raises RegisterDecodeError when it is outside the sensor's range."""
    if len(words) != field.count:
        raise RegisterDecodeError(f"{field.quantity.value}: {len(words)} words, expected {field.count}")
    raw = raw_value(words, signed=field.signed, word_order=field.word_order)
    # Decimal keeps 305 * 0.1 at 30.5 rather than 30.500000000000004.
    value = float(Decimal(raw) * Decimal(repr(field.scale)))
    if (field.min is not None and value < field.min) or (field.max is not None and value > field.max):
        raise RegisterDecodeError(f"{field.quantity.value} {value} (raw {raw}) is outside {field.min}..{field.max}")
    return value


def decode_block(block: ReadBlock, registers: Sequence[int]) -> BlockResult:
    """Decode a response to ``block``; raises RegisterDecodeError when it holds the wrong number of registers.

    A field whose value is outside its range is refused on its own (in ``rejects``): one
    faulty probe does not discard the other quantities of the same response.
    """
    if len(registers) != block.count:
        raise RegisterDecodeError(f"response holds {len(registers)} registers, expected {block.count}")
    measurements: list[Measurement] = []
    rejects: list[str] = []
    for field in block.fields:
        start = field.address - block.address
        try:
            value = decode_field(field, registers[start : start + field.count])
        except RegisterDecodeError as err:
            rejects.append(str(err))
            continue
        measurements.append(Measurement(field.quantity, value))
    return BlockResult(tuple(measurements), tuple(rejects))


def encode_value(field: RegisterField, value: float) -> list[int]:
    """The register words a sensor would hold for ``value`` (rounded to the field's scale, clamped to its width)."""
    raw = int((Decimal(repr(value)) / Decimal(repr(field.scale))).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    bits = 16 * field.count
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if field.signed else (0, (1 << bits) - 1)
    raw = min(max(raw, low), high) % (1 << bits)
    words = [(raw >> (16 * i)) & 0xFFFF for i in reversed(range(field.count))]
    return words if field.word_order == "big" else list(reversed(words))


def crc_ok(frame: bytes) -> bool:
    """Whether an RTU frame ends with the right CRC-16 (low byte first on the wire)."""
    return len(frame) >= 4 and FramerRTU.compute_CRC(frame[:-2]).to_bytes(2, "big") == frame[-2:]


def diagnose_response(data: bytes, *, unit: int, block: ReadBlock) -> str:
    """Why ``data`` (what came back for a read of ``block`` from ``unit``) is not a usable response."""
    if not data:
        return "no answer"
    expected = 5 + 2 * block.count
    if data[0] != unit:
        return f"garbage: starts with {data[0]:#04x}, not unit {unit}"
    if len(data) >= 2 and data[1] == block.function_code | 0x80:
        if len(data) < 5:
            return "truncated exception response"
        return "crc error in exception response" if not crc_ok(data[:5]) else f"exception code {data[2]}"
    if len(data) >= 2 and data[1] != block.function_code:
        return f"garbage: function code {data[1]:#04x}, expected {block.function_code:#04x}"
    if len(data) >= 3 and data[2] != 2 * block.count:
        return f"wrong length: byte count {data[2]}, expected {2 * block.count}"
    if len(data) < expected:
        return f"truncated: {len(data)} of {expected} bytes"
    if not crc_ok(data[:expected]):
        return "crc error"
    if len(data) > expected:
        return f"{len(data) - expected} extra bytes after the response"
    return "unusable response"
