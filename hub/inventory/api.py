"""Inventory through the API: stock and shelf levels per store, restock tasks, the ledger, manual movements.

Manual adjustments and transfers are ledger movements like any other, written through the same code as
the events' (:func:`hub.inventory.apply.apply_movements`); their ids are made by the hub, and the
operator or token that made them (the request's principal, never a name in the body) is recorded on the
row and in the audit log with on hand before and after.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

import structlog
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import Field, model_validator
from sqlalchemy import and_, select

from hub.api.deps import NowDep, SessionDep
from hub.api.params import IsoDatetime, aware, invalid
from hub.api.schemas import ApiModel, Problem
from hub.auth.audit import note_change
from hub.auth.guard import PrincipalDep
from hub.catalog.models import Sku, Slot, StoreProfile
from hub.db.bounds import INT64_MAX, DbCount, DbInt
from hub.db.models import OutgoingCommand
from hub.domain.ledger import Movement, MovementKind
from hub.inventory.apply import StockOutOfRangeError, apply_movements
from hub.inventory.models import LedgerRow, RestockTask, ShelfLevel, StockPosition, UnplacedEvent

log = structlog.get_logger(__name__)

router = APIRouter(tags=["inventory"])

MAX_LIMIT: Final = 1000


class StockOut(ApiModel):
    """On hand of one SKU in one store."""

    sku_id: str
    name: str | None
    on_hand: int
    counted_at: datetime | None
    last_variance: int = Field(description="counted minus expected at the last count (negative: missing)")
    variance_total: int
    last_movement_at: datetime


class StockList(ApiModel):
    """A store's stock positions."""

    store_id: str
    items: list[StockOut]


class ShelfLevelOut(ApiModel):
    """Items on a slot, against its planogram."""

    shelf_id: str
    slot: int
    sku_id: str
    quantity: int
    at: datetime
    capacity: int | None
    min_quantity: int | None
    below_minimum: bool


class ShelfLevelList(ApiModel):
    """A store's shelf levels."""

    store_id: str
    items: list[ShelfLevelOut]


class RestockTaskOut(ApiModel):
    """A restock task and the pick list printed for it."""

    task_id: str
    store_id: str
    shelf_id: str
    slot: int
    sku_id: str
    status: str
    level_at_open: int
    quantity: int = Field(description="items to bring: capacity minus the level when it opened")
    opened_at: datetime
    closed_at: datetime | None
    level_at_close: int | None
    command_id: str | None
    print_status: str = Field(
        description="pending, sent, queued (stored on the gateway, waiting for its printer), printed, failed, "
        "rejected, expired, no_gateway"
    )
    print_detail: str | None = Field(description="the gateway's words: where it printed, or why it did not")
    pick_list: dict[str, object]


class RestockTaskList(ApiModel):
    """A store's restock tasks, newest first."""

    items: list[RestockTaskOut]


class LedgerRowOut(ApiModel):
    """One movement of stock."""

    id: int
    event_id: str
    line: int
    sku_id: str
    kind: str
    quantity: int
    at: datetime
    shelf_id: str | None
    slot: int | None
    level: int | None
    unit_price: Decimal | None
    actor: str | None
    note: str | None


class LedgerPage(ApiModel):
    """A page of ledger rows, newest first."""

    items: list[LedgerRowOut]
    next_cursor: int | None


class UnplacedOut(ApiModel):
    """An event that should have moved stock but could not be placed."""

    event_id: str
    device_id: str
    kind: str
    reason: str
    at: datetime


class UnplacedList(ApiModel):
    """A store's unplaced events, newest first."""

    items: list[UnplacedOut]


class AdjustmentIn(ApiModel):
    """A manual correction of on hand (breakage, found stock, write-off)."""

    sku_id: str = Field(min_length=1, max_length=63)
    quantity: DbInt = Field(description="signed: negative removes, positive adds; not zero")
    note: str = Field(min_length=1, max_length=2000, description="why")

    @model_validator(mode="after")
    def _not_zero(self) -> AdjustmentIn:
        if self.quantity == 0:
            raise ValueError("quantity must not be 0")
        return self


class TransferIn(ApiModel):
    """Stock sent from one store to another."""

    sku_id: str = Field(min_length=1, max_length=63)
    from_store_id: str = Field(min_length=1, max_length=63)
    to_store_id: str = Field(min_length=1, max_length=63)
    quantity: DbCount = Field(gt=0)
    note: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _two_stores(self) -> TransferIn:
        if self.from_store_id == self.to_store_id:
            raise ValueError("from_store_id and to_store_id must differ")
        return self


class MovementOut(ApiModel):
    """The id of the movements a manual change made."""

    event_id: str
    lines: int


class CommandOut(ApiModel):
    """A command the hub sent to a gateway and what became of it."""

    command_id: str
    store_id: str
    gateway_id: str
    device_id: str | None
    name: str
    status: str
    issued_at: datetime
    sent_at: datetime | None
    result_at: datetime | None
    result_detail: str | None


class CommandList(ApiModel):
    """Commands, newest first."""

    items: list[CommandOut]


@router.get("/api/v1/stores/{store_id}/stock", response_model=StockList, summary="A store's stock on hand")
async def get_stock(
    session: SessionDep, store_id: str, sku_id: Annotated[str | None, Query(max_length=63)] = None
) -> StockList:
    """On hand per SKU, derived from the ledger."""
    query = (
        select(StockPosition, Sku.name)
        .join(Sku, Sku.sku_id == StockPosition.sku_id, isouter=True)
        .where(StockPosition.store_id == store_id)
    )
    if sku_id is not None:
        query = query.where(StockPosition.sku_id == sku_id)
    rows = (await session.execute(query.order_by(StockPosition.sku_id))).all()
    return StockList(
        store_id=store_id,
        items=[
            StockOut(
                sku_id=p.sku_id,
                name=name,
                on_hand=p.on_hand,
                counted_at=p.counted_at,
                last_variance=p.last_variance,
                variance_total=p.variance_total,
                last_movement_at=p.last_movement_at,
            )
            for p, name in rows
        ],
    )


@router.get("/api/v1/stores/{store_id}/shelf-levels", response_model=ShelfLevelList, summary="Items on each slot")
async def get_shelf_levels(session: SessionDep, store_id: str) -> ShelfLevelList:
    """The shelves' latest counts, with the planogram's capacity and minimum."""
    rows = (
        await session.execute(
            select(ShelfLevel, Slot.capacity, Slot.min_quantity)
            .join(
                Slot,
                and_(
                    Slot.store_id == ShelfLevel.store_id,
                    Slot.shelf_id == ShelfLevel.shelf_id,
                    Slot.slot == ShelfLevel.slot,
                ),
                isouter=True,
            )
            .where(ShelfLevel.store_id == store_id)
            .order_by(ShelfLevel.shelf_id, ShelfLevel.slot)
        )
    ).all()
    return ShelfLevelList(
        store_id=store_id,
        items=[
            ShelfLevelOut(
                shelf_id=level.shelf_id,
                slot=level.slot,
                sku_id=level.sku_id,
                quantity=level.quantity,
                at=level.at,
                capacity=capacity,
                min_quantity=minimum,
                below_minimum=minimum is not None and level.quantity < minimum,
            )
            for level, capacity, minimum in rows
        ],
    )


def task_out(task: RestockTask) -> RestockTaskOut:
    """The API form of a restock task."""
    return RestockTaskOut.model_validate(task, from_attributes=True)


@router.get("/api/v1/stores/{store_id}/restock-tasks", response_model=RestockTaskList, summary="Restock tasks")
async def get_restock_tasks(
    session: SessionDep,
    store_id: str,
    status: Annotated[Literal["open", "closed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> RestockTaskList:
    """A store's restock tasks, newest first."""
    query = select(RestockTask).where(RestockTask.store_id == store_id)
    if status is not None:
        query = query.where(RestockTask.status == status)
    rows = (await session.execute(query.order_by(RestockTask.opened_at.desc()).limit(limit))).scalars()
    return RestockTaskList(items=[task_out(t) for t in rows])


@router.get("/api/v1/stores/{store_id}/ledger", response_model=LedgerPage, summary="A store's stock movements")
async def get_ledger(
    session: SessionDep,
    store_id: str,
    sku_id: Annotated[str | None, Query(max_length=63)] = None,
    since: Annotated[IsoDatetime | None, Query(description="at or after, with time zone")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 200,
    cursor: Annotated[int | None, Query(ge=1, le=INT64_MAX, description="next_cursor of the previous page")] = None,
) -> LedgerPage:
    """Ledger rows, newest recorded first."""
    query = select(LedgerRow).where(LedgerRow.store_id == store_id)
    if sku_id is not None:
        query = query.where(LedgerRow.sku_id == sku_id)
    since = aware("since", since)
    if since is not None:
        query = query.where(LedgerRow.at >= since)
    if cursor is not None:
        query = query.where(LedgerRow.id < cursor)
    rows = list((await session.execute(query.order_by(LedgerRow.id.desc()).limit(limit + 1))).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return LedgerPage(
        items=[LedgerRowOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=rows[-1].id if more and rows else None,
    )


@router.get(
    "/api/v1/stores/{store_id}/unplaced-events", response_model=UnplacedList, summary="Events that moved no stock"
)
async def get_unplaced(
    session: SessionDep, store_id: str, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 200
) -> UnplacedList:
    """Scans of codes not in the catalog, shelf moves of slots without a SKU: fix the catalog, then they count."""
    rows = (
        await session.execute(
            select(UnplacedEvent)
            .where(UnplacedEvent.store_id == store_id)
            .order_by(UnplacedEvent.at.desc())
            .limit(limit)
        )
    ).scalars()
    return UnplacedList(
        items=[
            UnplacedOut(event_id=r.event_id, device_id=r.device_id, kind=r.kind, reason=r.reason, at=r.at) for r in rows
        ]
    )


async def _require_sku(session: SessionDep, sku_id: str) -> None:
    if await session.get(Sku, sku_id) is None:
        raise invalid("sku_id", f"SKU {sku_id!r} is not in the catalog", sku_id)


async def _require_store(session: SessionDep, store_id: str, field_name: str) -> None:
    if await session.get(StoreProfile, store_id) is None:
        raise HTTPException(status_code=404, detail=f"{field_name}: no store profile {store_id!r}")


async def _apply_manual(
    session: SessionDep, movements: list[Movement], *, now: datetime, actor: str, note: str | None
) -> None:
    """Write manual movements and commit; a 409 (nothing written) when on hand would leave its column's range."""
    try:
        await apply_movements(session, movements, now=now, actor=actor, note=note)
    except StockOutOfRangeError as err:
        await session.rollback()
        log.warning("stock_out_of_range", store_id=err.store_id, sku_id=err.sku_id, value=err.value, actor=actor)
        raise HTTPException(status_code=409, detail=f"{err}; nothing was changed") from None
    await session.commit()


_MANUAL_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    409: {"model": Problem, "description": "on hand would leave the range a stock position holds; nothing changed"},
    404: {"model": Problem, "description": "no store profile with that id"},
}


@router.post(
    "/api/v1/stores/{store_id}/stock/adjustments",
    response_model=MovementOut,
    status_code=201,
    summary="Adjust on hand by hand",
    responses=_MANUAL_RESPONSES,
)
async def post_adjustment(
    request: Request, session: SessionDep, now: NowDep, who: PrincipalDep, store_id: str, body: AdjustmentIn
) -> MovementOut:
    """One adjustment row in the ledger; on hand changes by ``quantity``."""
    await _require_store(session, store_id, "store_id")
    await _require_sku(session, body.sku_id)
    event_id = str(uuid.uuid4())
    before = await _on_hand(session, [store_id], body.sku_id)
    movement = Movement(event_id, 0, store_id, body.sku_id, MovementKind.ADJUSTMENT, body.quantity, now)
    await _apply_manual(session, [movement], now=now, actor=who.actor, note=body.note)
    after = await _on_hand(session, [store_id], body.sku_id)
    note_change(request, target=f"ledger:{event_id}", store_id=store_id, before=before, after=after, detail=body.note)
    return MovementOut(event_id=event_id, lines=1)


async def _on_hand(session: SessionDep, store_ids: list[str], sku_id: str) -> dict[str, object]:
    """On hand of a SKU in each store, for the audit log's before and after."""
    rows = await session.execute(
        select(StockPosition.store_id, StockPosition.on_hand).where(
            StockPosition.store_id.in_(store_ids), StockPosition.sku_id == sku_id
        )
    )
    held: dict[str, int] = {store: on_hand for store, on_hand in rows.all()}
    return {"sku_id": sku_id, "on_hand": {store: held.get(store, 0) for store in store_ids}}


@router.post(
    "/api/v1/transfers",
    response_model=MovementOut,
    status_code=201,
    summary="Record a transfer",
    responses=_MANUAL_RESPONSES,
)
async def post_transfer(
    request: Request, session: SessionDep, now: NowDep, who: PrincipalDep, body: TransferIn
) -> MovementOut:
    """Two ledger rows of one transfer: out of one store (line 0), into the other (line 1); both stores in scope."""
    await _require_store(session, body.from_store_id, "from_store_id")
    await _require_store(session, body.to_store_id, "to_store_id")
    await _require_sku(session, body.sku_id)
    event_id = str(uuid.uuid4())
    movements = [
        Movement(event_id, 0, body.from_store_id, body.sku_id, MovementKind.TRANSFER_OUT, -body.quantity, now),
        Movement(event_id, 1, body.to_store_id, body.sku_id, MovementKind.TRANSFER_IN, body.quantity, now),
    ]
    stores = [body.from_store_id, body.to_store_id]
    before = await _on_hand(session, stores, body.sku_id)
    await _apply_manual(session, movements, now=now, actor=who.actor, note=body.note)
    after = await _on_hand(session, stores, body.sku_id)
    note_change(
        request, target=f"ledger:{event_id}", store_id=body.from_store_id, before=before, after=after, detail=body.note
    )
    return MovementOut(event_id=event_id, lines=2)


@router.get("/api/v1/commands", response_model=CommandList, summary="Commands sent to gateways")
async def get_commands(
    session: SessionDep,
    store_id: Annotated[str | None, Query(max_length=63)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> CommandList:
    """Newest first; ``status`` one of pending, sent, accepted, done, failed, rejected, expired, undeliverable."""
    query = select(OutgoingCommand)
    if store_id is not None:
        query = query.where(OutgoingCommand.store_id == store_id)
    if status is not None:
        query = query.where(OutgoingCommand.status == status)
    rows = (await session.execute(query.order_by(OutgoingCommand.issued_at.desc()).limit(limit))).scalars()
    return CommandList(items=[CommandOut.model_validate(c, from_attributes=True) for c in rows])
