"""GS1 element strings (GS1-128, GS1 DataMatrix) to the fields of a scan. Pure, on top of biip.

The data is a run of element strings, each an application identifier (AI) and its value;
variable-length values end with GS (what the scanner sends for FNC1). biip knows every
AI's format and checks dates and the check digits of GTIN (01/02/03), SSCC (00) and GLN (41x).

A check digit that fails always rejects the scan: a wrong GTIN must never reach stock.
Any other break of GS1 syntax (an unknown AI, a value of the wrong length, a bad date)
rejects it when ``strict``; otherwise the scan is kept with the AIs read up to the break
(``complete`` false), because the symbol itself was read correctly and is still a scan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Final

from biip import ParseConfig, ParseError
from biip.gs1_element_strings import GS1ElementString

from device_drivers.barcode.symbology import GS, BarcodeRejectedError, RejectReason

_CONFIG: Final = ParseConfig(separator_chars=(GS,))
_NET_WEIGHT_KG_AIS: Final = frozenset(f"310{n}" for n in range(6))  # (310n): net weight, kg, n decimals


@dataclass(frozen=True, slots=True)
class Gs1Data:
    """What a GS1 symbol says: every AI and value, and the ones a scan names."""

    ai: dict[str, str] = field(default_factory=dict)
    gtin: str | None = None  # (01), as GTIN-14
    batch: str | None = None  # (10)
    expiry: date | None = None  # (17); day 00 means the month's last day
    serial: str | None = None  # (21)
    net_weight_g: float | None = None  # (310n)
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
        _reject_bad_check_digit(element)
        if any(seen.ai.ai == element.ai.ai and seen.value != element.value for seen in elements):
            problem = f"AI ({element.ai.ai}) appears twice with different values"
            break
        elements.append(element)
        rest = rest[len(element) :]
    if problem is not None and strict:
        raise BarcodeRejectedError(RejectReason.GS1_SYNTAX, f"GS1 data {data!r}: {problem}")
    return _fields(elements, problem)


def _reject_bad_check_digit(element: GS1ElementString) -> None:
    error = element.gtin_error or element.sscc_error or element.gln_error
    if error is not None:
        raise BarcodeRejectedError(RejectReason.BAD_CHECK_DIGIT, f"AI ({element.ai.ai}): {error}")


def _fields(elements: list[GS1ElementString], problem: str | None) -> Gs1Data:
    by_ai = {element.ai.ai: element for element in elements}
    gtin = by_ai.get("01")
    expiry = by_ai.get("17")
    weight = next((by_ai[ai] for ai in sorted(_NET_WEIGHT_KG_AIS) if ai in by_ai), None)
    return Gs1Data(
        ai={element.ai.ai: element.value for element in elements},
        gtin=gtin.gtin.as_gtin_14() if gtin is not None and gtin.gtin is not None else None,
        batch=by_ai["10"].value if "10" in by_ai else None,
        expiry=expiry.date if expiry is not None else None,
        serial=by_ai["21"].value if "21" in by_ai else None,
        net_weight_g=float(weight.decimal * 1000) if weight is not None and weight.decimal is not None else None,
        complete=problem is None,
        problem=problem,
    )
