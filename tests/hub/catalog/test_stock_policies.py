"""Stock policies as catalog data, and store coordinates in stores.csv, over HTTP on SQLite and PostgreSQL:
the same all-or-nothing, idempotent import as the rest of the catalog, errors by row and column, exports
that import back unchanged, and store files written before coordinates existed still importing."""

from __future__ import annotations

import httpx
import pytest

from hub.catalog.csv_io import STOCK_POLICIES, STORES, StockPolicyRow, parse_csv, write_csv
from tests.hub.catalog.test_catalog_api import (  # noqa: F401  (fixtures)
    LATER,
    SKUS_CSV,
    STORES_CSV,
    Clock,
    client,
    clock,
    imported,
    post_csv,
    row_errors,
)

POLICIES_CSV = (
    "store_id,sku_id,max_stock,reorder_point,lead_time_days,safety_stock,on_order\n"
    "store-0001,85123A,120,24,3,6,0\n"
    "store-0001,71053,40,,2,4,12\n"
    "store-0002,85123A,60,10,5,0,0\n"
)
LOCATED_STORES_CSV = (
    "store_id,name,timezone,currency,mon,tue,wed,thu,fri,sat,sun,latitude,longitude\n"
    "store-0001,High Street,Europe/London,GBP,08:00-20:00,08:00-20:00,08:00-20:00,08:00-20:00,"
    "08:00-21:00,09:00-13:00;14:00-18:00,,51.5074,-0.1278\n"
    "store-0002,Night Owl,America/New_York,USD,00:00-02:00;18:00-24:00,,,,,,,,\n"
)


async def load_catalog(client: httpx.AsyncClient) -> None:  # noqa: F811
    await imported(client, "skus", SKUS_CSV)
    await imported(client, "stores", STORES_CSV)


# --------------------------------------------------------------------------- stock policies


async def test_policies_are_created_then_unchanged_then_updated_and_listed_per_store(
    client: httpx.AsyncClient,  # noqa: F811
    clock: Clock,  # noqa: F811
) -> None:
    await load_catalog(client)
    assert await imported(client, "stock-policies", POLICIES_CSV) == {"created": 3, "updated": 0, "unchanged": 0}
    assert await imported(client, "stock-policies", POLICIES_CSV) == {"created": 0, "updated": 0, "unchanged": 3}
    clock.now = LATER
    changed = POLICIES_CSV.replace("71053,40,,2,4,12", "71053,40,8,2,4,0")
    # Optional columns may be left out: their defaults apply (lead time, safety stock, on order 0).
    short = "store_id,sku_id,max_stock\nstore-0002,22632,30\n"
    assert await imported(client, "stock-policies", changed) == {"created": 0, "updated": 1, "unchanged": 2}
    assert await imported(client, "stock-policies", short) == {"created": 1, "updated": 0, "unchanged": 0}

    items = (await client.get("/api/v1/catalog/stores/store-0001/stock-policies")).json()["items"]
    assert items == [
        {
            "store_id": "store-0001",
            "sku_id": "71053",
            "max_stock": 40,
            "reorder_point": 8,
            "lead_time_days": 2,
            "safety_stock": 4,
            "on_order": 0,
            "updated_at": "2026-11-28T12:00:00Z",
        },
        {
            "store_id": "store-0001",
            "sku_id": "85123A",
            "max_stock": 120,
            "reorder_point": 24,
            "lead_time_days": 3,
            "safety_stock": 6,
            "on_order": 0,
            "updated_at": "2026-11-27T12:00:00Z",
        },
    ]
    second = (await client.get("/api/v1/catalog/stock-policies", params={"store_id": "store-0002"})).json()["items"]
    assert [(p["sku_id"], p["max_stock"], p["reorder_point"], p["lead_time_days"]) for p in second] == [
        ("22632", 30, None, 0),
        ("85123A", 60, 10, 5),
    ]
    assert len((await client.get("/api/v1/catalog/stock-policies")).json()["items"]) == 4
    missing = await client.get("/api/v1/catalog/stores/store-0404/stock-policies")
    assert (missing.status_code, missing.json()["detail"]) == (404, "no store profile 'store-0404'")


async def test_bad_policy_rows_are_named_by_row_and_column_and_nothing_is_applied(
    client: httpx.AsyncClient,  # noqa: F811
) -> None:
    await load_catalog(client)
    text = (
        "store_id,sku_id,max_stock,reorder_point,lead_time_days,safety_stock,on_order\n"
        "store-0001,85123A,120,24,3,6,0\n"  # valid, and must not be applied
        "store-0009,85123A,120,24,3,6,0\n"
        "store-0001,GHOST,120,24,3,6,0\n"
        "store-0001,71053,40,40,2,4,0\n"
        "store-0001,22632,,,1.5,-1,\n"
        "store-0001,85123A,100,10,0,0,0\n"
        "store-0002,71053,50,,,,lots\n"
    )
    response = await post_csv(client, "stock-policies", text)
    assert row_errors(response) == [
        (3, "store_id", "unknown store 'store-0009': import it with stores.csv first"),
        (4, "sku_id", "unknown SKU 'GHOST': import it with skus.csv first"),
        (5, "reorder_point", "reorder point 40 must be below max_stock 40"),
        (6, "max_stock", "a value is required"),
        (6, "lead_time_days", "Input should be a valid integer, unable to parse string as an integer"),
        (6, "safety_stock", "Input should be greater than or equal to 0"),
        (7, "sku_id", "store-0001 / 85123A is already on row 2"),
        (8, "on_order", "Input should be a valid integer, unable to parse string as an integer"),
    ]
    assert response.json()["message"].startswith(
        "row 3, column store_id: unknown store 'store-0009': import it with stores.csv first; "
    )
    assert (await client.get("/api/v1/catalog/stock-policies")).json()["items"] == []

    header = await post_csv(client, "stock-policies", "store_id,sku_id,reorder_point\nstore-0001,71053,1\n")
    assert row_errors(header) == [(1, "max_stock", "required column is missing")]


async def test_a_policy_export_imports_back_unchanged(client: httpx.AsyncClient) -> None:  # noqa: F811
    await load_catalog(client)
    await imported(client, "stock-policies", POLICIES_CSV)
    exported = await client.get("/api/v1/catalog/stock-policies/export")
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    assert exported.text.splitlines() == [
        "store_id,sku_id,max_stock,reorder_point,lead_time_days,safety_stock,on_order",
        "store-0001,71053,40,,2,4,12",
        "store-0001,85123A,120,24,3,6,0",
        "store-0002,85123A,60,10,5,0,0",
    ]
    assert await imported(client, "stock-policies", exported.text) == {"created": 0, "updated": 0, "unchanged": 3}
    one = (await client.get("/api/v1/catalog/stock-policies/export", params={"store_id": "store-0002"})).text
    assert one.splitlines()[1:] == ["store-0002,85123A,60,10,5,0,0"]


def test_policy_rows_parse_back_from_what_they_write() -> None:
    rows = [
        StockPolicyRow(store_id="s-1", sku_id="A", max_stock=10),
        StockPolicyRow(
            store_id="s-1", sku_id="B", max_stock=10, reorder_point=0, lead_time_days=365, safety_stock=3, on_order=2
        ),
    ]
    assert [parsed.value for parsed in parse_csv(write_csv(STOCK_POLICIES, rows), STOCK_POLICIES)] == rows


async def test_the_openapi_document_shows_the_policy_csv(client: httpx.AsyncClient) -> None:  # noqa: F811
    paths = (await client.get("/openapi.json")).json()["paths"]
    body = paths["/api/v1/catalog/stock-policies/import"]["post"]["requestBody"]
    assert body["content"] == {"text/csv": {"schema": {"type": "string"}}}
    assert "text/csv" in paths["/api/v1/catalog/stock-policies/export"]["get"]["responses"]["200"]["content"]


# --------------------------------------------------------------------------- store coordinates


async def test_store_coordinates_import_export_and_survive_files_without_them(
    client: httpx.AsyncClient,  # noqa: F811
) -> None:
    assert await imported(client, "stores", LOCATED_STORES_CSV) == {"created": 2, "updated": 0, "unchanged": 0}
    store = (await client.get("/api/v1/catalog/stores/store-0001")).json()
    assert (store["latitude"], store["longitude"]) == (51.5074, -0.1278)
    assert (await client.get("/api/v1/catalog/stores/store-0002")).json()["latitude"] is None

    exported = (await client.get("/api/v1/catalog/stores/export")).text
    lines = exported.splitlines()
    assert lines[0] == "store_id,name,timezone,currency,mon,tue,wed,thu,fri,sat,sun,latitude,longitude,region"
    assert lines[1].endswith(",51.5074,-0.1278,")
    assert lines[2].endswith(",,,,")
    assert await imported(client, "stores", exported) == {"created": 0, "updated": 0, "unchanged": 2}

    # A stores.csv of before coordinates imports, and does not erase them.
    assert await imported(client, "stores", STORES_CSV) == {"created": 0, "updated": 0, "unchanged": 2}
    assert (await client.get("/api/v1/catalog/stores/store-0001")).json()["latitude"] == 51.5074
    # With the columns, blank cells mean unknown.
    cleared = LOCATED_STORES_CSV.replace(",51.5074,-0.1278", ",,")
    assert await imported(client, "stores", cleared) == {"created": 0, "updated": 1, "unchanged": 1}
    assert (await client.get("/api/v1/catalog/stores/store-0001")).json()["longitude"] is None


@pytest.mark.parametrize(
    ("latitude", "longitude", "errors"),
    [
        ("91", "0", [(2, "latitude", "Input should be less than or equal to 90")]),
        ("0", "-180.5", [(2, "longitude", "Input should be greater than or equal to -180")]),
        ("north", "0", [(2, "latitude", "Input should be a valid number, unable to parse string as a number")]),
        ("nan", "0", [(2, "latitude", "Input should be a finite number")]),
        ("51.5", "", [(2, "longitude", "latitude 51.5 has no longitude: give both or neither")]),
        ("", "-0.12", [(2, "longitude", "longitude -0.12 has no latitude: give both or neither")]),
    ],
)
async def test_bad_coordinates_are_named_by_row_and_column(
    client: httpx.AsyncClient,  # noqa: F811
    latitude: str,
    longitude: str,
    errors: list[tuple[int, str, str]],
) -> None:
    text = (
        "store_id,name,timezone,currency,mon,tue,wed,thu,fri,sat,sun,latitude,longitude\n"
        f"store-0003,Odd,Europe/Paris,EUR,,,,,,,,{latitude},{longitude}\n"
    )
    assert row_errors(await post_csv(client, "stores", text)) == errors
    assert (await client.get("/api/v1/catalog/stores")).json()["items"] == []


def test_store_rows_without_coordinates_parse_as_unknown() -> None:
    [parsed] = parse_csv(STORES_CSV.splitlines(keepends=True)[0] + STORES_CSV.splitlines(keepends=True)[1], STORES)
    assert (parsed.value.latitude, parsed.value.longitude) == (None, None)


async def test_store_regions_import_export_and_survive_files_without_them(
    client: httpx.AsyncClient,  # noqa: F811
) -> None:
    regional = STORES_CSV.replace("\n", ",region\n", 1)
    header, *rows = regional.splitlines()
    regional = "\n".join([header, rows[0] + ",north", rows[1] + ","]) + "\n"
    assert await imported(client, "stores", regional) == {"created": 2, "updated": 0, "unchanged": 0}
    assert (await client.get("/api/v1/catalog/stores/store-0001")).json()["region"] == "north"
    assert (await client.get("/api/v1/catalog/stores/store-0002")).json()["region"] is None
    exported = (await client.get("/api/v1/catalog/stores/export")).text
    assert exported.splitlines()[1].endswith(",north")
    # A file without the column leaves the regions (and so operators' scopes) as they are.
    assert await imported(client, "stores", STORES_CSV) == {"created": 0, "updated": 0, "unchanged": 2}
    assert (await client.get("/api/v1/catalog/stores/store-0001")).json()["region"] == "north"
    bad = await client.post(
        "/api/v1/catalog/stores/import",
        content=regional.replace(",north", ",no rth").encode(),
        headers={"content-type": "text/csv"},
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["column"] == "region"
