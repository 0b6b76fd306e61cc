"""The report kinds a schedule may name: kind → format → renderer. Any report can be plugged in here.

A renderer is ``async (session, scope, *, now, settings) -> ReportDocument``: it reads what it needs in
``session`` and returns one file. ``scope`` says which stores and which local dates (the period the run reports,
see :mod:`hub.reports.schedules.timing`). A report of one store and one day rendered for several stores or days
returns a ZIP of one file each.

:func:`register` adds a kind (the hub registers the ones below at import); :data:`KINDS` is read by the API (which
kinds and formats exist) and the runner.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final, Protocol

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.catalog.models import StoreProfile
from hub.db.models import Store
from hub.reports import cold_chain, csv_text, documents, queries
from hub.reports.api import (
    CSV_MEDIA_TYPE,
    PDF_MEDIA_TYPE,
    AlertStatsRowOut,
    SalesRowOut,
    SellThroughRowOut,
    ShrinkRowOut,
    TurnoverRowOut,
)
from hub.settings import HubSettings

ZIP_MEDIA_TYPE: Final = "application/zip"
# The most files one cold-chain document holds (stores x days): 300 stores for a week is 2,100.
MAX_FILES: Final = 5000


@dataclass(frozen=True, slots=True)
class ReportDocument:
    """One rendered report: its file name, media type and bytes."""

    filename: str
    media_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class ReportScope:
    """What a run reports: these stores (None: every store) over local dates ``first_day`` to ``last_day``."""

    store_ids: tuple[str, ...] | None
    first_day: date
    last_day: date
    label: str  # "all", a region's name, or "stores": for file names

    @property
    def days(self) -> list[date]:
        """Every local date of the period."""
        return [self.first_day + timedelta(days=n) for n in range((self.last_day - self.first_day).days + 1)]


class Renderer(Protocol):
    """Renders one report for a scope."""

    def __call__(
        self, session: AsyncSession, scope: ReportScope, *, now: datetime, settings: HubSettings
    ) -> Awaitable[ReportDocument]: ...


_KINDS: dict[str, dict[str, Renderer]] = {}
KINDS: Final[Mapping[str, Mapping[str, Renderer]]] = MappingProxyType(_KINDS)


def register(kind: str, output: str, renderer: Renderer) -> None:
    """Make ``kind`` in ``output`` format available to schedules (ValueError if it already is)."""
    formats = _KINDS.setdefault(kind, {})
    if output in formats:
        raise ValueError(f"report kind {kind!r} already has a {output!r} renderer")
    formats[output] = renderer


def renderer_of(kind: str, output: str) -> Renderer | None:
    """The renderer of ``kind`` in ``output``, or None if there is none."""
    return _KINDS.get(kind, {}).get(output)


async def stores_in(session: AsyncSession, scope: ReportScope) -> list[str]:
    """The stores a scope covers, sorted: those it names, or every store the hub knows (profiles and gateways)."""
    if scope.store_ids is not None:
        return sorted(scope.store_ids)
    known = set((await session.scalars(select(Store.store_id))).all())
    known |= set((await session.scalars(select(StoreProfile.store_id))).all())
    return sorted(known)


def _file_label(scope: ReportScope) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in scope.label)[:40] or "stores"


def _period(scope: ReportScope) -> str:
    if scope.first_day == scope.last_day:
        return scope.first_day.isoformat()
    return f"{scope.first_day.isoformat()}_{scope.last_day.isoformat()}"


def zipped(name: str, files: Sequence[ReportDocument]) -> ReportDocument:
    """One file as it is, several as a ZIP named ``name``."""
    if len(files) == 1:
        return files[0]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for document in files:
            archive.writestr(document.filename, document.body)
    return ReportDocument(filename=name, media_type=ZIP_MEDIA_TYPE, body=out.getvalue())


# --------------------------------------------------------------------------- the reports of /api/v1/reports


def _rows_report(
    name: str,
    model: type[BaseModel],
    rows_of: Callable[[AsyncSession, queries.ReportFilter], Awaitable[Sequence[Any]]],
) -> Renderer:
    """A period report as CSV (the columns of its ``?format=csv``), one table for every store of the scope."""

    async def render(
        session: AsyncSession, scope: ReportScope, *, now: datetime, settings: HubSettings
    ) -> ReportDocument:
        stores: Sequence[str | None] = [None] if scope.store_ids is None else sorted(scope.store_ids)
        rows: list[Any] = []
        for store_id in stores:
            rows.extend(
                await rows_of(
                    session, queries.ReportFilter(first_day=scope.first_day, last_day=scope.last_day, store_id=store_id)
                )
            )
        items = (model.model_validate(row, from_attributes=True).model_dump(mode="json") for row in rows)
        text = csv_text(list(model.model_fields), items)
        filename = f"{name}_{_file_label(scope)}_{_period(scope)}.csv"
        return ReportDocument(filename=filename, media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8", body=text.encode())

    return render


def _cold_chain(output: str) -> Renderer:
    """The cold-chain report of each store and day of the scope: one file, or a ZIP of one per store and day."""

    async def render(
        session: AsyncSession, scope: ReportScope, *, now: datetime, settings: HubSettings
    ) -> ReportDocument:
        files: list[ReportDocument] = []
        stores = await stores_in(session, scope)
        if len(stores) * len(scope.days) > MAX_FILES:
            raise ValueError(
                f"{len(stores)} stores x {len(scope.days)} days is more than {MAX_FILES} cold-chain files in one "
                "report; split the schedule by region or store list"
            )
        for store_id in stores:
            for day in scope.days:
                report = await cold_chain.cold_chain_report(session, store_id, day, generated_at=now)
                if report is None:  # a store named that the hub does not know: nothing to report
                    continue
                filename = f"cold-chain_{store_id}_{day.isoformat()}.{output}"
                if output == "pdf":
                    files.append(ReportDocument(filename, PDF_MEDIA_TYPE, cold_chain.report_pdf(report)))
                else:
                    body = cold_chain.report_csv(report).encode()
                    files.append(ReportDocument(filename, f"{CSV_MEDIA_TYPE}; charset=utf-8", body))
        if not files:
            empty = f"no store of this schedule is known to the hub ({_file_label(scope)})\r\n".encode()
            return ReportDocument(f"cold-chain_{_file_label(scope)}_{_period(scope)}.txt", "text/plain", empty)
        return zipped(f"cold-chain_{_file_label(scope)}_{_period(scope)}_{output}.zip", files)

    return render


def _summary(kind: str, output: str) -> Renderer:
    """The daily store summary (a file per store and day) or the chain roll-up (a file per day of the schedule's
    stores), rendered by hub.reports.documents; several files make a ZIP."""
    render_one = documents.DOCUMENTS[(kind, output)]

    async def render(
        session: AsyncSession, scope: ReportScope, *, now: datetime, settings: HubSettings
    ) -> ReportDocument:
        wanted: list[tuple[str | None, date]]
        if kind == "daily-summary":
            stores = await stores_in(session, scope)
            wanted = [(store, day) for store in stores for day in scope.days]
        else:
            wanted = [(None, day) for day in scope.days]
        if len(wanted) > MAX_FILES:
            raise ValueError(f"{len(wanted)} {kind} files is more than {MAX_FILES} in one report; split the schedule")
        files: list[ReportDocument] = []
        for store_id, day in wanted:
            one = documents.ReportScope(
                first_day=day,
                last_day=day,
                store_id=store_id,
                stores=frozenset(scope.store_ids) if scope.store_ids is not None else None,
            )
            try:
                done = await render_one(session, one, now=now, settings=settings)
            except documents.ReportNotFoundError:  # a store named that the hub does not know: nothing to report
                continue
            files.append(ReportDocument(done.filename, done.media_type, done.body))
        if not files:
            empty = f"no store of this schedule is known to the hub ({_file_label(scope)})\r\n".encode()
            return ReportDocument(f"{kind}_{_file_label(scope)}_{_period(scope)}.txt", "text/plain", empty)
        return zipped(f"{kind}_{_file_label(scope)}_{_period(scope)}_{output}.zip", files)

    return render


def _register_builtin() -> None:
    register("sales", "csv", _rows_report("sales", SalesRowOut, queries.sales))
    register("inventory-turnover", "csv", _rows_report("inventory-turnover", TurnoverRowOut, queries.stock_flow))
    register("sell-through", "csv", _rows_report("sell-through", SellThroughRowOut, queries.stock_flow))
    register("shrink", "csv", _rows_report("shrink", ShrinkRowOut, queries.shrink))
    register("alerts", "csv", _rows_report("alerts", AlertStatsRowOut, queries.alert_stats))
    register("cold-chain", "pdf", _cold_chain("pdf"))
    register("cold-chain", "csv", _cold_chain("csv"))
    for output in documents.FORMATS:
        register("daily-summary", output, _summary("daily-summary", output))
        register("chain-summary", output, _summary("chain-summary", output))


_register_builtin()
