"""The catalog's database operations: all-or-nothing CSV imports with upsert semantics, exports, look-ups.

An import validates the whole file (rows, then what the rows refer to) before it writes anything, and
writes in the caller's one transaction: either every row is applied or none. Rows are matched by key;
a row equal to what is stored counts as unchanged and is not written, so importing a file twice, or
importing an export, changes nothing. An import never deletes what the file does not mention.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from hub.catalog.csv_io import (
    PLANOGRAM,
    SKUS,
    STOCK_POLICIES,
    STORES,
    CsvRowsError,
    ParsedRow,
    RowError,
    SkuRow,
    SlotRow,
    StockPolicyRow,
    StoreRow,
    header_of,
    parse_csv,
    read_csv,
    write_csv,
)
from hub.catalog.models import Shelf, Sku, Slot, StoreProfile
from hub.catalog.values import WEEKDAYS, OpeningHours, format_day
from hub.db.bulk import chunks, select_by_keys
from hub.db.models import Base
from hub.errors import HubError
from hub.inventory.models import StockPolicy

# Keys per IN (...) list: far below SQLite's and asyncpg's limits on bound parameters.
KEYS_PER_QUERY: Final = 500

M = TypeVar("M", bound=Base)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportReport:
    """What an import did, in rows of the file."""

    created: int
    updated: int
    unchanged: int


class CatalogConflictError(HubError, RuntimeError):
    """The database refused the import because something changed it meanwhile; nothing was applied."""


async def _load(
    session: AsyncSession,
    model: type[M],
    columns: Sequence[InstrumentedAttribute[Any]],
    keys: Sequence[tuple[Any, ...]],
) -> dict[tuple[Any, ...], M]:
    """The stored rows of ``model`` with these keys, by key."""
    wanted = sorted(set(keys))
    if len(columns) == 1:
        queries: Iterable[Select[Any]] = (
            select(model).where(columns[0].in_([key[0] for key in chunk])) for chunk in chunks(wanted, KEYS_PER_QUERY)
        )
    else:
        queries = select_by_keys(session.get_bind().dialect.name, (model,), columns, wanted)
    found: dict[tuple[Any, ...], M] = {}
    for query in queries:
        for row in (await session.scalars(query)).all():
            found[tuple(getattr(row, column.key) for column in columns)] = row
    return found


async def _existing(session: AsyncSession, column: InstrumentedAttribute[str], values: Iterable[str]) -> set[str]:
    """Which of ``values`` are stored in ``column``."""
    found: set[str] = set()
    for chunk in chunks(sorted(set(values)), KEYS_PER_QUERY):
        found.update((await session.scalars(select(column).where(column.in_(chunk)))).all())
    return found


async def _upsert(
    session: AsyncSession,
    model: type[M],
    columns: Sequence[InstrumentedAttribute[Any]],
    rows: Sequence[dict[str, Any]],
    *,
    now: datetime,
) -> ImportReport:
    """Add or update ``rows`` (column values) of ``model``; rows equal to the stored ones are left alone."""
    keys = [tuple(values[column.key] for column in columns) for values in rows]
    stored = await _load(session, model, columns, keys)
    created = updated = 0
    for key, values in zip(keys, rows, strict=True):
        current = stored.get(key)
        if current is None:
            session.add(model(**values, updated_at=now))
            created += 1
        elif any(getattr(current, name) != value for name, value in values.items()):
            for name, value in values.items():
                setattr(current, name, value)
            current.updated_at = now  # type: ignore[attr-defined]
            updated += 1
    return ImportReport(created=created, updated=updated, unchanged=len(rows) - created - updated)


def _raise_if_any(errors: list[RowError]) -> None:
    """CsvRowsError with ``errors`` by row (a row's own errors first, then what it refers to)."""
    if errors:
        raise CsvRowsError(sorted(errors, key=lambda error: error.row))


async def _commit(session: AsyncSession) -> None:
    try:
        await session.commit()
    except IntegrityError as err:
        await session.rollback()
        raise CatalogConflictError(f"the catalog changed during the import, nothing was applied: {err.orig}") from err


# --------------------------------------------------------------------------- SKUs


def _sku_values(row: SkuRow) -> dict[str, Any]:
    return row.model_dump()


async def _gtin_errors(session: AsyncSession, rows: Sequence[ParsedRow[SkuRow]]) -> list[RowError]:
    """A GTIN given twice in the file, or held by a stored SKU the file does not give it away from."""
    errors = []
    first_row_of: dict[str, int] = {}
    in_file = {parsed.value.sku_id for parsed in rows}
    for parsed in rows:
        gtin = parsed.value.gtin
        if gtin is None:
            continue
        if gtin in first_row_of:
            errors.append(
                RowError(row=parsed.row, column="gtin", message=f"GTIN {gtin} is already on row {first_row_of[gtin]}")
            )
        else:
            first_row_of[gtin] = parsed.row
    holders: dict[str, str] = {}
    for chunk in chunks(sorted(first_row_of), KEYS_PER_QUERY):
        for gtin, sku_id in await session.execute(select(Sku.gtin, Sku.sku_id).where(Sku.gtin.in_(chunk))):
            holders[str(gtin)] = sku_id
    for parsed in rows:
        holder = holders.get(parsed.value.gtin or "")
        if holder is not None and holder != parsed.value.sku_id and holder not in in_file:
            errors.append(
                RowError(row=parsed.row, column="gtin", message=f"GTIN {parsed.value.gtin} belongs to SKU {holder!r}")
            )
    return errors


async def import_skus(session: AsyncSession, text: str, *, now: datetime) -> ImportReport:
    """Apply ``skus.csv``; CsvRowsError (nothing applied) names every bad row and column."""
    rows, errors = read_csv(text, SKUS)
    _raise_if_any(errors + await _gtin_errors(session, rows))
    report = await _upsert(session, Sku, [Sku.sku_id], [_sku_values(p.value) for p in rows], now=now)
    await _commit(session)
    return report


async def list_skus(session: AsyncSession, *, after: str | None = None, limit: int | None = None) -> list[Sku]:
    """SKUs by id, from just after ``after``."""
    query = select(Sku).order_by(Sku.sku_id)
    if after is not None:
        query = query.where(Sku.sku_id > after)
    if limit is not None:
        query = query.limit(limit)
    return list((await session.scalars(query)).all())


async def get_sku(session: AsyncSession, sku_id: str) -> Sku | None:
    """One SKU, or None."""
    return await session.get(Sku, sku_id)


def sku_row(sku: Sku) -> SkuRow:
    """The CSV row of a stored SKU."""
    return SkuRow(
        sku_id=sku.sku_id,
        gtin=sku.gtin,
        name=sku.name,
        unit_weight_g=sku.unit_weight_g,
        pack_size=sku.pack_size,
        price=sku.price,
        currency=sku.currency,
    )


async def export_skus(session: AsyncSession) -> str:
    """Every SKU as ``skus.csv``."""
    return write_csv(SKUS, (sku_row(sku) for sku in await list_skus(session)))


# --------------------------------------------------------------------------- store profiles


LOCATION_COLUMNS: Final = ("latitude", "longitude")
REGION_COLUMN: Final = "region"


def _store_values(row: StoreRow, *, with_location: bool, with_region: bool) -> dict[str, Any]:
    values: dict[str, Any] = {
        "store_id": row.store_id,
        "name": row.name,
        "timezone": row.timezone,
        "currency": row.currency,
        "opening_hours": OpeningHours(days=row.days).to_json(),
    }
    if with_location:
        values |= {"latitude": row.latitude, "longitude": row.longitude}
    if with_region:
        values |= {"region": row.region}
    return values


async def import_stores(session: AsyncSession, text: str, *, now: datetime) -> ImportReport:
    """Apply ``stores.csv``; CsvRowsError (nothing applied) names every bad row and column.

    A file without the ``latitude``/``longitude`` columns leaves stored coordinates as they are (files
    written before coordinates existed must not erase them); with the columns, a blank pair clears them.
    """
    rows = parse_csv(text, STORES)  # nothing to look up: the rows alone decide
    header = header_of(text)
    with_location = any(column in header for column in LOCATION_COLUMNS)
    # Likewise a file without the region column leaves stored regions (and so operators' scopes) alone.
    with_region = REGION_COLUMN in header
    values = [_store_values(p.value, with_location=with_location, with_region=with_region) for p in rows]
    report = await _upsert(session, StoreProfile, [StoreProfile.store_id], values, now=now)
    await _commit(session)
    return report


async def list_store_profiles(session: AsyncSession) -> list[StoreProfile]:
    """Every store profile, by id."""
    return list((await session.scalars(select(StoreProfile).order_by(StoreProfile.store_id))).all())


async def get_store_profile(session: AsyncSession, store_id: str) -> StoreProfile | None:
    """One store profile, or None."""
    return await session.get(StoreProfile, store_id)


def store_row(profile: StoreProfile) -> StoreRow:
    """The CSV row of a stored profile."""
    hours = OpeningHours.from_json(profile.opening_hours)
    days = {day: format_day(intervals) for day, intervals in zip(WEEKDAYS, hours.days, strict=True)}
    return StoreRow.model_validate(
        {"store_id": profile.store_id, "name": profile.name, "timezone": profile.timezone, "currency": profile.currency}
        | days
        | {"latitude": profile.latitude, "longitude": profile.longitude, "region": profile.region}
    )


async def export_stores(session: AsyncSession) -> str:
    """Every store profile as ``stores.csv``."""
    return write_csv(STORES, (store_row(profile) for profile in await list_store_profiles(session)))


# --------------------------------------------------------------------------- planogram


async def _reference_errors(
    session: AsyncSession, rows: Sequence[ParsedRow[SlotRow]] | Sequence[ParsedRow[StockPolicyRow]]
) -> list[RowError]:
    """Rows naming a store or SKU the catalog does not have."""
    stores = await _existing(session, StoreProfile.store_id, (p.value.store_id for p in rows))
    skus = await _existing(session, Sku.sku_id, (p.value.sku_id for p in rows))
    errors = []
    for parsed in rows:
        if parsed.value.store_id not in stores:
            message = f"unknown store {parsed.value.store_id!r}: import it with stores.csv first"
            errors.append(RowError(row=parsed.row, column="store_id", message=message))
        if parsed.value.sku_id not in skus:
            message = f"unknown SKU {parsed.value.sku_id!r}: import it with skus.csv first"
            errors.append(RowError(row=parsed.row, column="sku_id", message=message))
    return errors


async def import_planogram(session: AsyncSession, text: str, *, now: datetime) -> ImportReport:
    """Apply ``planogram.csv`` (creating shelves as needed); CsvRowsError (nothing applied) names every bad row."""
    rows, errors = read_csv(text, PLANOGRAM)
    _raise_if_any(errors + await _reference_errors(session, rows))
    shelves = {(p.value.store_id, p.value.shelf_id) for p in rows}
    stored_shelves = await _load(session, Shelf, [Shelf.store_id, Shelf.shelf_id], sorted(shelves))
    session.add_all(Shelf(store_id=store, shelf_id=shelf) for store, shelf in sorted(shelves - stored_shelves.keys()))
    values = [p.value.model_dump() for p in rows]
    report = await _upsert(session, Slot, [Slot.store_id, Slot.shelf_id, Slot.slot], values, now=now)
    await _commit(session)
    return report


async def list_slots(session: AsyncSession, *, store_id: str | None = None) -> list[Slot]:
    """Slots by store, shelf and number, of one store or all."""
    query = select(Slot).order_by(Slot.store_id, Slot.shelf_id, Slot.slot)
    if store_id is not None:
        query = query.where(Slot.store_id == store_id)
    return list((await session.scalars(query)).all())


def slot_row(slot: Slot) -> SlotRow:
    """The CSV row of a stored slot."""
    return SlotRow(
        store_id=slot.store_id,
        shelf_id=slot.shelf_id,
        slot=slot.slot,
        sku_id=slot.sku_id,
        capacity=slot.capacity,
        min_quantity=slot.min_quantity,
        camera_id=slot.camera_id,
    )


async def export_planogram(session: AsyncSession, *, store_id: str | None = None) -> str:
    """The slots (of one store or all) as ``planogram.csv``."""
    return write_csv(PLANOGRAM, (slot_row(slot) for slot in await list_slots(session, store_id=store_id)))


# --------------------------------------------------------------------------- stock policies


async def import_stock_policies(session: AsyncSession, text: str, *, now: datetime) -> ImportReport:
    """Apply ``stock_policies.csv``; CsvRowsError (nothing applied) names every bad row, unknown stores and SKUs too."""
    rows, errors = read_csv(text, STOCK_POLICIES)
    _raise_if_any(errors + await _reference_errors(session, rows))
    values = [p.value.model_dump() for p in rows]
    report = await _upsert(session, StockPolicy, [StockPolicy.store_id, StockPolicy.sku_id], values, now=now)
    await _commit(session)
    return report


async def list_stock_policies(session: AsyncSession, *, store_id: str | None = None) -> list[StockPolicy]:
    """Stock policies by store and SKU, of one store or all."""
    query = select(StockPolicy).order_by(StockPolicy.store_id, StockPolicy.sku_id)
    if store_id is not None:
        query = query.where(StockPolicy.store_id == store_id)
    return list((await session.scalars(query)).all())


def stock_policy_row(policy: StockPolicy) -> StockPolicyRow:
    """The CSV row of a stored stock policy (as stored: a row another writer broke is exported, not refused)."""
    return StockPolicyRow.model_construct(
        store_id=policy.store_id,
        sku_id=policy.sku_id,
        max_stock=policy.max_stock,
        reorder_point=policy.reorder_point,
        lead_time_days=policy.lead_time_days,
        safety_stock=policy.safety_stock,
        on_order=policy.on_order,
    )


async def export_stock_policies(session: AsyncSession, *, store_id: str | None = None) -> str:
    """The stock policies (of one store or all) as ``stock_policies.csv``."""
    policies = await list_stock_policies(session, store_id=store_id)
    return write_csv(STOCK_POLICIES, (stock_policy_row(policy) for policy in policies))
