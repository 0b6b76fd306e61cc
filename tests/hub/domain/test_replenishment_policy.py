"""Days of cover, predicted stock-out, min/max reorder and transfers, with hand-computed values; one test on
real retail sales."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_drivers.simulated.climate import shared_data_dir
from hub.domain.forecast import DemandModel, fit, forecast, update
from hub.domain.replenishment_policy import (
    ReorderPolicy,
    StoreStock,
    TransferPolicy,
    days_of_cover,
    predicted_stockout,
    reorder_suggestion,
    transfer_suggestions,
)
from hub.domain.store_hours import OpeningInterval, StoreHours

BERLIN = ZoneInfo("Europe/Berlin")
LONDON = ZoneInfo("Europe/London")
FRIDAY = date(2026, 11, 27)
MONDAY = date(2026, 11, 2)
RETAIL_FILE = Path("retail") / "onlineretail_2010-12-01_to_02.csv"


def flat(level: float) -> DemandModel:
    """A model selling ``level`` every day (two days of history: no seasonality)."""
    model = fit([(MONDAY, Decimal(str(level))), (MONDAY + timedelta(days=1), Decimal(str(level)))])
    assert model is not None
    return model


def weekly(pattern: tuple[int, ...]) -> DemandModel:
    """A seasonal model from two weeks of a Monday-first weekly pattern."""
    model = fit([(MONDAY + timedelta(days=offset), pattern[offset % 7]) for offset in range(14)])
    assert model is not None
    return model


def hours_every(days: tuple[str, ...], opens: time, closes: time, zone: str = "Europe/Berlin") -> StoreHours:
    """Opening hours: the same interval on each of ``days``, closed on the others."""
    interval = OpeningInterval(opens=opens, closes=closes)
    return StoreHours.model_validate({"timezone": zone, "weekly": {weekday: [interval] for weekday in days}})


MON_SAT_8_TO_20 = hours_every(("mon", "tue", "wed", "thu", "fri", "sat"), time(8), time(20))
# 10 a day Monday to Friday, 20 on Saturday, nothing on Sunday.
SHOP_WEEK = weekly((10, 10, 10, 10, 10, 20, 0))


@pytest.mark.parametrize(
    ("on_hand", "model", "expected"),
    [
        pytest.param(0, flat(10), 0.0, id="nothing-on-hand"),
        pytest.param(-4, flat(10), 0.0, id="negative-on-hand"),
        pytest.param(25, flat(10), 2.5, id="part-of-a-day"),
        pytest.param(70, flat(10), 7.0, id="exactly-a-week"),
        pytest.param(1000, flat(10), 100.0, id="many-weeks"),
        pytest.param(30, SHOP_WEEK, 2.0, id="friday-and-the-double-saturday"),
        pytest.param(35, SHOP_WEEK, 3.5, id="sunday-sells-nothing-then-half-monday"),
        pytest.param(105, SHOP_WEEK, 10.5, id="a-week-plus-three-and-a-half-days"),
        pytest.param(5, weekly((0,) * 7), math.inf, id="no-demand-lasts-forever"),
    ],
)
def test_days_of_cover(on_hand: int, model: DemandModel, expected: float) -> None:
    assert days_of_cover(on_hand, model, FRIDAY) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("on_hand", "model", "now", "hours", "expected"),
    [
        pytest.param(
            25, flat(10), datetime(2026, 11, 27, 12, tzinfo=BERLIN), None,
            datetime(2026, 11, 30, 0, tzinfo=BERLIN),
            id="uniform-5-left-friday-10-saturday-10-sunday",
        ),
        pytest.param(
            3, flat(10), datetime(2026, 11, 27, 12, tzinfo=BERLIN), None,
            datetime(2026, 11, 27, 19, 12, tzinfo=BERLIN),
            id="uniform-3-of-the-5-left-today",
        ),
        pytest.param(
            25, flat(10), datetime(2026, 11, 27, 12, tzinfo=BERLIN), MON_SAT_8_TO_20,
            datetime(2026, 11, 30, 18, tzinfo=BERLIN),
            id="hours-two-thirds-of-friday-saturday-closed-sunday-then-monday",
        ),
        pytest.param(
            5, flat(10), datetime(2026, 11, 27, 6, tzinfo=BERLIN), MON_SAT_8_TO_20,
            datetime(2026, 11, 27, 14, tzinfo=BERLIN),
            id="hours-before-opening-half-the-day",
        ),
        pytest.param(
            5, flat(10), datetime(2026, 11, 27, 21, tzinfo=BERLIN), MON_SAT_8_TO_20,
            datetime(2026, 11, 28, 14, tzinfo=BERLIN),
            id="hours-after-closing-waits-for-saturday",
        ),
        pytest.param(
            15, flat(10), datetime(2026, 3, 28, 0, tzinfo=BERLIN), None,
            # Sunday 29 March has 23 hours; half of its demand sells in 11.5 real hours: 10:30 UTC.
            datetime(2026, 3, 29, 12, 30, tzinfo=BERLIN),
            id="uniform-over-the-real-hours-of-a-dst-day",
        ),
        pytest.param(
            0, flat(10), datetime(2026, 11, 27, 12, tzinfo=BERLIN), None,
            datetime(2026, 11, 27, 12, tzinfo=BERLIN),
            id="out-of-stock-already",
        ),
        pytest.param(
            5, weekly((0,) * 7), datetime(2026, 11, 27, 12, tzinfo=BERLIN), None, None,
            id="no-demand-never",
        ),
        pytest.param(
            10_000, flat(10), datetime(2026, 11, 27, 12, tzinfo=BERLIN), None, None,
            id="beyond-the-horizon",
        ),
    ],
)  # fmt: skip
def test_predicted_stockout(
    on_hand: int, model: DemandModel, now: datetime, hours: StoreHours | None, expected: datetime | None
) -> None:
    predicted = predicted_stockout(on_hand, model, now, hours=hours)
    assert predicted == expected
    if predicted is not None:
        assert predicted.tzinfo is now.tzinfo


def test_predicted_stockout_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        predicted_stockout(5, flat(10), datetime(2026, 11, 27, 12))


@pytest.mark.parametrize(
    ("on_hand", "on_order", "policy", "model", "quantity", "reorder_point", "reason"),
    [
        pytest.param(21, 0, ReorderPolicy(max_stock=100, pack_size=12, reorder_point=20), None, None, None, None,
                     id="above-the-fixed-point"),
        pytest.param(20, 0, ReorderPolicy(max_stock=100, pack_size=12, reorder_point=20), None, 72, 20,
                     "6 pack(s) of 12 = 72 bring it to 92", id="at-the-point-whole-packs-under-max"),
        pytest.param(10, 15, ReorderPolicy(max_stock=100, reorder_point=20), None, None, None, None,
                     id="on-order-counts"),
        pytest.param(-3, 0, ReorderPolicy(max_stock=50, pack_size=10, reorder_point=10), None, 50, 10,
                     "53 needed, 5 pack(s)", id="negative-on-hand-after-drift"),
        pytest.param(35, 0, ReorderPolicy(max_stock=100, lead_time_days=3, safety_stock=5), flat(10), 65, 35,
                     "3-day lead time (30.0) + safety stock 5", id="lead-time-demand-plus-safety"),
        pytest.param(36, 0, ReorderPolicy(max_stock=100, lead_time_days=3, safety_stock=5), flat(10), None, None,
                     None, id="above-the-forecast-point"),
        pytest.param(26, 0, ReorderPolicy(max_stock=100, lead_time_days=2, safety_stock=0), SHOP_WEEK, 74, 30,
                     "(30.0)", id="lead-time-over-friday-and-saturday"),
        pytest.param(5, 0, ReorderPolicy(max_stock=40, lead_time_days=3, safety_stock=5), None, 35, 5,
                     "no sales history", id="no-history-safety-stock-only"),
        pytest.param(35, 0, ReorderPolicy(max_stock=40, pack_size=12, lead_time_days=3, safety_stock=5), flat(10),
                     0, 35, "less than one pack of 12", id="not-one-pack-fits-says-so"),
    ],
)  # fmt: skip
def test_reorder_suggestion(
    on_hand: int,
    on_order: int,
    policy: ReorderPolicy,
    model: DemandModel | None,
    quantity: int | None,
    reorder_point: int | None,
    reason: str | None,
) -> None:
    suggestion = reorder_suggestion(on_hand=on_hand, on_order=on_order, policy=policy, model=model, today=FRIDAY)
    if quantity is None:
        assert suggestion is None
        return
    assert suggestion is not None
    assert suggestion.quantity == quantity
    assert suggestion.packs * policy.pack_size == quantity
    assert suggestion.reorder_point == reorder_point
    assert suggestion.inventory_position == on_hand + on_order
    assert reason is not None
    assert any(reason in line for line in suggestion.reasons), suggestion.reasons
    assert (suggestion.days_of_cover is None) == (model is None)


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"max_stock": 10, "pack_size": 0}, id="pack-zero"),
        pytest.param({"max_stock": 10, "reorder_point": 10}, id="point-not-below-max"),
        pytest.param({"max_stock": 10, "lead_time_days": -1}, id="negative-lead-time"),
    ],
)
def test_a_policy_that_cannot_work_is_refused(arguments: Mapping[str, int]) -> None:
    with pytest.raises(ValueError, match="must"):
        ReorderPolicy(**arguments)


def store(store_id: str, on_hand: int, *, rate: float | None = 1.0, reorder_point: int = 10) -> StoreStock:
    """A store selling ``rate`` a day (None: never sold), max stock 40."""
    model = None if rate is None else flat(rate)
    return StoreStock(store_id=store_id, on_hand=on_hand, reorder_point=reorder_point, max_stock=40, model=model)


TRANSFERS = TransferPolicy(overstock_days=30, max_distance_km=50, pack_size=6)


@pytest.mark.parametrize(
    ("stores", "distances", "expected"),
    [
        pytest.param([store("A", 100), store("B", 5)], {("A", "B"): 10}, [("A", "B", 30)],
                     id="receiver-filled-to-max-in-whole-packs"),
        pytest.param([store("A", 100), store("B", 5)], {("B", "A"): 10}, [("A", "B", 30)],
                     id="distance-either-way-round"),
        pytest.param([store("A", 100), store("B", 5)], {("A", "B"): 80}, [], id="too-far"),
        pytest.param([store("A", 100), store("B", 5)], {}, [], id="unknown-distance-is-not-near"),
        pytest.param([store("A", 20), store("B", 5)], {("A", "B"): 80}, [], id="not-overstocked"),
        pytest.param([store("A", 20, rate=0.5), store("B", 5)], {("A", "B"): 10}, [("A", "B", 6)],
                     id="donor-keeps-above-its-reorder-point"),
        pytest.param([store("A", 16, rate=0.1), store("B", 5)], {("A", "B"): 10}, [],
                     id="a-pack-would-leave-the-donor-at-its-reorder-point"),
        pytest.param([store("A", 20, rate=None), store("B", 5)], {("A", "B"): 10}, [("A", "B", 6)],
                     id="never-sold-counts-as-overstocked"),
        pytest.param([store("A", 29, rate=0.1), store("C", 5), store("B", 2)], {("A", "B"): 10, ("A", "C"): 10},
                     [("A", "B", 18)], id="most-urgent-receiver-first"),
        pytest.param([store("A", 100), store("D", 100), store("B", 5)], {("A", "B"): 30, ("D", "B"): 10},
                     [("D", "B", 30)], id="nearest-donor-first"),
        pytest.param([store("A", 17, rate=0.1), store("D", 17, rate=0.1), store("B", 5)],
                     {("A", "B"): 10, ("D", "B"): 10}, [("A", "B", 6), ("D", "B", 6)],
                     id="ties-by-store-id-and-several-donors"),
        pytest.param([store("A", 100), store("B", 11)], {("A", "B"): 10}, [], id="receiver-above-its-point"),
    ],
)  # fmt: skip
def test_transfer_suggestions(
    stores: list[StoreStock], distances: Mapping[tuple[str, str], float], expected: list[tuple[str, str, int]]
) -> None:
    suggestions = transfer_suggestions(stores, distances_km=distances, policy=TRANSFERS, today=FRIDAY)
    assert [(s.from_store, s.to_store, s.quantity) for s in suggestions] == expected
    for suggestion in suggestions:
        assert suggestion.packs * TRANSFERS.pack_size == suggestion.quantity
        assert len(suggestion.reasons) == 4


# Properties.

histories = st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=40)
moments = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(BERLIN))


def model_of(history: list[int]) -> DemandModel:
    """A model fitted to consecutive days from the first Monday."""
    model = fit([(MONDAY + timedelta(days=offset), quantity) for offset, quantity in enumerate(history)])
    assert model is not None
    return model


@given(
    history=histories,
    now=moments,
    stock=st.integers(min_value=0, max_value=3000),
    extra=st.integers(min_value=0, max_value=3000),
    with_hours=st.booleans(),
)
def test_more_stock_never_means_an_earlier_stockout(
    history: list[int], now: datetime, stock: int, extra: int, with_hours: bool
) -> None:
    model = model_of(history)
    hours = MON_SAT_8_TO_20 if with_hours else None
    less = predicted_stockout(stock, model, now, hours=hours)
    more = predicted_stockout(stock + extra, model, now, hours=hours)
    assert less is not None or more is None  # None (not within the horizon) is the latest of all
    if less is not None and more is not None:
        assert less <= more
    if less is not None:
        assert less >= now


@given(
    history=histories,
    on_hand=st.integers(min_value=-20, max_value=300),
    on_order=st.integers(min_value=0, max_value=100),
    max_stock=st.integers(min_value=1, max_value=400),
    pack_size=st.integers(min_value=1, max_value=48),
    lead_time_days=st.integers(min_value=0, max_value=21),
    safety_stock=st.integers(min_value=0, max_value=50),
)
def test_suggestions_are_whole_packs_that_fill_up_to_but_never_past_max(
    history: list[int],
    on_hand: int,
    on_order: int,
    max_stock: int,
    pack_size: int,
    lead_time_days: int,
    safety_stock: int,
) -> None:
    policy = ReorderPolicy(
        max_stock=max_stock, pack_size=pack_size, lead_time_days=lead_time_days, safety_stock=safety_stock
    )
    suggestion = reorder_suggestion(
        on_hand=on_hand, on_order=on_order, policy=policy, model=model_of(history), today=FRIDAY
    )
    position = on_hand + on_order
    if suggestion is None:
        assert position > sum(forecast(model_of(history), FRIDAY, lead_time_days)) + safety_stock - 1e-6
        return
    assert suggestion.quantity % pack_size == 0
    assert suggestion.quantity >= 0
    assert position + suggestion.quantity <= max(max_stock, position)
    # As close to max as whole packs allow: one more pack would pass it.
    assert position + suggestion.quantity + pack_size > max_stock


@st.composite
def chains(draw: st.DrawFn) -> tuple[list[StoreStock], dict[tuple[str, str], float]]:
    """A few stores of one SKU, some well stocked and some short, with a distance for most pairs."""
    ids = draw(st.lists(st.sampled_from("ABCDEF"), min_size=2, max_size=6, unique=True))
    stores = []
    for store_id in ids:
        reorder_point = draw(st.integers(min_value=0, max_value=30))
        stores.append(
            StoreStock(
                store_id=store_id,
                on_hand=draw(st.integers(min_value=-5, max_value=300)),
                reorder_point=reorder_point,
                max_stock=draw(st.integers(min_value=reorder_point, max_value=200)),
                model=draw(st.one_of(st.none(), st.floats(min_value=0, max_value=5).map(flat))),
                on_order=draw(st.integers(min_value=0, max_value=10)),
            )
        )
    pairs = [(a, b) for a in ids for b in ids if a < b]
    distances = {pair: draw(st.floats(min_value=0, max_value=60)) for pair in pairs if draw(st.booleans())}
    return stores, distances


@given(chain=chains(), pack_size=st.integers(min_value=1, max_value=12))
def test_transfers_never_push_a_donor_to_its_reorder_point_nor_a_receiver_past_max(
    chain: tuple[list[StoreStock], dict[tuple[str, str], float]], pack_size: int
) -> None:
    stores, distances = chain
    policy = TransferPolicy(overstock_days=20, max_distance_km=40, pack_size=pack_size)
    suggestions = transfer_suggestions(stores, distances_km=distances, policy=policy, today=FRIDAY)
    by_id = {stock.store_id: stock for stock in stores}
    after = {stock.store_id: stock.on_hand for stock in stores}
    for suggestion in suggestions:
        assert suggestion.quantity > 0
        assert suggestion.quantity % pack_size == 0
        assert suggestion.distance_km <= policy.max_distance_km
        after[suggestion.from_store] -= suggestion.quantity
        after[suggestion.to_store] += suggestion.quantity
    for store_id, stock in by_id.items():
        if any(s.from_store == store_id for s in suggestions):
            assert after[store_id] > stock.reorder_point
        if any(s.to_store == store_id for s in suggestions):
            assert after[store_id] + stock.on_order <= stock.max_stock
    shuffled = transfer_suggestions(list(reversed(stores)), distances_km=distances, policy=policy, today=FRIDAY)
    assert suggestions == shuffled  # the order of the input does not matter


# The real data.


def daily_sales_of(stock_code: str) -> list[tuple[date, Decimal]]:
    """(day, quantity) of every invoice line of a StockCode in the shared retail file, cancellations included."""
    folder = shared_data_dir()
    path = None if folder is None else folder / RETAIL_FILE
    if path is None or not path.is_file():
        pytest.fail(
            f"shared data file {RETAIL_FILE} is missing: set STOREGATE_SHARED_DATA or restore /work/shared/data"
        )
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            # InvoiceDate is the UK wall clock; in December that is GMT, so its date is the local day.
            (datetime.fromisoformat(row["InvoiceDate"]).date(), Decimal(row["Quantity"]))
            for row in csv.DictReader(handle)
            if row["StockCode"] == stock_code
        ]


def test_real_sales_of_the_most_frequently_sold_item() -> None:
    """22632 (hand warmer, red polka dot) is on more invoice lines than any other StockCode in the two days.

    What two days (Wednesday 1 and Thursday 2 December 2010) can show: the mean daily rate, the net of a
    cancellation, and the cover and stock-out that follow from it. What they cannot: any weekday pattern
    (that needs two weeks), a trend, or whether the forecast is accurate: the one-day-ahead forecast
    from the first day (233) misses the second (169) by 38%, and two points cannot tell noise from a
    change in level. The seller is an online wholesaler: lines of mostly 6 or 12, and one of 96 on the first day.
    """
    lines = daily_sales_of("22632")
    assert len(lines) == 40
    first_day, second_day = date(2010, 12, 1), date(2010, 12, 2)
    # 234 sold and 1 cancelled (invoice C536543) on the first day, 169 sold on the second.
    assert sum(quantity for day, quantity in lines if day == first_day) == 233
    assert sum(quantity for day, quantity in lines if day == second_day) == 169

    model = fit(lines)
    assert model is not None
    assert model.level == pytest.approx(201.0)  # (233 + 169) / 2
    assert not model.is_seasonal
    assert forecast(model, date(2010, 12, 3), 7) == pytest.approx([201.0] * 7)
    one_day = fit([line for line in lines if line[0] == first_day])
    assert one_day is not None
    assert update(one_day, second_day, 169) == model
    assert forecast(one_day, second_day, 1) == pytest.approx([233.0])

    # 500 units from Friday morning: Friday and Saturday sell 402, Sunday's 201 runs out after 98 of them.
    assert days_of_cover(500, model, date(2010, 12, 3)) == pytest.approx(2 + 98 / 201)
    # The invoices run from 07:48 to 19:59, so say it trades 07:30 to 20:00 every day.
    every_day = hours_every(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), time(7, 30), time(20), "Europe/London")
    stockout = predicted_stockout(500, model, datetime(2010, 12, 3, 7, tzinfo=LONDON), hours=every_day)
    assert stockout == datetime(2010, 12, 5, 7, 30, tzinfo=LONDON) + timedelta(hours=12.5 * 98 / 201)

    policy = ReorderPolicy(max_stock=1500, pack_size=12, lead_time_days=3, safety_stock=100)
    suggestion = reorder_suggestion(on_hand=500, policy=policy, model=model, today=date(2010, 12, 3))
    assert suggestion is not None
    assert suggestion.reorder_point == 3 * 201 + 100
    assert suggestion.quantity == 996  # 1000 wanted: 83 packs of 12
