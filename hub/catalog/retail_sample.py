"""SKUs from real invoice lines: the UCI "Online Retail" data of the shared data folder, for the demo and tests.

How the invoice lines become SKUs (docs/catalog.md says the same):

- only sales: cancelled invoices (InvoiceNo starting with C), lines with a quantity or unit price of zero
  or less (stock adjustments, with blank descriptions) are left out;
- only products: a StockCode is five digits and an optional letter suffix (85123A); POST, DOT and C2
  (postage and carriage), M (manual), D (discount) and BANK CHARGES are not;
- a code sold at several prices gets the price it was sold at most often (the others are volume and
  per-customer prices), ties to the earliest line; the description likewise.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from hub.catalog.csv_io import SkuRow

INVOICE_FILE: Final = Path("retail") / "onlineretail_2010-12-01_to_02.csv"
PRODUCT_CODE: Final = re.compile(r"\d{5}[A-Z]*")


def read_invoice_lines(path: Path) -> list[dict[str, str]]:
    """The invoice lines of a UCI Online Retail CSV file."""
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def most_common_first_seen(counts: Counter[str]) -> str:
    """The most frequent value; on a tie the one seen first (Counter keeps first-seen order)."""
    return max(counts.items(), key=lambda item: item[1])[0]


def skus_from_invoices(lines: Iterable[Mapping[str, str]]) -> list[SkuRow]:
    """One SKU per product StockCode sold, with its usual description and price in GBP."""
    prices: dict[str, Counter[str]] = {}
    names: dict[str, Counter[str]] = {}
    for line in lines:
        code = line["StockCode"].strip()
        is_sale = not line["InvoiceNo"].startswith("C") and float(line["Quantity"]) > 0
        if not (is_sale and float(line["UnitPrice"]) > 0 and PRODUCT_CODE.fullmatch(code)):
            continue
        prices.setdefault(code, Counter())[line["UnitPrice"]] += 1
        names.setdefault(code, Counter())[line["Description"].strip()] += 1
    return [
        SkuRow(
            sku_id=code,
            name=most_common_first_seen(names[code]),
            price=most_common_first_seen(prices[code]),
            currency="GBP",
        )
        for code in sorted(prices)
    ]
