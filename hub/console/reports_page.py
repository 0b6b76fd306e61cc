"""``/reports``: the reports a manager opens daily, each a form (store, day or period, format) that downloads it.

The forms are plain GET forms to ``/reports/download``, which checks the choice and sends the browser on (303) to
the report's API route, where the gate checks the store again: no script, and nothing here a bookmark cannot do.
The store menus list only the reader's stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated, Final, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from hub.api.deps import NowDep, SessionDep
from hub.api.params import IsoDate, invalid
from hub.auth.guard import PrincipalDep
from hub.catalog.models import StoreProfile
from hub.console.templating import ReaderDep, page
from hub.domain.access import Principal
from hub.reports.queries import MAX_PERIOD_DAYS

router = APIRouter(tags=["dashboard"])

_ID_MAX: Final = 63
ReportKind = Literal[
    "daily-summary",
    "chain-summary",
    "cold-chain",
    "cold-chain-bundle",
    "sales",
    "inventory-turnover",
    "alerts",
    "alert-log",
]
# "csv-bom" is CSV with a byte order mark: what Excel needs to read Chinese names from a CSV.
DownloadFormat = Literal["pdf", "xlsx", "csv", "csv-bom", "json", "zip"]
_PERIOD_KINDS: Final = frozenset({"sales", "inventory-turnover", "alerts", "alert-log"})
_STORE_KINDS: Final = frozenset({"daily-summary", "cold-chain", *_PERIOD_KINDS})
_FORMATS_OF: Final[dict[str, tuple[str, ...]]] = {
    "daily-summary": ("pdf", "xlsx", "csv", "csv-bom", "json"),
    "chain-summary": ("pdf", "xlsx", "csv", "csv-bom", "json"),
    "cold-chain": ("pdf", "xlsx", "csv", "csv-bom", "json"),
    "cold-chain-bundle": ("zip",),
    "sales": ("xlsx", "pdf", "csv", "csv-bom", "json"),
    "inventory-turnover": ("xlsx", "pdf", "csv", "csv-bom", "json"),
    "alerts": ("xlsx", "pdf", "csv", "csv-bom", "json"),
    "alert-log": ("xlsx", "pdf", "csv", "csv-bom", "json"),
}


@dataclass(frozen=True, slots=True)
class StoreChoice:
    """A store of the reader's, as its menus show it."""

    store_id: str
    name: str
    region: str | None


async def _stores(session: SessionDep, who: Principal) -> list[StoreChoice]:
    statement = select(StoreProfile.store_id, StoreProfile.name, StoreProfile.region).order_by(StoreProfile.name)
    if who.store_ids is not None:
        statement = statement.where(StoreProfile.store_id.in_(sorted(who.store_ids)))
    return [StoreChoice(row.store_id, row.name, row.region) for row in await session.execute(statement)]


@router.get("/reports", response_class=HTMLResponse, include_in_schema=False)
async def reports_page(request: Request, session: SessionDep, reader: ReaderDep, now: NowDep) -> HTMLResponse:
    """The reports page."""
    stores = await _stores(session, reader.who)
    regions = sorted({store.region for store in stores if store.region})
    today = now.date()
    return page(
        "reports.html",
        reader,
        request,
        stores=stores,
        regions=regions,
        today=today.isoformat(),
        month_start=today.replace(day=1).isoformat(),
        formats_of=_FORMATS_OF,
        max_days=MAX_PERIOD_DAYS,
    )


def _format_query(fmt: str) -> dict[str, str]:
    if fmt == "csv-bom":
        return {"format": "csv", "bom": "true"}
    return {} if fmt == "json" else {"format": fmt}


def _cold_chain_url(store: str, day: date, fmt: str) -> str:
    base = f"/api/v1/reports/cold-chain/{quote(store, safe='')}/{day.isoformat()}"
    if fmt == "json":
        return base
    suffix = "csv" if fmt == "csv-bom" else fmt
    return f"{base}.{suffix}" + ("?bom=true" if fmt == "csv-bom" else "")


@router.get("/reports/download", include_in_schema=False)
async def download(
    who: PrincipalDep,
    kind: ReportKind,
    output: Annotated[DownloadFormat, Query(alias="format")],
    day: IsoDate | None = None,
    first_day: Annotated[IsoDate | None, Query(alias="from")] = None,
    last_day: Annotated[IsoDate | None, Query(alias="to")] = None,
    store_id: Annotated[str | None, Query(max_length=_ID_MAX)] = None,
    region: Annotated[str | None, Query(max_length=_ID_MAX)] = None,
) -> RedirectResponse:
    """Check the form and send the browser on to the report's route (303); 422 or 403 in words."""
    if output not in _FORMATS_OF[kind]:
        raise invalid("format", f"{kind} is not made as {output}; choose one of {', '.join(_FORMATS_OF[kind])}", output)
    store = store_id or None
    if kind in _STORE_KINDS and store is None:
        raise invalid("store_id", f"{kind} is a report of one store: choose the store", store_id)
    if store is not None and not who.reaches(store):
        raise HTTPException(status_code=403, detail=f"store {store!r} is outside your access")
    query = _format_query(output)
    if kind in _PERIOD_KINDS:
        if first_day is None or last_day is None:
            raise invalid("from" if first_day is None else "to", f"{kind} needs a period: from and to", None)
        query = {"from": first_day.isoformat(), "to": last_day.isoformat(), "store_id": store or "", **query}
        return RedirectResponse(f"/api/v1/reports/{kind}?{urlencode(query)}", status_code=303)
    if day is None:
        raise invalid("day", f"{kind} is a report of one day: choose the day", None)
    if kind == "cold-chain":
        assert store is not None
        return RedirectResponse(_cold_chain_url(store, day, output), status_code=303)
    if kind == "daily-summary":
        assert store is not None
        url = f"/api/v1/reports/daily-summary/{quote(store, safe='')}/{day.isoformat()}"
    else:  # chain-summary, cold-chain-bundle (always a ZIP: no format parameter)
        url = f"/api/v1/reports/{kind}/{day.isoformat()}"
        query = {**({} if kind == "cold-chain-bundle" else query), **({"region": region} if region else {})}
    return RedirectResponse(f"{url}?{urlencode(query)}" if query else url, status_code=303)
