"""The overview: the reader's stores, those that need attention first, searched and filtered, with the counts at
the top; on SQLite and PostgreSQL, for each role and scope."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from hub.catalog.models import StoreProfile
from hub.console import overview
from hub.console.i18n import Formats
from hub.console.overview import StoreState, attention_key
from hub.db.models import DataLossRecord, Gateway, Store
from hub.runtime import HubRuntime
from storegate import wire
from tests.hub.conftest import RunningHub, until
from tests.hub.console.conftest import add_operator, browser
from tests.hub.console.test_alerts import Shop, add_stores, any_hub, raise_alert, store_rows

__all__ = ["any_hub"]  # the fixture, shared with the alert list's tests

SHOPS = (
    Shop("a-quiet", name="Quiet corner", region="north"),
    Shop("b-offline", name="Harbour", region="south", gateways=(True, False)),
    Shop("c-critical", name="台北信義", region="north", timezone="Asia/Taipei"),
    Shop("d-silent", name="Hill", region="south", silent=True),
    Shop("e-warning", name="Market", region="north"),
    Shop("f-lost", name="Station", region="south"),
    Shop("g-backlog", name="Airport", region="north", backlog=5_000),
    Shop("h-fine", name="<b>Bold</b> & co", region="south"),
)


async def chain(hub: RunningHub) -> None:
    """Eight stores, one for each reason to look (and two with none), in shuffled ids."""
    await add_stores(hub, *SHOPS)
    await raise_alert(hub, "c-critical", severity="critical")
    await raise_alert(hub, "c-critical", severity="critical", subject="freezer-2")
    await raise_alert(hub, "e-warning", severity="warning", rule_id="chillers")
    async with hub.runtime.sessions() as session, session.begin():
        await session.execute(
            insert(DataLossRecord).values(
                store_id="f-lost",
                gateway_id="gw-1",
                stream="0" * 36,
                first_seq=1,
                last_seq=40,
                count=40,
                reason="evicted",
                detail="outbox full",
                by_kind={"environment.reading": 40},
                event_id="1" * 36,
                reported_at=wire.utc_now(),
                recorded_at=wire.utc_now(),
            )
        )


async def test_stores_that_need_attention_come_first_worst_first(any_hub: RunningHub) -> None:
    hub = any_hub
    await chain(hub)
    before = wire.utc_now()
    response = await hub.client.get("/")
    after = wire.utc_now()
    assert response.status_code == 200
    page = response.text
    assert store_rows(page) == [
        "b-offline",
        "c-critical",
        "d-silent",
        "e-warning",
        "f-lost",
        "g-backlog",
        "a-quiet",
        "h-fine",
    ]
    counts = dict(re.findall(r'data-count="(\w+)"><span class="value">([^<]*)<', page))
    assert counts == {"stores": "8", "attention": "6", "offline": "1", "critical": "2", "warning": "1"}
    row = page.split('data-store-id="c-critical"', 1)[1].split("</tr>", 1)[0]
    assert '<a href="/stores/c-critical">台北信義</a>' in row
    assert ">2 critical</a>" in row
    # The store's own wall clock (Taipei, UTC+8), read between the request's start and end.
    assert any(Formats("en").time(moment, "Asia/Taipei") + " " in row for moment in (before, after))
    offline = page.split('data-store-id="b-offline"', 1)[1].split("</tr>", 1)[0]
    assert "1 / 2</td>" in offline
    assert "Gateway offline" in offline
    assert "&lt;b&gt;Bold&lt;/b&gt; &amp; co" in page
    assert "<b>Bold</b>" not in page
    # The DOM the browser tests use.
    assert '<section id="counts"' in page
    assert '<form id="store-filters"' in page
    assert 'sse-connect="/console/live?view=overview"' in page
    assert "data-sound-toggle" in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("q=harb", ["b-offline"]),  # the name, any case
        ("q=G-BACK", ["g-backlog"]),  # the id
        ("q=信義", ["c-critical"]),
        ("region=north", ["c-critical", "e-warning", "g-backlog", "a-quiet"]),
        ("state=offline", ["b-offline", "d-silent"]),
        ("state=alerts", ["c-critical", "e-warning"]),
        ("state=ok", ["a-quiet", "h-fine"]),
        ("region=south&state=attention", ["b-offline", "d-silent", "f-lost"]),
        ("q=nothing-like-it", []),
    ],
)
async def test_search_and_filters_narrow_the_list(hub: RunningHub, query: str, expected: list[str]) -> None:
    await chain(hub)
    page = (await hub.client.get(f"/?{query}")).text
    assert store_rows(page) == expected
    # The counts are of every store the reader reaches, whatever the filters.
    assert 'data-count="stores"><span class="value">8<' in page


async def test_bad_filters_are_refused_in_words(hub: RunningHub) -> None:
    for query in ("state=burning", "q=" + "x" * 101, "page=0"):
        response = await hub.client.get(f"/?{query}")
        assert response.status_code == 422, query


async def test_a_scoped_operator_sees_only_its_stores_and_their_counts(any_hub: RunningHub) -> None:
    hub = any_hub
    await chain(hub)
    await add_operator(hub, "nora", "viewer", regions=("north",))
    await add_operator(hub, "sam", "ops", store_ids=("b-offline",))
    async with browser(hub, "nora") as nora:
        page = (await nora.get("/")).text
        assert store_rows(page) == ["c-critical", "e-warning", "g-backlog", "a-quiet"]
        assert 'data-count="offline"><span class="value">0<' in page
        assert "Harbour" not in page
        # A region outside the scope shows nothing of it.
        assert store_rows((await nora.get("/?region=south")).text) == []
    async with browser(hub, "sam") as sam:
        page = (await sam.get("/")).text
        assert store_rows(page) == ["b-offline"]
        assert 'data-count="critical"><span class="value">0<' in page


@pytest.mark.parametrize("role", ["viewer", "technician", "ops", "admin"])
async def test_every_role_reads_the_overview_and_nobody_anonymous(hub: RunningHub, role: str) -> None:
    await add_stores(hub, Shop("store-0001"))
    async with await hub.client_as(role) as client:
        assert store_rows((await client.get("/")).text) == ["store-0001"]
    async with hub.anonymous() as anonymous:
        response = await anonymous.get("/", headers={"accept": "text/html"})
        assert response.status_code in (303, 307, 401)
        assert "store-0001" not in response.text


async def test_stores_are_paged_worst_first(hub: RunningHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overview, "PAGE_SIZE", 2)
    await add_stores(hub, *(Shop(f"s-{n}") for n in range(4)), Shop("z-down", gateways=(False,)))
    first = (await hub.client.get("/")).text
    assert store_rows(first) == ["z-down", "s-0"]
    assert 'href="/?page=2"' in first
    assert "5 stores shown" in first  # the count is of every store that passes the filters, not of the page
    assert store_rows((await hub.client.get("/?page=2")).text) == ["s-1", "s-2"]
    last = (await hub.client.get("/?page=3")).text
    assert store_rows(last) == ["s-3"]
    assert "page=4" not in last


async def test_the_overview_speaks_chinese(hub: RunningHub) -> None:
    await chain(hub)
    await add_operator(hub, "mei", "ops")
    async with browser(hub, "mei") as mei:
        await mei.post("/console/language", data={"language": "zh_Hant"})
        page = (await mei.get("/")).text
        assert "閘道器離線" in page
        assert "需要處理" in page
        assert "顯示 8 間店舖" in page
        await mei.post("/console/language", data={"language": "zh_Hans"})
        assert "网关离线" in (await mei.get("/")).text


def test_the_order_is_offline_then_critical_then_silent_then_warnings_losses_and_backlog() -> None:
    def state(store_id: str, **values: int) -> StoreState:
        return StoreState(store_id=store_id, name=None, region=None, time_zone="UTC", **values)

    stores = [
        state("fine"),
        state("backlog", backlog=overview.BACKLOG_EVENTS),
        state("lost", lost=1),
        state("warning", warning=3),
        state("silent", silent=1),
        state("critical", critical=1),
        state("offline-2", offline=2),
        state("offline-1", offline=1, critical=5),
    ]
    ordered = [s.store_id for s in sorted(stores, key=attention_key)]
    assert ordered == ["offline-2", "offline-1", "critical", "silent", "warning", "lost", "backlog", "fine"]
    assert state("old", backlog=1, backlog_age_s=int(overview.BACKLOG_AGE_S)).reasons == ("backlog",)
    assert not state("fine").needs_attention


async def test_an_old_loss_no_longer_needs_attention(hub: RunningHub) -> None:
    await add_stores(hub, Shop("store-0001"))
    async with hub.runtime.sessions() as session, session.begin():
        await session.execute(
            insert(DataLossRecord).values(
                store_id="store-0001",
                gateway_id="gw-1",
                stream="0" * 36,
                first_seq=1,
                last_seq=2,
                count=2,
                reason="evicted",
                detail="outbox full",
                by_kind={},
                event_id="2" * 36,
                reported_at=wire.utc_now() - overview.LOSS_WINDOW - timedelta(minutes=1),
                recorded_at=wire.utc_now() - overview.LOSS_WINDOW - timedelta(minutes=1),
            )
        )
    page = (await hub.client.get("/")).text
    assert 'data-count="attention"><span class="value">0<' in page


async def test_the_first_load_with_a_thousand_stores_stays_under_200_kb_over_the_wire(hub: RunningHub) -> None:
    now = wire.utc_now()
    stores = [f"store-{n:04d}" for n in range(1_000)]
    async with hub.runtime.sessions() as session, session.begin():
        await session.execute(insert(Store), [{"store_id": s, "first_seen": now, "event_count": 0} for s in stores])
        await session.execute(
            insert(StoreProfile),
            [
                {
                    "store_id": s,
                    "name": f"店舖 {s} long name street",
                    "timezone": "Asia/Taipei",
                    "currency": "TWD",
                    "opening_hours": {},
                    "region": f"region-{n % 12}",
                    "updated_at": now,
                }
                for n, s in enumerate(stores)
            ],
        )
        await session.execute(
            insert(Gateway),
            [
                {
                    "store_id": s,
                    "gateway_id": "gw-1",
                    "online": n % 40 != 0,  # 25 stores offline
                    "last_seen_at": now,
                    "devices": [],
                    "enrolled_at": now,
                    "enrolled_by": "tests",
                    "enrolment": "operator",
                }
                for n, s in enumerate(stores)
            ],
        )
    for n in range(30):
        await raise_alert(hub, stores[n * 7], severity="critical" if n % 2 else "warning")
    gzip = {"accept-encoding": "gzip"}
    page = await hub.client.get("/", headers=gzip)
    assert page.headers["content-encoding"] == "gzip"
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    sizes = [int(page.headers["content-length"])]
    for url in assets:
        asset = await hub.client.get(url.replace("&amp;", "&"), headers=gzip)
        assert asset.status_code == 200, url
        sizes.append(int(asset.headers["content-length"]))
    assert len(store_rows(page.text)) == overview.PAGE_SIZE
    assert sum(sizes) < 200_000, sizes


async def test_readers_arriving_together_share_one_check_of_the_hubs_health(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = 0
    check = overview.hub_problems

    async def counted(runtime: HubRuntime) -> list[str]:
        nonlocal checks
        checks += 1
        return await check(runtime)

    monkeypatch.setattr(overview, "hub_problems", counted)
    # Each page used to open a second database connection for the check beside its session's: fifty at once emptied
    # the pool and waited seconds for it.
    pages = await asyncio.gather(*(hub.client.get("/") for _ in range(30)))
    assert {p.status_code for p in pages} == {200}
    assert checks == 1


async def test_readers_arriving_together_share_one_reading_of_the_states(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add_stores(hub, Shop("store-0001"), Shop("store-0002", gateways=(False,)))
    readings: list[object] = []
    read = overview.store_states

    async def counted(*args: Any, **kwargs: Any) -> dict[str, StoreState]:
        readings.append(kwargs.get("store_ids"))
        return await read(*args, **kwargs)

    monkeypatch.setattr(overview, "store_states", counted)
    pages = await asyncio.gather(*(hub.client.get("/") for _ in range(20)))
    assert {p.status_code for p in pages} == {200}
    assert readings == [None]  # every store once, each page then filtered to its reader's scope
    assert {tuple(store_rows(p.text)) for p in pages} == {("store-0002", "store-0001")}
    # Older than allowed: the page has them at once, and they are read again in the background.
    shared = hub.app.state.live.shared_states
    shared.max_age_s = 0.0
    assert (await hub.client.get("/")).status_code == 200
    await until(lambda: readings == [None, None], timeout=5, what="the states read again")
    # Older than that too: the page waits for the new reading.
    shared.stale_for_s = 0.0
    await hub.client.get("/")
    assert readings == [None, None, None]
