"""What the ingest path needs of the catalog, held in memory and refreshed when the catalog changes.

Placing an event (which SKU did this scan or this slot move?) must not cost a query per event, so
the consumer keeps a :class:`CatalogSnapshot` and reloads it when the catalog's fingerprint (row
counts and newest ``updated_at``) changes, checked at most every ``refresh_s`` seconds. A catalog
import therefore takes effect for events stored within a couple of seconds of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.catalog.models import Sku, Slot, StoreProfile
from hub.catalog.values import OpeningHours, normalise_gtin
from hub.domain.store_hours import StoreHours

log = structlog.get_logger(__name__)

DEFAULT_REFRESH_S: Final = 2.0
UTC_ZONE: Final = "UTC"


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """A planogram slot: the SKU it holds, its capacity and the minimum before a restock."""

    sku_id: str
    capacity: int
    min_quantity: int
    camera_id: str | None = None  # the camera that watches it: a shelf sweep's evidence comes from it


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """A store's profile as the rules and reports read it."""

    store_id: str
    name: str
    timezone: str
    currency: str
    hours: StoreHours


@dataclass(frozen=True, slots=True)
class CatalogSnapshot:
    """The catalog at one moment: lookups by code, slot plans, prices and store profiles."""

    sku_of_gtin: Mapping[str, str] = field(default_factory=dict)
    sku_names: Mapping[str, str] = field(default_factory=dict)
    prices: Mapping[str, Decimal] = field(default_factory=dict)
    slots: Mapping[tuple[str, str, int], SlotPlan] = field(default_factory=dict)
    stores: Mapping[str, StoreInfo] = field(default_factory=dict)

    def sku_of_code(self, code: str) -> str | None:
        """The SKU of a scanned code: by GTIN (any length, as GTIN-14), else the retailer's own SKU code."""
        if code in self.sku_names:
            return code
        if code.isdigit() and len(code) in (8, 12, 13, 14):
            try:
                return self.sku_of_gtin.get(normalise_gtin(code))
            except ValueError:  # a check digit that does not add up: not a GTIN
                return None
        return None

    def sku_of_slot(self, store_id: str, shelf_id: str, slot: int) -> str | None:
        """The SKU the planogram puts on a slot."""
        plan = self.slots.get((store_id, shelf_id, slot))
        return plan.sku_id if plan is not None else None

    def camera_of_slot(self, store_id: str, shelf_id: str, slot: int) -> str | None:
        """The camera the planogram says watches a slot, if it names one."""
        plan = self.slots.get((store_id, shelf_id, slot))
        return plan.camera_id if plan is not None else None

    def hours_of(self, store_id: str) -> StoreHours:
        """A store's opening hours; a store without a profile is treated as always closed, in UTC.

        Closed, not open: for security rules a missing profile must not hide an intrusion; the noise
        it makes gets the profile written.
        """
        info = self.stores.get(store_id)
        return info.hours if info is not None else StoreHours(timezone=UTC_ZONE, weekly={})


async def catalog_fingerprint(session: AsyncSession) -> tuple[object, ...]:
    """Counts and newest change of the tables the snapshot reads: equal fingerprints, equal snapshots."""
    row = (
        await session.execute(
            select(
                select(func.count()).select_from(Sku).scalar_subquery(),
                select(func.max(Sku.updated_at)).scalar_subquery(),
                select(func.count()).select_from(Slot).scalar_subquery(),
                select(func.max(Slot.updated_at)).scalar_subquery(),
                select(func.count()).select_from(StoreProfile).scalar_subquery(),
                select(func.max(StoreProfile.updated_at)).scalar_subquery(),
            )
        )
    ).one()
    return tuple(row)


async def load_catalog(session: AsyncSession) -> CatalogSnapshot:
    """Read the whole catalog the ingest path uses (thousands of rows: one query per table)."""
    skus = (await session.execute(select(Sku.sku_id, Sku.gtin, Sku.name, Sku.price))).all()
    slots = (
        await session.execute(
            select(
                Slot.store_id, Slot.shelf_id, Slot.slot, Slot.sku_id, Slot.capacity, Slot.min_quantity, Slot.camera_id
            )
        )
    ).all()
    stores = (await session.execute(select(StoreProfile))).scalars().all()
    infos: dict[str, StoreInfo] = {}
    for profile in stores:
        try:
            hours = OpeningHours.from_json(profile.opening_hours).to_store_hours(profile.timezone)
        except ValueError as err:  # stored by the validated import, so only a hand-edited row gets here
            log.error("store_hours_unreadable", store_id=profile.store_id, error=str(err))
            hours = StoreHours(timezone=profile.timezone, weekly={})
        infos[profile.store_id] = StoreInfo(profile.store_id, profile.name, profile.timezone, profile.currency, hours)
    return CatalogSnapshot(
        sku_of_gtin={gtin: sku_id for sku_id, gtin, _, _ in skus if gtin},
        sku_names={sku_id: name for sku_id, _, name, _ in skus},
        prices={sku_id: price for sku_id, _, _, price in skus},
        slots={
            (s, shelf, n): SlotPlan(sku, capacity, minimum, camera)
            for s, shelf, n, sku, capacity, minimum, camera in slots
        },
        stores=infos,
    )


class CatalogCache:
    """The latest snapshot, reloaded when the fingerprint changes (checked at most every ``refresh_s``)."""

    def __init__(
        self, *, refresh_s: float = DEFAULT_REFRESH_S, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._refresh_s = refresh_s
        self._monotonic = monotonic
        self._snapshot: CatalogSnapshot | None = None
        self._fingerprint: tuple[object, ...] | None = None
        self._checked_at = -float("inf")
        self.loads = 0

    def invalidate(self) -> None:
        """Check the fingerprint on the next use (an import in this process calls it)."""
        self._checked_at = -float("inf")

    async def snapshot(self, session: AsyncSession) -> CatalogSnapshot:
        """The snapshot, refreshed first if it may be out of date."""
        now = self._monotonic()
        if self._snapshot is not None and now - self._checked_at < self._refresh_s:
            return self._snapshot
        fingerprint = await catalog_fingerprint(session)
        self._checked_at = now
        if self._snapshot is None or fingerprint != self._fingerprint:
            self._snapshot = await load_catalog(session)
            self._fingerprint = fingerprint
            self.loads += 1
            log.info(
                "catalog_loaded",
                skus=len(self._snapshot.sku_names),
                slots=len(self._snapshot.slots),
                stores=len(self._snapshot.stores),
            )
        return self._snapshot
