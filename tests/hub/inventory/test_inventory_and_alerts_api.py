"""The inventory and alerts APIs over HTTP, on SQLite and PostgreSQL, fed through the consumer's unit of work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from hub.alerting import alerts_api
from hub.catalog.models import StoreProfile
from hub.db.engine import session_factory
from hub.domain.access import Principal, Role
from hub.inventory import api as inventory_api
from tests.hub.conftest import router_client
from tests.hub.ingest.test_operations import GTIN_A, NOON, STORE, Store, door, scan, shelf, store  # noqa: F401 (fixture)

LATER = NOON + timedelta(hours=1)


# Who makes the changes here: the recorded actor is always the request's principal.
ANNA = Principal(kind="user", name="ops.anna", role=Role.OPS, store_ids=None)


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    runtime = SimpleNamespace(operations=store.operations)
    async with router_client(
        store.engine, inventory_api.router, alerts_api.router, now=lambda: LATER, runtime=runtime, who=ANNA
    ) as http:
        yield http


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_stock_levels_tasks_ledger_and_unplaced_events(client: httpx.AsyncClient, store: Store) -> None:  # noqa: F811
    await store.send(
        store.event("scan.receiving", scan(GTIN_A, 12, mode="receiving"), at=NOON),
        store.event("scan.sale", scan(GTIN_A, 2), at=NOON + timedelta(seconds=1)),
        store.event("scan.sale", scan("nope"), at=NOON + timedelta(seconds=2)),
        store.event("shelf.pick", shelf(1, -8, 2), at=NOON + timedelta(seconds=3), device_id="shelf-1"),
    )
    stock = await get(client, f"/api/v1/stores/{STORE}/stock")
    assert [(i["sku_id"], i["name"], i["on_hand"]) for i in stock["items"]] == [("A", "Biscuits", 10)]
    levels = await get(client, f"/api/v1/stores/{STORE}/shelf-levels")
    assert [
        (i["slot"], i["quantity"], i["capacity"], i["min_quantity"], i["below_minimum"]) for i in levels["items"]
    ] == [(1, 2, 10, 3, True)]
    tasks = await get(client, f"/api/v1/stores/{STORE}/restock-tasks", status="open")
    assert [(t["slot"], t["quantity"], t["print_status"]) for t in tasks["items"]] == [(1, 8, "pending")]
    assert tasks["items"][0]["pick_list"]["lines"][-2] == "BRING 8"
    assert (await get(client, f"/api/v1/stores/{STORE}/restock-tasks", status="closed"))["items"] == []
    unplaced = await get(client, f"/api/v1/stores/{STORE}/unplaced-events")
    assert [u["reason"] for u in unplaced["items"]] == ["code 'nope' is not in the catalog"]
    commands = await get(client, "/api/v1/commands", store_id=STORE)
    assert [(c["name"], c["device_id"], c["status"]) for c in commands["items"]] == [
        ("print", "receipt-printer", "pending")
    ]
    # The ledger, newest first, two rows a page.
    first = await get(client, f"/api/v1/stores/{STORE}/ledger", limit=2)
    second = await get(client, f"/api/v1/stores/{STORE}/ledger", limit=2, cursor=first["next_cursor"])
    kinds = [r["kind"] for r in first["items"] + second["items"]]
    assert kinds == ["shelf_pick", "sale", "receipt"]
    assert second["next_cursor"] is None


async def test_adjustments_and_transfers_are_ledger_rows_with_who_and_why(
    client: httpx.AsyncClient,
    store: Store,  # noqa: F811
) -> None:
    async with session_factory(store.engine)() as session, session.begin():
        await session.execute(
            insert(StoreProfile).values(
                store_id="store-0002",
                name="Station",
                timezone="Europe/London",
                currency="GBP",
                opening_hours={},
                updated_at=NOON,
            )
        )
    response = await client.post(
        f"/api/v1/stores/{STORE}/stock/adjustments",
        json={"sku_id": "A", "quantity": -3, "note": "broken in the back room"},
    )
    assert response.status_code == 201, response.text
    response = await client.post(
        "/api/v1/transfers",
        json={"sku_id": "A", "from_store_id": STORE, "to_store_id": "store-0002", "quantity": 5},
    )
    assert response.status_code == 201, response.text
    assert response.json()["lines"] == 2
    here = await get(client, f"/api/v1/stores/{STORE}/stock")
    there = await get(client, "/api/v1/stores/store-0002/stock")
    assert (here["items"][0]["on_hand"], there["items"][0]["on_hand"]) == (-8, 5)
    claimed = await client.post(
        f"/api/v1/stores/{STORE}/stock/adjustments",
        json={"sku_id": "A", "quantity": -1, "note": "spoof", "by": "store-manager-alice"},
    )
    assert claimed.status_code == 422  # naming an actor is refused, not recorded
    assert "by" in claimed.json()["message"]
    rows = (await get(client, f"/api/v1/stores/{STORE}/ledger"))["items"]
    assert [(r["kind"], r["quantity"], r["actor"], r["note"]) for r in rows] == [
        ("transfer_out", -5, "ops.anna", None),
        ("adjustment", -3, "ops.anna", "broken in the back room"),
    ]
    for body, status, words in [
        ({"sku_id": "A", "quantity": 0, "note": "y"}, 422, "quantity must not be 0"),
        ({"sku_id": "ZZ", "quantity": 1, "note": "y"}, 422, "SKU 'ZZ' is not in the catalog"),
        ({"sku_id": "A", "quantity": 1}, 422, "note"),
    ]:
        response = await client.post(f"/api/v1/stores/{STORE}/stock/adjustments", json=body)
        assert response.status_code == status
        assert words in response.text
    response = await client.post(
        "/api/v1/stores/store-9999/stock/adjustments", json={"sku_id": "A", "quantity": 1, "note": "y"}
    )
    assert response.status_code == 404
    response = await client.post(
        "/api/v1/transfers",
        json={"sku_id": "A", "from_store_id": STORE, "to_store_id": STORE, "quantity": 5},
    )
    assert response.status_code == 422
    assert "must differ" in response.text


async def test_alerts_are_listed_acknowledged_and_resolved_with_their_history(
    client: httpx.AsyncClient,
    store: Store,  # noqa: F811
) -> None:
    night = datetime(2025, 3, 1, 23, 0, tzinfo=UTC)
    await store.send(
        store.event("motion.detected", {}, at=night, device_id="pir-1"),
        store.event("motion.detected", {}, at=night + timedelta(minutes=1), device_id="pir-2"),
        store.event("door.opened", door(True), at=night + timedelta(minutes=2), device_id="door-1"),
    )
    await store.tick(night + timedelta(minutes=10))  # the door held open past its 300 s
    everything = await get(client, "/api/v1/alerts")
    assert [(a["rule_id"], a["subject"]) for a in everything["items"]] == [
        ("door-held-open", "door:door-1/back"),
        ("after-hours-motion", "camera:pir-2"),
        ("after-hours-motion", "camera:pir-1"),
    ]
    security = await get(client, "/api/v1/alerts", category="security", limit=1)
    rest = await get(client, "/api/v1/alerts", category="security", limit=1, cursor=security["next_cursor"])
    assert [a["subject"] for a in security["items"] + rest["items"]] == ["camera:pir-2", "camera:pir-1"]
    alert_id = rest["items"][0]["alert_id"]

    response = await client.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={"note": "on it"})
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["acknowledged_by"]) == ("acknowledged", "ops.anna")
    # The hub's clock (13:00) is behind the device's alert (23:00): the action is put at the alert's last
    # transition rather than refused, so a gateway with a fast clock cannot make its alerts unacknowledgeable.
    assert response.json()["acknowledged_at"] == rest["items"][0]["opened_at"]
    again = await client.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={})
    assert again.status_code == 409
    assert "already acknowledged by ops.anna" in again.json()["detail"]
    no_note = await client.post(f"/api/v1/alerts/{alert_id}/resolve", json={})
    assert no_note.status_code == 422
    resolved = await client.post(f"/api/v1/alerts/{alert_id}/resolve", json={"note": "a cat"})
    assert resolved.status_code == 200
    assert [(h["action"], h["actor"], h["note"]) for h in resolved.json()["history"]] == [
        ("opened", "system", None),
        ("acknowledged", "ops.anna", "on it"),
        ("resolved", "ops.anna", "a cat"),
    ]
    active = await get(client, "/api/v1/alerts", status="active")
    assert alert_id not in {a["alert_id"] for a in active["items"]}
    assert len(active["items"]) == 2
    missing = await client.post("/api/v1/alerts/no-such-alert/acknowledge", json={})
    assert missing.status_code == 404
    bad = await client.get("/api/v1/alerts", params={"cursor": "garbage"})
    assert bad.status_code == 422
    assert "cursor" in bad.json()["message"]
