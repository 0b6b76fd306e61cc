"""Real SKUs through the CSV import: the products of two days of a UK online retailer's invoice lines
(UCI "Online Retail", 2010-12-01 and 02), one SKU per StockCode, imported over HTTP on SQLite and PostgreSQL.

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
import io
import re
from collections import Counter
from pathlib import Path
from typing import Final

import httpx
import pytest

from device_drivers.simulated.climate import shared_data_dir
from hub.catalog.csv_io import SKUS, SkuRow, write_csv
from tests.hub.test_catalog_api import client, clock, imported  # noqa: F401  (fixtures)

INVOICE_FILE: Final = "retail/onlineretail_2010-12-01_to_02.csv"
PRODUCT_CODE: Final = re.compile(r"\d{5}[A-Z]*")


def invoice_lines() -> list[dict[str, str]]:
    data = shared_data_dir()
    path = data / INVOICE_FILE if data is not None else Path("shared/data") / INVOICE_FILE
    if not path.is_file():
        pytest.fail(f"the real retail data is missing: {path} (set STOREGATE_SHARED_DATA to the shared/data folder)")
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def most_common_first_seen(counts: Counter[str]) -> str:
    """The most frequent value; on a tie the one seen first (Counter keeps first-seen order)."""
    return max(counts.items(), key=lambda item: item[1])[0]


def skus_from_invoices(lines: list[dict[str, str]]) -> list[SkuRow]:
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


async def test_two_days_of_real_invoice_lines_give_1587_skus(client: httpx.AsyncClient) -> None:  # noqa: F811
    lines = invoice_lines()
    assert len(lines) == 5217, "the invoice file is not the one this test was written for"
    skus_csv = write_csv(SKUS, skus_from_invoices(lines))

    assert await imported(client, "skus", skus_csv) == {"created": 1587, "updated": 0, "unchanged": 0}
    assert await imported(client, "skus", skus_csv) == {"created": 0, "updated": 0, "unchanged": 1587}

    async def sku(code: str) -> tuple[str, str, str] | int:
        response = await client.get(f"/api/v1/catalog/skus/{code}")
        if response.status_code != 200:
            return response.status_code
        body = response.json()
        return body["name"], body["price"], body["currency"]

    # Sold at 2.55 (22 lines), 2.95 (12) and 5.91 (2): the usual price wins.
    assert await sku("85123A") == ("WHITE HANGING HEART T-LIGHT HOLDER", "2.55", "GBP")
    # Described as RETROSPOT on 22 lines and POLKA DOT on 17.
    assert await sku("22632") == ("HAND WARMER RED RETROSPOT", "2.10", "GBP")
    # A tie (2 and 2 lines): the description of the earlier line.
    assert await sku("22965") == ("3 TRADITIONAL COOKIE CUTTERS  SET", "2.10", "GBP")
    for not_a_product in ("POST", "DOT", "M", "D", "C2", "BANK CHARGES"):
        assert await sku(not_a_product) == 404, not_a_product

    page = (await client.get("/api/v1/catalog/skus", params={"limit": 10_000})).json()["items"]
    assert len(page) == 1587
    assert all(PRODUCT_CODE.fullmatch(s["sku_id"]) for s in page)
    exported = (await client.get("/api/v1/catalog/skus/export")).text
    assert await imported(client, "skus", exported) == {"created": 0, "updated": 0, "unchanged": 1587}
    assert len(list(csv.reader(io.StringIO(exported)))) == 1588
