"""The store page shows the store's today (a piece it loads after itself): visitors and conversion by local hour
beside sales, escaped, with hours without camera counts as no data (a running hub on SQLite; events through the
ingest's unit of work)."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from hub.catalog.models import StoreProfile
from hub.ingest.operations import HubOperations
from storegate import wire
from tests.hub.conftest import RunningHub
from tests.hub.footfall.conftest import Feed, profile


def hour_row(html: str, hour: int) -> list[str]:
    """The cells of the today table's row of a local hour, tags stripped."""
    row = re.search(rf'<tr data-hour="{hour}">(.*?)</tr>', html, flags=re.S)
    assert row is not None, f"no row for {hour:02d}:00"
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)]


async def test_the_store_page_shows_todays_visitors_and_conversion_by_hour(hub: RunningHub) -> None:
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
    page = (await hub.client.get("/console/stores/berlin/today")).text  # a piece of the store page
    local = minute.astimezone(ZoneInfo("Europe/Berlin"))
    assert "Today: visitors and sales by hour" in page
    assert "7 visitors · 1 transactions · 0 units sold · conversion 14% (1 hours with camera counts)" in page
    assert hour_row(page, local.hour) == [f"{local.hour:02d}:00", "7", "3", "1", "0", "14%"]

    bare = (await hub.client.get("/console/stores/store-0002/today")).text
    assert "no data visitors · 1 transactions" in bare
    assert hour_row(bare, minute.hour) == [f"{minute.hour:02d}:00", "no data", "no data", "1", "0", "\u2013"]


async def test_a_store_without_anything_today_says_so_and_values_are_escaped(hub: RunningHub) -> None:
    async with hub.runtime.engine.begin() as connection:
        await connection.execute(
            insert(StoreProfile), [{**profile("odd", "Europe/Berlin", "EUR"), "name": "<script>alert(1)</script>"}]
        )
    today = await hub.client.get("/console/stores/odd/today")
    assert "No visitors counted and no sales yet today." in today.text
    assert "Sold today: €0.00, 0 units" in today.text
    page = (await hub.client.get("/stores/odd")).text
    assert 'hx-get="/console/stores/odd/today"' in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
