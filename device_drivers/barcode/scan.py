"""From a scanned text to a wire ``Scan``, double-read suppression, and which event a mode emits. Pure.

:func:`decode` joins the steps: the symbology and its check digit (:mod:`.symbology`), GS1
element strings of GS1-128, GS1 DataMatrix and GS1 DataBar (:mod:`.gs1`), in-store price and
weight codes (:mod:`.variable_measure`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from device_drivers.barcode.gs1 import parse_gs1
from device_drivers.barcode.profile import VariableMeasureRule
from device_drivers.barcode.symbology import (
    ALL_SYMBOLOGIES,
    BarcodeRejectedError,
    RejectReason,
    SymbologyName,
    classify,
)
from device_drivers.barcode.variable_measure import read_measure, rule_for
from storegate.wire import EventKind, Scan, ScanMode

# The event kind each mode turns a scan into.
KIND_OF_MODE: Final[dict[str, str]] = {
    "checkout": EventKind.SCAN_SALE,
    "receiving": EventKind.SCAN_RECEIVING,
    "stock_count": EventKind.SCAN_COUNT,
}

_MAX_CODE: Final = 512  # Scan.code's limit on the wire


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """What decoding needs from the profile and the settings."""

    aim_ids: bool = True
    programmed: frozenset[SymbologyName] = ALL_SYMBOLOGIES  # what a text without AIM id may be
    gs1_strict: bool = False
    variable_measure: tuple[VariableMeasureRule, ...] = ()
    max_length: int = _MAX_CODE


def decode(text: str, *, mode: ScanMode, options: DecodeOptions) -> Scan:
    """The wire Scan of one scanned text; raises BarcodeRejectedError (only) for anything unacceptable."""
    if len(text) > min(options.max_length, _MAX_CODE):
        raise BarcodeRejectedError(RejectReason.TOO_LONG, f"{len(text)} characters (at most {options.max_length})")
    symbol = classify(text, aim_ids=options.aim_ids, programmed=options.programmed)
    if symbol.symbology in ("gs1_128", "gs1_datamatrix", "gs1_databar"):
        gs1 = parse_gs1(symbol.data, strict=options.gs1_strict)
        return Scan(
            code=symbol.data,
            symbology=symbol.symbology,
            symbology_guessed=symbol.guessed,
            mode=mode,
            gtin=gs1.gtin,
            batch=gs1.batch,
            expiry=gs1.expiry.isoformat() if gs1.expiry else None,
            serial=gs1.serial,
            net_weight_g=gs1.net_weight_g,
            ai=gs1.ai,
            gs1_incomplete=not gs1.complete,
            gs1_problem=gs1.problem[:500] if gs1.problem is not None else None,
        )
    if symbol.symbology in ("ean13", "upca") and (rule := rule_for(_as_ean13(symbol.data), options.variable_measure)):
        measure = read_measure(_as_ean13(symbol.data), rule)
        return Scan(
            code=symbol.data,
            symbology=symbol.symbology,
            symbology_guessed=symbol.guessed,
            mode=mode,
            gtin=measure.item_key,
            price=measure.price,
            net_weight_g=measure.net_weight_g,
        )
    return Scan(
        code=symbol.data, symbology=symbol.symbology, symbology_guessed=symbol.guessed, mode=mode, gtin=symbol.gtin
    )


def _as_ean13(data: str) -> str:
    return data if len(data) == 13 else "0" + data


class DoubleReadFilter:
    """Suppresses a code read again within ``window_s`` of its previous sighting.

    Only the code just read counts: A B A is three scans. The window runs from the last
    sighting, suppressed ones included, so a code held under a presentation scanner that
    re-reads it every few hundred milliseconds stays one scan until it is taken away.
    """

    def __init__(self, *, window_s: float, clock: Callable[[], float]) -> None:
        self.window_s = window_s
        self._clock = clock
        self._last_code: str | None = None
        self._last_at = 0.0
        self.suppressed_total = 0

    def admit(self, code: str) -> bool:
        """Whether this read is a new scan (False: a double read, counted)."""
        now = self._clock()
        repeat = code == self._last_code and now - self._last_at < self.window_s
        self._last_code, self._last_at = code, now
        if repeat:
            self.suppressed_total += 1
        return not repeat
