"""Newly stored events into the inventory, in the ingest transaction: ledger rows, positions, levels, restock.

:func:`place` turns the events a unit stored for the first time into ledger movements (the rules are
pure, in :mod:`hub.domain.ledger`); :func:`apply_placed` writes them, and brings ``stock_positions``
and ``shelf_levels`` up to date in the same transaction. Replaying events changes nothing: the event log
stores each event once and only newly stored events reach this module, and the ledger's (event_id, line)
is unique.

Positions are maintained incrementally when movements arrive in time order (the usual case). A movement
older than the newest one already applied to its (store, SKU) -- a gateway's backlog after an outage, or
the tills' gateway a little behind the back office's -- is added too when only deltas after the last count
are late (they add up in any order); a late count, or a late delta the last count already replaced, makes
the position be recomputed from that key's ledger rows by the same pure function. Either way the result
never depends on arrival order.

A slot's level below its planogram minimum opens a restock task and queues a print command with the
pick list for the gateway that reported it; the task closes once the shelf reports the slot refilled
(at least halfway from the minimum back to capacity, so one item put back does not close it).
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, cast

import structlog
from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.bounds import INT32_MAX, INT32_MIN, fits_int32
from hub.db.bulk import BulkColumn, bulk_write, chunks, select_by_keys
from hub.db.dialect import dialect_insert
from hub.db.models import OutgoingCommand
from hub.db.store_locks import lock_stores_for_stock
from hub.domain import ledger
from hub.domain.ledger import EventView, Movement, MovementKind, Unmatched
from hub.errors import HubError
from hub.inventory.catalog_view import CatalogSnapshot, SlotPlan
from hub.inventory.models import LedgerRow, RestockTask, ShelfLevel, StockPosition, UnplacedEvent
from storegate import wire
from storegate.wire import EventKind

log = structlog.get_logger(__name__)


class StockOutOfRangeError(HubError, ValueError):
    """Movements that would take a stock position past what its INTEGER columns hold; nothing was written."""

    def __init__(self, *, store_id: str, sku_id: str, field_name: str, value: int) -> None:
        super().__init__(
            f"{field_name} of SKU {sku_id!r} in store {store_id!r} would be {value}, outside the "
            f"{INT32_MIN}..{INT32_MAX} a stock position holds"
        )
        self.store_id = store_id
        self.sku_id = sku_id
        self.field_name = field_name
        self.value = value


# Event kinds that can move stock or report a shelf's level.
INVENTORY_KINDS: Final = frozenset(
    {
        EventKind.SCAN_SALE,
        EventKind.SCAN_RECEIVING,
        EventKind.SCAN_COUNT,
        EventKind.SHELF_PICK,
        EventKind.SHELF_PUT,
        EventKind.SHELF_STOCK,
    }
)
# Movements that change on hand: the ledger's deltas, and counts (which set it).
_ON_HAND_KINDS: Final = ledger.ON_HAND_DELTA | {MovementKind.COUNT}
LOOKUP_CHUNK: Final = 400
PRINT_COMMAND: Final = "print"
PICK_LIST_TTL: Final = timedelta(hours=4)

PositionKey = tuple[str, str]
SlotKey = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class RestockSettings:
    """Where pick lists are printed: the device id of the store's receipt printer, behind its gateway."""

    printer_device_id: str = "receipt-printer"
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class LevelReport:
    """A slot's item count as a shelf reported it (after a pick or put, or in a stock report)."""

    store_id: str
    shelf_id: str
    slot: int
    quantity: int
    at: datetime
    event_id: str
    gateway_id: str | None


@dataclass(slots=True)
class InventoryOutcome:
    """What applying one unit's events did, for metrics, the monitoring rules and the command publisher."""

    movements: list[Movement] = field(default_factory=list)
    unplaced: list[Unmatched] = field(default_factory=list)
    recomputed: int = 0
    tasks_opened: list[str] = field(default_factory=list)
    tasks_closed: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def extend(self, other: InventoryOutcome) -> None:
        """Add another unit's outcome to this one."""
        self.movements += other.movements
        self.unplaced += other.unplaced
        self.recomputed += other.recomputed
        self.tasks_opened += other.tasks_opened
        self.tasks_closed += other.tasks_closed
        self.commands += other.commands


# --------------------------------------------------------------------------- events to movements (pure)


@dataclass(slots=True)
class Placed:
    """A unit's events sorted into movements, level reports and events that could not be placed."""

    movements: list[Movement] = field(default_factory=list)
    levels: list[LevelReport] = field(default_factory=list)
    unplaced: list[tuple[wire.Event, Unmatched]] = field(default_factory=list)

    def of_events(self, event_ids: set[str]) -> Placed:
        """What these events (a subset of those placed) make: each event is placed on its own."""
        return Placed(
            movements=[m for m in self.movements if m.event_id in event_ids],
            levels=[r for r in self.levels if r.event_id in event_ids],
            unplaced=[(e, u) for e, u in self.unplaced if u.event_id in event_ids],
        )


def place(events: Sequence[wire.Event], catalog: CatalogSnapshot, *, event_ids: Sequence[str] | None = None) -> Placed:
    """The movements and level reports of events (pure: the catalog is a snapshot).

    ``event_ids``, when the caller has them, are the events' ids as text, in the same order (a UUID's text
    costs about a microsecond, and the event log has already made it).
    """
    placed = Placed()
    ids: Sequence[str | None] = event_ids if event_ids is not None else [None] * len(events)
    for event, known_id in zip(events, ids, strict=True):
        if event.kind not in INVENTORY_KINDS:
            continue
        event_id = known_id if known_id is not None else str(event.event_id)
        payload = event.payload
        if event.kind == EventKind.SHELF_STOCK:
            slot, count = payload.get("slot"), payload.get("count")
            if isinstance(slot, int) and isinstance(count, int):  # a stock report without a count says nothing
                placed.levels.append(
                    LevelReport(event.store_id, event.device_id, slot, count, event.ts, event_id, event.gateway_id)
                )
            continue
        view = EventView(event_id, event.store_id, event.device_id, event.kind, event.ts, payload)
        result = ledger.movements_of(
            view, sku_of_code=catalog.sku_of_code, sku_of_slot=catalog.sku_of_slot, price_of=catalog.prices.get
        )
        if isinstance(result, Unmatched):
            placed.unplaced.append((event, result))
            continue
        placed.movements += result
        for movement in result:
            if movement.level is not None and movement.shelf_id is not None and movement.slot is not None:
                placed.levels.append(
                    LevelReport(
                        movement.store_id,
                        movement.shelf_id,
                        movement.slot,
                        movement.level,
                        movement.at,
                        event_id,
                        event.gateway_id,
                    )
                )
    return placed


# --------------------------------------------------------------------------- writing


async def apply_placed(
    session: AsyncSession,
    placed: Placed,
    catalog: CatalogSnapshot,
    *,
    now: datetime,
    restock: RestockSettings,
) -> InventoryOutcome:
    """Apply newly stored events, already placed (:func:`place`), to the inventory in the caller's transaction."""
    outcome = InventoryOutcome(unplaced=[unmatched for _, unmatched in placed.unplaced])
    # The ledger insert first: it is the long statement that the caller's pure work can run beside.
    await apply_movements(session, placed.movements, now=now, outcome=outcome)
    if placed.unplaced:
        await record_unplaced(session, placed.unplaced, now=now)
    if placed.levels:
        changed = await _apply_levels(session, placed.levels, catalog, now=now)
        if restock.enabled:
            await _restock(session, changed, catalog, now=now, restock=restock, outcome=outcome)
    return outcome


async def apply_movements(
    session: AsyncSession,
    movements: Sequence[Movement],
    *,
    now: datetime,
    outcome: InventoryOutcome | None = None,
    actor: str | None = None,
    note: str | None = None,
) -> InventoryOutcome:
    """Write ledger rows and bring stock positions up to date (manual movements come in here too)."""
    outcome = outcome if outcome is not None else InventoryOutcome()
    if not movements:
        return outcome
    by_key: dict[PositionKey, list[Movement]] = defaultdict(list)
    for movement in movements:
        if movement.kind in _ON_HAND_KINDS:
            by_key[(movement.store_id, movement.sku)].append(movement)
    # The new positions are worked out before anything is written, so movements that would take one past its
    # columns are refused (StockOutOfRangeError) with no ledger row written for them.
    if by_key:
        # Positions are read, worked out here and written back: another writer of the store's stock (an API
        # process, another worker) waits for this transaction instead of working from the same old position.
        await lock_stores_for_stock(session, {store_id for store_id, _ in by_key})
    planned = await _plan_positions(session, by_key) if by_key else {}
    await bulk_write(
        session,
        LedgerRow.__tablename__,
        _LEDGER_COLUMNS,
        [_ledger_row(m, now=now, actor=actor, note=note) for m in movements],
        on_conflict="ON CONFLICT (event_id, line) DO NOTHING",
    )
    outcome.movements += movements
    if by_key:
        outcome.recomputed += await _update_positions(session, planned, now=now)
    return outcome


_LEDGER_COLUMNS: Final = tuple(
    BulkColumn(name, pg_type)
    for name, pg_type in (
        ("event_id", "varchar"),
        ("line", "int"),
        ("store_id", "varchar"),
        ("sku_id", "varchar"),
        ("kind", "varchar"),
        ("quantity", "int"),
        ("at", "timestamptz"),
        ("shelf_id", "varchar"),
        ("slot", "int"),
        ("level", "int"),
        ("unit_price", "numeric"),
        ("actor", "varchar"),
        ("note", "text"),
        ("recorded_at", "timestamptz"),
    )
)
_POSITION_COLUMNS: Final = tuple(
    BulkColumn(name, pg_type)
    for name, pg_type in (
        ("store_id", "varchar"),
        ("sku_id", "varchar"),
        ("on_hand", "int"),
        ("counted_at", "timestamptz"),
        ("last_variance", "int"),
        ("variance_total", "int"),
        ("last_movement_at", "timestamptz"),
        ("updated_at", "timestamptz"),
    )
)
_POSITION_UPSERT: Final = "ON CONFLICT (store_id, sku_id) DO UPDATE SET " + ", ".join(
    f"{c.name} = excluded.{c.name}" for c in _POSITION_COLUMNS[2:]
)


def _ledger_row(movement: Movement, *, now: datetime, actor: str | None, note: str | None) -> tuple[Any, ...]:
    return (
        movement.event_id,
        movement.line,
        movement.store_id,
        movement.sku,
        movement.kind.value,
        movement.quantity,
        movement.at,
        movement.shelf_id,
        movement.slot,
        movement.level,
        movement.unit_price,
        actor,
        note,
        now,
    )


async def record_unplaced(
    session: AsyncSession, unplaced: Sequence[tuple[wire.Event, Unmatched]], *, now: datetime
) -> None:
    await session.execute(
        dialect_insert(session)(UnplacedEvent).on_conflict_do_nothing(index_elements=["event_id"]),
        [
            {
                "event_id": unmatched.event_id,
                "store_id": event.store_id,
                "device_id": event.device_id,
                "kind": event.kind,
                "reason": unmatched.reason,
                "at": event.ts,
                "recorded_at": now,
            }
            for event, unmatched in unplaced
        ],
    )


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def _plan_positions(
    session: AsyncSession, by_key: Mapping[PositionKey, list[Movement]]
) -> dict[PositionKey, tuple[ledger.StockPosition, datetime] | None]:
    """Each key's position after its movements; None where a late one needs the ledger (recomputed after the insert)."""
    current: dict[PositionKey, tuple[ledger.StockPosition, datetime]] = {}
    p = StockPosition
    columns = (p.store_id, p.sku_id, p.on_hand, p.counted_at, p.last_variance, p.variance_total, p.last_movement_at)
    for query in select_by_keys(_dialect(session), columns, (p.store_id, p.sku_id), list(by_key)):
        for store_id, sku_id, on_hand, counted_at, last_variance, variance_total, last_at in await session.execute(
            query
        ):
            position = ledger.StockPosition(on_hand, counted_at, last_variance, variance_total)
            current[(store_id, sku_id)] = (position, last_at)
    planned: dict[PositionKey, tuple[ledger.StockPosition, datetime] | None] = {}
    for key, movements in by_key.items():
        movements.sort(key=lambda m: (m.at, m.event_id, m.line))
        held = current.get(key)
        if held is not None and movements[0].at < held[1]:
            # Late: deltas after the last count add up in any order; otherwise the ledger decides.
            late = ledger.apply_late(held[0], movements)
            planned[key] = None if late is None else (late, max(held[1], movements[-1].at))
        else:
            position = ledger.apply_all(held[0] if held is not None else ledger.StockPosition(), movements)
            planned[key] = (position, movements[-1].at)
        if (plan := planned[key]) is not None:
            _require_in_range(key, plan[0])
    return planned


async def _update_positions(
    session: AsyncSession, planned: Mapping[PositionKey, tuple[ledger.StockPosition, datetime] | None], *, now: datetime
) -> int:
    """Write the planned positions; recompute a key from its ledger where a movement arrived out of order."""
    values: list[tuple[Any, ...]] = []
    recomputed = 0
    for key, plan in planned.items():
        if plan is None:
            position, last_at = await _recompute(session, key)
            recomputed += 1
            # Rare (a late movement before a count): its ledger rows are written already; the caller's
            # transaction, or the consumer's handling of a failed apply, decides what stays.
            _require_in_range(key, position)
        else:
            position, last_at = plan
        values.append(
            (
                key[0],
                key[1],
                position.on_hand,
                position.counted_at,
                position.last_variance,
                position.variance_total,
                last_at,
                now,
            )
        )
    await bulk_write(session, StockPosition.__tablename__, _POSITION_COLUMNS, values, on_conflict=_POSITION_UPSERT)
    return recomputed


def _require_in_range(key: PositionKey, position: ledger.StockPosition) -> None:
    """Raise StockOutOfRangeError before a sum that overflows its column reaches the database (a 500 otherwise)."""
    checked = (
        ("on_hand", position.on_hand),
        ("last_variance", position.last_variance),
        ("variance_total", position.variance_total),
    )
    for field_name, value in checked:
        if not fits_int32(value):
            raise StockOutOfRangeError(store_id=key[0], sku_id=key[1], field_name=field_name, value=value)


async def _recompute(session: AsyncSession, key: PositionKey) -> tuple[ledger.StockPosition, datetime]:
    """A key's position from all its ledger rows (this unit's included: they are already inserted)."""
    rows = await session.execute(
        select(LedgerRow.event_id, LedgerRow.line, LedgerRow.kind, LedgerRow.quantity, LedgerRow.at).where(
            LedgerRow.store_id == key[0],
            LedgerRow.sku_id == key[1],
            LedgerRow.kind.in_([kind.value for kind in _ON_HAND_KINDS]),
        )
    )
    movements = [
        Movement(event_id, line, key[0], key[1], MovementKind(kind), quantity, at)
        for event_id, line, kind, quantity, at in rows
    ]
    position = ledger.on_hand(movements).get(key, ledger.StockPosition())
    return position, max(m.at for m in movements)


async def _apply_levels(
    session: AsyncSession, reports: Sequence[LevelReport], catalog: CatalogSnapshot, *, now: datetime
) -> list[LevelReport]:
    """Keep each slot's newest reported level; returns the reports that became a slot's level."""
    newest: dict[SlotKey, LevelReport] = {}
    for report in reports:
        key = (report.store_id, report.shelf_id, report.slot)
        held = newest.get(key)
        if held is None or (report.at, report.event_id) >= (held.at, held.event_id):
            newest[key] = report
    keys = list(newest)
    stored: dict[SlotKey, datetime] = {}
    slot_key = (ShelfLevel.store_id, ShelfLevel.shelf_id, ShelfLevel.slot)
    for query in select_by_keys(_dialect(session), (*slot_key, ShelfLevel.at), slot_key, keys):
        stored.update({(s, shelf, n): at for s, shelf, n, at in await session.execute(query)})
    changed = [r for key, r in newest.items() if key not in stored or r.at >= stored[key]]
    if not changed:
        return []
    values = []
    for report in changed:
        plan = catalog.slots.get((report.store_id, report.shelf_id, report.slot))
        values.append(
            {
                "store_id": report.store_id,
                "shelf_id": report.shelf_id,
                "slot": report.slot,
                "sku_id": plan.sku_id if plan is not None else "",
                "quantity": report.quantity,
                "at": report.at,
                "updated_at": now,
            }
        )
    stmt = dialect_insert(session)(ShelfLevel)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["store_id", "shelf_id", "slot"],
            set_={name: stmt.excluded[name] for name in ("sku_id", "quantity", "at", "updated_at")},
        ),
        values,
    )
    return changed


# --------------------------------------------------------------------------- restock


def refill_level(plan: SlotPlan) -> int:
    """The level at which a restock task counts as done: halfway from the minimum back to capacity."""
    return max(plan.min_quantity, math.ceil((plan.min_quantity + plan.capacity) / 2))


def open_key(store_id: str, shelf_id: str, slot: int) -> str:
    """The key that allows one live restock task per slot."""
    return f"{store_id}|{shelf_id}|{slot}"


def pick_list(task_id: str, report: LevelReport, plan: SlotPlan, catalog: CatalogSnapshot) -> dict[str, Any]:
    """The pick list of a restock task, as the print command carries it (structured, and as text lines)."""
    quantity = plan.capacity - report.quantity
    name = catalog.sku_names.get(plan.sku_id, plan.sku_id)
    store = catalog.stores.get(report.store_id)
    local = report.at.astimezone(store.hours.zone) if store is not None else report.at
    lines = [
        "RESTOCK",
        f"Store {report.store_id}  {local:%Y-%m-%d %H:%M}",
        f"Shelf {report.shelf_id}  slot {report.slot}",
        f"{plan.sku_id}  {name}",
        f"On shelf {report.quantity} of {plan.capacity} (min {plan.min_quantity})",
        f"BRING {quantity}",
        f"Task {task_id}",
    ]
    return {
        "document": "pick_list",
        "task_id": task_id,
        "store_id": report.store_id,
        "shelf_id": report.shelf_id,
        "slot": report.slot,
        "sku_id": plan.sku_id,
        "name": name,
        "level": report.quantity,
        "capacity": plan.capacity,
        "min_quantity": plan.min_quantity,
        "quantity": quantity,
        "lines": lines,
    }


async def _restock(
    session: AsyncSession,
    changed: Sequence[LevelReport],
    catalog: CatalogSnapshot,
    *,
    now: datetime,
    restock: RestockSettings,
    outcome: InventoryOutcome,
) -> None:
    planned = [
        (r, catalog.slots[(r.store_id, r.shelf_id, r.slot)])
        for r in changed
        if (r.store_id, r.shelf_id, r.slot) in catalog.slots
    ]
    if not planned:
        return
    keys = [open_key(r.store_id, r.shelf_id, r.slot) for r, _ in planned]
    live: dict[str, str] = {}
    for chunk in chunks(keys, LOOKUP_CHUNK):
        rows = await session.execute(
            select(RestockTask.open_key, RestockTask.task_id).where(RestockTask.open_key.in_(chunk))
        )
        live.update({key: task_id for key, task_id in rows if key is not None})
    tasks: list[dict[str, Any]] = []
    commands: list[dict[str, Any]] = []
    closes: list[dict[str, Any]] = []
    for (report, plan), key in zip(planned, keys, strict=True):
        task_id = live.get(key)
        if task_id is None and report.quantity < plan.min_quantity:
            task, command = _new_task(report, plan, catalog, key=key, now=now, restock=restock)
            tasks.append(task)
            if command is not None:
                commands.append(command)
                outcome.commands.append(command["command_id"])
            outcome.tasks_opened.append(task["task_id"])
            log.info(
                "restock_task_opened",
                task_id=task["task_id"],
                store_id=report.store_id,
                shelf_id=report.shelf_id,
                slot=report.slot,
                sku_id=plan.sku_id,
                level=report.quantity,
                minimum=plan.min_quantity,
            )
        elif task_id is not None and report.quantity >= refill_level(plan):
            closes.append(
                {"b_task_id": task_id, "b_at": report.at, "b_event_id": report.event_id, "b_level": report.quantity}
            )
            outcome.tasks_closed.append(task_id)
            log.info("restock_task_closed", task_id=task_id, store_id=report.store_id, level=report.quantity)
    if tasks:
        await session.execute(insert(RestockTask), tasks)
    if commands:
        await session.execute(insert(OutgoingCommand), commands)
    if closes:
        table = cast(Table, RestockTask.__table__)  # Core, not the ORM's bulk update by primary key
        await session.execute(
            update(table)
            .where(table.c.task_id == bindparam("b_task_id"))
            .values(
                status="closed",
                open_key=None,
                closed_at=bindparam("b_at"),
                closing_event_id=bindparam("b_event_id"),
                level_at_close=bindparam("b_level"),
            ),
            closes,
        )


def _new_task(
    report: LevelReport,
    plan: SlotPlan,
    catalog: CatalogSnapshot,
    *,
    key: str,
    now: datetime,
    restock: RestockSettings,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A restock task's row and its print command's row (None when no gateway reported the level)."""
    task_id = str(uuid.uuid4())
    document = pick_list(task_id, report, plan, catalog)
    command_id = str(uuid.uuid4()) if report.gateway_id is not None else None
    task = {
        "task_id": task_id,
        "store_id": report.store_id,
        "shelf_id": report.shelf_id,
        "slot": report.slot,
        "sku_id": plan.sku_id,
        "status": "open",
        "open_key": key,
        "level_at_open": report.quantity,
        "min_quantity": plan.min_quantity,
        "capacity": plan.capacity,
        "quantity": document["quantity"],
        "opened_at": report.at,
        "opening_event_id": report.event_id,
        "closed_at": None,
        "closing_event_id": None,
        "level_at_close": None,
        "command_id": command_id,
        "print_status": "pending" if command_id is not None else "no_gateway",
        "print_detail": None,
        "pick_list": document,
    }
    if command_id is None or report.gateway_id is None:
        return task, None
    command = {
        "command_id": command_id,
        "store_id": report.store_id,
        "gateway_id": report.gateway_id,
        "device_id": restock.printer_device_id,
        "name": PRINT_COMMAND,
        "args": document,
        "issued_at": now,
        "expires_at": now + PICK_LIST_TTL,
        "status": "pending",
        "sent_at": None,
        "result_detail": None,
        "result_at": None,
    }
    return task, command
