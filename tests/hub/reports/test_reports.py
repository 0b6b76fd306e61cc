"""The period reports over HTTP, on SQLite and PostgreSQL: exact figures for hand-made rows in two stores of
different time zones (Europe/Berlin, America/New_York) across their fall-back days, a store without a profile,
CSV that carries the JSON's rows, and 422s that name the parameter."""

from __future__ import annotations

import csv
import io
import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfoNotFoundError

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.alerting.models import AlertRow
from hub.app import create_app
from hub.catalog.models import Sku, StoreProfile
from hub.db.sqlfunctions import epoch_seconds, local_wall_time
from hub.inventory.models import LedgerRow, ShrinkRecord, StockPosition
from hub.settings import load_hub_settings
from tests.hub.reports.conftest import reports_client

NOW = datetime(2025, 11, 10, 12, 0, tzinfo=UTC)


def utc(text: str) -> datetime:
    """``2025-10-26 00:30`` as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on an app with the reports router and a session of this test's database."""
    async with reports_client(engine, now=lambda: NOW) as http:
        yield http


_lines = itertools.count(1)


class Rows:
    """Inserts hand-made rows into the test's database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(self, table: Any, *rows: dict[str, Any]) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(insert(table), list(rows))

    async def catalog(self) -> None:
        await self.add(
            StoreProfile,
            profile("berlin", "Berlin Mitte", "Europe/Berlin", "EUR"),
            profile("nyc", "New York 5th", "America/New_York", "USD"),
        )
        await self.add(
            Sku,
            {"sku_id": "milk", "gtin": None, "name": "Milk 1l", "unit_weight_g": None, "pack_size": 1,
             "price": Decimal("1.29"), "currency": "EUR", "updated_at": NOW},
            {"sku_id": "bread", "gtin": None, "name": "Bread", "unit_weight_g": None, "pack_size": 1,
             "price": Decimal("2.55"), "currency": "EUR", "updated_at": NOW},
        )  # fmt: skip

    async def ledger(
        self, store_id: str, sku_id: str, kind: str, quantity: int, at: str, unit_price: str | None = None
    ) -> None:
        await self.add(
            LedgerRow,
            {
                "event_id": str(uuid.uuid4()),
                "line": next(_lines),
                "store_id": store_id,
                "sku_id": sku_id,
                "kind": kind,
                "quantity": quantity,
                "at": utc(at),
                "unit_price": None if unit_price is None else Decimal(unit_price),
                "recorded_at": NOW,
            },
        )


def profile(store_id: str, name: str, timezone: str, currency: str) -> dict[str, Any]:
    return {
        "store_id": store_id,
        "name": name,
        "timezone": timezone,
        "currency": currency,
        "opening_hours": {},
        "updated_at": NOW,
    }


@pytest.fixture
async def rows(engine: AsyncEngine) -> Rows:
    filled = Rows(engine)
    await filled.catalog()
    return filled


async def report(client: httpx.AsyncClient, name: str, **params: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/reports/{name}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def csv_rows(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(response.text)))


def as_cell(value: Any) -> str:
    """A JSON value as the CSV writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------- the SQL functions


def test_sqlite_local_time_follows_daylight_saving_time() -> None:
    # Berlin falls back at 01:00 UTC on 2025-10-26: 02:30 happens twice.
    assert local_wall_time("2025-10-26 00:30:00.000000", "Europe/Berlin") == "2025-10-26 02:30:00"
    assert local_wall_time("2025-10-26 01:30:00.000000", "Europe/Berlin") == "2025-10-26 02:30:00"
    assert local_wall_time("2025-10-25 22:30:00.000000", "Europe/Berlin") == "2025-10-26 00:30:00"
    assert local_wall_time("2025-11-02 05:30:00", "America/New_York") == "2025-11-02 01:30:00"
    assert local_wall_time("2025-11-02 06:30:00", "America/New_York") == "2025-11-02 01:30:00"
    assert local_wall_time("2025-11-02 06:30:00+00:00", "America/New_York") == "2025-11-02 01:30:00"
    assert local_wall_time(None, "Europe/Berlin") is None
    assert local_wall_time("2025-11-02 06:30:00", None) is None
    assert epoch_seconds("1970-01-01 00:01:00.500000") == 60.5
    with pytest.raises(ZoneInfoNotFoundError):
        local_wall_time("2025-11-02 06:30:00", "Mars/Olympus_Mons")


# --------------------------------------------------------------------------- sales


async def add_sales(rows: Rows) -> None:
    sale = rows.ledger
    # Berlin, fall-back day 2025-10-26 (02:00-03:00 local happens twice).
    await sale("berlin", "bread", "sale", -1, "2025-10-25 21:30", "2.55")  # 23:30 on the 25th: before the period
    await sale("berlin", "bread", "sale", -3, "2025-10-25 22:30", "2.55")  # 00:30 on the 26th (UTC: the 25th)
    await sale("berlin", "milk", "sale", -2, "2025-10-26 00:30", "1.29")  # 02:30 CEST
    await sale("berlin", "milk", "sale", -1, "2025-10-26 01:30", "1.29")  # 02:30 CET, the repeated hour
    await sale("berlin", "milk", "sale", -1, "2025-10-26 23:30", "1.29")  # 00:30 on the 27th (UTC: the 26th)
    await sale("berlin", "milk", "receipt", 50, "2025-10-26 09:00")  # not a sale
    # New York, fall-back day 2025-11-02 (01:00-02:00 local happens twice).
    await sale("nyc", "bread", "sale", -1, "2025-11-02 04:30", "2.55")  # 00:30 EDT
    await sale("nyc", "milk", "sale", -1, "2025-11-02 05:30", "1.99")  # 01:30 EDT
    await sale("nyc", "milk", "sale", -2, "2025-11-02 06:30", "1.99")  # 01:30 EST, the repeated hour
    await sale("nyc", "bread", "sale", -1, "2025-11-03 03:30", "3.10")  # 22:30 on the 2nd (UTC: the 3rd)
    await sale("nyc", "bread", "sale", -4, "2025-11-03 05:30", "2.55")  # 00:30 on the 3rd: after the period
    # A store without a profile: UTC, and the report says so.
    await sale("nowhere", "milk", "sale", -2, "2025-10-28 12:15", "1.25")


def sales_row(store: str, day: str, hour: int, sku: str, units: int, revenue: str, **extra: Any) -> dict[str, Any]:
    zones = {"berlin": "Europe/Berlin", "nyc": "America/New_York", "nowhere": "UTC"}
    names = {"milk": "Milk 1l", "bread": "Bread"}
    return {
        "store_id": store,
        "timezone": zones[store],
        "timezone_assumed": store == "nowhere",
        "local_date": day,
        "local_hour": hour,
        "sku_id": sku,
        "name": names[sku],
        "units": units,
        "revenue": revenue,
        "currency": "EUR",
    } | extra


async def test_sales_are_bucketed_by_each_stores_local_date_and_hour(client: httpx.AsyncClient, rows: Rows) -> None:
    await add_sales(rows)
    body = await report(client, "sales", **{"from": "2025-10-26", "to": "2025-11-02"})
    assert body["items"] == [
        sales_row("berlin", "2025-10-26", 0, "bread", 3, "7.65"),
        # Both 02:30s of the fall-back night: the wall-clock hour holds both real hours.
        sales_row("berlin", "2025-10-26", 2, "milk", 3, "3.87"),
        sales_row("berlin", "2025-10-27", 0, "milk", 1, "1.29"),
        sales_row("nowhere", "2025-10-28", 12, "milk", 2, "2.50"),
        sales_row("nyc", "2025-11-02", 0, "bread", 1, "2.55"),
        sales_row("nyc", "2025-11-02", 1, "milk", 3, "5.97"),
        sales_row("nyc", "2025-11-02", 22, "bread", 1, "3.10"),
    ]
    assert body["from_date"] == "2025-10-26"
    assert body["to_date"] == "2025-11-02"
    assert body["days"] == 8
    assert body["notes"] == ["store nowhere has no store profile: its dates and hours are UTC"]


async def test_one_day_of_one_store_and_sku(client: httpx.AsyncClient, rows: Rows) -> None:
    await add_sales(rows)
    berlin = await report(client, "sales", **{"from": "2025-10-26", "to": "2025-10-26", "store_id": "berlin"})
    assert [(r["local_hour"], r["sku_id"], r["units"]) for r in berlin["items"]] == [(0, "bread", 3), (2, "milk", 3)]
    assert berlin["notes"] == []
    nyc_milk = await report(
        client, "sales", **{"from": "2025-11-02", "to": "2025-11-02", "store_id": "nyc", "sku_id": "milk"}
    )
    assert nyc_milk["items"] == [sales_row("nyc", "2025-11-02", 1, "milk", 3, "5.97")]
    nobody = await report(client, "sales", **{"from": "2025-11-02", "to": "2025-11-02", "store_id": "nobody"})
    assert nobody["items"] == []


async def test_sales_csv_has_the_json_rows(client: httpx.AsyncClient, rows: Rows) -> None:
    await add_sales(rows)
    params = {"from": "2025-10-26", "to": "2025-11-02"}
    body = await report(client, "sales", **params)
    response = await client.get("/api/v1/reports/sales", params=params | {"format": "csv"})
    assert response.headers["content-disposition"] == 'attachment; filename="sales_2025-10-26_2025-11-02.csv"'
    header = response.text.splitlines()[0]
    assert header == "store_id,timezone,timezone_assumed,local_date,local_hour,sku_id,name,units,revenue,currency"
    assert csv_rows(response) == [{k: as_cell(v) for k, v in item.items()} for item in body["items"]]
    assert csv_rows(response)[3] == {
        "store_id": "nowhere",
        "timezone": "UTC",
        "timezone_assumed": "true",
        "local_date": "2025-10-28",
        "local_hour": "12",
        "sku_id": "milk",
        "name": "Milk 1l",
        "units": "2",
        "revenue": "2.50",
        "currency": "EUR",
    }
    one = await client.get(
        "/api/v1/reports/sales", params=params | {"format": "csv", "store_id": "nyc", "sku_id": "milk"}
    )
    assert one.headers["content-disposition"] == 'attachment; filename="sales_nyc_milk_2025-10-26_2025-11-02.csv"'


# --------------------------------------------------------------------------- turnover and sell-through


async def add_stock_history(rows: Rows) -> None:
    move = rows.ledger
    await move("berlin", "milk", "receipt", 20, "2025-10-20 08:00")
    await move("berlin", "milk", "sale", -2, "2025-10-24 10:00", "1.29")
    await move("berlin", "milk", "count", 17, "2025-10-25 12:00")  # expected 18: sets on hand to 17
    await move("berlin", "milk", "sale", -3, "2025-10-25 22:30", "1.29")  # 00:30 on the 26th: in the period
    await move("berlin", "milk", "shelf_pick", -1, "2025-10-26 08:00")  # leaves on hand as it is
    await move("berlin", "milk", "receipt", 10, "2025-10-26 09:00")
    await move("berlin", "milk", "sale", -4, "2025-10-27 15:00", "1.29")
    await move("berlin", "milk", "sale", -5, "2025-10-27 23:30", "1.29")  # 00:30 on the 28th: after
    await move("berlin", "milk", "count", 14, "2025-10-28 10:00")
    await move("berlin", "bread", "receipt", 5, "2025-10-01 08:00")
    await rows.add(
        StockPosition,
        {"store_id": "berlin", "sku_id": "milk", "on_hand": 14, "counted_at": utc("2025-10-28 10:00"),
         "last_variance": -1, "variance_total": -2, "last_movement_at": utc("2025-10-28 10:00"), "updated_at": NOW},
        {"store_id": "berlin", "sku_id": "bread", "on_hand": 5, "counted_at": None, "last_variance": 0,
         "variance_total": 0, "last_movement_at": utc("2025-10-01 08:00"), "updated_at": NOW},
    )  # fmt: skip


async def test_inventory_turnover_and_days_of_supply(client: httpx.AsyncClient, rows: Rows) -> None:
    await add_stock_history(rows)
    body = await report(client, "inventory-turnover", **{"from": "2025-10-26", "to": "2025-10-27"})
    common = {"store_id": "berlin", "timezone": "Europe/Berlin", "timezone_assumed": False}
    assert body["items"] == [
        common
        | {
            "sku_id": "bread",
            "name": "Bread",
            "units_sold": 0,
            "avg_daily_units": 0.0,
            "on_hand_start": 5,
            "on_hand_end": 5,
            "average_inventory": 5.0,
            "turnover": 0.0,
            "on_hand_now": 5,
            "days_of_supply": None,
        },
        common
        | {
            "sku_id": "milk",
            "name": "Milk 1l",
            "units_sold": 7,  # 3 (UTC: the 25th, local: the 26th) + 4
            "avg_daily_units": 3.5,
            "on_hand_start": 17,  # the count of the 25th replaced 18
            "on_hand_end": 20,  # 17 - 3 + 10 - 4
            "average_inventory": 18.5,
            "turnover": 0.3784,  # 7 / 18.5
            "on_hand_now": 14,
            "days_of_supply": 4.0,  # 14 / 3.5
        },
    ]
    assert body["days"] == 2


async def test_sell_through(client: httpx.AsyncClient, rows: Rows) -> None:
    await add_stock_history(rows)
    body = await report(client, "sell-through", **{"from": "2025-10-26", "to": "2025-10-27", "sku_id": "milk"})
    assert body["items"] == [
        {
            "store_id": "berlin",
            "timezone": "Europe/Berlin",
            "timezone_assumed": False,
            "sku_id": "milk",
            "name": "Milk 1l",
            "on_hand_start": 17,
            "units_received": 10,
            "units_sold": 7,
            "on_hand_end": 20,
            "sell_through": 0.2593,  # 7 / (7 + 20)
        }
    ]
    # Over the whole history: sold 2 + 3 + 4 + 5, on hand at the end 14 (the last count).
    whole = await report(client, "sell-through", **{"from": "2025-10-01", "to": "2025-10-31", "sku_id": "milk"})
    assert [(r["on_hand_start"], r["units_received"], r["units_sold"], r["on_hand_end"], r["sell_through"])
            for r in whole["items"]] == [(0, 30, 14, 14, 0.5)]  # fmt: skip


async def test_stock_reports_as_csv(client: httpx.AsyncClient, rows: Rows) -> None:
    await add_stock_history(rows)
    for name in ("inventory-turnover", "sell-through"):
        params = {"from": "2025-10-26", "to": "2025-10-27", "store_id": "berlin"}
        body = await report(client, name, **params)
        response = await client.get(f"/api/v1/reports/{name}", params=params | {"format": "csv"})
        assert response.text.splitlines()[0] == ",".join(body["items"][0])
        assert csv_rows(response) == [{k: as_cell(v) for k, v in item.items()} for item in body["items"]]


# --------------------------------------------------------------------------- shrink


async def test_shrink_records_and_count_losses(client: httpx.AsyncClient, rows: Rows) -> None:
    move = rows.ledger
    await move("nyc", "milk", "receipt", 10, "2025-11-01 12:00")
    await move("nyc", "milk", "count", 6, "2025-11-01 13:00")  # -4, on the 1st: before the period
    await move("nyc", "milk", "receipt", 4, "2025-11-01 14:00")
    await move("nyc", "milk", "count", 8, "2025-11-02 05:30")  # -2 (01:30 EDT)
    await move("nyc", "milk", "sale", -1, "2025-11-02 15:00", "1.29")
    await move("nyc", "milk", "count", 9, "2025-11-02 16:00")  # +2: found, not lost
    await move("nyc", "milk", "count", 6, "2025-11-03 04:30")  # -3 (23:30 EST on the 2nd)
    await move("nyc", "milk", "count", 5, "2025-11-03 06:00")  # -1 on the 3rd: after the period

    def record(store: str, sku: str, quantity: int, value: str, expired: str) -> dict[str, Any]:
        expired_at = utc(expired)
        return {
            "store_id": store,
            "sku_id": sku,
            "quantity": quantity,
            "value": Decimal(value),
            "picked_at": expired_at - timedelta(hours=1),
            "expired_at": expired_at,
            "event_ids": [str(uuid.uuid4())],
        }

    await rows.add(
        ShrinkRecord,
        record("nyc", "milk", 2, "2.58", "2025-11-02 12:00"),
        record("nyc", "milk", 1, "1.29", "2025-11-03 03:00"),  # 22:00 EST on the 2nd
        record("nyc", "milk", 4, "5.16", "2025-11-03 06:00"),  # 01:00 EST on the 3rd: after the period
        record("berlin", "bread", 1, "2.55", "2025-11-02 10:00"),
        record("berlin", "bread", 3, "7.65", "2025-11-01 22:59"),  # 23:59 CET on the 1st: before
    )
    body = await report(client, "shrink", **{"from": "2025-11-02", "to": "2025-11-02"})
    assert body["items"] == [
        {
            "store_id": "berlin",
            "timezone": "Europe/Berlin",
            "timezone_assumed": False,
            "sku_id": "bread",
            "name": "Bread",
            "shrink_units": 1,
            "shrink_value": "2.55",
            "shrink_records": 1,
            "count_loss_units": 0,
            "count_loss_value": "0.00",
            "counts_with_loss": 0,
            "currency": "EUR",
        },
        {
            "store_id": "nyc",
            "timezone": "America/New_York",
            "timezone_assumed": False,
            "sku_id": "milk",
            "name": "Milk 1l",
            "shrink_units": 3,
            "shrink_value": "3.87",
            "shrink_records": 2,
            "count_loss_units": 5,  # 2 + 3
            "count_loss_value": "6.45",  # 5 x 1.29, today's catalog price
            "counts_with_loss": 2,
            "currency": "EUR",
        },
    ]
    response = await client.get(
        "/api/v1/reports/shrink", params={"from": "2025-11-02", "to": "2025-11-02", "format": "csv"}
    )
    assert csv_rows(response) == [{k: as_cell(v) for k, v in item.items()} for item in body["items"]]
    # The count of the 1st lost 4 against the replayed 10; only counts of the period count.
    first = await report(client, "shrink", **{"from": "2025-11-01", "to": "2025-11-01", "store_id": "nyc"})
    assert [(r["count_loss_units"], r["counts_with_loss"], r["shrink_units"]) for r in first["items"]] == [(4, 1, 0)]


# --------------------------------------------------------------------------- alert statistics


def alert(
    store: str,
    kind: str,
    severity: str,
    opened: str,
    *,
    acknowledged_after_s: float | None = None,
    resolved_after_s: float | None = None,
) -> dict[str, Any]:
    opened_at = utc(opened)
    acknowledged_at = None if acknowledged_after_s is None else opened_at + timedelta(seconds=acknowledged_after_s)
    resolved_at = None if resolved_after_s is None else opened_at + timedelta(seconds=resolved_after_s)
    status = "resolved" if resolved_at else "acknowledged" if acknowledged_at else "open"
    alert_id = str(uuid.uuid4())
    return {
        "alert_id": alert_id,
        "store_id": store,
        "rule_id": kind.replace("_", "-"),
        "rule_kind": kind,
        "category": "environment" if kind == "environment_range" else "security",
        "subject_kind": "store",
        "subject_id": store,
        "active_key": None if resolved_at else alert_id,
        "severity": severity,
        "status": status,
        "message": "test",
        "opened_at": opened_at,
        "last_seen_at": opened_at,
        "count": 1,
        "evidence": [],
        "snapshot_ref": None,
        "escalate_after_s": [],
        "escalation_level": 0,
        "acknowledged_by": "ann" if acknowledged_at else None,
        "acknowledged_at": acknowledged_at,
        "resolved_by": "ann" if resolved_at else None,
        "resolved_at": resolved_at,
        "resolution_note": "done" if resolved_at else None,
    }


async def test_alert_statistics(client: httpx.AsyncClient, rows: Rows) -> None:
    await rows.add(
        AlertRow,
        alert("berlin", "environment_range", "critical", "2025-10-26 00:30", acknowledged_after_s=120,
              resolved_after_s=600),
        alert("berlin", "environment_range", "critical", "2025-10-26 10:00", acknowledged_after_s=300),
        alert("berlin", "environment_range", "critical", "2025-10-25 21:30", acknowledged_after_s=1),  # the 25th
        alert("berlin", "after_hours_motion", "warning", "2025-10-26 20:00", resolved_after_s=60),
        alert("nyc", "door_after_hours", "critical", "2025-10-26 03:30", acknowledged_after_s=1),  # the 25th
        alert("nyc", "door_after_hours", "critical", "2025-10-27 03:30", acknowledged_after_s=45.5,
              resolved_after_s=90.25),  # 23:30 EDT on the 26th
        alert("nowhere", "gateway_offline", "warning", "2025-10-26 23:59"),
    )  # fmt: skip
    body = await report(client, "alerts", **{"from": "2025-10-26", "to": "2025-10-26"})
    assert body["items"] == [
        {
            "store_id": "berlin",
            "timezone": "Europe/Berlin",
            "timezone_assumed": False,
            "rule_kind": "after_hours_motion",
            "severity": "warning",
            "alerts": 1,
            "acknowledged": 0,
            "mean_time_to_acknowledge_s": None,
            "max_time_to_acknowledge_s": None,
            "resolved": 1,
            "mean_time_to_resolve_s": 60.0,
            "max_time_to_resolve_s": 60.0,
            "open_now": 0,
        },
        {
            "store_id": "berlin",
            "timezone": "Europe/Berlin",
            "timezone_assumed": False,
            "rule_kind": "environment_range",
            "severity": "critical",
            "alerts": 2,
            "acknowledged": 2,
            "mean_time_to_acknowledge_s": 210.0,
            "max_time_to_acknowledge_s": 300.0,
            "resolved": 1,
            "mean_time_to_resolve_s": 600.0,
            "max_time_to_resolve_s": 600.0,
            "open_now": 1,
        },
        {
            "store_id": "nowhere",
            "timezone": "UTC",
            "timezone_assumed": True,
            "rule_kind": "gateway_offline",
            "severity": "warning",
            "alerts": 1,
            "acknowledged": 0,
            "mean_time_to_acknowledge_s": None,
            "max_time_to_acknowledge_s": None,
            "resolved": 0,
            "mean_time_to_resolve_s": None,
            "max_time_to_resolve_s": None,
            "open_now": 1,
        },
        {
            "store_id": "nyc",
            "timezone": "America/New_York",
            "timezone_assumed": False,
            "rule_kind": "door_after_hours",
            "severity": "critical",
            "alerts": 1,
            "acknowledged": 1,
            "mean_time_to_acknowledge_s": 45.5,
            "max_time_to_acknowledge_s": 45.5,
            "resolved": 1,
            "mean_time_to_resolve_s": 90.25,
            "max_time_to_resolve_s": 90.25,
            "open_now": 0,
        },
    ]
    assert body["notes"] == ["store nowhere has no store profile: its dates and hours are UTC"]
    response = await client.get(
        "/api/v1/reports/alerts", params={"from": "2025-10-26", "to": "2025-10-26", "format": "csv"}
    )
    assert csv_rows(response) == [{k: as_cell(v) for k, v in item.items()} for item in body["items"]]
    nyc = await report(client, "alerts", **{"from": "2025-10-25", "to": "2025-10-26", "store_id": "nyc"})
    assert [(r["alerts"], r["acknowledged"], r["mean_time_to_acknowledge_s"]) for r in nyc["items"]] == [(2, 2, 23.25)]


# --------------------------------------------------------------------------- bad parameters


@pytest.mark.parametrize("name", ["sales", "inventory-turnover", "sell-through", "shrink", "alerts"])
async def test_bad_parameters_are_422_naming_the_parameter(client: httpx.AsyncClient, name: str) -> None:
    async def problem(**params: str) -> tuple[list[str], str]:
        response = await client.get(f"/api/v1/reports/{name}", params=params)
        assert response.status_code == 422, response.text
        error = response.json()["detail"][0]
        return error["loc"], error["msg"]

    loc, msg = await problem(**{"from": "2025-02-01", "to": "2025-01-31"})
    assert (loc, msg) == (["query", "from"], "from (2025-02-01) is after to (2025-01-31)")
    loc, msg = await problem(**{"from": "2024-01-01", "to": "2025-01-01"})
    assert (loc, msg) == (["query", "to"], "the period 2024-01-01..2025-01-01 has 367 days; at most 366")
    assert (await problem(**{"from": "2025-01-01"}))[0] == ["query", "to"]
    assert (await problem(**{"to": "2025-01-01"}))[0] == ["query", "from"]
    assert (await problem(**{"from": "2025-01-32", "to": "2025-02-01"}))[0] == ["query", "from"]
    assert (await problem(**{"from": "2025-01-01", "to": "2025-02-01", "format": "docx"}))[0] == ["query", "format"]
    assert (await problem(**{"from": "2025-01-01", "to": "2025-02-01", "store_id": "s" * 64}))[0] == [
        "query",
        "store_id",
    ]
    # 366 days (a leap year) is the longest period.
    response = await client.get(f"/api/v1/reports/{name}", params={"from": "2024-01-01", "to": "2024-12-31"})
    assert response.status_code == 200, response.text
    assert response.json()["days"] == 366


def test_the_hub_app_serves_the_reports() -> None:
    app = create_app(load_hub_settings(None))
    paths = app.openapi()["paths"]
    assert {"/api/v1/reports/sales", "/api/v1/reports/cold-chain/{store_id}/{day}.pdf"} <= set(paths)
    assert paths["/api/v1/reports/alerts"]["get"]["tags"] == ["reports"]
