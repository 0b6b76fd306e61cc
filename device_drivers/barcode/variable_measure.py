"""In-store variable-measure EAN-13s (GS1 restricted circulation numbers, prefix 02 and 20-29). Pure.

A scale label carries the item number and its price or weight in the 13 digits; which
prefixes carry which, and the layout, is the store's choice (``BarcodeSettings.variable_measure``).
The scan's ``gtin`` for such a code is the item's lookup key: the same 13 digits with the
value (and price check digit) zeroed and the EAN check digit recomputed, as GTIN-14, so
every label of one item has one key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from biip.checksums import gs1_price_weight_check_digit, gs1_standard_check_digit

from device_drivers.barcode.profile import VariableMeasureRule
from device_drivers.barcode.symbology import BarcodeRejectedError, RejectReason


@dataclass(frozen=True, slots=True)
class VariableMeasure:
    """The price or weight a variable-measure code carries, and its item key."""

    item_key: str  # GTIN-14 with the value zeroed
    price: str | None = None  # decimal string, store currency
    net_weight_g: float | None = None


def rule_for(ean13: str, rules: Iterable[VariableMeasureRule]) -> VariableMeasureRule | None:
    """The rule whose prefix ``ean13`` (13 digits, UPC-A with its leading 0) has, if any."""
    return next((rule for rule in rules if ean13[:2] in rule.prefixes), None)


def read_measure(ean13: str, rule: VariableMeasureRule) -> VariableMeasure:
    """The value in a 13-digit code laid out by ``rule``; raises BarcodeRejectedError on a bad price check digit."""
    start = 2 + rule.item_digits
    value = ean13[start + int(rule.price_check_digit) : 12]
    if rule.price_check_digit:
        expected = gs1_price_weight_check_digit(value)
        if int(ean13[start]) != expected:
            raise BarcodeRejectedError(
                RejectReason.BAD_CHECK_DIGIT,
                f"variable-measure {ean13!r}: price check digit {ean13[start]}, expected {expected}",
            )
    zeroed = ean13[:start] + "0" * (12 - start)
    item_key = "0" + zeroed + str(gs1_standard_check_digit(zeroed))
    if rule.measure == "price":
        price = Decimal(value).scaleb(-rule.decimals)
        return VariableMeasure(item_key=item_key, price=f"{price:.{rule.decimals}f}")
    return VariableMeasure(item_key=item_key, net_weight_g=float(int(value)))
