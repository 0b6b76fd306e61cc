"""GS1 element strings (GS1-128, GS1 DataMatrix, GS1 DataBar) to the fields of a scan. Pure, on top of biip.

The data is a run of element strings, each an application identifier (AI) and its value;
variable-length values end with GS (what the scanner sends for FNC1) unless they are last. biip
knows every AI's format and checks dates and the check digits of GTIN (01/02/03), SSCC (00) and
GLN (41x).

A check digit that fails, or a GTIN (01) of no trade item (all zeros, coupons: storegate.gtin),
always rejects the scan: a wrong GTIN must never reach stock.
Any other break of GS1 syntax (an unknown AI, a value of the wrong length or format, a bad date)
rejects it when ``strict``; otherwise the scan is kept with the AIs read before the break and
flagged incomplete (``complete`` false, ``problem`` says what broke), because the symbol itself
was read correctly and is still a scan.

biip reads a variable-length value only as far as its format allows, so a value that is too
long or malformed would come back cut short, as if complete (AI 423 ``0123456789012`` read as
``012345678901``). Here a variable-length value must run to the next GS or the end of the data,
or it is a break, and the value is not kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Final

from biip import ParseConfig, ParseError
from biip.gs1_element_strings import GS1ElementString

from device_drivers.barcode.symbology import GS, BarcodeRejectedError, RejectReason
from storegate.gtin import reserved_gtin_reason

_CONFIG: Final = ParseConfig(separator_chars=(GS,))
# (310n): net weight in kg, (320n): in pounds, n decimals; 1 lb is 0.45359237 kg exactly (international pound).
_GRAMS_PER_UNIT_OF_AI: Final[dict[str, Decimal]] = {
    **{f"310{n}": Decimal(1000) for n in range(6)},
    **{f"320{n}": Decimal("453.59237") for n in range(6)},
}


@dataclass(frozen=True, slots=True)
class Gs1Data:
    """What a GS1 symbol says: every AI and value, and the ones a scan names."""

    ai: dict[str, str] = field(default_factory=dict)
    gtin: str | None = None  # (01), as GTIN-14
    batch: str | None = None  # (10)
    expiry: date | None = None  # (17); day 00 means the month's last day
    serial: str | None = None  # (21)
    net_weight_g: float | None = None  # (310n) kg or (320n) lb, in grams
    complete: bool = True  # False: lenient parse stopped at a syntax break
    problem: str | None = None  # what the break was


def parse_gs1(data: str, *, strict: bool) -> Gs1Data:
    """The element strings of ``data`` (GS separated); raises BarcodeRejectedError (see module doc)."""
    if not data.strip(GS):
        raise BarcodeRejectedError(RejectReason.EMPTY, "GS1 symbol without element strings")
    elements: list[GS1ElementString] = []
    problem: str | None = None
    rest = data
    while rest := rest.lstrip(GS):
        try:
            element = GS1ElementString.extract(rest, config=_CONFIG)
        except ParseError as err:
            problem = str(err)
            break
        _reject_bad_gtin(element)
        problem = _cut_short(element, rest)
        if problem is None and any(seen.ai.ai == element.ai.ai and seen.value != element.value for seen in elements):
            problem = f"AI ({element.ai.ai}) appears twice with different values"
        if problem is not None:
            break
        elements.append(element)
        rest = rest[len(element) :]
    if problem is not None and strict:
        raise BarcodeRejectedError(RejectReason.GS1_SYNTAX, f"GS1 data {data!r}: {problem}")
    return _fields(elements, problem)


def _cut_short(element: GS1ElementString, rest: str) -> str | None:
    """Why biip's value of a variable-length AI is not all the symbol holds for it, or None when it is."""
    if not element.ai.separator_required:
        return None
    sent = rest[len(element.ai.ai) :].split(GS, 1)[0]
    if sent == element.value:
        return None
    return (
        f"AI ({element.ai.ai}) value {sent!r} does not match its format {element.ai.format} "
        f"(only {element.value!r} would; the value is not kept)"
    )


def _reject_bad_gtin(element: GS1ElementString) -> None:
    error = element.gtin_error or element.sscc_error or element.gln_error
    if error is not None:
        raise BarcodeRejectedError(RejectReason.BAD_CHECK_DIGIT, f"AI ({element.ai.ai}): {error}")
    if element.ai.ai == "01" and (reason := reserved_gtin_reason(element.value)) is not None:
        raise BarcodeRejectedError(RejectReason.RESERVED_GTIN, f"AI (01) {element.value}: {reason}")


def _net_weight_g(by_ai: dict[str, GS1ElementString]) -> float | None:
    weight_ai = next((ai for ai in sorted(_GRAMS_PER_UNIT_OF_AI) if ai in by_ai), None)
    if weight_ai is None:
        return None
    amount = by_ai[weight_ai].decimal
    return float(amount * _GRAMS_PER_UNIT_OF_AI[weight_ai]) if amount is not None else None


def _fields(elements: list[GS1ElementString], problem: str | None) -> Gs1Data:
    by_ai = {element.ai.ai: element for element in elements}
    gtin = by_ai.get("01")
    expiry = by_ai.get("17")
    return Gs1Data(
        ai={element.ai.ai: element.value for element in elements},
        gtin=gtin.gtin.as_gtin_14() if gtin is not None and gtin.gtin is not None else None,
        batch=by_ai["10"].value if "10" in by_ai else None,
        expiry=expiry.date if expiry is not None else None,
        serial=by_ai["21"].value if "21" in by_ai else None,
        net_weight_g=_net_weight_g(by_ai),
        complete=problem is None,
        problem=problem,
    )
