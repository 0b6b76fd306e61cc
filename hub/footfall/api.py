"""``GET /api/v1/reports/footfall``: visitors, exits, sales transactions and conversion per store and local hour.

The parameters and scoping are the other period reports' (``hub.reports.api``): ``from`` and ``to`` are local
dates in each store's zone, ``store_id`` is optional (a store-scoped principal must name one), JSON by default
or ``?format=csv``.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import Field

from hub.api.deps import SessionDep, SettingsDep
from hub.api.schemas import ApiModel, ValidationProblem
from hub.domain.footfall import DayFigures, HourFigures
from hub.footfall.queries import FootfallReport, footfall_report
from hub.reports import csv_text
from hub.reports.api import CSV_MEDIA_TYPE, BomQuery, StoreFilterDep, TableFormat
from hub.reports.formats import csv_bytes
from hub.reports.queries import FALLBACK_TIME_ZONE, ReportFilter

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])

REPORT_NAME: Final = "footfall"


class FootfallHourOut(ApiModel):
    """One store's local hour: people counted at its entrances, checkout transactions and conversion."""

    store_id: str
    timezone: str = Field(description="the IANA zone the local date and hour are in")
    timezone_assumed: bool = Field(description="true when the store has no profile and UTC is used")
    local_date: date
    local_hour: int = Field(description="0-23, the wall clock; on a fall-back day the repeated hour holds both")
    visitors: int | None = Field(description="people counted entering; null when no camera sent counts (no data)")
    exits: int | None = Field(description="people counted leaving; null when no camera sent counts")
    cameras: int = Field(description="entrance cameras that sent counts for the hour (their counts add up)")
    transactions: int = Field(description="sales transactions: baskets of checkout scans started in the hour")
    units_sold: int = Field(description="units sold in the hour, as the sales report counts them")
    conversion_rate: float | None = Field(description="transactions / visitors; null without visitors")


class FootfallDayOut(ApiModel):
    """One store's local day: the sums of its hours."""

    store_id: str
    timezone: str
    timezone_assumed: bool
    local_date: date
    hours_with_data: int = Field(description="hours with camera counts")
    visitors: int | None = Field(description="people counted entering over the hours with data; null if none")
    exits: int | None
    transactions: int = Field(description="all the day's transactions")
    transactions_in_counted_hours: int = Field(description="transactions in the hours with camera counts")
    units_sold: int
    conversion_rate: float | None = Field(
        description="transactions in the hours with camera counts / visitors; null without visitors"
    )


class FootfallReportOut(ApiModel):
    """The footfall report: what it covers, how transactions are counted, the hours and the day totals."""

    report: str
    from_date: date = Field(description="first local date of the period")
    to_date: date = Field(description="last local date of the period (inclusive)")
    days: int
    store_id: str | None
    basket_gap_s: float = Field(description="sale scans at one scanner less than this apart are one transaction")
    notes: list[str]
    items: list[FootfallHourOut] = Field(description="every hour with camera counts, transactions or sales")
    day_totals: list[FootfallDayOut]


_CSV_COLUMNS: Final = (
    "record",
    "store_id",
    "timezone",
    "timezone_assumed",
    "local_date",
    "local_hour",
    "hours_with_data",
    "visitors",
    "exits",
    "cameras",
    "transactions",
    "transactions_in_counted_hours",
    "units_sold",
    "conversion_rate",
)


def basket_gap_s(settings: SettingsDep) -> float:
    """The hub's basket rule: the pause at a checkout scanner that ends a transaction (``[footfall]``)."""
    return settings.footfall.basket_gap_s


BasketGapDep = Annotated[float, Depends(basket_gap_s)]


def _zone(report: FootfallReport, store_id: str) -> tuple[str, bool]:
    zone = report.zones.get(store_id)
    return (zone, False) if zone is not None else (FALLBACK_TIME_ZONE, True)


def _hour_out(report: FootfallReport, hour: HourFigures) -> FootfallHourOut:
    zone, assumed = _zone(report, hour.key.store_id)
    return FootfallHourOut(
        store_id=hour.key.store_id,
        timezone=zone,
        timezone_assumed=assumed,
        local_date=hour.key.local_date,
        local_hour=hour.key.local_hour,
        visitors=hour.visitors,
        exits=hour.exits,
        cameras=hour.cameras,
        transactions=hour.transactions,
        units_sold=hour.units_sold,
        conversion_rate=hour.conversion_rate,
    )


def _day_out(report: FootfallReport, day: DayFigures) -> FootfallDayOut:
    zone, assumed = _zone(report, day.store_id)
    return FootfallDayOut(
        store_id=day.store_id,
        timezone=zone,
        timezone_assumed=assumed,
        local_date=day.local_date,
        hours_with_data=day.hours_with_data,
        visitors=day.visitors,
        exits=day.exits,
        transactions=day.transactions,
        transactions_in_counted_hours=day.transactions_in_counted_hours,
        units_sold=day.units_sold,
        conversion_rate=day.conversion_rate,
    )


def report_out(report: FootfallReport, scope: ReportFilter, *, basket_gap_s: float) -> FootfallReportOut:
    """The report as the API answers it."""
    assumed = sorted(store for store, zone in report.zones.items() if zone is None)
    return FootfallReportOut(
        report=REPORT_NAME,
        from_date=scope.first_day,
        to_date=scope.last_day,
        days=scope.days,
        store_id=scope.store_id,
        basket_gap_s=basket_gap_s,
        notes=[f"store {store} has no store profile: its dates and hours are UTC" for store in assumed],
        items=[_hour_out(report, hour) for hour in report.hours],
        day_totals=[_day_out(report, day) for day in report.days],
    )


def report_csv(out: FootfallReportOut) -> str:
    """One table: an ``hour`` row per item, then a ``day`` row per day total (null is an empty cell)."""
    rows = [{"record": "hour"} | item.model_dump(mode="json") for item in out.items]
    rows += [{"record": "day"} | day.model_dump(mode="json") for day in out.day_totals]
    return csv_text(_CSV_COLUMNS, rows)


def _filename(scope: ReportFilter) -> str:
    parts = [REPORT_NAME, scope.store_id, scope.first_day.isoformat(), scope.last_day.isoformat()]
    return "_".join(part for part in parts if part) + ".csv"


@router.get(
    "/footfall",
    response_model=FootfallReportOut,
    summary="Footfall, sales transactions and conversion per store and local hour",
    description="People counted entering and leaving by the stores' entrance cameras (every camera and line of a "
    "store added up), sales transactions (baskets of checkout scans, see basket_gap_s), units sold and the "
    "conversion rate (transactions / visitors) per store and local hour, and totals per day. An hour without "
    "camera counts has null visitors (no data), not zero. `?format=csv` gives hour and day rows in one table "
    "(`bom=true` starts it with a byte order mark for Excel).",
    responses={
        200: {"content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}}, "description": "the report (JSON or CSV)"},
        422: {"model": ValidationProblem, "description": "a bad parameter: from after to, a period over 366 days"},
    },
)
async def get_footfall(
    session: SessionDep,
    scope: StoreFilterDep,
    gap_s: BasketGapDep,
    output: Annotated[TableFormat, Query(alias="format")] = "json",
    bom: BomQuery = False,
) -> FootfallReportOut | Response:
    """The footfall report."""
    report = await footfall_report(session, scope, basket_gap_s=gap_s)
    out = report_out(report, scope, basket_gap_s=gap_s)
    if output == "csv":
        return Response(
            content=csv_bytes(report_csv(out), bom=bom),
            media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{_filename(scope)}"'},
        )
    return out
