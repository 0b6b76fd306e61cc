"""``/api/v1/reports``: sales, inventory turnover, sell-through, shrink, alert statistics and the cold chain.

Every period report takes ``from`` and ``to`` as local dates, both inclusive, read in each store's own time
zone, and answers JSON, or CSV with ``?format=csv`` (the same rows and values; null is an empty cell).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Generic, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from hub.api.deps import NowDep, SessionDep
from hub.api.params import IsoDate, invalid
from hub.api.schemas import ApiModel, ValidationProblem
from hub.reports import cold_chain, csv_text, queries
from hub.reports.queries import MAX_PERIOD_DAYS, ReportFilter, ReportPeriodError

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])

CSV_MEDIA_TYPE: Final = "text/csv"
PDF_MEDIA_TYPE: Final = "application/pdf"
_ID_MAX: Final = 63

ReportFormat = Literal["json", "csv"]

_CSV_RESPONSE: Final[dict[int | str, dict[str, Any]]] = {
    200: {"content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}}, "description": "the report (JSON or CSV)"},
    422: {
        "model": ValidationProblem,
        "description": "a bad parameter: from after to, a period over 366 days, an unknown format",
    },
}


# --------------------------------------------------------------------------- response models


class SalesRowOut(ApiModel):
    """Units and revenue of one SKU in one store in one local hour."""

    store_id: str
    timezone: str = Field(description="the IANA zone the local date and hour are in")
    timezone_assumed: bool = Field(description="true when the store has no profile and UTC is used")
    local_date: date
    local_hour: int = Field(description="0-23, the wall clock; on a fall-back day the repeated hour holds both")
    sku_id: str
    name: str | None = Field(description="the SKU's catalog name; null when the catalog does not know it")
    units: int
    revenue: Decimal = Field(description="units x the unit price at the sale, in the store's currency")
    currency: str | None


class TurnoverRowOut(ApiModel):
    """Inventory turnover and days of supply of one SKU in one store."""

    store_id: str
    timezone: str
    timezone_assumed: bool
    sku_id: str
    name: str | None
    units_sold: int
    avg_daily_units: float = Field(description="units sold / days of the period")
    on_hand_start: int = Field(description="on hand at local midnight starting the period, replayed from the ledger")
    on_hand_end: int = Field(description="on hand at local midnight ending the period, replayed from the ledger")
    average_inventory: float = Field(description="(on_hand_start + on_hand_end) / 2")
    turnover: float | None = Field(description="units sold / average inventory; null when it is not positive")
    on_hand_now: int = Field(description="on hand now (stock_positions)")
    days_of_supply: float | None = Field(description="on hand now / avg daily units sold; null without sales")


class SellThroughRowOut(ApiModel):
    """Sell-through of one SKU in one store."""

    store_id: str
    timezone: str
    timezone_assumed: bool
    sku_id: str
    name: str | None
    on_hand_start: int
    units_received: int = Field(description="receipts and transfers in during the period")
    units_sold: int
    on_hand_end: int
    sell_through: float | None = Field(
        description="units sold / (units sold + on hand at the end), 0-1; null when both are 0"
    )


class ShrinkRowOut(ApiModel):
    """Shrink of one SKU in one store: recorded shrink, and losses found by stock counts (they may overlap)."""

    store_id: str
    timezone: str
    timezone_assumed: bool
    sku_id: str
    name: str | None
    shrink_units: int = Field(description="units of shrink records that expired in the period")
    shrink_value: Decimal
    shrink_records: int
    count_loss_units: int = Field(description="units missing at counts of the period (negative count variances)")
    count_loss_value: Decimal | None = Field(description="count losses at today's catalog price; null if unknown")
    counts_with_loss: int
    currency: str | None


class AlertStatsRowOut(ApiModel):
    """Alerts opened in the period of one store, rule kind and severity."""

    store_id: str
    timezone: str
    timezone_assumed: bool
    rule_kind: str
    severity: str
    alerts: int
    acknowledged: int
    mean_time_to_acknowledge_s: float | None
    max_time_to_acknowledge_s: float | None
    resolved: int
    mean_time_to_resolve_s: float | None
    max_time_to_resolve_s: float | None
    open_now: int = Field(description="of these alerts, how many are not resolved now")


RowT = TypeVar("RowT", bound=BaseModel)


class ReportOut(ApiModel, Generic[RowT]):
    """A period report: what it covers, notes for people, and its rows."""

    report: str
    from_date: date = Field(description="first local date of the period")
    to_date: date = Field(description="last local date of the period (inclusive)")
    days: int
    store_id: str | None
    sku_id: str | None
    notes: list[str] = Field(description="e.g. stores without a profile, whose dates are UTC")
    items: list[RowT]


# --------------------------------------------------------------------------- parameters

FromQuery = Annotated[
    IsoDate, Query(alias="from", description="first local date of the period (YYYY-MM-DD), in each store's time zone")
]
ToQuery = Annotated[
    IsoDate,
    Query(alias="to", description=f"last local date of the period, inclusive; at most {MAX_PERIOD_DAYS} days in all"),
]
StoreQuery = Annotated[str | None, Query(max_length=_ID_MAX, description="only this store")]
SkuQuery = Annotated[str | None, Query(max_length=_ID_MAX, description="only this SKU")]
FormatQuery = Annotated[ReportFormat, Query(description="json, or csv for a CSV file of the same rows")]


def _filter(first_day: date, last_day: date, store_id: str | None, sku_id: str | None) -> ReportFilter:
    try:
        return ReportFilter(first_day=first_day, last_day=last_day, store_id=store_id, sku_id=sku_id)
    except ReportPeriodError as err:
        value = first_day if err.parameter == "from" else last_day
        raise invalid(err.parameter, str(err), value.isoformat()) from None


def store_sku_filter(
    first_day: FromQuery, last_day: ToQuery, store_id: StoreQuery = None, sku_id: SkuQuery = None
) -> ReportFilter:
    """The period, store and SKU of a stock report; 422 naming the parameter when the period is wrong."""
    return _filter(first_day, last_day, store_id, sku_id)


def store_filter(first_day: FromQuery, last_day: ToQuery, store_id: StoreQuery = None) -> ReportFilter:
    """The period and store of the alert statistics."""
    return _filter(first_day, last_day, store_id, None)


StockFilterDep = Annotated[ReportFilter, Depends(store_sku_filter)]
StoreFilterDep = Annotated[ReportFilter, Depends(store_filter)]


# --------------------------------------------------------------------------- rendering


def _notes(rows: Sequence[Any]) -> list[str]:
    assumed = sorted({row.store_id for row in rows if row.timezone_assumed})
    return [f"store {store_id} has no store profile: its dates and hours are UTC" for store_id in assumed]


def _csv_response(text: str, filename: str) -> Response:
    return Response(
        content=text.encode(),
        media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _filename(name: str, scope: ReportFilter, extension: str) -> str:
    parts = [name, scope.store_id, scope.sku_id, scope.first_day.isoformat(), scope.last_day.isoformat()]
    return "_".join(part for part in parts if part) + f".{extension}"


async def _render(
    name: str,
    model: type[RowT],
    rows_of: Callable[[AsyncSession, ReportFilter], Awaitable[Sequence[Any]]],
    session: AsyncSession,
    scope: ReportFilter,
    output: ReportFormat,
) -> ReportOut[RowT] | Response:
    rows = await rows_of(session, scope)
    items = [model.model_validate(row, from_attributes=True) for row in rows]
    if output == "csv":
        columns = list(model.model_fields)
        text = csv_text(columns, (item.model_dump(mode="json") for item in items))
        return _csv_response(text, _filename(name, scope, "csv"))
    return ReportOut[model](  # type: ignore[valid-type]
        report=name,
        from_date=scope.first_day,
        to_date=scope.last_day,
        days=scope.days,
        store_id=scope.store_id,
        sku_id=scope.sku_id,
        notes=_notes(rows),
        items=items,
    )


# --------------------------------------------------------------------------- period reports


@router.get(
    "/sales",
    response_model=ReportOut[SalesRowOut],
    summary="Sales by store, SKU and local hour",
    description="Checkout sales (ledger rows of kind sale) per store, local date, local hour and SKU: units "
    "and revenue in the store's currency. Dates and hours are each store's wall clock.",
    responses=_CSV_RESPONSE,
)
async def get_sales(
    session: SessionDep, scope: StockFilterDep, output: Annotated[ReportFormat, Query(alias="format")] = "json"
) -> ReportOut[SalesRowOut] | Response:
    """The sales report."""
    return await _render("sales", SalesRowOut, queries.sales, session, scope, output)


@router.get(
    "/inventory-turnover",
    response_model=ReportOut[TurnoverRowOut],
    summary="Inventory turnover and days of supply per store and SKU",
    description="Units sold over the period, average daily units, on hand at both ends of the period and now, "
    "turnover (units sold / average inventory) and days of supply (on hand now / average daily units).",
    responses=_CSV_RESPONSE,
)
async def get_inventory_turnover(
    session: SessionDep, scope: StockFilterDep, output: Annotated[ReportFormat, Query(alias="format")] = "json"
) -> ReportOut[TurnoverRowOut] | Response:
    """The inventory turnover report."""
    return await _render("inventory-turnover", TurnoverRowOut, queries.stock_flow, session, scope, output)


@router.get(
    "/sell-through",
    response_model=ReportOut[SellThroughRowOut],
    summary="Sell-through per store and SKU",
    description="Units sold / (units sold + on hand at the end of the period), with on hand at the start and "
    "units received for context.",
    responses=_CSV_RESPONSE,
)
async def get_sell_through(
    session: SessionDep, scope: StockFilterDep, output: Annotated[ReportFormat, Query(alias="format")] = "json"
) -> ReportOut[SellThroughRowOut] | Response:
    """The sell-through report."""
    return await _render("sell-through", SellThroughRowOut, queries.stock_flow, session, scope, output)


@router.get(
    "/shrink",
    response_model=ReportOut[ShrinkRowOut],
    summary="Shrink per store and SKU",
    description="Shrink records that expired in the period (items picked from a shelf and not sold), and, "
    "separately, units missing at stock counts of the period. The two may count the same items.",
    responses=_CSV_RESPONSE,
)
async def get_shrink(
    session: SessionDep, scope: StockFilterDep, output: Annotated[ReportFormat, Query(alias="format")] = "json"
) -> ReportOut[ShrinkRowOut] | Response:
    """The shrink report."""
    return await _render("shrink", ShrinkRowOut, queries.shrink, session, scope, output)


@router.get(
    "/alerts",
    response_model=ReportOut[AlertStatsRowOut],
    summary="Alert statistics per store, rule kind and severity",
    description="Alerts opened in the period: how many, how many were acknowledged and resolved, mean and "
    "longest time to acknowledge and to resolve (seconds from opening), and how many are still open.",
    responses=_CSV_RESPONSE,
)
async def get_alert_stats(
    session: SessionDep, scope: StoreFilterDep, output: Annotated[ReportFormat, Query(alias="format")] = "json"
) -> ReportOut[AlertStatsRowOut] | Response:
    """The alert statistics."""
    return await _render("alerts", AlertStatsRowOut, queries.alert_stats, session, scope, output)


# --------------------------------------------------------------------------- cold chain

StoreIdPath = Annotated[str, Path(max_length=_ID_MAX, description="store id")]
DayPath = Annotated[IsoDate, Path(description="the store's local date, YYYY-MM-DD")]
_NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {404: {"description": "the hub knows no such store"}}


async def _cold_chain(session: AsyncSession, store_id: str, day: date, now: datetime) -> cold_chain.ColdChainReport:
    report = await cold_chain.cold_chain_report(session, store_id, day, generated_at=now)
    if report is None:
        raise HTTPException(status_code=404, detail=f"no store {store_id!r}: it has no profile and has sent nothing")
    return report


# The .csv and .pdf routes come first: the JSON route's {day} would otherwise take "2025-01-31.csv".
@router.get(
    "/cold-chain/{store_id}/{day}.csv",
    summary="Cold-chain report of a store and day, CSV",
    response_class=Response,
    responses={
        200: {"content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}}, "description": "the CSV file"},
        **_NOT_FOUND,
    },
)
async def get_cold_chain_csv(session: SessionDep, now: NowDep, store_id: StoreIdPath, day: DayPath) -> Response:
    """Zone, excursion and note rows in one table (a ``record`` column says which)."""
    report = await _cold_chain(session, store_id, day, now)
    return _csv_response(cold_chain.report_csv(report), f"cold-chain_{store_id}_{day.isoformat()}.csv")


@router.get(
    "/cold-chain/{store_id}/{day}.pdf",
    summary="Cold-chain report of a store and day, PDF",
    response_class=Response,
    responses={200: {"content": {PDF_MEDIA_TYPE: {}}, "description": "the PDF file"}, **_NOT_FOUND},
)
async def get_cold_chain_pdf(session: SessionDep, now: NowDep, store_id: StoreIdPath, day: DayPath) -> Response:
    """The report for people: a table per zone and the excursions."""
    report = await _cold_chain(session, store_id, day, now)
    return Response(
        content=cold_chain.report_pdf(report),
        media_type=PDF_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="cold-chain_{store_id}_{day.isoformat()}.pdf"'},
    )


@router.get(
    "/cold-chain/{store_id}/{day}",
    response_model=cold_chain.ColdChainReport,
    summary="Cold-chain report of a store and day",
    description="Per zone and quantity: readings, min, max, mean and time outside the range of the store's "
    "environment_range rules; and every excursion overlapping the day. Times are local with their UTC offset. "
    "Also as `.csv` and `.pdf`.",
    responses=_NOT_FOUND,
)
async def get_cold_chain(
    session: SessionDep, now: NowDep, store_id: StoreIdPath, day: DayPath
) -> cold_chain.ColdChainReport:
    """The report as JSON."""
    return await _cold_chain(session, store_id, day, now)
