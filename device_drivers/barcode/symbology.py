"""Which symbology a scanned text is, and whether its data is valid for it. Pure: text in, Symbol out.

A scanner programmed to send AIM symbology identifiers (ISO/IEC 15424) prefixes each code
with ``]`` + a symbology letter + a modifier: ``]E0`` EAN-13/UPC-A/UPC-E, ``]E4`` EAN-8,
``]C0`` Code 128, ``]C1`` GS1-128, ``]d2`` GS1 DataMatrix, ``]e0`` GS1 DataBar (every variant:
omnidirectional, limited and stacked carry (01) only, expanded any AIs).

Without identifiers the symbology is inferred from the data (see :func:`classify`), trying only
the symbologies the scanner is programmed for (its profile's ``symbologies``); when more than one
of them fits, the first in :data:`GUESS_ORDER` wins and the symbol says it was guessed.
Whitespace around the data is the scanner's (a prefix or suffix programmed with a space): it is
dropped for the numeric symbologies, which never carry it, and kept for Code 128, which can.

AIM ``]E0`` sends UPC-A and UPC-E in their 13-digit EAN form (a leading 0). A 13-digit
UPC that can be zero-suppressed is reported as ``upce``; the GTIN is the same either way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from biip import EncodeError, ParseConfig, ParseError
from biip.checksums import gs1_standard_check_digit
from biip.gs1_element_strings import GS1ElementString
from biip.upc import Upc

from storegate.gtin import reserved_gtin_reason

SymbologyName = Literal["ean13", "ean8", "upca", "upce", "code128", "gs1_128", "gs1_datamatrix", "gs1_databar"]

# Without AIM ids, the order in which the symbologies a text fits are preferred: EAN/UPC data is far
# more common at a till than the same digits in Code 128, and GS1 data than free Code 128 text.
GUESS_ORDER: Final[tuple[SymbologyName, ...]] = (
    "ean13",
    "upca",
    "ean8",
    "upce",
    "gs1_128",
    "gs1_databar",
    "gs1_datamatrix",
    "code128",
)
# Every symbology this gateway takes, the profile default: all are on in handheld imagers' factory defaults (Zebra DS).
ALL_SYMBOLOGIES: Final[frozenset[SymbologyName]] = frozenset(GUESS_ORDER)
_WHITESPACE: Final = " \t"

GS: Final = "\x1d"  # what the scanner sends for FNC1 between GS1 element strings


class RejectReason(StrEnum):
    """Why a scanned text is not a barcode this gateway accepts."""

    EMPTY = "empty"
    MISSING_IDENTIFIER = "missing_identifier"
    UNSUPPORTED_SYMBOLOGY = "unsupported_symbology"
    ILLEGAL_CHARACTERS = "illegal_characters"
    BAD_LENGTH = "bad_length"
    BAD_CHECK_DIGIT = "bad_check_digit"
    GS1_SYNTAX = "gs1_syntax"
    TOO_LONG = "too_long"
    PARTIAL = "partial"
    RESERVED_GTIN = "reserved_gtin"


class BarcodeRejectedError(ValueError):
    """The scanned text is not an acceptable barcode; ``reason`` says why, the message says what."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Symbol:
    """A scanned code whose symbology is known and whose characters and check digit are valid."""

    symbology: SymbologyName
    data: str  # without the AIM identifier; GS1 separators as GS
    aim: str | None  # e.g. "]E0", as sent
    gtin: str | None = None  # GTIN-14, for EAN/UPC
    guessed: bool = False  # no AIM id, and more than one programmed symbology fits the data


# AIM symbology letters this gateway does not take, for a clear reason in the log.
_UNSUPPORTED_AIM: Final[dict[str, str]] = {
    "A": "Code 39",
    "B": "Telepen",
    "D": "Code One",
    "F": "Codabar",
    "G": "Code 93",
    "H": "Code 11",
    "I": "ITF (Interleaved 2 of 5)",
    "L": "PDF417",
    "M": "MSI",
    "Q": "QR Code",
    "R": "Straight 2 of 5",
    "S": "Straight 2 of 5",
    "X": "an unidentified symbology",
    "z": "Aztec",
}

# AIM identifiers this gateway takes, and what each means.
_SUPPORTED_AIM: Final[dict[str, str]] = {
    "]E0": "ean_upc",
    "]E4": "ean8",
    "]C0": "code128",
    "]C1": "gs1_128",
    "]d2": "gs1_datamatrix",
    "]e0": "gs1_databar",
}
_AIM_NAMES: Final[dict[str, str]] = {
    "]E1": "UPC/EAN with a 2-digit add-on",
    "]E2": "UPC/EAN with a 5-digit add-on",
    "]E3": "UPC/EAN with an add-on",
    "]C2": "Code 128 with FNC1 in second position",
    "]C4": "Code 128 ISBT concatenation",
    "]d1": "Data Matrix (not GS1)",
}


def split_aim(text: str) -> tuple[str | None, str]:
    """The AIM identifier (``]`` + letter + modifier) and the data after it; (None, text) without one."""
    if len(text) >= 3 and text[0] == "]":
        return text[:3], text[3:]
    return None, text


def classify(text: str, *, aim_ids: bool, programmed: frozenset[SymbologyName] = ALL_SYMBOLOGIES) -> Symbol:
    """The symbol ``text`` is (AIM identifier first when ``aim_ids``); raises BarcodeRejectedError.

    ``programmed``: the symbologies the scanner is programmed for, the only ones a text without an
    AIM identifier is tried as.
    """
    if not text.strip(_WHITESPACE):
        raise BarcodeRejectedError(RejectReason.EMPTY, "no data")
    aim, data = split_aim(text.lstrip(_WHITESPACE))
    if aim is None:
        if aim_ids:
            raise BarcodeRejectedError(RejectReason.MISSING_IDENTIFIER, "no AIM symbology identifier")
        return _infer(text, programmed)
    kind = _SUPPORTED_AIM.get(aim)
    if kind is None:
        name = _AIM_NAMES.get(aim) or _UNSUPPORTED_AIM.get(aim[1])
        what = f"{name} ({aim})" if name else f"unknown identifier {aim!r}"
        raise BarcodeRejectedError(RejectReason.UNSUPPORTED_SYMBOLOGY, f"{what} is not accepted")
    if kind != "code128":
        data = data.strip(_WHITESPACE)
    if not data:
        raise BarcodeRejectedError(RejectReason.EMPTY, f"no data after {aim}")
    return _BY_KIND[kind](data, aim)


def _infer(text: str, programmed: frozenset[SymbologyName]) -> Symbol:
    # Every programmed symbology the data has the shape of is tried; of those that accept it the
    # first in GUESS_ORDER wins. A scanner checks EAN/UPC check digits before it sends a code, so
    # digits that fail the check are another symbology (Code 128), not a misread EAN.
    accepted: list[Symbol] = []
    first_error: BarcodeRejectedError | None = None
    for read in _candidates(text.strip(_WHITESPACE), text):
        try:
            symbol = _as_programmed(read(), programmed)
        except BarcodeRejectedError as err:
            if err.reason is RejectReason.RESERVED_GTIN:
                raise  # an EAN/UPC of no trade item: refused, not read again as Code 128
            first_error = first_error or err
            continue
        if symbol is not None:
            accepted.append(symbol)
    if not accepted:
        if first_error is not None:
            raise first_error
        enabled = ", ".join(name for name in GUESS_ORDER if name in programmed)
        raise BarcodeRejectedError(
            RejectReason.UNSUPPORTED_SYMBOLOGY, f"data fits none of the programmed symbologies ({enabled})"
        )
    accepted.sort(key=lambda symbol: GUESS_ORDER.index(symbol.symbology))
    best = accepted[0]
    if len({symbol.symbology for symbol in accepted}) > 1:
        return Symbol(best.symbology, best.data, None, gtin=best.gtin, guessed=True)
    return best


def _as_programmed(symbol: Symbol, programmed: frozenset[SymbologyName]) -> Symbol | None:
    """``symbol`` if the scanner can send it; a 13-digit UPC-A/UPC-E is either, as programmed; else None."""
    if symbol.symbology in programmed:
        return symbol
    twin: SymbologyName = "upca" if symbol.symbology == "upce" else "upce"
    if symbol.symbology in ("upca", "upce") and len(symbol.data) == 13 and twin in programmed:
        return Symbol(twin, symbol.data, symbol.aim, gtin=symbol.gtin)
    return None


def _candidates(data: str, raw: str) -> list[Callable[[], Symbol]]:
    """How to read ``data`` as each symbology it has the shape of (``raw``: as sent, for Code 128)."""
    found: list[Callable[[], Symbol]] = []
    if data.isascii() and data.isdigit():
        if len(data) in (12, 13):
            found.append(lambda: _ean_upc(data, None))
        if len(data) == 8:
            found.append(lambda: _ean8(data, None))
            found.append(lambda: _upce(data, None))
    if _gs1_shaped(data):
        found.extend(functools.partial(_gs1, data, None, kind) for kind in _GS1_KINDS)
    if GS not in raw:
        found.append(lambda: _code128(raw, None))
    return found


_GS1_KINDS: Final[tuple[SymbologyName, ...]] = ("gs1_128", "gs1_databar", "gs1_datamatrix")
_FIRST_ELEMENT_CONFIG: Final = ParseConfig(separator_chars=(GS,))


def _gs1_shaped(data: str) -> bool:
    # Only GS1 symbols send FNC1 as GS; without one, GS1 data starts with a known AI whose value
    # has its format, which Code 128 text rarely does.
    if GS in data:
        return True
    try:
        GS1ElementString.extract(data.lstrip(GS), config=_FIRST_ELEMENT_CONFIG)
    except ParseError:
        return False
    return True


def _digits(data: str) -> None:
    if not (data.isascii() and data.isdigit()):
        raise BarcodeRejectedError(RejectReason.ILLEGAL_CHARACTERS, f"EAN/UPC data {data!r} is not all digits")


def _check(data: str, what: str) -> None:
    expected = gs1_standard_check_digit(data[:-1])
    if int(data[-1]) != expected:
        raise BarcodeRejectedError(
            RejectReason.BAD_CHECK_DIGIT, f"{what} {data!r}: check digit {data[-1]}, expected {expected}"
        )


def _ean_upc(data: str, aim: str | None) -> Symbol:
    _digits(data)
    if len(data) == 8:
        return _upce(data, aim)
    if len(data) == 12:
        _check(data, "UPC-A")
        return _traded(Symbol("upca", data, aim, gtin="00" + data))
    if len(data) != 13:
        raise BarcodeRejectedError(RejectReason.BAD_LENGTH, f"EAN/UPC data {data!r} has {len(data)} digits")
    _check(data, "EAN-13")
    if data[0] != "0":
        return _traded(Symbol("ean13", data, aim, gtin="0" + data))
    try:
        Upc.parse(data[1:]).as_upc_e()
    except (ParseError, EncodeError):
        return _traded(Symbol("upca", data, aim, gtin="0" + data))
    return _traded(Symbol("upce", data, aim, gtin="0" + data))


def _upce(data: str, aim: str | None) -> Symbol:
    if data[0] not in "01":
        raise BarcodeRejectedError(RejectReason.ILLEGAL_CHARACTERS, f"UPC-E {data!r}: number system must be 0 or 1")
    try:
        upc = Upc.parse(data)  # expands to UPC-A and verifies the check digit there
    except ParseError as err:
        raise BarcodeRejectedError(RejectReason.BAD_CHECK_DIGIT, f"UPC-E {data!r}: {err}") from None
    return _traded(Symbol("upce", data, aim, gtin=upc.as_gtin_14()))


def _ean8(data: str, aim: str | None) -> Symbol:
    _digits(data)
    if len(data) != 8:
        raise BarcodeRejectedError(RejectReason.BAD_LENGTH, f"EAN-8 data {data!r} has {len(data)} digits")
    _check(data, "EAN-8")
    return _traded(Symbol("ean8", data, aim, gtin="000000" + data))


def _traded(symbol: Symbol) -> Symbol:
    """``symbol`` unless its GTIN identifies no trade item (all zeros, coupons: storegate.gtin)."""
    reason = reserved_gtin_reason(symbol.gtin) if symbol.gtin is not None else None
    if reason is not None:
        raise BarcodeRejectedError(RejectReason.RESERVED_GTIN, f"{symbol.symbology} {symbol.data!r}: {reason}")
    return symbol


def _printable_latin1(char: str) -> bool:
    code = ord(char)
    return 0x20 <= code <= 0x7E or 0xA0 <= code <= 0xFF


def _code128(data: str, aim: str | None) -> Symbol:
    # Code 128 can carry ASCII controls, but at a till they are line noise or a misprogrammed
    # scanner, and would break receipts downstream: only printable ISO 8859-1 is accepted.
    bad = sorted({char for char in data if not _printable_latin1(char)})
    if bad:
        raise BarcodeRejectedError(
            RejectReason.ILLEGAL_CHARACTERS, f"Code 128 data {data!r} has characters {''.join(bad)!r}"
        )
    return Symbol("code128", data, aim)


def _gs1(data: str, aim: str | None, symbology: SymbologyName) -> Symbol:
    # GS1 element strings use a subset of ASCII plus GS; biip checks each AI's format later.
    bad = sorted({char for char in data if not (char == GS or 0x21 <= ord(char) <= 0x7E)})
    if bad:
        raise BarcodeRejectedError(RejectReason.ILLEGAL_CHARACTERS, f"GS1 data {data!r} has characters {bad!r}")
    return Symbol(symbology, data.strip(GS), aim)


_BY_KIND: Final[dict[str, Callable[[str, str | None], Symbol]]] = {
    "ean_upc": _ean_upc,
    "ean8": _ean8,
    "code128": _code128,
    "gs1_128": lambda data, aim: _gs1(data, aim, "gs1_128"),
    "gs1_datamatrix": lambda data, aim: _gs1(data, aim, "gs1_datamatrix"),
    "gs1_databar": lambda data, aim: _gs1(data, aim, "gs1_databar"),
}
