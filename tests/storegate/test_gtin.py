"""The one GTIN rule the scanner and the catalog share: length, digits, check digit, numbers of no trade item."""

from __future__ import annotations

import pytest

from storegate.gtin import GtinError, normalise_gtin


@pytest.mark.parametrize(
    ("code", "gtin14"),
    [
        ("0212345000007", "00212345000007"),  # restricted circulation (02): a store's own weighed goods
        ("2012345000001", "02012345000001"),  # restricted circulation (20-29): price and weight labels
        ("0401234000000", "00401234000000"),  # 040-049: a company's own numbers
        ("02345673", "00000002345673"),  # GTIN-8 starting 0: restricted circulation within a company
        ("9771234567003", "09771234567003"),  # ISSN: a magazine is a trade item
        ("9780306406157", "09780306406157"),  # ISBN
        ("90614141000015", "90614141000015"),  # indicator 9: variable measure (zxing rssexpanded-1/5)
    ],
)
def test_numbers_stores_use_are_gtins(code: str, gtin14: str) -> None:
    assert normalise_gtin(code) == gtin14


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("00000000000000", "all-zero"),  # zxing-cpp databarltd-1/00.txt
        ("0000000000000", "all-zero"),
        ("00000000", "all-zero"),
        ("512345678900", "GS1 prefix 05 is reserved"),  # UPC-A number system 5
        ("9801234567892", "refund receipts"),
        ("9821234567890", "coupons"),
        ("9912345678909", "prefix 99 is for coupons"),
        ("19912345678906", "prefix 99 is for coupons"),  # the indicator digit changes nothing
    ],
)
def test_numbers_of_no_trade_item_are_refused_with_the_reason(code: str, why: str) -> None:
    with pytest.raises(GtinError, match=why):
        normalise_gtin(code)
