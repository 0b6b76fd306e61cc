"""Reorder suggestions per store and transfer suggestions across the chain, as JSON or CSV.

Numbers come from :mod:`hub.inventory.replenishment_suggestions`; see ``docs/replenishment.md`` for how.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import date, datetime
from typing import Annotated, Final, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import Field

from hub.api.deps import NowDep, SessionDep
from hub.api.params import invalid
from hub.api.schemas import ApiModel
from hub.csvcells import spreadsheet_safe_row
from hub.inventory.replenishment_suggestions import (
    DEFAULT_MAX_DISTANCE_KM,
    DEFAULT_OVERSTOCK_DAYS,
    MAX_HISTORY_DAYS,
    ReorderLine,
    StoreReorderReport,
    UnknownSkuError,
    UnknownStoreError,
    chain_transfer_suggestions,
    store_reorder_suggestions,
)

router = APIRouter(prefix="/api/v1", tags=["replenishment"])

CSV_MEDIA_TYPE: Final = "text/csv"
# Half the Earth's circumference: any two points are at most this far apart.
MAX_DISTANCE_KM: Final = 20_040.0
MAX_OVERSTOCK_DAYS: Final = 3650.0
# Shown to three decimals: a thousandth of a unit or a day is below anything a buyer acts on.
_DIGITS: Final = 3

REORDER_CSV_COLUMNS: Final = (
    "sku_id",
    "name",
    "quantity",
    "packs",
    "pack_size",
    "on_hand",
    "on_order",
    "inventory_position",
    "reorder_point",
    "max_stock",
    "days_of_cover",
    "predicted_stockout",
    "reasons",
)

HistoryDays = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_HISTORY_DAYS,
        description="closed local days of sales before today the forecast is fitted on; by default as many as "
        f"the store's ledger holds, up to {MAX_HISTORY_DAYS}",
    ),
]


class ReorderSuggestionOut(ApiModel):
    """How much of one SKU to order now, and why."""

    sku_id: str
    name: str
    quantity: int = Field(description="units to order, whole packs; 0 when not even one pack fits under max_stock")
    packs: int
    pack_size: int
    on_hand: int
    on_order: int
    inventory_position: int = Field(description="on hand + on order")
    reorder_point: int
    max_stock: int
    days_of_cover: float | None = Field(
        description="days on hand lasts on the forecast, from the start of today; null without a forecast or "
        "when the forecast is zero (it lasts indefinitely)"
    )
    forecast: list[float] = Field(description="forecast units a day for 7 days from today; [] without sales history")
    predicted_stockout: datetime | None = Field(
        description="when the last unit sells on the forecast (store local time, selling only in opening hours); "
        "null without demand within a year"
    )
    reasons: list[str]


class ReorderSuggestionsOut(ApiModel):
    """A store's reorder suggestions: the SKUs at or below their reorder point."""

    store_id: str
    timezone: str
    today: date = Field(description="the store's local date")
    generated_at: datetime
    history_first_day: date
    history_last_day: date
    policies_checked: int = Field(description="stock policies of the store looked at")
    items: list[ReorderSuggestionOut]
    problems: list[str] = Field(description="stock policies that could not be used, in words")


class TransferOut(ApiModel):
    """Move units of one SKU from an overstocked store to a near one that is short."""

    sku_id: str
    from_store: str
    to_store: str
    quantity: int
    packs: int
    distance_km: float
    reasons: list[str]


class TransferSuggestionsOut(ApiModel):
    """Transfers between near stores, and the stores that could not take part."""

    generated_at: datetime
    sku_id: str | None = Field(description="the SKU asked for; null: every SKU with stock policies")
    overstock_days: float
    max_distance_km: float
    whole_packs: bool
    items: list[TransferOut]
    stores_without_location: list[str] = Field(
        description="store profiles without latitude and longitude: not candidates for transfers"
    )
    problems: list[str]


def _cover(days: float | None) -> float | None:
    return None if days is None or math.isinf(days) else round(days, _DIGITS)


def reorder_line_out(line: ReorderLine) -> ReorderSuggestionOut:
    """The API form of one reorder suggestion."""
    suggestion = line.suggestion
    return ReorderSuggestionOut(
        sku_id=line.sku_id,
        name=line.name,
        quantity=suggestion.quantity,
        packs=suggestion.packs,
        pack_size=line.pack_size,
        on_hand=line.on_hand,
        on_order=line.on_order,
        inventory_position=suggestion.inventory_position,
        reorder_point=suggestion.reorder_point,
        max_stock=suggestion.max_stock,
        days_of_cover=_cover(suggestion.days_of_cover),
        forecast=[round(units, _DIGITS) for units in line.forecast_week],
        predicted_stockout=line.predicted_stockout,
        reasons=list(suggestion.reasons),
    )


def reorder_csv(report: StoreReorderReport) -> str:
    """The suggestions as CSV, one SKU a line, reasons joined by "; "."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(REORDER_CSV_COLUMNS)
    for line in report.lines:
        item = reorder_line_out(line)
        values = item.model_dump(mode="json")
        values["reasons"] = "; ".join(item.reasons)
        writer.writerow(
            spreadsheet_safe_row("" if values[column] is None else values[column] for column in REORDER_CSV_COLUMNS)
        )
    return out.getvalue()


@router.get(
    "/stores/{store_id}/reorder-suggestions",
    response_model=ReorderSuggestionsOut,
    summary="A store's reorder suggestions",
    description="SKUs whose on hand + on order is at or below the reorder point of their stock policy, with the "
    "min/max order quantity, days of cover and predicted stock-out (see docs/replenishment.md). "
    "`?format=csv` answers the same as a CSV file.",
    responses={
        200: {"content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}}},
        404: {"description": "no such store profile"},
    },
)
async def get_reorder_suggestions(
    session: SessionDep,
    now: NowDep,
    store_id: Annotated[str, Path(max_length=63, description="store id")],
    history_days: HistoryDays = None,
    output: Annotated[Literal["json", "csv"], Query(alias="format", description="json (default) or csv")] = "json",
) -> ReorderSuggestionsOut | Response:
    """The reorder suggestions of one store."""
    try:
        report = await store_reorder_suggestions(session, store_id, now=now, history_days=history_days)
    except UnknownStoreError as err:
        raise HTTPException(status_code=404, detail=str(err)) from err
    if output == "csv":
        return Response(
            content=reorder_csv(report).encode(),
            media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="reorder-suggestions-{store_id}.csv"'},
        )
    return ReorderSuggestionsOut(
        store_id=report.store_id,
        timezone=report.timezone,
        today=report.today,
        generated_at=report.generated_at,
        history_first_day=report.history_first_day,
        history_last_day=report.history_last_day,
        policies_checked=report.policies_checked,
        items=[reorder_line_out(line) for line in report.lines],
        problems=list(report.problems),
    )


@router.get(
    "/transfer-suggestions",
    response_model=TransferSuggestionsOut,
    summary="Transfers between near stores",
    description="Stock of one SKU (or every SKU) to move from stores with more than `overstock_days` of cover to "
    "stores within `max_distance_km` at or below their reorder point (see docs/replenishment.md).",
)
async def get_transfer_suggestions(
    session: SessionDep,
    now: NowDep,
    sku_id: Annotated[str | None, Query(min_length=1, max_length=63, description="only this SKU")] = None,
    max_distance_km: Annotated[
        float, Query(gt=0, le=MAX_DISTANCE_KM, description="how far stock may travel, great-circle km")
    ] = DEFAULT_MAX_DISTANCE_KM,
    overstock_days: Annotated[
        float, Query(gt=0, le=MAX_OVERSTOCK_DAYS, description="a donor has more days of cover than this")
    ] = DEFAULT_OVERSTOCK_DAYS,
    whole_packs: Annotated[bool, Query(description="move whole packs of the SKU's pack size, not units")] = False,
    history_days: HistoryDays = None,
) -> TransferSuggestionsOut:
    """Transfer suggestions across the chain."""
    try:
        report = await chain_transfer_suggestions(
            session,
            now=now,
            sku_id=sku_id,
            overstock_days=overstock_days,
            max_distance_km=max_distance_km,
            whole_packs=whole_packs,
            history_days=history_days,
        )
    except UnknownSkuError as err:
        raise invalid("sku_id", str(err), sku_id) from None
    return TransferSuggestionsOut(
        generated_at=report.generated_at,
        sku_id=report.sku_id,
        overstock_days=report.overstock_days,
        max_distance_km=report.max_distance_km,
        whole_packs=report.whole_packs,
        items=[
            TransferOut(
                sku_id=item.sku_id,
                from_store=item.transfer.from_store,
                to_store=item.transfer.to_store,
                quantity=item.transfer.quantity,
                packs=item.transfer.packs,
                distance_km=item.transfer.distance_km,
                reasons=list(item.transfer.reasons),
            )
            for item in report.transfers
        ],
        stores_without_location=list(report.stores_without_location),
        problems=list(report.problems),
    )
