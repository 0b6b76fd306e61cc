"""One rule for what a GTIN is, shared by the scanner driver (gateway) and the catalog (hub). Pure, stdlib only.

A GTIN is 8, 12, 13 or 14 digits whose last one is the GS1 mod-10 check digit of the others; it is
kept as GTIN-14 (zero-padded), as scans carry it. Some numbers pass that check but are no trade
item, and are refused as GTINs everywhere (GS1 General Specifications, GS1 prefix table, as biip's
copy of the GS1 prefix list states it), looking at the GTIN-13 form (the GTIN-14 without its
indicator digit):

- all zeros: the null number, which no item carries (zxing-cpp's DataBar Limited sample
  ``0100000000000000`` is one), and the only one whose check digit of zeros is valid;
- prefixes 050-059: GS1 US, reserved for future use (formerly UPC coupons, number system 5);
- prefix 980: refund receipts; 981-984: GS1 coupons for common currency areas; 99: coupons.

Kept on purpose: restricted circulation numbers (02, 20-29: the store's price and weight labels;
040-049 and GTIN-8 starting 0 or 2: a company's own numbers), ISSN (977) and ISBN (978-979),
and GTIN-14 with indicator 9 (variable measure trade items in GS1-128 and DataBar).
"""

from __future__ import annotations

from typing import Final

GTIN_LENGTHS: Final = (8, 12, 13, 14)

# Leading digits of the GTIN-13 form that are not trade items, and why (see the module doc).
_NOT_TRADE_ITEMS: Final[dict[str, str]] = {
    **dict.fromkeys((f"05{n}" for n in range(10)), "GS1 prefix 05 is reserved (formerly coupons)"),
    "980": "GS1 prefix 980 is for refund receipts",
    **dict.fromkeys((f"98{n}" for n in range(1, 5)), "GS1 prefixes 981-984 are for coupons"),
    "99": "GS1 prefix 99 is for coupons",
}


class GtinError(ValueError):
    """Not a valid trade item GTIN; the message says why, in words."""


def gtin_check_digit(body: str) -> int:
    """The GS1 mod-10 check digit of the digits before it (weights 3, 1, 3, ... from the right)."""
    total = sum(int(digit) * (3 if i % 2 == 0 else 1) for i, digit in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def normalise_gtin(code: str) -> str:
    """A GTIN-8, -12, -13 or -14 as GTIN-14 (zero-padded); raises GtinError saying what is wrong."""
    if not code.isascii() or not code.isdigit():
        raise GtinError("a GTIN has digits only")
    if len(code) not in GTIN_LENGTHS:
        raise GtinError(f"a GTIN has 8, 12, 13 or 14 digits, not {len(code)}")
    expected = gtin_check_digit(code[:-1])
    if int(code[-1]) != expected:
        raise GtinError(f"check digit is {code[-1]}, expected {expected}")
    gtin14 = code.zfill(14)
    reason = reserved_gtin_reason(gtin14)
    if reason is not None:
        raise GtinError(f"{code} is not a trade item GTIN: {reason}")
    return gtin14


def reserved_gtin_reason(gtin14: str) -> str | None:
    """Why a GTIN-14 whose check digit holds is still no trade item, or None when it is one."""
    if gtin14.strip("0") == "":
        return "an all-zero GTIN identifies nothing"
    gtin13 = gtin14[1:]
    if gtin14.startswith("000000"):
        return None  # a GTIN-8: its own prefixes, none of them refused here
    return _NOT_TRADE_ITEMS.get(gtin13[:3]) or _NOT_TRADE_ITEMS.get(gtin13[:2])
