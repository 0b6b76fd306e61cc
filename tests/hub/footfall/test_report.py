"""The footfall report over HTTP, on SQLite and PostgreSQL, from events fed through the ingest's unit of work:
visitors, exits, transactions (baskets) and conversion per store and local hour across Berlin's fall-back night
and local midnight, hours without camera data as no data, day totals, a store without a profile, CSV, 422s."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Any

import httpx
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.catalog.models import StoreProfile
from hub.footfall.queries import UtcSpan
from hub.reports.queries import ReportFilter
from tests.hub.footfall.conftest import Feed, profile, utc

UNKNOWN_CODE = "ZZ-NOT-IN-CATALOG"


async def add_berlin_fall_back_day(feed: Feed) -> None:
    """Berlin, 2025-10-26: CEST (UTC+2) until 01:00 UTC, then CET (UTC+1); 02:00-03:00 happens twice."""
    counts, scan = feed.counts, feed.scan
    await feed.send(
        counts("berlin", utc("2025-10-25 21:50"), 8, 8),  # 23:50 on the 25th: before the period
        counts("berlin", utc("2025-10-25 22:10"), 3, 0),  # 00:10 on the 26th (UTC: the 25th)
        counts("berlin", utc("2025-10-26 00:30"), 4, 1),  # 02:30 CEST
        counts("berlin", utc("2025-10-26 01:30"), 6, 2, camera="side-door-cam"),  # 02:30 CET: the repeated hour
        counts("berlin", utc("2025-10-26 04:00"), 0, 0),  # 05:00: the camera counted nobody
        counts("berlin", utc("2025-10-26 22:30"), 2, 4),  # 23:30
    )
    await feed.send(
        # 02:40 CEST: one basket of two scans at till 1, and one of an item the catalog does not know at till 2.
        scan("berlin", utc("2025-10-26 00:40:00")),
        scan("berlin", utc("2025-10-26 00:40:20")),
        scan("berlin", utc("2025-10-26 00:40:10"), scanner="till-2", code=UNKNOWN_CODE),
        scan("berlin", utc("2025-10-26 01:35")),  # 02:35 CET: the next customer at till 1
        scan("berlin", utc("2025-10-26 04:10")),  # 05:10: a sale while the camera counted nobody
        # A basket across local midnight: it starts at 23:59:30 and belongs to the 26th.
        scan("berlin", utc("2025-10-26 22:59:30")),
        scan("berlin", utc("2025-10-26 22:59:50")),
        scan("berlin", utc("2025-10-26 23:00:20")),
        scan("berlin", utc("2025-10-26 23:05")),  # 00:05 on the 27th, 4:40 later: a new basket; no camera data
    )


async def add_other_stores(feed: Feed) -> None:
    # New York is on EDT (UTC-4) on 26 October; its own local day.
    await feed.send(feed.counts("nyc", utc("2025-10-26 13:00"), 5, 1), feed.scan("nyc", utc("2025-10-26 13:05")))
    # A store without a profile is reported in UTC, and the report says so.
    await feed.send(feed.counts("nowhere", utc("2025-10-26 10:00"), 1, 0))


def hour(store: str, day: str, local_hour: int, visitors: int | None, exits: int | None, cameras: int,
         transactions: int, units: int, conversion: float | None) -> dict[str, Any]:  # fmt: skip
    zones = {"berlin": "Europe/Berlin", "nyc": "America/New_York", "nowhere": "UTC"}
    return {
        "store_id": store,
        "timezone": zones[store],
        "timezone_assumed": store == "nowhere",
        "local_date": day,
        "local_hour": local_hour,
        "visitors": visitors,
        "exits": exits,
        "cameras": cameras,
        "transactions": transactions,
        "units_sold": units,
        "conversion_rate": conversion,
    }


async def report(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/api/v1/reports/footfall", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_visitors_transactions_and_conversion_per_local_hour(feed: Feed, client: httpx.AsyncClient) -> None:
    await add_berlin_fall_back_day(feed)
    await add_other_stores(feed)
    body = await report(client, **{"from": "2025-10-26", "to": "2025-10-27"})
    assert body["items"] == [
        hour("berlin", "2025-10-26", 0, 3, 0, 1, 0, 0, 0.0),
        # Both real 02:xx hours in one wall-clock hour; both cameras add up; three baskets at two tills.
        hour("berlin", "2025-10-26", 2, 10, 3, 2, 3, 3, 0.3),
        hour("berlin", "2025-10-26", 5, 0, 0, 1, 1, 1, None),  # nobody counted: no conversion
        hour("berlin", "2025-10-26", 23, 2, 4, 1, 1, 2, 0.5),  # the basket that crossed midnight is here
        hour("berlin", "2025-10-27", 0, None, None, 0, 1, 2, None),  # no camera data: not zero visitors
        hour("nowhere", "2025-10-26", 10, 1, 0, 1, 0, 0, 0.0),
        hour("nyc", "2025-10-26", 9, 5, 1, 1, 1, 1, 0.2),
    ]
    days = {(d["store_id"], d["local_date"]): d for d in body["day_totals"]}
    assert days[("berlin", "2025-10-26")] | {"timezone": None} == {
        "store_id": "berlin",
        "timezone": None,
        "timezone_assumed": False,
        "local_date": "2025-10-26",
        "hours_with_data": 4,
        "visitors": 15,
        "exits": 7,
        "transactions": 5,
        "transactions_in_counted_hours": 5,
        "units_sold": 6,
        "conversion_rate": 0.3333,
    }
    # A day without camera data has transactions but no visitors and no conversion.
    berlin_27 = days[("berlin", "2025-10-27")]
    assert (berlin_27["hours_with_data"], berlin_27["visitors"], berlin_27["transactions"]) == (0, None, 1)
    assert (berlin_27["transactions_in_counted_hours"], berlin_27["conversion_rate"]) == (0, None)
    assert len(days) == 4
    assert body["notes"] == ["store nowhere has no store profile: its dates and hours are UTC"]
    assert (body["report"], body["days"], body["basket_gap_s"], body["store_id"]) == ("footfall", 2, 60.0, None)


async def test_one_store_and_its_csv(feed: Feed, client: httpx.AsyncClient) -> None:
    await add_berlin_fall_back_day(feed)
    await add_other_stores(feed)
    params = {"from": "2025-10-26", "to": "2025-10-26", "store_id": "nyc"}
    body = await report(client, **params)
    assert body["items"] == [hour("nyc", "2025-10-26", 9, 5, 1, 1, 1, 1, 0.2)]
    assert [d["store_id"] for d in body["day_totals"]] == ["nyc"]

    response = await client.get("/api/v1/reports/footfall", params={"from": "2025-10-26", "to": "2025-10-27"})
    whole = response.json()
    response = await client.get(
        "/api/v1/reports/footfall", params={"from": "2025-10-26", "to": "2025-10-27", "format": "csv"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="footfall_2025-10-26_2025-10-27.csv"'
    rows = list(csv.DictReader(io.StringIO(response.text)))

    def cells(record: str, item: dict[str, Any]) -> dict[str, str]:
        columns = list(rows[0])
        values = {"record": record} | item
        return {c: "" if values.get(c) is None else str(values[c]).lower() if isinstance(values.get(c), bool)
                else str(values[c]) for c in columns}  # fmt: skip

    expected = [cells("hour", item) for item in whole["items"]] + [cells("day", d) for d in whole["day_totals"]]
    assert rows == expected
    assert rows[4]["visitors"] == ""  # no data is an empty cell, not 0
    assert rows[3]["visitors"] == "2"


async def test_a_period_the_other_way_round_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/reports/footfall", params={"from": "2025-10-27", "to": "2025-10-26"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "from"]
    response = await client.get("/api/v1/reports/footfall", params={"from": "2025-10-26", "to": "2025-10-27",
                                                                    "format": "pdf"})  # fmt: skip
    assert response.status_code == 422


async def test_a_basket_begun_before_the_period_is_not_counted_in_it(feed: Feed, client: httpx.AsyncClient) -> None:
    # Only the 27th: the basket that began at 23:59:30 on the 26th and went on past midnight is the 26th's;
    # its scans after midnight start nothing, however closely the report reads around the period.
    await add_berlin_fall_back_day(feed)
    body = await report(client, **{"from": "2025-10-27", "to": "2025-10-27", "store_id": "berlin"})
    assert body["items"] == [hour("berlin", "2025-10-27", 0, None, None, 0, 1, 2, None)]


def test_the_span_read_covers_each_zones_local_days_and_no_more_than_an_hour_beyond() -> None:
    scope = ReportFilter(first_day=date(2025, 10, 26), last_day=date(2025, 10, 26))
    berlin = UtcSpan.of(scope, ["Europe/Berlin"])
    # 00:00 CEST is 22:00 UTC on the 25th; the day has 25 hours, to 23:00 UTC on the 26th.
    assert (berlin.start, berlin.end) == (utc("2025-10-25 21:00"), utc("2025-10-27 00:00"))
    both = UtcSpan.of(scope, ["Europe/Berlin", "America/New_York", "UTC"])
    assert (both.start, both.end) == (utc("2025-10-25 21:00"), utc("2025-10-27 05:00"))
    assert UtcSpan.of(scope, []) == UtcSpan.anywhere(scope)
    assert UtcSpan.anywhere(scope).start == utc("2025-10-25 00:00")


async def test_spring_forward_and_a_half_hour_zone(feed: Feed, client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(StoreProfile), [profile("kolkata", "Asia/Kolkata", "INR")])
    await feed.send(
        # Berlin springs forward at 01:00 UTC on 2025-03-30: 02:00-03:00 local does not exist.
        feed.counts("berlin", utc("2025-03-30 00:30"), 2, 0),  # 01:30 CET
        feed.counts("berlin", utc("2025-03-30 01:30"), 5, 0),  # 03:30 CEST
        # Kolkata is UTC+05:30: a local hour straddles two UTC hours, and one UTC hour two local hours.
        feed.counts("kolkata", utc("2025-03-30 03:40"), 1, 0),  # 09:10
        feed.counts("kolkata", utc("2025-03-30 04:20"), 2, 0),  # 09:50
        feed.counts("kolkata", utc("2025-03-30 04:35"), 4, 0),  # 10:05
    )
    body = await report(client, **{"from": "2025-03-30", "to": "2025-03-30"})
    hours = [(i["store_id"], i["local_hour"], i["visitors"]) for i in body["items"]]
    assert hours == [("berlin", 1, 2), ("berlin", 3, 5), ("kolkata", 9, 3), ("kolkata", 10, 4)]
