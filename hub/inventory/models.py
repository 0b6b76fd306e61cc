"""The inventory's tables: the ledger, what is derived from it, restock tasks and stock policies.

Migration ``0004`` creates the same schema. The ledger is the truth; ``stock_positions`` and
``shelf_levels`` are kept up to date in the same transaction as the ledger rows that change them,
so reading stock never sums the ledger.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import JSON, CheckConstraint, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.catalog.models import PRICE_TYPE, SKU_ID_LENGTH
from hub.db.models import DEVICE_ID_LENGTH, ID_LENGTH, UUID_LENGTH, Base, BigId

MOVEMENT_KIND_LENGTH: Final = 16
STATUS_LENGTH: Final = 16


class LedgerRow(Base):
    """One movement of stock, tied to the event that caused it by (event_id, line)."""

    __tablename__ = "ledger"
    __table_args__ = (
        UniqueConstraint("event_id", "line"),
        Index("ix_ledger_store_sku_at", "store_id", "sku_id", "at"),
        Index("ix_ledger_store_kind_at", "store_id", "kind", "at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The event's id as the gateway gave it, or a hub-made id for manual adjustments and transfers.
    event_id: Mapped[str] = mapped_column(String(UUID_LENGTH))
    line: Mapped[int] = mapped_column(Integer)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    sku_id: Mapped[str] = mapped_column(String(SKU_ID_LENGTH))
    kind: Mapped[str] = mapped_column(String(MOVEMENT_KIND_LENGTH))
    # Signed: negative leaves the store or the shelf. For a count: the counted quantity.
    quantity: Mapped[int] = mapped_column(Integer)
    # When it happened (the device's time); reports bucket by it in the store's time zone.
    at: Mapped[datetime]
    shelf_id: Mapped[str | None] = mapped_column(String(DEVICE_ID_LENGTH))
    slot: Mapped[int | None] = mapped_column(Integer)
    # Shelf movements: the items on the slot after it, as the shelf counted them.
    level: Mapped[int | None] = mapped_column(Integer)
    # Sales: the unit price of the catalog when it was applied (reports of value do not follow price changes).
    unit_price: Mapped[Decimal | None] = mapped_column(PRICE_TYPE)
    # Who made a manual movement (adjustment, transfer); None for device events.
    actor: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)
    recorded_at: Mapped[datetime]


class StockPosition(Base):
    """On hand of one SKU in one store, derived from its ledger rows."""

    __tablename__ = "stock_positions"

    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    sku_id: Mapped[str] = mapped_column(String(SKU_ID_LENGTH), primary_key=True)
    on_hand: Mapped[int] = mapped_column(Integer)
    counted_at: Mapped[datetime | None]
    # Counted minus expected at the last count (negative: items missing), and the sum over all counts.
    last_variance: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    variance_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_movement_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ShelfLevel(Base):
    """Items on one slot of a smart shelf: the shelf's own count after its latest movement."""

    __tablename__ = "shelf_levels"

    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    shelf_id: Mapped[str] = mapped_column(String(DEVICE_ID_LENGTH), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku_id: Mapped[str] = mapped_column(String(SKU_ID_LENGTH))
    quantity: Mapped[int] = mapped_column(Integer)
    # The time of the movement the quantity comes from; an older movement arriving late does not replace it.
    at: Mapped[datetime]
    updated_at: Mapped[datetime]


class UnplacedEvent(Base):
    """An event that should move stock but could not be placed (unknown code, slot without a SKU)."""

    __tablename__ = "unplaced_events"
    __table_args__ = (Index("ix_unplaced_events_store_at", "store_id", "at"),)

    event_id: Mapped[str] = mapped_column(String(UUID_LENGTH), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    device_id: Mapped[str] = mapped_column(String(DEVICE_ID_LENGTH))
    kind: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]
    recorded_at: Mapped[datetime]


class ShrinkRecord(Base):
    """Items that left a shelf and were not sold within the shrink window."""

    __tablename__ = "shrink_records"
    __table_args__ = (
        Index("ix_shrink_records_store_sku", "store_id", "sku_id", "expired_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    sku_id: Mapped[str] = mapped_column(String(SKU_ID_LENGTH))
    quantity: Mapped[int] = mapped_column(Integer)
    value: Mapped[Decimal] = mapped_column(PRICE_TYPE)
    picked_at: Mapped[datetime]
    expired_at: Mapped[datetime]
    # The shelf.pick events behind it.
    event_ids: Mapped[list[str]] = mapped_column(JSON)


class StockPolicy(Base):
    """Min/max rules of one SKU in one store, for reorder suggestions and transfers."""

    __tablename__ = "stock_policies"
    __table_args__ = (
        CheckConstraint("max_stock >= 0", name="max_stock_not_negative"),
        CheckConstraint("lead_time_days >= 0", name="lead_time_not_negative"),
        CheckConstraint("safety_stock >= 0", name="safety_stock_not_negative"),
    )

    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    sku_id: Mapped[str] = mapped_column(String(SKU_ID_LENGTH), primary_key=True)
    max_stock: Mapped[int] = mapped_column(Integer)
    # Fixed reorder point; None: lead time x forecast + safety stock.
    reorder_point: Mapped[int | None] = mapped_column(Integer)
    lead_time_days: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    safety_stock: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    on_order: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime]


class RestockTask(Base):
    """A shelf slot below its minimum: a pick list printed at the store, closed when the shelf is refilled."""

    __tablename__ = "restock_tasks"
    __table_args__ = (
        # One live task per slot: the key is set while the task is open and cleared when it closes.
        UniqueConstraint("open_key"),
        Index("ix_restock_tasks_store_opened", "store_id", "opened_at"),
    )

    task_id: Mapped[str] = mapped_column(String(UUID_LENGTH), primary_key=True)
    store_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    shelf_id: Mapped[str] = mapped_column(String(DEVICE_ID_LENGTH))
    slot: Mapped[int] = mapped_column(Integer)
    sku_id: Mapped[str] = mapped_column(String(SKU_ID_LENGTH))
    # "open" until the shelf reports the slot back at or above its minimum, then "closed".
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    open_key: Mapped[str | None] = mapped_column(String(ID_LENGTH + DEVICE_ID_LENGTH + 8))
    level_at_open: Mapped[int] = mapped_column(Integer)
    min_quantity: Mapped[int] = mapped_column(Integer)
    capacity: Mapped[int] = mapped_column(Integer)
    # Items to bring: capacity minus the level when it opened.
    quantity: Mapped[int] = mapped_column(Integer)
    opened_at: Mapped[datetime]
    opening_event_id: Mapped[str] = mapped_column(String(UUID_LENGTH))
    closed_at: Mapped[datetime | None]
    closing_event_id: Mapped[str | None] = mapped_column(String(UUID_LENGTH))
    level_at_close: Mapped[int | None] = mapped_column(Integer)
    # The print command of the pick list, and what became of it.
    command_id: Mapped[str | None] = mapped_column(String(UUID_LENGTH))
    print_status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    print_detail: Mapped[str | None] = mapped_column(Text)
    pick_list: Mapped[dict[str, Any]] = mapped_column(JSON)
