"""``/api/v1/reports``: sales, inventory turnover, sell-through, shrink, alert statistics, the cold chain, the
daily store summary, the chain roll-up and the cold-chain bundle.

Every period report takes ``from`` and ``to`` as local dates, both inclusive, read in each store's own time
zone, and answers JSON, or a file with ``?format=csv|xlsx|pdf`` (the same rows and values; null is an empty
cell); ``?bom=true`` starts a CSV with a UTF-8 byte order mark, so that Excel reads non-ASCII names. A period
that includes today stops at now. The files are made by :mod:`hub.reports.documents`.
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

from hub.api.deps import NowDep, SessionDep, SettingsDep
from hub.api.params import IsoDate, invalid
from hub.api.schemas import ApiModel, ValidationProblem
from hub.auth.guard import PrincipalDep
from hub.domain.access import Principal
from hub.reports import cold_chain, csv_text, documents, queries, summary
from hub.reports.documents import (
    BundleTooLargeError,
    ReportDocument,
    ReportNotFoundError,
    ReportScope,
    ReportScopeError,
)
from hub.reports.formats import (
    XLSX_MEDIA_TYPE,
    ZIP_MEDIA_TYPE,
    csv_bytes,
    document_pdf,
    document_workbook,
    find_cjk_font,
)
from hub.reports.queries import MAX_PERIOD_DAYS, ReportFilter, ReportPeriodError
from hub.settings import HubSettings

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])

CSV_MEDIA_TYPE: Final = "text/csv"
PDF_MEDIA_TYPE: Final = "application/pdf"
_ID_MAX: Final = 63
# Store ids one request may name (a chain has hundreds; the bundle has its own, configured limit).
_MAX_NAMED_STORES: Final = 1000

TableFormat = Literal["json", "csv"]  # reports with JSON and CSV only (footfall)
ReportFormat = Literal["json", "csv", "xlsx", "pdf"]
FileFormat = Literal["csv", "xlsx", "pdf"]
_FILE_CONTENT: Final[dict[str, Any]] = {
    CSV_MEDIA_TYPE: {"schema": {"type": "string"}},
    XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
    PDF_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
}

_CSV_RESPONSE: Final[dict[int | str, dict[str, Any]]] = {
    200: {"content": _FILE_CONTENT, "description": "the report (JSON, CSV, Excel or PDF)"},
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


class AlertLogRowOut(ApiModel):
    """One alert opened in the period, and who acknowledged and resolved it; times on the store's clock."""

    store_id: str
    timezone: str
    timezone_assumed: bool
    alert_id: str
    opened_at: str = Field(description="when it opened, the store's local time with its UTC offset")
    severity: str
    rule_id: str
    rule_kind: str
    subject: str = Field(description="what it is about: kind:id (a device, a slot, a gateway)")
    message: str
    status: str = Field(description="open, acknowledged or resolved, now")
    acknowledged_by: str | None
    acknowledged_at: str | None
    resolved_by: str | None
    resolved_at: str | None
    resolution_note: str | None
    note: str | None = Field(default=None, description="on the last row of a log cut at 50,000 alerts")


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
FormatQuery = Annotated[
    ReportFormat, Query(alias="format", description="json, or csv, xlsx (Excel) or pdf for a file of the same rows")
]
BomQuery = Annotated[
    bool, Query(description="CSV only: start with a UTF-8 byte order mark, so that Excel reads non-ASCII names")
]


def _filter(first_day: date, last_day: date, store_id: str | None, sku_id: str | None, now: datetime) -> ReportFilter:
    try:
        return ReportFilter(first_day=first_day, last_day=last_day, store_id=store_id, sku_id=sku_id, until=now)
    except ReportPeriodError as err:
        value = first_day if err.parameter == "from" else last_day
        raise invalid(err.parameter, str(err), value.isoformat()) from None


def store_sku_filter(
    now: NowDep, first_day: FromQuery, last_day: ToQuery, store_id: StoreQuery = None, sku_id: SkuQuery = None
) -> ReportFilter:
    """The period, store and SKU of a stock report, stopping at now; 422 naming the parameter when it is wrong."""
    return _filter(first_day, last_day, store_id, sku_id, now)


def store_filter(now: NowDep, first_day: FromQuery, last_day: ToQuery, store_id: StoreQuery = None) -> ReportFilter:
    """The period and store of the alert statistics, stopping at now."""
    return _filter(first_day, last_day, store_id, None, now)


StockFilterDep = Annotated[ReportFilter, Depends(store_sku_filter)]
StoreFilterDep = Annotated[ReportFilter, Depends(store_filter)]


# --------------------------------------------------------------------------- rendering


def _notes(rows: Sequence[Any]) -> list[str]:
    assumed = sorted({row.store_id for row in rows if row.timezone_assumed})
    return [f"store {store_id} has no store profile: its dates and hours are UTC" for store_id in assumed]


def _csv_response(text: str, filename: str, *, bom: bool = False) -> Response:
    return Response(
        content=csv_bytes(text, bom=bom),
        media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _file_response(document: ReportDocument) -> Response:
    return Response(
        content=document.body,
        media_type=document.media_type,
        headers={"Content-Disposition": f'attachment; filename="{document.filename}"'},
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
    file: FileOptions,
) -> ReportOut[RowT] | Response:
    rows = await rows_of(session, scope)
    items = [model.model_validate(row, from_attributes=True) for row in rows]
    if output == "csv":
        columns = list(model.model_fields)
        text = csv_text(columns, (item.model_dump(mode="json") for item in items))
        return _csv_response(text, _filename(name, scope, "csv"), bom=file.bom)
    if output in ("xlsx", "pdf"):
        kind = _DOCUMENT_KIND.get(name, name)
        document = documents.period_document(kind, rows, scope)
        body = (
            document_workbook(document)
            if output == "xlsx"
            else document_pdf(document, font=find_cjk_font(file.settings.reports.pdf_font), created=file.now)
        )
        return _file_response(
            ReportDocument(filename=_filename(name, scope, output), media_type=documents.MEDIA_TYPES[output], body=body)
        )
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

# The documents' kind of each period report (``inventory-turnover`` is ``inventory`` there).
_DOCUMENT_KIND: Final = {"inventory-turnover": "inventory"}


class FileOptions:
    """What a report's file needs beyond its rows: the BOM choice, the settings (PDF font) and now."""

    def __init__(self, settings: SettingsDep, now: NowDep, bom: BomQuery = False) -> None:
        self.settings = settings
        self.now = now
        self.bom = bom


FileDep = Annotated[FileOptions, Depends()]


@router.get(
    "/sales",
    response_model=ReportOut[SalesRowOut],
    summary="Sales by store, SKU and local hour",
    description="Checkout sales (ledger rows of kind sale) per store, local date, local hour and SKU: units "
    "and revenue in the store's currency. Dates and hours are each store's wall clock.",
    responses=_CSV_RESPONSE,
)
async def get_sales(
    session: SessionDep, scope: StockFilterDep, file: FileDep, output: FormatQuery = "json"
) -> ReportOut[SalesRowOut] | Response:
    """The sales report."""
    return await _render("sales", SalesRowOut, queries.sales, session, scope, output, file)


@router.get(
    "/inventory-turnover",
    response_model=ReportOut[TurnoverRowOut],
    summary="Inventory turnover and days of supply per store and SKU",
    description="Units sold over the period, average daily units, on hand at both ends of the period and now, "
    "turnover (units sold / average inventory) and days of supply (on hand now / average daily units).",
    responses=_CSV_RESPONSE,
)
async def get_inventory_turnover(
    session: SessionDep, scope: StockFilterDep, file: FileDep, output: FormatQuery = "json"
) -> ReportOut[TurnoverRowOut] | Response:
    """The inventory turnover report."""
    return await _render("inventory-turnover", TurnoverRowOut, queries.stock_flow, session, scope, output, file)


@router.get(
    "/sell-through",
    response_model=ReportOut[SellThroughRowOut],
    summary="Sell-through per store and SKU",
    description="Units sold / (units sold + on hand at the end of the period), with on hand at the start and "
    "units received for context.",
    responses=_CSV_RESPONSE,
)
async def get_sell_through(
    session: SessionDep, scope: StockFilterDep, file: FileDep, output: FormatQuery = "json"
) -> ReportOut[SellThroughRowOut] | Response:
    """The sell-through report."""
    return await _render("sell-through", SellThroughRowOut, queries.stock_flow, session, scope, output, file)


@router.get(
    "/shrink",
    response_model=ReportOut[ShrinkRowOut],
    summary="Shrink per store and SKU",
    description="Shrink records that expired in the period (items picked from a shelf and not sold), and, "
    "separately, units missing at stock counts of the period. The two may count the same items.",
    responses=_CSV_RESPONSE,
)
async def get_shrink(
    session: SessionDep, scope: StockFilterDep, file: FileDep, output: FormatQuery = "json"
) -> ReportOut[ShrinkRowOut] | Response:
    """The shrink report."""
    return await _render("shrink", ShrinkRowOut, queries.shrink, session, scope, output, file)


@router.get(
    "/alerts",
    response_model=ReportOut[AlertStatsRowOut],
    summary="Alert statistics per store, rule kind and severity",
    description="Alerts opened in the period: how many, how many were acknowledged and resolved, mean and "
    "longest time to acknowledge and to resolve (seconds from opening), and how many are still open.",
    responses=_CSV_RESPONSE,
)
async def get_alert_stats(
    session: SessionDep, scope: StoreFilterDep, file: FileDep, output: FormatQuery = "json"
) -> ReportOut[AlertStatsRowOut] | Response:
    """The alert statistics."""
    return await _render("alerts", AlertStatsRowOut, queries.alert_stats, session, scope, output, file)


@router.get(
    "/alert-log",
    response_model=ReportOut[AlertLogRowOut],
    summary="Alert log: each alert opened in the period",
    description="Every alert opened in the period, per store and oldest first, with who acknowledged and resolved "
    "it, when (the store's clock) and the resolution note; at most 50,000 alerts, the last row saying so.",
    responses=_CSV_RESPONSE,
)
async def get_alert_log(
    session: SessionDep, scope: StoreFilterDep, file: FileDep, output: FormatQuery = "json"
) -> ReportOut[AlertLogRowOut] | Response:
    """The alert log."""
    return await _render("alert-log", AlertLogRowOut, queries.alert_log, session, scope, output, file)


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
async def get_cold_chain_csv(
    session: SessionDep, now: NowDep, store_id: StoreIdPath, day: DayPath, bom: BomQuery = False
) -> Response:
    """Zone, excursion and note rows in one table (a ``record`` column says which)."""
    report = await _cold_chain(session, store_id, day, now)
    return _csv_response(cold_chain.report_csv(report), f"cold-chain_{store_id}_{day.isoformat()}.csv", bom=bom)


@router.get(
    "/cold-chain/{store_id}/{day}.xlsx",
    summary="Cold-chain report of a store and day, Excel",
    response_class=Response,
    responses={200: {"content": {XLSX_MEDIA_TYPE: {}}, "description": "the workbook"}, **_NOT_FOUND},
)
async def get_cold_chain_xlsx(
    session: SessionDep, settings: SettingsDep, now: NowDep, store_id: StoreIdPath, day: DayPath
) -> Response:
    """The CSV's rows as a sheet."""
    scope = ReportScope.day(day, store_id=store_id)
    return await _document(("cold-chain", "xlsx"), session, scope, now=now, settings=settings)


@router.get(
    "/cold-chain/{store_id}/{day}.pdf",
    summary="Cold-chain report of a store and day, PDF",
    response_class=Response,
    responses={200: {"content": {PDF_MEDIA_TYPE: {}}, "description": "the PDF file"}, **_NOT_FOUND},
)
async def get_cold_chain_pdf(
    session: SessionDep, settings: SettingsDep, now: NowDep, store_id: StoreIdPath, day: DayPath
) -> Response:
    """The report for people: a table per zone and the excursions; Chinese names in a CJK font."""
    report = await _cold_chain(session, store_id, day, now)
    return Response(
        content=cold_chain.report_pdf(report, font=find_cjk_font(settings.reports.pdf_font)),
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


# --------------------------------------------------------------------------- files of documents


async def _document(
    key: tuple[str, str], session: AsyncSession, scope: ReportScope, *, now: datetime, settings: HubSettings
) -> Response:
    """A document of :mod:`hub.reports.documents` as a download; its refusals in the API's words."""
    try:
        document = await documents.DOCUMENTS[key](session, scope, now=now, settings=settings)
    except ReportNotFoundError as err:
        raise HTTPException(status_code=404, detail=str(err)) from None
    except ReportScopeError as err:
        raise HTTPException(status_code=403, detail=str(err)) from None
    except BundleTooLargeError as err:
        raise invalid("store_id", str(err), len(scope.store_list)) from None
    return _file_response(document)


def _reach(who: Principal) -> frozenset[str] | None:
    return who.store_ids


# --------------------------------------------------------------------------- daily store summary


@router.get(
    "/daily-summary/{store_id}/{day}",
    response_model=summary.DailySummary,
    summary="Daily summary of a store",
    description="One store's local day: sales by hour and by SKU with totals in the store's currency, slots "
    "below their minimum now, restock tasks done, alerts raised by severity and still open, and each zone's "
    "cold-chain compliance. Today stops at now. `?format=csv|xlsx|pdf` for a file (`bom=true` for Excel).",
    responses={200: {"content": _FILE_CONTENT, "description": "the summary"}, **_NOT_FOUND},
)
async def get_daily_summary(
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    store_id: StoreIdPath,
    day: DayPath,
    output: FormatQuery = "json",
    bom: BomQuery = False,
) -> summary.DailySummary | Response:
    """The summary as JSON or a file."""
    scope = ReportScope.day(day, store_id=store_id, bom=bom)
    if output != "json":
        return await _document(("daily-summary", output), session, scope, now=now, settings=settings)
    try:
        return await documents.load_daily_summary(session, scope, now=now)
    except ReportNotFoundError as err:
        raise HTTPException(status_code=404, detail=str(err)) from None


# --------------------------------------------------------------------------- chain roll-up

RegionQuery = Annotated[str | None, Query(max_length=_ID_MAX, description="only the stores of this region")]
StoresQuery = Annotated[
    list[str] | None,
    Query(
        alias="store_id",
        max_length=_MAX_NAMED_STORES,
        description=f"only these stores (repeat the parameter; at most {_MAX_NAMED_STORES})",
    ),
]


def _named(stores: list[str] | None) -> tuple[str, ...]:
    named = tuple(dict.fromkeys(stores or ()))
    for store_id in named:
        if not store_id or len(store_id) > _ID_MAX:
            raise invalid("store_id", f"a store id has 1 to {_ID_MAX} characters", store_id)
    return named


@router.get(
    "/chain-summary/{day}",
    response_model=summary.ChainSummary,
    summary="Chain roll-up of a day",
    description="One row per store you may see (each on its own local date `day`) with the daily summary's "
    "headline figures, and totals per currency. Narrow it with `region` or `store_id` (repeatable). "
    "`?format=csv|xlsx|pdf` for a file.",
    responses={
        200: {"content": _FILE_CONTENT, "description": "the roll-up"},
        403: {"description": "a named store outside your access"},
        404: {"description": "a named store the hub does not know"},
    },
)
async def get_chain_summary(
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    who: PrincipalDep,
    day: DayPath,
    region: RegionQuery = None,
    stores: StoresQuery = None,
    output: FormatQuery = "json",
    bom: BomQuery = False,
) -> summary.ChainSummary | Response:
    """The roll-up of the reader's stores."""
    scope = ReportScope.day(day, stores=_reach(who), region=region, store_list=_named(stores), bom=bom)
    if output != "json":
        return await _document(("chain-summary", output), session, scope, now=now, settings=settings)
    try:
        return await documents.load_chain_summary(session, scope, now=now)
    except ReportNotFoundError as err:
        raise HTTPException(status_code=404, detail=str(err)) from None
    except ReportScopeError as err:
        raise HTTPException(status_code=403, detail=str(err)) from None


# --------------------------------------------------------------------------- cold-chain bundle


@router.get(
    "/cold-chain-bundle/{day}",
    summary="Cold-chain reports of many stores, one ZIP",
    description="For one local date: a PDF per store and one workbook (a sheet per store), in a ZIP. The stores "
    "are those you may see, or a `region`'s, or the `store_id`s named (repeatable); past the hub's limit "
    "(reports.bundle_max_stores) the request is refused.",
    response_class=Response,
    responses={
        200: {"content": {ZIP_MEDIA_TYPE: {}}, "description": "the ZIP"},
        404: {"description": "no such store, or no store to bundle"},
        422: {"model": ValidationProblem, "description": "more stores than one bundle may hold"},
    },
)
async def get_cold_chain_bundle(
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    who: PrincipalDep,
    day: DayPath,
    region: RegionQuery = None,
    stores: StoresQuery = None,
) -> Response:
    """The bundle, built one store at a time."""
    named = _named(stores)
    limit = settings.reports.bundle_max_stores
    if len(named) > limit:
        raise invalid("store_id", f"{len(named)} stores named; a bundle holds at most {limit}", len(named))
    scope = ReportScope.day(day, stores=_reach(who), region=region, store_list=named)
    return await _document(("cold-chain-bundle", "zip"), session, scope, now=now, settings=settings)
