"""The ledger's rules: events become movements, movements add up to on hand and shelf levels, shrink."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.domain.ledger import (
    EventView,
    Movement,
    MovementKind,
    ShrinkTracker,
    StockPosition,
    Unmatched,
    apply,
    apply_all,
    apply_late,
    movements_of,
    on_hand,
    on_shelf,
)

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
CATALOG = {"05449000039231": "COLA-33", "85123A": "85123A"}
PLANOGRAM = {("s1", "shelf-a1", 1): "COLA-33", ("s1", "shelf-a1", 2): "85123A"}


def event(kind: str, n: int = 0, **payload: Any) -> EventView:
    return EventView(
        event_id=f"e{n}",
        store_id="s1",
        device_id="shelf-a1" if kind.startswith("shelf") else "till-1",
        kind=kind,
        ts=T0 + timedelta(seconds=n),
        payload=payload,
    )


def moved(view: EventView) -> list[Movement] | Unmatched:
    return movements_of(view, sku_of_code=CATALOG.get, sku_of_slot=lambda s, d, n: PLANOGRAM.get((s, d, n)))


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (event("scan.sale", gtin="05449000039231", code="5449000039231"), ("COLA-33", MovementKind.SALE, -1)),
        (event("scan.sale", code="85123A", quantity=3), ("85123A", MovementKind.SALE, -3)),
        (event("scan.receiving", gtin="05449000039231", quantity=24), ("COLA-33", MovementKind.RECEIPT, 24)),
        (event("scan.count", code="85123A", quantity=7), ("85123A", MovementKind.COUNT, 7)),
        (event("shelf.pick", slot=1, delta=-2, count=10), ("COLA-33", MovementKind.SHELF_PICK, -2)),
        (event("shelf.put", slot=2, delta=4, count=12), ("85123A", MovementKind.SHELF_PUT, 4)),
    ],
)
def test_each_stock_event_is_one_movement(view: EventView, expected: tuple[str, MovementKind, int]) -> None:
    result = moved(view)
    assert isinstance(result, list)
    (movement,) = result
    assert (movement.sku, movement.kind, movement.quantity) == expected
    assert (movement.event_id, movement.line, movement.store_id) == ("e0", 0, "s1")


@pytest.mark.parametrize(
    ("view", "reason"),
    [
        (event("scan.sale", code="0000000000000"), "not in the catalog"),
        (event("scan.sale"), "without a code"),
        (event("scan.sale", code="85123A", quantity=0), "positive whole number"),
        (event("shelf.pick", slot=9, delta=-1), "holds no SKU"),
        (event("shelf.pick", slot=1, delta=2), "with delta 2"),
        (event("shelf.put", slot=1), "non-zero delta"),
    ],
)
def test_events_that_cannot_be_placed_say_why(view: EventView, reason: str) -> None:
    result = moved(view)
    assert isinstance(result, Unmatched)
    assert reason in result.reason


def test_events_that_move_no_stock_make_no_movements() -> None:
    assert moved(event("environment.reading", value=3.5)) == []
    assert moved(event("door.opened", open=True)) == []


def test_on_hand_counts_and_variance() -> None:
    views = [
        event("scan.receiving", 1, code="85123A", quantity=12),
        event("scan.sale", 2, code="85123A", quantity=3),
        event("shelf.pick", 3, slot=2, delta=-1, count=5),  # in a basket, still in the store
        event("scan.count", 4, code="85123A", quantity=7),  # expected 9: 2 missing
        event("scan.sale", 5, code="85123A"),
    ]
    rows = [m for view in views for m in moved(view)]  # type: ignore[union-attr]
    position = on_hand(rows)[("s1", "85123A")]
    assert position == StockPosition(
        on_hand=6, counted_at=T0 + timedelta(seconds=4), last_variance=-2, variance_total=-2
    )
    assert on_shelf(rows) == {("s1", "shelf-a1", 2): 5}


def test_replaying_events_changes_nothing() -> None:
    views = [event("scan.receiving", 1, code="85123A", quantity=5), event("scan.sale", 2, code="85123A")]
    rows = [m for v in views for m in moved(v)]  # type: ignore[union-attr]
    assert on_hand(rows) == on_hand(rows + rows + list(reversed(rows)))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["scan.sale", "scan.receiving", "scan.count"]), st.integers(1, 50)), max_size=40)
)
def test_on_hand_is_the_last_count_plus_what_moved_since(ops: list[tuple[str, int]]) -> None:
    rows = [m for n, (kind, qty) in enumerate(ops) for m in moved(event(kind, n, code="85123A", quantity=qty))]  # type: ignore[union-attr]
    expected = 0
    for kind, qty in ops:
        expected = qty if kind == "scan.count" else expected + (qty if kind == "scan.receiving" else -qty)
    assert on_hand(rows).get(("s1", "85123A"), StockPosition()).on_hand == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["scan.sale", "scan.receiving", "scan.count", "shelf.pick"]), st.integers(1, 50)),
        min_size=1,
        max_size=30,
    ),
    st.data(),
)
def test_movements_arriving_in_any_order_give_the_stock_of_time_order(
    ops: list[tuple[str, int]], data: st.DataObject
) -> None:
    """What the hub does per key: apply in order, add late deltas, recompute only when order matters."""
    views = [
        event(kind, n, slot=2, delta=-qty, count=50)
        if kind == "shelf.pick"
        else event(kind, n, code="85123A", quantity=qty)
        for n, (kind, qty) in enumerate(ops)
    ]
    rows = [m for v in views for m in _rows(v)]
    arrival = data.draw(st.permutations(rows))
    position, arrived, recomputed = StockPosition(), [], 0
    last_at: datetime | None = None
    for movement in arrival:
        arrived.append(movement)
        if last_at is None or movement.at >= last_at:
            position = apply(position, movement)
        else:
            late = apply_late(position, [movement])
            if late is None:
                recomputed += 1
                late = on_hand(arrived).get(("s1", "85123A"), StockPosition())
            position = late
        last_at = movement.at if last_at is None else max(last_at, movement.at)
    assert position == on_hand(rows).get(("s1", "85123A"), StockPosition())
    if not any(kind == "scan.count" for kind, _ in ops):
        assert recomputed == 0  # without counts the order never matters


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["scan.sale", "scan.receiving", "scan.count"]), st.integers(1, 50)), max_size=20
    ),
    st.integers(-20, 20),
)
def test_applying_a_run_at_once_equals_applying_it_movement_by_movement(ops: list[tuple[str, int]], start: int) -> None:
    rows = [m for n, (kind, qty) in enumerate(ops) for m in _rows(event(kind, n, code="85123A", quantity=qty))]
    position = StockPosition(on_hand=start)
    one_by_one = position
    for movement in rows:
        one_by_one = apply(one_by_one, movement)
    assert apply_all(position, rows) == one_by_one


def _rows(view: EventView) -> list[Movement]:
    result = moved(view)
    assert isinstance(result, list)
    return result


def test_a_late_delta_before_the_last_count_or_a_late_count_needs_the_ledger() -> None:
    receipt = _rows(event("scan.receiving", 1, code="85123A", quantity=10))
    count = _rows(event("scan.count", 2, code="85123A", quantity=8))
    sale = _rows(event("scan.sale", 3, code="85123A"))
    counted = on_hand(receipt + count)[("s1", "85123A")]
    assert apply_late(counted, sale) == StockPosition(7, counted.counted_at, -2, -2)  # after the count: adds
    assert apply_late(counted, receipt) is None  # before the count, which already replaced it
    assert apply_late(on_hand(sale)[("s1", "85123A")], count) is None  # a count depends on what came before


def test_picks_not_sold_within_the_window_become_shrink() -> None:
    tracker = ShrinkTracker(window_s=600)
    for view in [
        event("shelf.pick", 0, slot=1, delta=-3, count=9),
        event("scan.sale", 60, gtin="05449000039231", code="5449000039231"),  # pays for one
        event("shelf.put", 120, slot=1, delta=1, count=10),  # one put back
        event("shelf.pick", 300, slot=2, delta=-1, count=4),
    ]:
        for movement in moved(view):  # type: ignore[union-attr]
            tracker = tracker.observe(movement)
    tracker, early = tracker.expire(T0 + timedelta(seconds=599))
    assert early == []
    tracker, records = tracker.expire(T0 + timedelta(seconds=600))
    assert [(r.sku, r.quantity, r.event_ids) for r in records] == [("COLA-33", 1, ("e0",))]
    tracker, later = tracker.expire(T0 + timedelta(seconds=900))
    assert [(r.sku, r.quantity) for r in later] == [("85123A", 1)]
    assert tracker.waiting == {}


def test_a_refill_long_after_a_pick_does_not_cancel_the_missing_items() -> None:
    tracker = ShrinkTracker(window_s=3600, return_window_s=300)
    for view in [
        event("shelf.pick", 0, slot=1, delta=-3, count=9),
        event("shelf.put", 1200, slot=1, delta=3, count=12),  # staff refilling 20 minutes later
    ]:
        for movement in moved(view):  # type: ignore[union-attr]
            tracker = tracker.observe(movement)
    _, records = tracker.expire(T0 + timedelta(seconds=3600))
    assert [(r.sku, r.quantity) for r in records] == [("COLA-33", 3)]


def test_the_tracker_keeps_only_skus_with_picks_waiting() -> None:
    tracker = ShrinkTracker(window_s=600)
    for view in [
        event("shelf.pick", 0, slot=1, delta=-1, count=9),
        event("scan.sale", 60, gtin="05449000039231", code="5449000039231"),  # pays for it
    ]:
        tracker = tracker.observe_all(moved(view))  # type: ignore[arg-type]
    assert tracker.waiting == {}
