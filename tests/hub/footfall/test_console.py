"""Each store's today, as the console shows it: visitors and conversion by local hour beside sales, escaped, with
hours without camera counts as no data (a running hub on SQLite; events through the ingest's unit of work)."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from hub.catalog.models import StoreProfile
from hub.domain.footfall import DayFigures
from hub.footfall.console import StoreToday, today_by_store, today_section
from hub.ingest.operations import HubOperations
from storegate import wire
from tests.hub.conftest import RunningHub
from tests.hub.footfall.conftest import Feed, profile


async def test_todays_visitors_and_conversion_by_hour_in_the_stores_zone(hub: RunningHub) -> None:
    engine = hub.runtime.engine
    async with engine.begin() as connection:
        await connection.execute(insert(StoreProfile), [profile("berlin", "Europe/Berlin", "EUR")])
    feed = Feed(engine=engine, operations=HubOperations(engine=engine))
    now = wire.utc_now()
    minute = now.replace(second=0, microsecond=0)
    await feed.send(
        feed.counts("berlin", minute, 7, 3),
        feed.scan("berlin", minute),
        feed.scan("store-0002", minute),  # a store without cameras (nor a profile): UTC
    )
    async with hub.runtime.sessions() as session:
        today = await today_by_store(session, ["berlin", "store-0002"], now=now, basket_gap_s=120.0)
    page = today_section(today["berlin"]) + today_section(today["store-0002"])
    local = minute.astimezone(ZoneInfo("Europe/Berlin"))
    assert f"Today ({local.date().isoformat()}, Europe/Berlin): visitors and conversion by hour" in page
    assert "7 visitors · 1 transactions · 0 units sold · conversion 14.3 % (1 hours with camera counts)" in page
    assert f"<tr><td>{local.hour:02d}:00</td><td>7</td><td>3</td><td>1</td><td>0</td><td>14.3 %</td></tr>" in page
    assert (
        f"<tr><td>{minute.hour:02d}:00</td><td>no data</td><td>no data</td><td>1</td><td>0</td><td>\u2013</td>" in page
    )


def test_a_store_without_anything_today_says_so_and_values_are_escaped() -> None:
    empty = StoreToday(local_date=date(2025, 10, 26), timezone="Europe/Berlin", hours=[], day=None)
    assert "No visitors counted and no sales yet today." in today_section(empty)
    odd = StoreToday(
        local_date=date(2025, 10, 26),
        timezone="<script>alert(1)</script>",
        hours=[],
        day=DayFigures(
            store_id="s", local_date=date(2025, 10, 26), hours_with_data=0, visitors=None, exits=None,
            transactions=2, transactions_in_counted_hours=0, units_sold=2, conversion_rate=None,
        ),
    )  # fmt: skip
    html = today_section(odd)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "no data visitors · 2 transactions" in html
