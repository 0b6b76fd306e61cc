"""Real SKUs through the CSV import: the products of two days of a UK online retailer's invoice lines
(UCI "Online Retail", 2010-12-01 and 02), one SKU per StockCode (``hub/catalog/retail_sample.py`` says how),
imported over HTTP on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
import pytest

from device_drivers.simulated.climate import shared_data_dir
from hub.catalog.csv_io import SKUS, write_csv
from hub.catalog.retail_sample import INVOICE_FILE, PRODUCT_CODE, read_invoice_lines, skus_from_invoices
from tests.hub.catalog.test_catalog_api import client, clock, imported  # noqa: F401  (fixtures)


def invoice_lines() -> list[dict[str, str]]:
    data = shared_data_dir()
    path = data / INVOICE_FILE if data is not None else Path("shared/data") / INVOICE_FILE
    if not path.is_file():
        pytest.fail(f"the real retail data is missing: {path} (set STOREGATE_SHARED_DATA to the shared/data folder)")
    return read_invoice_lines(path)


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
