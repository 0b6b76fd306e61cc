"""The catalog's tables: SKUs, store profiles, shelves and their slots (the planogram).

Migration ``0003`` creates the same schema. Store profiles are not tied to the ``stores`` table: that one
lists stores the hub has heard from, and a store is usually described before its first gateway speaks.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Final

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    Numeric,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.models import DEVICE_ID_LENGTH, ID_LENGTH, Base

SKU_ID_LENGTH: Final = 63
NAME_LENGTH: Final = 256
TIME_ZONE_LENGTH: Final = 64
# 8 integer and 4 decimal digits: enough for any shelf price, exact through SQLite's floats (< 15 digits).
PRICE_TYPE: Final = Numeric(12, 4)
WEIGHT_TYPE: Final = Numeric(10, 3)


class Sku(Base):
    """An article the retailer sells, by its own code."""

    __tablename__ = "skus"
    __table_args__ = (
        CheckConstraint("pack_size >= 1", name="pack_size_positive"),
        CheckConstraint("price >= 0", name="price_not_negative"),
        CheckConstraint("unit_weight_g > 0", name="unit_weight_positive"),
    )

    sku_id: Mapped[str] = mapped_column(String(SKU_ID_LENGTH), primary_key=True)
    # GTIN-14 (shorter GTINs zero-padded), as scan events carry it; one SKU per GTIN.
    gtin: Mapped[str | None] = mapped_column(String(14), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    unit_weight_g: Mapped[Decimal | None] = mapped_column(WEIGHT_TYPE)
    pack_size: Mapped[int] = mapped_column(Integer)
    price: Mapped[Decimal] = mapped_column(PRICE_TYPE)
    currency: Mapped[str] = mapped_column(String(3))
    updated_at: Mapped[datetime]


class StoreProfile(Base):
    """A store's name, time zone, currency and weekly opening hours."""

    __tablename__ = "store_profiles"

    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    timezone: Mapped[str] = mapped_column(String(TIME_ZONE_LENGTH))
    currency: Mapped[str] = mapped_column(String(3))
    # {"mon": ["08:00-12:00", "13:00-20:00"], ..., "sun": []}: every weekday, local wall-clock time.
    opening_hours: Mapped[dict[str, list[str]]] = mapped_column(JSON)
    # Where the store is (WGS 84), for transfer suggestions between nearby stores; None: unknown.
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    # The region operators may be scoped to (hub.auth); None: in no region.
    region: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    updated_at: Mapped[datetime]


class Shelf(Base):
    """A shelf of a store; its id is the shelf device's id, as in its ``shelf.*`` events."""

    __tablename__ = "shelves"

    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("store_profiles.store_id"), primary_key=True)
    shelf_id: Mapped[str] = mapped_column(String(DEVICE_ID_LENGTH), primary_key=True)


class Slot(Base):
    """A slot of a shelf: the SKU it holds, how many fit, and the minimum before a restock."""

    __tablename__ = "slots"
    __table_args__ = (
        ForeignKeyConstraint(["store_id", "shelf_id"], ["shelves.store_id", "shelves.shelf_id"]),
        CheckConstraint("slot BETWEEN 1 AND 255", name="slot_range"),
        CheckConstraint("capacity >= 1", name="capacity_positive"),
        CheckConstraint("min_quantity >= 0", name="min_quantity_not_negative"),
        CheckConstraint("capacity >= min_quantity", name="capacity_covers_minimum"),
    )

    store_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    shelf_id: Mapped[str] = mapped_column(String(DEVICE_ID_LENGTH), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku_id: Mapped[str] = mapped_column(String(SKU_ID_LENGTH), ForeignKey("skus.sku_id"), index=True)
    capacity: Mapped[int] = mapped_column(Integer)
    min_quantity: Mapped[int] = mapped_column(Integer)
    # The camera that watches the slot (its device id on the store's gateway): a shelf sweep's evidence.
    camera_id: Mapped[str | None] = mapped_column(String(DEVICE_ID_LENGTH))
    updated_at: Mapped[datetime]
