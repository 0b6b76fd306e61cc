"""``/api/v1/catalog``: SKUs, store profiles, the planogram and stock policies, as CSV in and out and as JSON.

Imports take the file as the request body (``Content-Type: text/csv``) and answer 422 with every bad
row and column when anything is wrong, having applied nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Protocol

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession

from hub.api.deps import NowDep, SessionDep, catalog_may_change
from hub.api.schemas import ApiModel, Problem
from hub.auth.guard import PrincipalDep
from hub.catalog import service
from hub.catalog.csv_io import CsvRowsError, decode_csv
from hub.catalog.models import Sku, Slot, StoreProfile
from hub.catalog.values import decimal_text, money_text
from hub.inventory.models import StockPolicy

router = APIRouter(prefix="/api/v1/catalog", tags=["catalog"], dependencies=[Depends(catalog_may_change)])

# A chain's 100 000 SKUs are about 10 MB of CSV; a body past this is refused before it is parsed.
MAX_CSV_BYTES: Final = 32 * 1024 * 1024
MAX_LIMIT: Final = 10_000
CSV_MEDIA_TYPE: Final = "text/csv"

_CSV_BODY: Final[dict[str, Any]] = {
    "requestBody": {"required": True, "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}}}
}
_CSV_RESPONSE: Final[dict[int | str, dict[str, Any]]] = {
    200: {"content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}}, "description": "the CSV file"}
}


class RowErrorOut(ApiModel):
    """One bad row (1 is the header) and, when it is one column's fault, the column."""

    row: int
    column: str | None
    message: str


class ImportErrorOut(ApiModel):
    """Why an import was refused; nothing of the file was applied."""

    message: str = Field(description="the first errors as one line, 'row N, column X: ...'")
    error_count: int = Field(description="errors found; `detail` lists the first 1000")
    detail: list[RowErrorOut]


class ImportReportOut(ApiModel):
    """What an import did, counted in rows of the file."""

    created: int
    updated: int
    unchanged: int


class SkuOut(ApiModel):
    """A SKU."""

    sku_id: str
    gtin: str | None = Field(description="GTIN-14")
    name: str
    unit_weight_g: Decimal | None
    pack_size: int
    price: Decimal
    currency: str
    updated_at: datetime


class SkuPageOut(ApiModel):
    """SKUs by id; pass ``next_after`` as ``after`` for the next page."""

    items: list[SkuOut]
    next_after: str | None


class StoreProfileOut(ApiModel):
    """A store's profile."""

    store_id: str
    name: str
    timezone: str = Field(description="IANA time zone, e.g. Europe/London")
    currency: str
    opening_hours: dict[str, list[str]] = Field(
        description='per weekday ("mon" ... "sun") the opening intervals "HH:MM-HH:MM" in local time; [] is closed'
    )
    latitude: float | None = Field(default=None, description="WGS 84 decimal degrees; null: unknown")
    longitude: float | None = Field(default=None, description="WGS 84 decimal degrees; null: unknown")
    region: str | None = Field(default=None, description="the region operators may be scoped to; null: none")
    updated_at: datetime


class StoreProfileList(ApiModel):
    """Every store profile, by id."""

    items: list[StoreProfileOut]


class SlotOut(ApiModel):
    """A slot of a shelf and the SKU it holds."""

    store_id: str
    shelf_id: str
    slot: int
    sku_id: str
    capacity: int
    min_quantity: int
    camera_id: str | None = None
    updated_at: datetime


class SlotList(ApiModel):
    """Slots by store, shelf and number."""

    items: list[SlotOut]


class StockPolicyOut(ApiModel):
    """The min/max rules of one SKU in one store."""

    store_id: str
    sku_id: str
    max_stock: int = Field(description="orders never bring the inventory position past it")
    reorder_point: int | None = Field(description="fixed reorder point; null: lead-time forecast + safety stock")
    lead_time_days: int
    safety_stock: int
    on_order: int = Field(description="units ordered and not yet received")
    updated_at: datetime


class StockPolicyList(ApiModel):
    """Stock policies by store and SKU."""

    items: list[StockPolicyOut]


def sku_out(sku: Sku) -> SkuOut:
    """The API form of a SKU."""
    return SkuOut(
        sku_id=sku.sku_id,
        gtin=sku.gtin,
        name=sku.name,
        unit_weight_g=None if sku.unit_weight_g is None else Decimal(decimal_text(sku.unit_weight_g)),
        pack_size=sku.pack_size,
        price=Decimal(money_text(sku.price, sku.currency)),
        currency=sku.currency,
        updated_at=sku.updated_at,
    )


def store_out(profile: StoreProfile) -> StoreProfileOut:
    """The API form of a store profile."""
    return StoreProfileOut(
        store_id=profile.store_id,
        name=profile.name,
        timezone=profile.timezone,
        currency=profile.currency,
        opening_hours=profile.opening_hours,
        latitude=profile.latitude,
        longitude=profile.longitude,
        region=profile.region,
        updated_at=profile.updated_at,
    )


def slot_out(slot: Slot) -> SlotOut:
    """The API form of a slot."""
    return SlotOut(
        store_id=slot.store_id,
        shelf_id=slot.shelf_id,
        slot=slot.slot,
        sku_id=slot.sku_id,
        capacity=slot.capacity,
        min_quantity=slot.min_quantity,
        camera_id=slot.camera_id,
        updated_at=slot.updated_at,
    )


def stock_policy_out(policy: StockPolicy) -> StockPolicyOut:
    """The API form of a stock policy."""
    return StockPolicyOut(
        store_id=policy.store_id,
        sku_id=policy.sku_id,
        max_stock=policy.max_stock,
        reorder_point=policy.reorder_point,
        lead_time_days=policy.lead_time_days,
        safety_stock=policy.safety_stock,
        on_order=policy.on_order,
        updated_at=policy.updated_at,
    )


class _Importer(Protocol):
    def __call__(self, session: AsyncSession, text: str, *, now: datetime) -> Awaitable[service.ImportReport]: ...


async def _import(request: Request, session: AsyncSession, now: datetime, importer: _Importer) -> Response:
    """Read the CSV body, apply it with ``importer``; 415, 413, 422 or 409 when it cannot be."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != CSV_MEDIA_TYPE:
        raise HTTPException(status_code=415, detail=f"send the file as {CSV_MEDIA_TYPE}, not {media_type or 'nothing'}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_CSV_BYTES:
            raise HTTPException(status_code=413, detail=f"a CSV file may have at most {MAX_CSV_BYTES} bytes")
    try:
        report = await importer(session, decode_csv(bytes(body)), now=now)
    except CsvRowsError as err:
        out = ImportErrorOut(
            message=str(err),
            error_count=err.count,
            detail=[RowErrorOut(row=e.row, column=e.column, message=e.message) for e in err.errors],
        )
        return JSONResponse(status_code=422, content=out.model_dump(mode="json"))
    except service.CatalogConflictError as err:
        raise HTTPException(status_code=409, detail=str(err)) from err
    out_report = ImportReportOut(created=report.created, updated=report.updated, unchanged=report.unchanged)
    return JSONResponse(content=out_report.model_dump(mode="json"))


def _csv(text: str, filename: str) -> Response:
    return Response(
        content=text.encode(),
        media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


_IMPORT_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {"model": ImportReportOut},
    422: {"model": ImportErrorOut, "description": "bad rows or header; nothing was applied"},
    409: {"model": Problem, "description": "the catalog changed during the import; nothing was applied, try again"},
    413: {"model": Problem, "description": "the file is too large"},
    415: {"model": Problem, "description": "the body is not text/csv"},
}

SkuIdPath = Annotated[str, Path(max_length=63, description="the retailer's SKU code")]
StoreIdPath = Annotated[str, Path(max_length=63, description="store id")]


# --------------------------------------------------------------------------- SKUs


@router.post(
    "/skus/import",
    summary="Import skus.csv",
    description="Create or update SKUs from a CSV body (see docs/catalog.md). All rows or none.",
    responses=_IMPORT_RESPONSES,
    openapi_extra=_CSV_BODY,
)
async def post_skus_import(request: Request, session: SessionDep, now: NowDep) -> Response:
    """Apply skus.csv."""
    return await _import(request, session, now, service.import_skus)


@router.get("/skus/export", summary="Export skus.csv", response_class=Response, responses=_CSV_RESPONSE)
async def get_skus_export(session: SessionDep) -> Response:
    """Every SKU as CSV, in the format the import takes."""
    return _csv(await service.export_skus(session), "skus.csv")


@router.get("/skus", response_model=SkuPageOut, summary="List SKUs")
async def get_skus(
    session: SessionDep,
    after: Annotated[str | None, Query(max_length=63, description="next_after of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="SKUs per page")] = 1000,
) -> SkuPageOut:
    """One page of SKUs by id."""
    skus = await service.list_skus(session, after=after, limit=limit + 1)
    next_after = skus[limit - 1].sku_id if len(skus) > limit else None
    return SkuPageOut(items=[sku_out(sku) for sku in skus[:limit]], next_after=next_after)


@router.get(
    "/skus/{sku_id}", response_model=SkuOut, summary="Get a SKU", responses={404: {"description": "no such SKU"}}
)
async def get_one_sku(session: SessionDep, sku_id: SkuIdPath) -> SkuOut:
    """One SKU."""
    sku = await service.get_sku(session, sku_id)
    if sku is None:
        raise HTTPException(status_code=404, detail=f"no SKU {sku_id!r}")
    return sku_out(sku)


# --------------------------------------------------------------------------- store profiles


@router.post(
    "/stores/import",
    summary="Import stores.csv",
    description="Create or update store profiles from a CSV body (see docs/catalog.md). All rows or none.",
    responses=_IMPORT_RESPONSES,
    openapi_extra=_CSV_BODY,
)
async def post_stores_import(request: Request, session: SessionDep, now: NowDep) -> Response:
    """Apply stores.csv."""
    return await _import(request, session, now, service.import_stores)


@router.get("/stores/export", summary="Export stores.csv", response_class=Response, responses=_CSV_RESPONSE)
async def get_stores_export(session: SessionDep) -> Response:
    """Every store profile as CSV, in the format the import takes."""
    return _csv(await service.export_stores(session), "stores.csv")


@router.get("/stores", response_model=StoreProfileList, summary="List store profiles")
async def get_store_profiles(session: SessionDep, who: PrincipalDep) -> StoreProfileList:
    """Every store profile (of the stores the principal reaches), by id."""
    profiles = await service.list_store_profiles(session)
    return StoreProfileList(items=[store_out(p) for p in profiles if who.reaches(p.store_id)])


@router.get(
    "/stores/{store_id}",
    response_model=StoreProfileOut,
    summary="Get a store profile",
    responses={404: {"description": "no such store profile"}},
)
async def get_store_profile(session: SessionDep, store_id: StoreIdPath) -> StoreProfileOut:
    """One store profile."""
    profile = await service.get_store_profile(session, store_id)
    if profile is None:
        raise HTTPException(status_code=404, detail=f"no store profile {store_id!r}")
    return store_out(profile)


@router.get(
    "/stores/{store_id}/slots",
    response_model=SlotList,
    summary="A store's planogram",
    responses={404: {"model": Problem, "description": "no such store profile"}},
)
async def get_store_slots(session: SessionDep, store_id: StoreIdPath) -> SlotList:
    """The slots of one store (404 when the store has no profile)."""
    if await service.get_store_profile(session, store_id) is None:
        raise HTTPException(status_code=404, detail=f"no store profile {store_id!r}")
    return SlotList(items=[slot_out(s) for s in await service.list_slots(session, store_id=store_id)])


@router.get(
    "/stores/{store_id}/stock-policies",
    response_model=StockPolicyList,
    summary="A store's stock policies",
    responses={404: {"description": "no such store profile"}},
)
async def get_store_stock_policies(session: SessionDep, store_id: StoreIdPath) -> StockPolicyList:
    """The stock policies of one store by SKU (404 when the store has no profile)."""
    if await service.get_store_profile(session, store_id) is None:
        raise HTTPException(status_code=404, detail=f"no store profile {store_id!r}")
    policies = await service.list_stock_policies(session, store_id=store_id)
    return StockPolicyList(items=[stock_policy_out(p) for p in policies])


# --------------------------------------------------------------------------- planogram


@router.post(
    "/planogram/import",
    summary="Import planogram.csv",
    description="Create or update slots (and their shelves) from a CSV body (see docs/catalog.md). "
    "Stores and SKUs must exist already. All rows or none.",
    responses=_IMPORT_RESPONSES,
    openapi_extra=_CSV_BODY,
)
async def post_planogram_import(request: Request, session: SessionDep, now: NowDep) -> Response:
    """Apply planogram.csv."""
    return await _import(request, session, now, service.import_planogram)


@router.get("/planogram/export", summary="Export planogram.csv", response_class=Response, responses=_CSV_RESPONSE)
async def get_planogram_export(
    session: SessionDep,
    store_id: Annotated[str | None, Query(max_length=63, description="only this store")] = None,
) -> Response:
    """The slots (of one store or all) as CSV, in the format the import takes."""
    return _csv(await service.export_planogram(session, store_id=store_id), "planogram.csv")


@router.get("/planogram", response_model=SlotList, summary="List slots")
async def get_planogram(
    session: SessionDep,
    store_id: Annotated[str | None, Query(max_length=63, description="only this store")] = None,
) -> SlotList:
    """Every slot (of one store or all), by store, shelf and number."""
    return SlotList(items=[slot_out(s) for s in await service.list_slots(session, store_id=store_id)])


# --------------------------------------------------------------------------- stock policies


@router.post(
    "/stock-policies/import",
    summary="Import stock_policies.csv",
    description="Create or update min/max stock policies from a CSV body (see docs/catalog.md). "
    "Stores and SKUs must exist already. All rows or none.",
    responses=_IMPORT_RESPONSES,
    openapi_extra=_CSV_BODY,
)
async def post_stock_policies_import(request: Request, session: SessionDep, now: NowDep) -> Response:
    """Apply stock_policies.csv."""
    return await _import(request, session, now, service.import_stock_policies)


@router.get(
    "/stock-policies/export", summary="Export stock_policies.csv", response_class=Response, responses=_CSV_RESPONSE
)
async def get_stock_policies_export(
    session: SessionDep,
    store_id: Annotated[str | None, Query(max_length=63, description="only this store")] = None,
) -> Response:
    """The stock policies (of one store or all) as CSV, in the format the import takes."""
    return _csv(await service.export_stock_policies(session, store_id=store_id), "stock_policies.csv")


@router.get("/stock-policies", response_model=StockPolicyList, summary="List stock policies")
async def get_stock_policies(
    session: SessionDep,
    store_id: Annotated[str | None, Query(max_length=63, description="only this store")] = None,
) -> StockPolicyList:
    """Every stock policy (of one store or all), by store and SKU."""
    return StockPolicyList(
        items=[stock_policy_out(p) for p in await service.list_stock_policies(session, store_id=store_id)]
    )
