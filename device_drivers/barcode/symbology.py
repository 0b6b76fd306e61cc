"""Which symbology a scanned text is, and whether its data is valid for it. Pure: text in, Symbol out.

A scanner programmed to send AIM symbology identifiers (ISO/IEC 15424) prefixes each code
with ``]`` + a symbology letter + a modifier: ``]E0`` EAN-13/UPC-A/UPC-E, ``]E4`` EAN-8,
``]C0`` Code 128, ``]C1`` GS1-128, ``]d2`` GS1 DataMatrix. Without identifiers the symbology
is inferred from the data (see :func:`classify`), which cannot tell ITF or QR from Code 128.

AIM ``]E0`` sends UPC-A and UPC-E in their 13-digit EAN form (a leading 0). A 13-digit
UPC that can be zero-suppressed is reported as ``upce``; the GTIN is the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from biip import EncodeError, ParseError
from biip.checksums import gs1_standard_check_digit
from biip.upc import Upc

SymbologyName = Literal["ean13", "ean8", "upca", "upce", "code128", "gs1_128", "gs1_datamatrix"]

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
    "e": "GS1 DataBar",
    "z": "Aztec",
}

# AIM identifiers this gateway takes, and what each means.
_SUPPORTED_AIM: Final[dict[str, str]] = {
    "]E0": "ean_upc",
    "]E4": "ean8",
    "]C0": "code128",
    "]C1": "gs1_128",
    "]d2": "gs1_datamatrix",
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


def classify(text: str, *, aim_ids: bool) -> Symbol:
    """The symbol ``text`` is (AIM identifier first when ``aim_ids``); raises BarcodeRejectedError."""
    if not text:
        raise BarcodeRejectedError(RejectReason.EMPTY, "no data")
    aim, data = split_aim(text)
    if aim is None:
        if aim_ids:
            raise BarcodeRejectedError(RejectReason.MISSING_IDENTIFIER, "no AIM symbology identifier")
        return _infer(data)
    kind = _SUPPORTED_AIM.get(aim)
    if kind is None:
        name = _AIM_NAMES.get(aim) or _UNSUPPORTED_AIM.get(aim[1])
        what = f"{name} ({aim})" if name else f"unknown identifier {aim!r}"
        raise BarcodeRejectedError(RejectReason.UNSUPPORTED_SYMBOLOGY, f"{what} is not accepted")
    if not data:
        raise BarcodeRejectedError(RejectReason.EMPTY, f"no data after {aim}")
    return _BY_KIND[kind](data, aim)


def _infer(data: str) -> Symbol:
    # Without identifiers, all-digit texts of EAN/UPC lengths are taken as EAN/UPC, texts
    # with a GS as GS1-128, anything else as Code 128.
    if data.isascii() and data.isdigit() and len(data) in (8, 12, 13):
        if len(data) == 8:
            return _ean8_or_upce(data)
        return _ean_upc(data, None)
    if GS in data:
        return _gs1(data, None, "gs1_128")
    return _code128(data, None)


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
        return Symbol("upca", data, aim, gtin="00" + data)
    if len(data) != 13:
        raise BarcodeRejectedError(RejectReason.BAD_LENGTH, f"EAN/UPC data {data!r} has {len(data)} digits")
    _check(data, "EAN-13")
    if data[0] != "0":
        return Symbol("ean13", data, aim, gtin="0" + data)
    try:
        Upc.parse(data[1:]).as_upc_e()
    except (ParseError, EncodeError):
        return Symbol("upca", data, aim, gtin="0" + data)
    return Symbol("upce", data, aim, gtin="0" + data)


def _upce(data: str, aim: str | None) -> Symbol:
    if data[0] not in "01":
        raise BarcodeRejectedError(RejectReason.ILLEGAL_CHARACTERS, f"UPC-E {data!r}: number system must be 0 or 1")
    try:
        upc = Upc.parse(data)  # expands to UPC-A and verifies the check digit there
    except ParseError as err:
        raise BarcodeRejectedError(RejectReason.BAD_CHECK_DIGIT, f"UPC-E {data!r}: {err}") from None
    return Symbol("upce", data, aim, gtin=upc.as_gtin_14())


def _ean8(data: str, aim: str | None) -> Symbol:
    _digits(data)
    if len(data) != 8:
        raise BarcodeRejectedError(RejectReason.BAD_LENGTH, f"EAN-8 data {data!r} has {len(data)} digits")
    _check(data, "EAN-8")
    return Symbol("ean8", data, aim, gtin="000000" + data)


def _ean8_or_upce(data: str) -> Symbol:
    # Without an identifier 8 digits are EAN-8 when its check digit holds, else UPC-E.
    try:
        return _ean8(data, None)
    except BarcodeRejectedError as ean8_error:
        try:
            return _upce(data, None)
        except BarcodeRejectedError:
            raise ean8_error from None


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
}
