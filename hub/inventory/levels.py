"""Shelf levels against the planogram: the slots of a store that hold fewer items than their minimum."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, select

from hub.catalog.models import Sku, Slot
from hub.inventory.models import ShelfLevel


def below_minimum(store_id: str) -> Select[Any]:
    """(ShelfLevel, min_quantity, capacity, SKU name) of each slot of ``store_id`` below its planogram minimum, as
    the shelves last counted; the callers order and bound it (the store page, the daily summary)."""
    statement: Select[Any] = (
        select(ShelfLevel, Slot.min_quantity, Slot.capacity, Sku.name)  # type: ignore[assignment]
        .join(
            Slot,
            and_(
                Slot.store_id == ShelfLevel.store_id, Slot.shelf_id == ShelfLevel.shelf_id, Slot.slot == ShelfLevel.slot
            ),
        )
        .outerjoin(Sku, Sku.sku_id == ShelfLevel.sku_id)
        .where(ShelfLevel.store_id == store_id, ShelfLevel.quantity < Slot.min_quantity)
    )
    return statement
