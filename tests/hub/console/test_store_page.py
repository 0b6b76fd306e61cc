"""The store page: a store's gateways, devices, stock, events and charts, for each role and scope, on SQLite and
PostgreSQL (a running hub; rows written as the hub's own code writes them)."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from hub.alerting.models import AlertRow
from hub.alerting.rules_db import put_store_override
from hub.api.deps import get_now
from hub.api.listings import GatewayView
from hub.catalog.models import Shelf, Sku, Slot, StoreProfile
from hub.console import store
from hub.db.models import DataLossRecord, Gateway, Store, StoredEvent
from hub.inventory.models import LedgerRow, RestockTask, ShelfLevel, StockPolicy, StockPosition
from hub.settings import HubSettings, load_hub_settings
from storegate.mqtt import MqttSettings
from tests.hub.conftest import RunningHub, running_hub
from tests.hub.console.conftest import add_operator, browser

NOW = datetime(2026, 7, 1, 4, 0, tzinfo=UTC)  # 12:00 in Taipei
TEA_GTIN = "04710088123456"
TEA = "烏龍茶 500ml"
_SEQ = itertools.count(1)


@pytest.fixture
def hub_settings(database_url: str, mqtt_settings: MqttSettings, tmp_path: Path) -> HubSettings:
    """The console's store page on SQLite and on PostgreSQL."""
    return load_hub_settings(
        None,
        database_url=database_url,
        mqtt=mqtt_settings,
        client_id=f"hub-{uuid.uuid4().hex[:8]}",
        secrets_dir=tmp_path / "hub-secrets",
        accept_unknown_gateways=True,
    )


@pytest.fixture
async def hub(hub_settings: HubSettings) -> AsyncIterator[RunningHub]:
    """A running hub whose clock reads :data:`NOW` for the pages."""
    async with running_hub(hub_settings) as running:
        running.app.dependency_overrides[get_now] = lambda: NOW
        yield running


# --------------------------------------------------------------------------- rows


def profile_row(store_id: str, name: str, timezone: str, currency: str, region: str) -> dict[str, Any]:
    return {
        "store_id": store_id,
        "name": name,
        "timezone": timezone,
        "currency": currency,
        "opening_hours": {},
        "region": region,
        "updated_at": NOW,
    }


def gateway_row(store_id: str, gateway_id: str, **fields: Any) -> dict[str, Any]:
    """An enrolled gateway, online and heard from a minute ago unless ``fields`` say otherwise."""
    return {
        "store_id": store_id,
        "gateway_id": gateway_id,
        "online": True,
        "last_status_reason": "birth",
        "status_changed_at": NOW - timedelta(hours=1),
        "first_seen": NOW - timedelta(days=30),
        "last_seen_at": NOW - timedelta(minutes=1),
        "agent_version": "1.4.2",
        "config_hash": "9f2c4e1ab3d7c0ffee",
        "devices": [],
        "last_health": {"outbox_depth": 0, "problems": []},
        "last_health_at": NOW - timedelta(minutes=1),
        "enrolled_at": NOW - timedelta(days=30),
        "enrolled_by": "tests",
        "enrolment": "operator",
        "revoked_at": None,
        "revoked_by": None,
        **fields,
    }


def event_row(store_id: str, kind: str, payload: dict[str, Any], *, at: datetime, device_id: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "store_id": store_id,
        "gateway_id": "gw-1",
        "stream": "00000000-0000-0000-0000-000000000001",
        "seq": next(_SEQ),
        "device_id": device_id,
        "kind": kind,
        "device_ts": at,
        "received_at": at,
        "payload": payload,
    }


def reading(store_id: str, zone: str, value: float, at: datetime, *, quantity: str = "temperature") -> dict[str, Any]:
    unit = "Cel" if quantity == "temperature" else "%RH"
    return event_row(
        store_id,
        "environment.reading",
        {"quantity": quantity, "value": value, "unit": unit, "zone": zone},
        at=at,
        device_id=f"sensor-{zone}",
    )


async def insert_rows(hub: RunningHub, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Rows into a table in one statement (its columns are those of the first row: give every row all of them)."""
    async with hub.runtime.engine.begin() as connection:
        await connection.execute(insert(table), list(rows))


async def seed_stores(hub: RunningHub) -> None:
    """Two stores: Taipei (ops scoped to it) with a gateway that has things wrong, and Berlin."""
    await insert_rows(
        hub,
        StoreProfile,
        [
            profile_row("taipei-1", "台北信義店", "Asia/Taipei", "TWD", "north"),
            profile_row("berlin-1", "Berlin Mitte", "Europe/Berlin", "EUR", "eu"),
        ],
    )
    await insert_rows(
        hub,
        Store,
        [
            {"store_id": s, "first_seen": NOW - timedelta(days=30), "last_event_at": NOW, "event_count": 0}
            for s in ("taipei-1", "berlin-1")
        ],
    )
    await insert_rows(
        hub,
        Gateway,
        [
            gateway_row(
                "taipei-1",
                "gw-1",
                devices=["fridge-1", "till-1", "shelf-1"],
                last_health={
                    "outbox_depth": 250,
                    "oldest_unacked_age_s": 420.0,
                    "problems": ["disk <b>almost</b> full"],
                },
            ),
            gateway_row("taipei-1", "gw-2", online=False, last_status_reason="will"),
            gateway_row("berlin-1", "gw-1", devices=["till-1"]),
        ],
    )
    await insert_rows(
        hub,
        Sku,
        [
            {
                "sku_id": "tea-500",
                "gtin": TEA_GTIN,
                "name": TEA,
                "pack_size": 6,
                "price": Decimal("35"),
                "currency": "TWD",
                "updated_at": NOW,
            },
            {
                "sku_id": "cookies",
                "gtin": None,
                "name": "Butter cookies",
                "pack_size": 1,
                "price": Decimal("99"),
                "currency": "TWD",
                "updated_at": NOW,
            },
        ],
    )
    await insert_rows(hub, Shelf, [{"store_id": "taipei-1", "shelf_id": "shelf-1"}])
    await insert_rows(
        hub,
        Slot,
        [
            {"store_id": "taipei-1", "shelf_id": "shelf-1", "slot": 1, "sku_id": "tea-500", "capacity": 12,
             "min_quantity": 4, "updated_at": NOW},
            {"store_id": "taipei-1", "shelf_id": "shelf-1", "slot": 2, "sku_id": "cookies", "capacity": 10,
             "min_quantity": 2, "updated_at": NOW},
        ],
    )  # fmt: skip
    await insert_rows(
        hub,
        ShelfLevel,
        [
            {"store_id": "taipei-1", "shelf_id": "shelf-1", "slot": 1, "sku_id": "tea-500", "quantity": 1,
             "at": NOW - timedelta(minutes=5), "updated_at": NOW},
            {"store_id": "taipei-1", "shelf_id": "shelf-1", "slot": 2, "sku_id": "cookies", "quantity": 9,
             "at": NOW - timedelta(minutes=5), "updated_at": NOW},
        ],
    )  # fmt: skip
    await insert_rows(
        hub,
        RestockTask,
        [
            {"task_id": str(uuid.uuid4()), "store_id": "taipei-1", "shelf_id": "shelf-1", "slot": 1,
             "sku_id": "tea-500", "status": "open", "open_key": "taipei-1/shelf-1/1", "level_at_open": 1,
             "min_quantity": 4, "capacity": 12, "quantity": 11, "opened_at": NOW - timedelta(minutes=5),
             "opening_event_id": str(uuid.uuid4()), "print_status": "printed", "pick_list": {}},
        ],
    )  # fmt: skip
    await insert_rows(
        hub,
        AlertRow,
        [
            {"alert_id": str(uuid.uuid4()), "store_id": "taipei-1", "rule_id": "device-unplugged",
             "rule_kind": "device_unplugged", "category": "operations", "subject_kind": "device",
             "subject_id": "fridge-1", "active_key": "taipei-1|device-unplugged|fridge-1", "severity": "warning",
             "status": "open", "message": "fridge-1 unplugged for 2 min", "opened_at": NOW - timedelta(minutes=3),
             "last_seen_at": NOW - timedelta(minutes=3), "count": 1, "evidence": [], "escalate_after_s": []},
        ],
    )  # fmt: skip
    await insert_rows(
        hub,
        DataLossRecord,
        [
            {"store_id": "taipei-1", "gateway_id": "gw-1", "stream": "00000000-0000-0000-0000-000000000001",
             "first_seq": 1, "last_seq": 7, "count": 7, "reason": "evicted", "detail": "", "by_kind": {},
             "event_id": str(uuid.uuid4()), "reported_at": NOW - timedelta(hours=2), "recorded_at": NOW},
        ],
    )  # fmt: skip
    scan = {"code": TEA_GTIN, "symbology": "ean13", "mode": "checkout", "quantity": 2, "gtin": TEA_GTIN, "ai": {}}
    weighed = {"code": "cookies", "symbology": "code128", "mode": "checkout", "quantity": 1, "net_weight_g": 250.0,
               "price": "99", "ai": {}}  # fmt: skip
    unknown = {"code": "4000000000006", "symbology": "ean13", "mode": "checkout", "quantity": 1, "ai": {}}
    pick = {"slot": 1, "delta": -3, "count": 1, "weight_g": 1500.0}
    await insert_rows(
        hub,
        StoredEvent,
        [
            event_row("taipei-1", "scan.sale", scan, at=NOW - timedelta(minutes=4), device_id="till-1"),
            event_row("taipei-1", "scan.sale", weighed, at=NOW - timedelta(minutes=3), device_id="till-1"),
            event_row("taipei-1", "scan.sale", unknown, at=NOW - timedelta(minutes=2), device_id="till-1"),
            event_row("taipei-1", "shelf.pick", pick, at=NOW - timedelta(minutes=5), device_id="shelf-1"),
            reading("taipei-1", "chiller-1", 4.5, NOW - timedelta(minutes=1)),
            event_row("berlin-1", "scan.sale", scan, at=NOW - timedelta(minutes=4), device_id="till-1"),
        ],
    )


# --------------------------------------------------------------------------- the page


async def test_the_store_page_shows_the_store_in_its_own_time_and_words(hub: RunningHub) -> None:
    await seed_stores(hub)
    response = await hub.client.get("/stores/taipei-1")
    assert response.status_code == 200, response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    html = response.text
    # Who: name, id, region, the store's wall clock (12:00 in Taipei when it is 04:00 UTC), currency.
    assert "台北信義店" in html
    assert "taipei-1" in html
    assert "north" in html
    assert "12:00" in html
    assert "Asia/Taipei" in html
    assert "TWD" in html
    # Gateways: what is wrong, in words; the gateway's own words escaped; devices with their live alerts.
    assert 'data-gateway="taipei-1/gw-1"' in html
    assert "Backlog: 250 events wait to reach the hub" in html
    assert "Gateway says: disk &lt;b&gt;almost&lt;/b&gt; full" in html
    assert "Events lost for good: 7" in html
    assert "Offline: it said goodbye or its connection dropped" in html
    assert 'data-device="fridge-1"' in html
    assert "fridge-1 unplugged for 2 min" in html
    assert "berlin-1/gw-1" not in html
    # Its live alerts, linked to the alerts page of the store.
    assert 'data-severity="warning"' in html
    assert 'href="/alerts?store_id=taipei-1">All 1 live alert of this store</a>' in html
    # Stock: the slot below minimum with its product's name (the other slot is fine), the open task.
    assert 'data-slot="shelf-1/1"' in html
    assert "1 of the 2 slots the shelves count" in html
    assert 'data-slot="shelf-1/2"' not in html
    assert html.count(TEA) >= 3  # slot, task, scan
    # Events: product names and units, never the wire's raw words.
    assert f"2 × {TEA}" in html  # noqa: RUF001
    assert "1 × Butter cookies" in html  # noqa: RUF001
    assert "250 g" in html
    assert "NT$99.00" in html
    assert "1 × unknown product" in html  # noqa: RUF001
    assert f"3 × {TEA}" in html  # noqa: RUF001
    assert "slot 1" in html
    assert "4.5 °C" in html
    assert "chiller-1" in html
    assert "Cel" not in html
    assert "ai {}" not in html
    assert "{&#39;" not in html
    # The costly parts come after the page.
    assert 'hx-get="/console/stores/taipei-1/reorder"' in html
    assert 'data-src="/console/stores/taipei-1/climate.json?hours=24"' in html
    assert 'hx-get="/console/stores/taipei-1/today"' in html


async def test_the_store_page_speaks_the_readers_language(hub: RunningHub) -> None:
    await seed_stores(hub)
    await add_operator(hub, "mei", "ops")
    async with browser(hub, "mei") as mei:
        assert (await mei.post("/console/language", data={"language": "zh_Hant"})).status_code == 303
        html = (await mei.get("/stores/taipei-1")).text
    assert "閘道器與裝置" in html
    assert "積壓：250 個事件等待送達中樞" in html  # noqa: RUF001
    assert "未知商品" in html
    assert 'lang="zh-Hant"' in html


async def test_a_scoped_operator_sees_only_their_stores_page_and_charts(hub: RunningHub) -> None:
    await seed_stores(hub)
    await add_operator(hub, "tai", "ops", store_ids=("taipei-1",))
    await add_operator(hub, "vic", "viewer", regions=("north",))
    await add_operator(hub, "tec", "technician")
    async with browser(hub, "tai") as tai:
        assert (await tai.get("/stores/taipei-1")).status_code == 200
        for path in (
            "/stores/berlin-1",
            "/console/stores/berlin-1/climate.json",
            "/console/stores/berlin-1/reorder",
            "/console/stores/berlin-1/today",
            "/stores/nowhere-9",  # outside the scope: refused before anyone looks whether it exists
        ):
            refused = await tai.get(path)
            assert refused.status_code == 403, path
            assert "outside your access" in refused.text
    async with browser(hub, "vic") as vic:  # a viewer of the region reads the page too
        assert (await vic.get("/stores/taipei-1")).status_code == 200
        assert (await vic.get("/console/stores/taipei-1/climate.json")).status_code == 200
        assert (await vic.get("/stores/berlin-1")).status_code == 403
    async with browser(hub, "tec") as tec:  # every role reads; a technician of the whole chain reads every store
        assert (await tec.get("/stores/berlin-1")).status_code == 200
    async with hub.anonymous() as anonymous:
        sent = await anonymous.get("/stores/taipei-1")
        assert sent.status_code in (302, 303, 307)
        assert sent.headers["location"].startswith("/login")
        assert (await anonymous.get("/console/stores/taipei-1/climate.json")).status_code == 401


async def test_unknown_forged_and_oversized_requests_are_refused_in_words(hub: RunningHub) -> None:
    await seed_stores(hub)
    unknown = await hub.client.get("/stores/nowhere-9")
    assert unknown.status_code == 404
    assert "no store 'nowhere-9'" in unknown.text
    assert (await hub.client.get("/console/stores/nowhere-9/climate.json")).status_code == 404
    for forged in ("/stores/Taipei-1", "/stores/" + "a" * 64, "/stores/taipei%201", "/stores/%2e%2e"):
        refused = await hub.client.get(forged)
        assert refused.status_code in (404, 422), forged
        if refused.status_code == 422:
            assert "store_id" in refused.json()["message"]
    for hours in ("0", "169", "-1", "1e9", "24h"):
        refused = await hub.client.get(f"/console/stores/taipei-1/climate.json?hours={hours}")
        assert refused.status_code == 422, hours
        assert "hours" in refused.json()["message"]


async def test_a_store_without_a_profile_still_has_a_page_in_utc(hub: RunningHub) -> None:
    await insert_rows(hub, Store, [{"store_id": "bare-1", "first_seen": NOW, "last_event_at": None, "event_count": 0}])
    html = (await hub.client.get("/stores/bare-1")).text
    assert "The catalog has no profile of this store" in html
    assert "No gateway is enrolled in this store." in html
    today = await hub.client.get("/console/stores/bare-1/today")
    assert "No visitors counted and no sales yet today." in today.text
    assert "Sold today: 0, 0 units" in today.text  # no currency to write it in
    reorder = await hub.client.get("/console/stores/bare-1/reorder")
    assert reorder.status_code == 200
    assert "no reorder suggestions" in reorder.text


async def test_the_reorder_suggestions_follow_the_page(hub: RunningHub) -> None:
    await seed_stores(hub)
    await insert_rows(
        hub,
        StockPolicy,
        [{"store_id": "taipei-1", "sku_id": "tea-500", "max_stock": 24, "reorder_point": 6, "lead_time_days": 0,
          "safety_stock": 0, "on_order": 0, "updated_at": NOW}],
    )  # fmt: skip
    await insert_rows(
        hub,
        StockPosition,
        [{"store_id": "taipei-1", "sku_id": "tea-500", "on_hand": 2, "counted_at": None, "last_variance": 0,
          "variance_total": 0, "last_movement_at": NOW, "updated_at": NOW}],
    )  # fmt: skip
    fragment = await hub.client.get("/console/stores/taipei-1/reorder")
    assert fragment.status_code == 200
    row = re.search(r'<tr data-sku="tea-500">(.*?)</tr>', fragment.text, flags=re.S)
    assert row is not None
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)]
    # 2 on hand, at most 24: 22 fit, in packs of 6 that is 18.
    assert cells[:4] == [f"{TEA} tea-500", "2", "0", "18"]
    assert "<html" not in fragment.text  # a piece for htmx, not a page
    berlin = await hub.client.get("/console/stores/berlin-1/reorder")
    assert "Nothing to order" in berlin.text


async def test_today_sums_the_sales_since_the_stores_midnight_in_its_currency(hub: RunningHub) -> None:
    await seed_stores(hub)

    def sale(quantity: int, price: str, at: datetime) -> dict[str, Any]:
        return {"event_id": str(uuid.uuid4()), "line": 0, "store_id": "taipei-1", "sku_id": "tea-500",
                "kind": "sale", "quantity": -quantity, "at": at, "shelf_id": None, "slot": None, "level": None,
                "unit_price": Decimal(price), "actor": None, "note": None, "recorded_at": at}  # fmt: skip

    await insert_rows(
        hub,
        LedgerRow,
        [
            sale(2, "35", NOW - timedelta(hours=1)),
            sale(1, "29.5", NOW - timedelta(hours=11, minutes=59)),  # 00:01 in Taipei
            sale(5, "35", NOW - timedelta(hours=12, minutes=1)),  # 23:59 yesterday in Taipei
        ],
    )
    today = await hub.client.get("/console/stores/taipei-1/today")
    assert "Sold today: NT$99.50, 3 units" in today.text


# --------------------------------------------------------------------------- the charts


async def test_the_charts_are_downsampled_in_the_database_with_the_stores_thresholds(hub: RunningHub) -> None:
    await seed_stores(hub)
    start = NOW - timedelta(hours=48)
    rows = [reading("taipei-1", "chiller-1", 2.0 + (i % 10) / 10, start + timedelta(minutes=i)) for i in range(2880)]
    rows += [reading("taipei-1", "back-room", 40.0 + i % 3, start + timedelta(minutes=i), quantity="humidity")
             for i in range(0, 2880, 5)]  # fmt: skip
    rows += [reading("taipei-1", "chiller-1", 99.0, NOW - timedelta(hours=49))]  # before the window
    rows += [reading("taipei-1", "chiller-1", 99.0, NOW + timedelta(minutes=1))]  # a clock ahead: after it
    rows += [reading("berlin-1", "chiller-1", 50.0, NOW - timedelta(hours=1))]  # another store
    await insert_rows(hub, StoredEvent, rows)
    async with hub.runtime.sessions() as session:
        await put_store_override(session, "taipei-1", "chillers", {"high": 6.0}, actor="tests", now=NOW)

    body = (await hub.client.get("/console/stores/taipei-1/climate.json?hours=48")).json()
    assert body["bucket_s"] == 600
    assert body["timezone"] == "Asia/Taipei"
    zones = {(z["zone"], z["quantity"]): z for z in body["zones"]}
    assert set(zones) == {("chiller-1", "temperature"), ("back-room", "humidity")}
    chiller = zones[("chiller-1", "temperature")]
    assert chiller["unit"] == "°C"
    points = chiller["points"]
    assert len(points["t"]) <= store.MAX_POINTS
    # 48 hours of one-minute readings, plus the one of seed_stores a minute before now: 288 buckets of 10 readings.
    assert len(points["t"]) == 288
    assert sum(points["n"]) == 2881
    assert max(points["max"]) < 99.0  # nothing from outside the window, nothing of Berlin
    assert points["min"][0] == pytest.approx(2.0)
    assert points["max"][0] == pytest.approx(2.9)
    assert points["avg"][0] == pytest.approx(2.45)
    assert points["t"] == sorted(points["t"])
    assert points["t"][0] == int(start.timestamp()) + 300  # a bucket's point sits at its middle
    # The chain's chiller rule (0 to 5 °C) as this store overrides it (high 6).
    assert chiller["thresholds"] == [{"rule_id": "chillers", "severity": "warning", "low": 0.0, "high": 6.0}]
    humidity = zones[("back-room", "humidity")]
    assert humidity["unit"] == "%RH"
    assert [t["rule_id"] for t in humidity["thresholds"]] == ["back-room-humidity"]

    week = (await hub.client.get("/console/stores/taipei-1/climate.json?hours=168")).json()
    assert all(len(z["points"]["t"]) <= store.MAX_POINTS for z in week["zones"])
    # Within the minute the readings are not read again; the thresholds are.
    async with hub.runtime.sessions() as session:
        await put_store_override(session, "taipei-1", "chillers", {"high": 7.0}, actor="tests", now=NOW)
    await insert_rows(hub, StoredEvent, [reading("taipei-1", "chiller-1", 30.0, NOW - timedelta(minutes=30))])
    again = (await hub.client.get("/console/stores/taipei-1/climate.json?hours=48")).json()
    chiller_again = next(z for z in again["zones"] if z["zone"] == "chiller-1")
    assert chiller_again["points"] == chiller["points"]
    assert chiller_again["thresholds"][0]["high"] == 7.0
    empty = (await hub.client.get("/console/stores/berlin-1/climate.json?hours=1")).json()
    assert [z["zone"] for z in empty["zones"]] == ["chiller-1"]
    assert empty["zones"][0]["thresholds"][0]["high"] == 5.0  # Berlin keeps the chain's limit


# --------------------------------------------------------------------------- pure parts


def test_bucket_sizes_keep_a_week_under_the_points_limit() -> None:
    assert store.bucket_seconds(1) == 60
    assert store.bucket_seconds(24) == 300
    assert store.bucket_seconds(168) == 2040
    for hours in range(1, store.MAX_CHART_HOURS + 1):
        assert hours * 3600 / store.bucket_seconds(hours) <= store.MAX_POINTS


@pytest.mark.parametrize(
    ("payload", "gtin"),
    [
        ({"gtin": TEA_GTIN, "code": "x"}, TEA_GTIN),
        ({"code": "4006381333931"}, "04006381333931"),  # an EAN-13 read as its code
        ({"code": "4006381333932"}, None),  # a check digit that does not add up
        ({"code": "cookies"}, None),
        ({"gtin": 4006381333931}, None),
        ({}, None),
    ],
)
def test_the_gtin_of_a_scan(payload: dict[str, Any], gtin: str | None) -> None:
    assert store.gtin_of(payload) == gtin


def test_a_gateway_says_what_is_wrong() -> None:
    def view(**fields: Any) -> GatewayView:
        gateway = Gateway(**gateway_row("s", "g", **fields))
        return GatewayView(gateway=gateway, connectivity="online", stream=None, through_seq=None)

    state, problems = store.gateway_problems(view(), now=NOW)
    assert (state, problems) == ("online", [])
    _, problems = store.gateway_problems(view(last_health_at=NOW - timedelta(minutes=11)), now=NOW)
    assert [p.message for p in problems] == ["No health report for over 10 minutes"]
    state, problems = store.gateway_problems(view(revoked_at=NOW, revoked_by="alice"), now=NOW)
    assert state == "revoked"
    assert problems[0].values == {"who": "alice"}


def test_the_chart_cache_keeps_the_most_recent_answers() -> None:
    cache = store.ChartCache(max_entries=2)
    answer: tuple[datetime, datetime, store.Series] = (NOW, NOW, {})
    cache.put(("a", 24, 1), answer)
    cache.put(("b", 24, 1), answer)
    assert cache.get(("a", 24, 1)) is answer  # now the most recently used
    cache.put(("c", 24, 1), answer)
    assert cache.get(("b", 24, 1)) is None
    assert cache.get(("a", 24, 1)) is answer
    assert cache.get(("a", 24, 2)) is None  # the next minute is another answer
