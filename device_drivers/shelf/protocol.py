"""The Storegate shelf line protocol: parse and build lines, no I/O.

Every line, in both directions, is ASCII::

    $<TYPE>,<field>,...*<CRC>\\r\\n

``CRC`` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR)
of the bytes between ``$`` and ``*``, as 4 hex digits. ``docs/devices/shelf.md`` is the
full specification, written for firmware authors; this module implements it for the
gateway (controller -> gateway messages) and for the simulator (gateway -> controller
commands). Every defect raises :class:`FrameError` with a short ``reason`` for counters;
nothing else escapes the parsers.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

START: Final = b"$"
CHECKSUM_MARK: Final = b"*"
EOL: Final = b"\r\n"
# The longest legal line: a W line of 32 slots with the widest fields is ~640 bytes.
MAX_LINE: Final = 700
MAX_SLOTS: Final = 32
MAX_TAG: Final = 0xFFFF
SEQ_MODULUS: Final = 2**32
RAW_MIN: Final = -(2**23)  # the HX711 is a 24-bit two's-complement converter
RAW_MAX: Final = 2**23 - 1
MAX_RATE_HZ: Final = 80
MAX_WINDOW: Final = 64

_UINT = re.compile(rb"(?:0|[1-9][0-9]{0,9})")
_INT = re.compile(rb"-?(?:0|[1-9][0-9]{0,7})")
_GRAMS = re.compile(rb"-?(?:0|[1-9][0-9]{0,6})(?:\.[0-9]{1,3})?")
_TOKEN = re.compile(rb"[0-9A-Za-z._+-]{1,32}")
_SERIAL = re.compile(rb"[0-9A-Za-z_-]{1,32}")
_REASON = re.compile(rb"[A-Z][A-Z0-9_]{0,31}")
_NAME = re.compile(rb"[A-Z]{1,8}")
_HEX4 = re.compile(rb"[0-9A-Fa-f]{4}")

FrameReason = Literal[
    "too_long", "not_ascii", "no_start", "garbage", "no_checksum", "bad_checksum",
    "unknown_type", "field_count", "bad_field",
]  # fmt: skip


class FrameError(ValueError):
    """A line that is not a valid frame; ``reason`` is a short label for counters (the only parser exception)."""

    def __init__(self, reason: FrameReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: FrameReason = reason
        self.detail = detail


# --------------------------------------------------------------------------- checksum


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): ``crc16_ccitt_false(b"123456789") == 0x29B1``."""
    crc = 0xFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def frame(body: str) -> bytes:
    """One complete line: ``$`` + body + ``*`` + CRC (upper-case hex) + CRLF."""
    raw = body.encode("ascii")
    return b"%s%s%s%04X%s" % (START, raw, CHECKSUM_MARK, crc16_ccitt_false(raw), EOL)


def unframe(line: bytes) -> list[bytes]:
    """The comma-separated fields of one line (without its CRLF), checksum verified; raises FrameError."""
    if len(line) > MAX_LINE:
        raise FrameError("too_long", f"{len(line)} bytes, at most {MAX_LINE}")
    if any(byte < 0x20 or byte > 0x7E for byte in line):
        raise FrameError("not_ascii", "bytes outside printable ASCII")
    if not line.startswith(START):
        raise FrameError("no_start", f"does not start with {START.decode()!r}")
    body, mark, crc = line[1:].rpartition(CHECKSUM_MARK)
    if not mark or not _HEX4.fullmatch(crc):
        raise FrameError("no_checksum", "no '*' followed by 4 hex digits at the end")
    if START in body or CHECKSUM_MARK in body:
        raise FrameError("bad_field", "'$' or '*' inside the line")
    expected = crc16_ccitt_false(body)
    if int(crc, 16) != expected:
        raise FrameError("bad_checksum", f"says {crc.decode()}, computed {expected:04X}")
    return body.split(b",")


# --------------------------------------------------------------------------- fields


def _match(pattern: re.Pattern[bytes], value: bytes, what: str) -> bytes:
    if not pattern.fullmatch(value):
        raise FrameError("bad_field", f"{what}: {value[:40]!r}")
    return value


def _int_in(pattern: re.Pattern[bytes], value: bytes, what: str, low: int, high: int) -> int:
    number = int(_match(pattern, value, what))
    if not low <= number <= high:
        raise FrameError("bad_field", f"{what} {number} not in {low}..{high}")
    return number


def _count(fields: list[bytes], allowed: tuple[int, ...], kind: str) -> None:
    if len(fields) not in allowed:
        expected = " or ".join(str(n) for n in allowed)
        raise FrameError("field_count", f"{kind} has {len(fields)} fields, expected {expected}")


# --------------------------------------------------------------------------- controller -> gateway

HardwareCode = Literal["DISC", "SAT", "NONE"]
_HARDWARE_CODES: Final[frozenset[bytes]] = frozenset({b"DISC", b"SAT", b"NONE"})


@dataclass(frozen=True, slots=True)
class SlotWeight:
    """One slot of a W line: filtered net grams and the last raw conversion (both None during a hardware error)."""

    grams: float | None
    raw: int | None


@dataclass(frozen=True, slots=True)
class Weights:
    """``W``: every slot's weight, sent once per sample period; ``seq`` counts samples modulo 2**32."""

    seq: int
    slots: tuple[SlotWeight, ...]


@dataclass(frozen=True, slots=True)
class Info:
    """``I``: who the controller is and how it samples (at boot and in answer to INFO)."""

    firmware: str
    serial: str
    slots: int
    rate_hz: int
    window: int


@dataclass(frozen=True, slots=True)
class Ack:
    """``A``: the answer to the command with this tag; ``reason`` only when refused."""

    tag: int
    command: str
    ok: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SlotError:
    """``E``: a slot's hardware state (DISC: no cell, SAT: ADC saturated, NONE: fine again)."""

    slot: int
    code: HardwareCode


Message = Weights | Info | Ack | SlotError


def _weights(fields: list[bytes]) -> Weights:
    if len(fields) < 3:
        raise FrameError("field_count", f"W has {len(fields)} fields, expected at least 3")
    seq = _int_in(_UINT, fields[1], "sample counter", 0, SEQ_MODULUS - 1)
    count = _int_in(_UINT, fields[2], "slot count", 1, MAX_SLOTS)
    _count(fields, (3 + 2 * count,), "W")
    slots = []
    for index in range(count):
        grams, raw = fields[3 + 2 * index], fields[4 + 2 * index]
        if not grams and not raw:
            slots.append(SlotWeight(None, None))
            continue
        slots.append(
            SlotWeight(
                float(_match(_GRAMS, grams, f"slot {index + 1} grams")),
                _int_in(_INT, raw, f"slot {index + 1} raw", RAW_MIN, RAW_MAX),
            )
        )
    return Weights(seq=seq, slots=tuple(slots))


def _info(fields: list[bytes]) -> Info:
    _count(fields, (6,), "I")
    return Info(
        firmware=_match(_TOKEN, fields[1], "firmware version").decode(),
        serial=_match(_SERIAL, fields[2], "serial number").decode(),
        slots=_int_in(_UINT, fields[3], "slot count", 1, MAX_SLOTS),
        rate_hz=_int_in(_UINT, fields[4], "sample rate", 1, MAX_RATE_HZ),
        window=_int_in(_UINT, fields[5], "filter window", 1, MAX_WINDOW),
    )


def _ack(fields: list[bytes]) -> Ack:
    _count(fields, (4, 5), "A")
    tag = _int_in(_UINT, fields[1], "tag", 0, MAX_TAG)
    command = _match(_NAME, fields[2], "command").decode()
    verdict = fields[3]
    if verdict == b"OK" and len(fields) == 4:
        return Ack(tag=tag, command=command, ok=True)
    if verdict == b"ERR" and len(fields) == 5:
        return Ack(tag=tag, command=command, ok=False, reason=_match(_REASON, fields[4], "reason").decode())
    if verdict in (b"OK", b"ERR"):
        raise FrameError("field_count", "A has 4 fields with OK, 5 with ERR")
    raise FrameError("bad_field", f"ack verdict {verdict[:8]!r} is neither OK nor ERR")


def _slot_error(fields: list[bytes]) -> SlotError:
    _count(fields, (3,), "E")
    slot = _int_in(_UINT, fields[1], "slot", 1, MAX_SLOTS)
    code = fields[2]
    if code not in _HARDWARE_CODES:
        raise FrameError("bad_field", f"error code {code[:8]!r} is not DISC, SAT or NONE")
    return SlotError(slot=slot, code=_HARDWARE_CODE_OF[code])


_HARDWARE_CODE_OF: Final[dict[bytes, HardwareCode]] = {b"DISC": "DISC", b"SAT": "SAT", b"NONE": "NONE"}
_MESSAGE_PARSERS: Final[dict[bytes, Callable[[list[bytes]], Message]]] = {
    b"W": _weights,
    b"I": _info,
    b"A": _ack,
    b"E": _slot_error,
}


def parse_message(line: bytes) -> Message:
    """One controller line (without CRLF) as a message; raises FrameError for anything else."""
    fields = unframe(line)
    parser = _MESSAGE_PARSERS.get(fields[0])
    if parser is None:
        raise FrameError("unknown_type", f"message type {fields[0][:8]!r}")
    return parser(fields)


def _grams(value: float) -> str:
    return f"{value:.1f}"


def encode_message(message: Message) -> bytes:
    """The line a controller sends for ``message`` (the simulator's side)."""
    match message:
        case Weights(seq=seq, slots=slots):
            cells: list[str] = []
            for slot in slots:
                # A slot in a hardware error sends two empty fields: "W,7,2,12.5,4711,,".
                missing = slot.grams is None or slot.raw is None
                cells += ["", ""] if missing else [_grams(slot.grams or 0.0), str(slot.raw)]
            return frame(",".join(["W", str(seq % SEQ_MODULUS), str(len(slots)), *cells]))
        case Info():
            return frame(f"I,{message.firmware},{message.serial},{message.slots},{message.rate_hz},{message.window}")
        case Ack(ok=True):
            return frame(f"A,{message.tag},{message.command},OK")
        case Ack():
            return frame(f"A,{message.tag},{message.command},ERR,{message.reason}")
        case SlotError():
            return frame(f"E,{message.slot},{message.code}")


# --------------------------------------------------------------------------- gateway -> controller


@dataclass(frozen=True, slots=True)
class SetRate:
    """``RATE``: send W lines (and sample) ``hz`` times a second."""

    tag: int
    hz: int


@dataclass(frozen=True, slots=True)
class SetWindow:
    """``WIN``: report the moving average of the last ``samples`` conversions."""

    tag: int
    samples: int


@dataclass(frozen=True, slots=True)
class Tare:
    """``TARE``: make the slot's current load its zero."""

    tag: int
    slot: int


@dataclass(frozen=True, slots=True)
class Calibrate:
    """``CAL``: the slot now carries ``grams``; derive its scale from that."""

    tag: int
    slot: int
    grams: float


@dataclass(frozen=True, slots=True)
class InfoRequest:
    """``INFO``: answer with an I line, then the ack."""

    tag: int


ControllerCommand = SetRate | SetWindow | Tare | Calibrate | InfoRequest

# The command word of each command: the ack's second field repeats it.
COMMAND_NAMES: Final[dict[type[ControllerCommand], str]] = {
    SetRate: "RATE",
    SetWindow: "WIN",
    Tare: "TARE",
    Calibrate: "CAL",
    InfoRequest: "INFO",
}


def encode_command(command: ControllerCommand) -> bytes:
    """The line the gateway sends for ``command``."""
    name = COMMAND_NAMES[type(command)]
    match command:
        case SetRate(hz=hz):
            args = [str(hz)]
        case SetWindow(samples=samples):
            args = [str(samples)]
        case Tare(slot=slot):
            args = [str(slot)]
        case Calibrate(slot=slot, grams=grams):
            args = [str(slot), _grams(grams)]
        case InfoRequest():
            args = []
    return frame(",".join([name, str(command.tag), *args]))


def command_tag(fields: list[bytes]) -> int | None:
    """The tag of a command line's fields when it has a readable one (for ERR acks to bad commands)."""
    if len(fields) >= 2 and _UINT.fullmatch(fields[1]) and int(fields[1]) <= MAX_TAG:
        return int(fields[1])
    return None


def parse_command(fields: list[bytes]) -> ControllerCommand:
    """A command from its checked fields (see :func:`unframe`); raises FrameError (the firmware's side)."""
    name = fields[0]
    parser = _COMMAND_PARSERS.get(name)
    if parser is None:
        raise FrameError("unknown_type", f"command {name[:8]!r}")
    arity = _COMMAND_ARITY[name]
    _count(fields, (arity,), name.decode())
    tag = _int_in(_UINT, fields[1], "tag", 0, MAX_TAG)
    return parser(tag, fields[2:])


def _rate(tag: int, args: list[bytes]) -> SetRate:
    return SetRate(tag=tag, hz=_int_in(_UINT, args[0], "rate", 1, MAX_RATE_HZ))


def _window(tag: int, args: list[bytes]) -> SetWindow:
    return SetWindow(tag=tag, samples=_int_in(_UINT, args[0], "window", 1, MAX_WINDOW))


def _tare(tag: int, args: list[bytes]) -> Tare:
    return Tare(tag=tag, slot=_int_in(_UINT, args[0], "slot", 1, MAX_SLOTS))


def _calibrate(tag: int, args: list[bytes]) -> Calibrate:
    slot = _int_in(_UINT, args[0], "slot", 1, MAX_SLOTS)
    return Calibrate(tag=tag, slot=slot, grams=float(_match(_GRAMS, args[1], "known weight")))


def _info_request(tag: int, args: list[bytes]) -> InfoRequest:
    return InfoRequest(tag=tag)


_COMMAND_PARSERS: Final[dict[bytes, Callable[[int, list[bytes]], ControllerCommand]]] = {
    b"RATE": _rate,
    b"WIN": _window,
    b"TARE": _tare,
    b"CAL": _calibrate,
    b"INFO": _info_request,
}
_COMMAND_ARITY: Final = {b"RATE": 3, b"WIN": 3, b"TARE": 3, b"CAL": 4, b"INFO": 2}


# --------------------------------------------------------------------------- the gateway's line decoder


class LineDecoder:
    """Controller lines -> messages, counting every rejected line (or garbage before a line) by reason.

    The start character resynchronises: bytes before the last ``$`` of a line are garbage
    (counted once) and the frame after it is still parsed. ``on_reject`` hears each reject
    as it is counted (the driver logs it and keeps it for its health).
    """

    def __init__(self, *, on_reject: Callable[[FrameError], None] = lambda error: None) -> None:
        self.rejected: Counter[str] = Counter()
        self.last_reject: FrameError | None = None
        self._on_reject = on_reject

    @property
    def rejected_total(self) -> int:
        """Every line (or leading garbage) rejected so far."""
        return sum(self.rejected.values())

    def reject(self, error: FrameError) -> None:
        """Count one rejected line (also for rejects found outside the parser, e.g. an over-long line)."""
        self.rejected[error.reason] += 1
        self.last_reject = error
        self._on_reject(error)

    def decode(self, line: bytes) -> Message | None:
        """The message of one line (without CRLF), or None when the line was rejected (and counted)."""
        start = line.rfind(START)
        if start < 0:
            self.reject(FrameError("no_start", f"no {START.decode()!r} in {line[:40]!r}"))
            return None
        if start > 0:
            self.reject(FrameError("garbage", f"{start} bytes before {START.decode()!r}: {line[: min(start, 40)]!r}"))
        try:
            return parse_message(line[start:])
        except FrameError as err:
            self.reject(err)
            return None
