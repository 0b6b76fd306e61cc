"""The inventory ledger's rules: which movements an event makes, and the stock they add up to.

Every movement of stock is one ledger row tied to the event that caused it (``event_id``
plus a line number), so replaying the same events gives the same rows and the same stock:
the store keeps each (event, line) once. Two quantities are derived from the rows:

- **on hand** per store and SKU: receipts and transfers in add, sales and transfers out
  subtract, manual adjustments add or subtract; a **stock count** replaces the expected
  quantity with the counted one and records the difference as a **variance**;
- **on the shelf** per store, shelf and slot: shelf puts add, shelf picks subtract. A pick
  does not change on hand (the item is still in the store, in a basket) until it is sold.

All of it is pure: events in as plain values, movements and positions out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from storegate.wire import EventKind


class MovementKind(StrEnum):
    """Why stock moved."""

    SALE = "sale"
    RECEIPT = "receipt"
    COUNT = "count"
    SHELF_PICK = "shelf_pick"
    SHELF_PUT = "shelf_put"
    ADJUSTMENT = "adjustment"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"


# Movements that change on hand by their signed quantity (a count sets it instead).
ON_HAND_DELTA: Final[frozenset[MovementKind]] = frozenset(
    {
        MovementKind.SALE,
        MovementKind.RECEIPT,
        MovementKind.ADJUSTMENT,
        MovementKind.TRANSFER_OUT,
        MovementKind.TRANSFER_IN,
    }
)
_SCAN_KINDS: Final[dict[str, MovementKind]] = {
    EventKind.SCAN_SALE: MovementKind.SALE,
    EventKind.SCAN_RECEIVING: MovementKind.RECEIPT,
    EventKind.SCAN_COUNT: MovementKind.COUNT,
}
_SHELF_KINDS: Final[dict[str, MovementKind]] = {
    EventKind.SHELF_PICK: MovementKind.SHELF_PICK,
    EventKind.SHELF_PUT: MovementKind.SHELF_PUT,
}


@dataclass(frozen=True, slots=True)
class EventView:
    """What the ledger needs of a stored event."""

    event_id: str
    store_id: str
    device_id: str
    kind: str
    ts: datetime
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Movement:
    """One ledger row: ``quantity`` is signed (negative leaves), or the counted quantity for a count."""

    event_id: str
    line: int
    store_id: str
    sku: str
    kind: MovementKind
    quantity: int
    at: datetime
    shelf_id: str | None = None
    slot: int | None = None
    level: int | None = None  # shelf movements: the items on the slot after it, as the shelf counted them
    unit_price: Decimal | None = None  # sales: the catalog's unit price when the sale was applied


@dataclass(frozen=True, slots=True)
class Unmatched:
    """An event that should move stock but cannot be placed: named so it is counted, never silently dropped."""

    event_id: str
    reason: str


# code (GTIN-14 or the retailer's own code as scanned) -> SKU id, or None when the catalog lacks it
SkuOfCode = Callable[[str], str | None]
# (store, shelf device id, slot) -> SKU id from the planogram, or None
SkuOfSlot = Callable[[str, str, int], str | None]
# SKU id -> its unit price in the catalog, or None
PriceOf = Callable[[str], Decimal | None]


def _no_price(_sku: str) -> Decimal | None:
    return None


def movements_of(
    event: EventView, *, sku_of_code: SkuOfCode, sku_of_slot: SkuOfSlot, price_of: PriceOf = _no_price
) -> list[Movement] | Unmatched:
    """The movements one event makes (none for kinds that move no stock), or why it cannot be placed.

    A sale carries ``price_of`` its SKU, made with the movement (one object per sale, not a copy to price it).
    """
    scan_kind = _SCAN_KINDS.get(event.kind)
    if scan_kind is not None:
        return _scan(event, scan_kind, sku_of_code, price_of)
    shelf_kind = _SHELF_KINDS.get(event.kind)
    if shelf_kind is not None:
        return _shelf(event, shelf_kind, sku_of_slot)
    return []


def _scan(
    event: EventView, kind: MovementKind, sku_of_code: SkuOfCode, price_of: PriceOf
) -> list[Movement] | Unmatched:
    code = event.payload.get("gtin") or event.payload.get("code")
    if not isinstance(code, str):
        return Unmatched(event.event_id, "scan without a code")
    sku = sku_of_code(code)
    if sku is None:
        return Unmatched(event.event_id, f"code {code!r} is not in the catalog")
    quantity = event.payload.get("quantity", 1)
    if not isinstance(quantity, int) or quantity < 1:
        return Unmatched(event.event_id, f"quantity {quantity!r} is not a positive whole number")
    if kind is MovementKind.SALE:
        return [Movement(event.event_id, 0, event.store_id, sku, kind, -quantity, event.ts, unit_price=price_of(sku))]
    return [Movement(event.event_id, 0, event.store_id, sku, kind, quantity, event.ts)]


def _shelf(event: EventView, kind: MovementKind, sku_of_slot: SkuOfSlot) -> list[Movement] | Unmatched:
    slot, delta = event.payload.get("slot"), event.payload.get("delta")
    if not isinstance(slot, int) or not isinstance(delta, int) or delta == 0:
        return Unmatched(event.event_id, "shelf change without a slot and a non-zero delta")
    if (kind is MovementKind.SHELF_PICK) != (delta < 0):
        return Unmatched(event.event_id, f"{event.kind} with delta {delta}")
    planned = sku_of_slot(event.store_id, event.device_id, slot)
    reported = event.payload.get("sku")
    sku = planned or (reported if isinstance(reported, str) else None)
    if sku is None:
        return Unmatched(event.event_id, f"slot {slot} of {event.device_id} holds no SKU in the planogram")
    count = event.payload.get("count")
    level = count if isinstance(count, int) and count >= 0 else None
    return [Movement(event.event_id, 0, event.store_id, sku, kind, delta, event.ts, event.device_id, slot, level)]


@dataclass(frozen=True, slots=True)
class StockPosition:
    """On hand of one SKU in one store, and what the last count found."""

    on_hand: int = 0
    counted_at: datetime | None = None
    last_variance: int = 0  # counted minus expected at the last count (negative: missing)
    variance_total: int = 0


def apply(position: StockPosition, movement: Movement) -> StockPosition:
    """The position after one movement (shelf movements leave on hand as it is)."""
    if movement.kind is MovementKind.COUNT:
        variance = movement.quantity - position.on_hand
        return StockPosition(
            on_hand=movement.quantity,
            counted_at=movement.at,
            last_variance=variance,
            variance_total=position.variance_total + variance,
        )
    if movement.kind in ON_HAND_DELTA:
        return replace(position, on_hand=position.on_hand + movement.quantity)
    return position


def apply_all(position: StockPosition, movements: Sequence[Movement]) -> StockPosition:
    """The position after ``movements`` in time order: :func:`apply` one by one, deltas alone added at once."""
    if any(movement.kind is MovementKind.COUNT for movement in movements):
        for movement in movements:
            position = apply(position, movement)
        return position
    delta = sum(movement.quantity for movement in movements if movement.kind in ON_HAND_DELTA)
    return replace(position, on_hand=position.on_hand + delta) if delta else position


def apply_late(position: StockPosition, late: Iterable[Movement]) -> StockPosition | None:
    """The position after movements older than some already applied to it, where their order does not matter.

    Deltas add up in any order; only a count depends on what came before it. So late deltas that all
    came after the position's last count simply add to it. None when that is not so (a late count, or a
    late delta at or before the last count, which the count already replaced): then the position must
    be recomputed from the key's whole ledger in time order (:func:`on_hand`).
    """
    movements = list(late)
    counted_at = position.counted_at
    for movement in movements:
        if movement.kind is MovementKind.COUNT:
            return None
        if movement.kind in ON_HAND_DELTA and counted_at is not None and movement.at <= counted_at:
            return None
    return apply_all(position, movements)


def on_hand(movements: Iterable[Movement]) -> dict[tuple[str, str], StockPosition]:
    """Positions per (store, SKU) from ledger rows, applied in time order (then event, then line).

    Rows of the same (event, line) count once, so a replayed event changes nothing.
    """
    positions: dict[tuple[str, str], StockPosition] = {}
    for movement in _unique_in_order(movements):
        key = (movement.store_id, movement.sku)
        positions[key] = apply(positions.get(key, StockPosition()), movement)
    return positions


def on_shelf(movements: Iterable[Movement]) -> dict[tuple[str, str, int], int]:
    """Items per (store, shelf, slot): the shelf's own count after its latest movement.

    The smart shelf counts absolutely, so its latest level is the truth; deltas only fill in
    when a movement carries no level (then they add to the last known one, from zero).
    """
    quantities: dict[tuple[str, str, int], int] = {}
    for movement in _unique_in_order(movements):
        if movement.shelf_id is None or movement.slot is None:
            continue
        key = (movement.store_id, movement.shelf_id, movement.slot)
        quantities[key] = movement.level if movement.level is not None else quantities.get(key, 0) + movement.quantity
    return quantities


# Movements that wait for, pay for or return a pick.
_SHRINK_KINDS: Final = frozenset({MovementKind.SHELF_PICK, MovementKind.SALE, MovementKind.SHELF_PUT})


@dataclass(frozen=True, slots=True)
class ShrinkRecord:
    """Items that left a shelf and were not sold within the window."""

    store_id: str
    sku: str
    quantity: int
    picked_at: datetime
    expired_at: datetime
    event_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Pick:
    event_id: str
    quantity: int
    at: datetime


@dataclass(frozen=True, slots=True)
class ShrinkTracker:
    """Picks waiting to be matched by sales of the same SKU in the same store (oldest first), per window."""

    window_s: float
    waiting: Mapping[tuple[str, str], tuple[_Pick, ...]] = field(default_factory=dict)
    # A put this soon after a pick is the customer putting it back; later it is staff refilling the shelf,
    # which must not wipe out the evidence of items that went missing.
    return_window_s: float = 300.0

    def observe(self, movement: Movement) -> ShrinkTracker:
        """A shelf pick waits for its sale; a sale takes the oldest waiting picks; a put soon after returns them."""
        return self.observe_all((movement,))

    def observe_all(self, movements: Iterable[Movement]) -> ShrinkTracker:
        """:meth:`observe` each movement in turn (one copy of the waiting picks for all of them)."""
        waiting: dict[tuple[str, str], tuple[_Pick, ...]] | None = None
        for movement in movements:
            if movement.kind not in _SHRINK_KINDS:
                continue
            if waiting is None:
                waiting = dict(self.waiting)
            key = (movement.store_id, movement.sku)
            picks = self._after(list(waiting.get(key, ())), movement)
            if picks:
                waiting[key] = picks
            else:  # nothing waits: the key goes, so the map holds only SKUs with picks not yet sold
                waiting.pop(key, None)
        return self if waiting is None else replace(self, waiting=waiting)

    def _after(self, picks: list[_Pick], movement: Movement) -> tuple[_Pick, ...]:
        if movement.kind is MovementKind.SHELF_PICK:
            picks.append(_Pick(movement.event_id, -movement.quantity, movement.at))
        elif movement.kind is MovementKind.SALE:
            picks = _take(picks, abs(movement.quantity))  # a sale pays for the oldest picks
        else:  # SHELF_PUT
            recent = [p for p in picks if (movement.at - p.at).total_seconds() <= self.return_window_s]
            older = [p for p in picks if (movement.at - p.at).total_seconds() > self.return_window_s]
            # Put back: the newest picks are the ones returned.
            picks = older + list(reversed(_take(list(reversed(recent)), movement.quantity)))
        return tuple(picks)

    def expire(self, now: datetime) -> tuple[ShrinkTracker, list[ShrinkRecord]]:
        """Picks older than the window become shrink, one record per (store, SKU) and expiry."""
        records: list[ShrinkRecord] = []
        waiting: dict[tuple[str, str], tuple[_Pick, ...]] = {}
        for (store_id, sku), picks in self.waiting.items():
            due = [p for p in picks if (now - p.at).total_seconds() >= self.window_s]
            left = tuple(p for p in picks if (now - p.at).total_seconds() < self.window_s)
            if due:
                records.append(
                    ShrinkRecord(
                        store_id=store_id,
                        sku=sku,
                        quantity=sum(p.quantity for p in due),
                        picked_at=min(p.at for p in due),
                        expired_at=now,
                        event_ids=tuple(p.event_id for p in due),
                    )
                )
            if left:
                waiting[(store_id, sku)] = left
        return replace(self, waiting=waiting), records


def _take(picks: list[_Pick], quantity: int) -> list[_Pick]:
    left = list(picks)
    while quantity > 0 and left:
        first = left[0]
        if first.quantity <= quantity:
            quantity -= first.quantity
            left.pop(0)
        else:
            left[0] = replace(first, quantity=first.quantity - quantity)
            quantity = 0
    return left


def _unique_in_order(movements: Iterable[Movement]) -> list[Movement]:
    unique = {(m.event_id, m.line): m for m in movements}
    return sorted(unique.values(), key=lambda m: (m.at, m.event_id, m.line))
