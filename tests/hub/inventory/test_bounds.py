"""Numbers past what the inventory's columns hold, through the API and through events, on SQLite and PostgreSQL.

The finding: a stock adjustment of 2^31, or one pushing on hand past a 32-bit INTEGER, was a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import func, insert, select

from hub.catalog.models import StoreProfile
from hub.db.bounds import INT32_MAX, INT32_MIN, INT64_MAX
from hub.db.engine import session_factory
from hub.inventory import api as inventory_api
from hub.inventory.models import LedgerRow, UnplacedEvent
from tests.hub.conftest import router_client
from tests.hub.ingest.test_operations import GTIN_A, NOON, STORE, Store, scan, store  # noqa: F401 (fixture)

ADJUST = f"/api/v1/stores/{STORE}/stock/adjustments"


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    runtime = SimpleNamespace(operations=store.operations)
    async with router_client(store.engine, inventory_api.router, now=lambda: NOON, runtime=runtime) as http:
        yield http


def adjustment(quantity: int, sku_id: str = "A") -> dict[str, Any]:
    return {"sku_id": sku_id, "quantity": quantity, "note": "count"}


async def on_hand(client: httpx.AsyncClient, sku_id: str = "A", store_id: str = STORE) -> int | None:
    response = await client.get(f"/api/v1/stores/{store_id}/stock", params={"sku_id": sku_id})
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    return int(items[0]["on_hand"]) if items else None


async def ledger_rows(store: Store) -> int:  # noqa: F811
    async with session_factory(store.engine)() as session:
        return int((await session.execute(select(func.count()).select_from(LedgerRow))).scalar_one())


@pytest.mark.parametrize(
    ("path", "body", "limit"),
    [
        (ADJUST, adjustment(2**31), {"le": INT32_MAX}),
        (ADJUST, adjustment(INT32_MIN - 1), {"ge": INT32_MIN}),
        (ADJUST, adjustment(10**30), {"le": INT32_MAX}),
        (
            "/api/v1/transfers",
            {"sku_id": "A", "from_store_id": STORE, "to_store_id": "store-2", "quantity": 2**31},
            {"le": INT32_MAX},
        ),
    ],
)
async def test_a_quantity_past_32_bits_is_a_422_naming_the_field_and_its_limit(
    client: httpx.AsyncClient,
    store: Store,  # noqa: F811
    path: str,
    body: dict[str, Any],
    limit: dict[str, int],
) -> None:
    response = await client.post(path, json=body)

    assert response.status_code == 422, response.text
    (issue,) = response.json()["detail"]
    assert (issue["loc"], issue["ctx"]) == (["body", "quantity"], limit)
    assert response.json()["message"].startswith("quantity: Input should be")
    assert await ledger_rows(store) == 0


async def test_an_adjustment_pushing_on_hand_past_32_bits_is_a_409_and_changes_nothing(
    client: httpx.AsyncClient,
    store: Store,  # noqa: F811
) -> None:
    assert (await client.post(ADJUST, json=adjustment(INT32_MAX))).status_code == 201
    assert await on_hand(client) == INT32_MAX

    response = await client.post(ADJUST, json=adjustment(1))

    assert response.status_code == 409, response.text
    assert response.json() == {
        "detail": f"on_hand of SKU 'A' in store '{STORE}' would be {INT32_MAX + 1}, outside the "
        f"{INT32_MIN}..{INT32_MAX} a stock position holds; nothing was changed"
    }
    assert await on_hand(client) == INT32_MAX
    assert await ledger_rows(store) == 1
    # Downwards too, from the other SKU's empty position: the least an INTEGER holds, then one below it.
    assert (await client.post(ADJUST, json=adjustment(INT32_MIN, sku_id="85123A"))).status_code == 201
    assert (await client.post(ADJUST, json=adjustment(-1, sku_id="85123A"))).status_code == 409
    assert await on_hand(client, "85123A") == INT32_MIN


async def test_a_transfer_pushing_the_receiving_store_past_32_bits_is_a_409_and_moves_nothing(
    client: httpx.AsyncClient,
    store: Store,  # noqa: F811
) -> None:
    async with session_factory(store.engine)() as session, session.begin():
        await session.execute(
            insert(StoreProfile).values(
                store_id="store-2", name="Station", timezone="UTC", currency="GBP", opening_hours={}, updated_at=NOON
            )
        )
    assert (await client.post("/api/v1/stores/store-2/stock/adjustments", json=adjustment(INT32_MAX))).is_success
    transfer = {"sku_id": "A", "from_store_id": STORE, "to_store_id": "store-2", "quantity": 5}

    response = await client.post("/api/v1/transfers", json=transfer)

    assert response.status_code == 409, response.text
    assert "in store 'store-2' would be 2147483652" in response.json()["detail"]
    assert (await on_hand(client), await on_hand(client, store_id="store-2")) == (None, INT32_MAX)


@pytest.mark.parametrize(("cursor", "status"), [(INT64_MAX, 200), (INT64_MAX + 1, 422), (0, 422)])
async def test_a_ledger_cursor_past_64_bits_is_a_422(client: httpx.AsyncClient, cursor: int, status: int) -> None:
    response = await client.get(f"/api/v1/stores/{STORE}/ledger", params={"cursor": cursor})

    assert response.status_code == status, response.text


async def test_sales_pushing_on_hand_past_32_bits_are_kept_as_not_applied_in_words(
    store: Store,  # noqa: F811
) -> None:
    # Each sale is within its bounds; their sum is not. The event is kept and listed as not applied, saying why,
    # instead of the database refusing the write and failing the unit as a storage error.
    sale = scan(GTIN_A, INT32_MAX)
    await store.send(store.event("scan.sale", sale, at=NOON))

    await store.send(store.event("scan.sale", sale, at=NOON + timedelta(seconds=1)))

    assert await store.position("A") == (-INT32_MAX, 0, 0)
    (unapplied,) = await store.rows(UnplacedEvent)
    assert "StockOutOfRangeError: on_hand of SKU 'A' in store 'store-0001' would be -4294967294" in unapplied.reason
    assert await ledger_rows(store) == 1
