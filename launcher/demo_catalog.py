"""The demo store's catalog, loaded through the hub's own API once it is up.

Without a catalog the hub stores every event but can place none of them, so the demo imports what a
retailer would: its SKUs (the real ones of the shared retail data when it is on this machine, a few
EAN-13 articles otherwise), the store's profile, the smart shelf's planogram, stock policies, opening
stock, and one store override so the freezer door the simulation leaves open for 150 s shows an alert.
Everything goes through the documented endpoints, so the demo also shows how to set a store up.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Final

import httpx

from device_drivers.simulated.climate import shared_data_dir
from device_drivers.simulated.store import FALLBACK_CODES, SHELF_SKUS, fill_of
from hub.catalog.csv_io import SKUS, SkuRow, write_csv
from hub.catalog.retail_sample import INVOICE_FILE, read_invoice_lines, skus_from_invoices

SHELF_ID: Final = "shelf-a1"
OPENING_STOCK: Final = 40


def demo_skus() -> list[SkuRow]:
    """The real retailer's SKUs, or a handful of articles when the shared data is not here."""
    data = shared_data_dir()
    path = data / INVOICE_FILE if data is not None else None
    if path is not None and path.is_file():
        return skus_from_invoices(read_invoice_lines(path))
    rows = [
        SkuRow(sku_id=code, gtin=code, name=f"Article {code}", price=Decimal("1.99"), currency="GBP")
        for code in FALLBACK_CODES
    ]
    rows += [
        SkuRow(sku_id=sku, name=f"Shelf article {sku}", price=Decimal("2.50"), currency="GBP") for sku, _ in SHELF_SKUS
    ]
    return rows


def _table(header: list[str], rows: list[list[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _import(client: httpx.Client, kind: str, text: str) -> None:
    response = client.post(
        f"/api/v1/catalog/{kind}/import", content=text.encode(), headers={"content-type": "text/csv"}
    )
    if response.status_code != 200:
        raise RuntimeError(f"importing {kind} failed ({response.status_code}): {response.text[:300]}")


def load_demo_catalog(base_url: str, store_id: str, *, token: str, timeout_s: float = 30.0) -> None:
    """Import the demo store's catalog into the hub at ``base_url`` with an admin API token; raises RuntimeError
    saying what failed."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers) as client:
        _import(client, "skus", write_csv(SKUS, demo_skus()))
        hours = ["07:00-22:00"] * 7
        _import(
            client,
            "stores",
            _table(
                ["store_id", "name", "timezone", "currency", "mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                [[store_id, "Demo Store", "Europe/London", "GBP", *hours]],
            ),
        )
        slots = [(n, sku, fill_of(weight)) for n, (sku, weight) in enumerate(SHELF_SKUS, start=1)]
        _import(
            client,
            "planogram",
            _table(
                ["store_id", "shelf_id", "slot", "sku_id", "capacity", "min_quantity"],
                [[store_id, SHELF_ID, n, sku, capacity, max(1, capacity // 3)] for n, sku, capacity in slots],
            ),
        )
        _import(
            client,
            "stock-policies",
            _table(
                ["store_id", "sku_id", "max_stock", "reorder_point"], [[store_id, sku, 60, 20] for _, sku, _ in slots]
            ),
        )
        for _, sku, _ in slots:
            response = client.post(
                f"/api/v1/stores/{store_id}/stock/adjustments",
                json={"sku_id": sku, "quantity": OPENING_STOCK, "note": "opening stock of the demo"},
            )
            if response.status_code != 201:
                raise RuntimeError(f"opening stock of {sku} failed ({response.status_code}): {response.text[:300]}")
        # The simulated freezer door stays open 150 s; the chain's 300 s grace would never show it.
        response = client.put(f"/api/v1/stores/{store_id}/rules/door-held-open", json={"grace_s": 120})
        if response.status_code not in (200, 201):
            raise RuntimeError(f"the demo's door rule failed ({response.status_code}): {response.text[:300]}")
