"""Every report as a file: each kind and format an async function ``(session, scope, *, now, settings)`` that
returns a :class:`ReportDocument` (filename, media type, bytes), for the API, the console and scheduled delivery.

Kinds (:data:`DOCUMENTS` lists each with its formats):

- ``daily-summary``: one store's local day (:mod:`hub.reports.summary`), csv / xlsx / pdf;
- ``chain-summary``: one row per store of ``scope.stores`` (or every store, or a region), csv / xlsx / pdf;
- ``cold-chain``: one store's local day (:mod:`hub.reports.cold_chain`), csv / xlsx / pdf;
- ``cold-chain-bundle``: many stores' cold chain of one day as a ZIP (a PDF per store and one workbook);
- ``sales``, ``inventory`` (turnover and days of supply), ``sell-through``, ``shrink``, ``alerts`` (alert
  history: statistics per rule kind and severity): the period reports of :mod:`hub.reports.queries`, csv /
  xlsx / pdf.

The scope says which stores the reader may see (``stores``; None is every store); a kind that needs one store
raises :class:`ReportNotFoundError` for a store the hub does not know and :class:`ReportScopeError` for one
outside ``stores``. Everything that is a day stops at ``now`` while the day lasts.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from hub.errors import HubError
from hub.reports import cold_chain, queries, summary
from hub.reports.formats import (
    CSV_MEDIA_TYPE,
    PDF_MEDIA_TYPE,
    XLSX_MEDIA_TYPE,
    ZIP_MEDIA_TYPE,
    Document,
    Table,
    csv_bytes,
    document_pdf,
    document_workbook,
    find_cjk_font,
    pdf_font,
    table_csv,
    workbook_bytes,
)
from hub.reports.queries import ReportFilter
from hub.settings import HubSettings

FORMATS: Final = ("csv", "xlsx", "pdf")
MEDIA_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {"csv": f"{CSV_MEDIA_TYPE}; charset=utf-8", "xlsx": XLSX_MEDIA_TYPE, "pdf": PDF_MEDIA_TYPE, "zip": ZIP_MEDIA_TYPE}
)


class ReportNotFoundError(HubError, LookupError):
    """A report of a store the hub does not know."""


class ReportScopeError(HubError, PermissionError):
    """A report of a store outside the reader's stores."""


class BundleTooLargeError(HubError, ValueError):
    """A cold-chain bundle of more stores than one request may hold."""


@dataclass(frozen=True, kw_only=True)
class ReportScope:
    """What a document covers: local dates, one store or the reader's stores (None: every store), a region."""

    first_day: date
    last_day: date
    store_id: str | None = None
    stores: frozenset[str] | None = None
    region: str | None = None
    store_list: tuple[str, ...] = ()  # the bundle's stores when named one by one
    bom: bool = field(default=False)  # CSV: start with a UTF-8 byte order mark

    @classmethod
    def day(cls, day: date, **fields: Any) -> ReportScope:
        """A scope of one local date."""
        return cls(first_day=day, last_day=day, **fields)

    def reaches(self, store_id: str) -> bool:
        """Whether the reader may see ``store_id``."""
        return self.stores is None or store_id in self.stores


@dataclass(frozen=True, kw_only=True)
class ReportDocument:
    """A report as a file."""

    filename: str
    media_type: str
    body: bytes


class Renderer(Protocol):
    """One kind of report in one format."""

    def __call__(
        self, session: AsyncSession, scope: ReportScope, *, now: datetime, settings: HubSettings
    ) -> Awaitable[ReportDocument]: ...


def _font(settings: HubSettings) -> Path | None:
    return find_cjk_font(settings.reports.pdf_font)


def _one_store(scope: ReportScope) -> str:
    if scope.store_id is None:
        raise ReportNotFoundError("this report is of one store: name it")
    if not scope.reaches(scope.store_id):
        raise ReportScopeError(f"store {scope.store_id!r} is outside your access")
    return scope.store_id


def _file(kind: str, parts: Sequence[str | None], fmt: str, body: bytes) -> ReportDocument:
    name = "_".join(part for part in (kind, *parts) if part)
    return ReportDocument(filename=f"{name}.{fmt}", media_type=MEDIA_TYPES[fmt], body=body)


def _render(document: Document, fmt: str, *, bom: bool, font: Path | None, now: datetime) -> bytes:
    """A document in ``fmt``; CSV writes its tables one after another, each with a ``section`` column."""
    if fmt == "xlsx":
        return document_workbook(document)
    if fmt == "pdf":
        return document_pdf(document, font=font, created=now)
    texts = [
        table_csv(Table(title=t.title, columns=["section", *t.columns], rows=[[t.title, *row] for row in t.rows]))
        for t in document.tables
    ]
    return csv_bytes("\r\n".join(texts), bom=bom)


# --------------------------------------------------------------------------- daily summary and roll-up


def _span(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def summary_document(report: summary.DailySummary) -> Document:
    """The daily summary as a title, lines and tables."""
    name = f"{report.store_name} ({report.store_id})" if report.store_name else report.store_id
    currency = report.currency or ""
    lines = [
        f"Date: {report.date.isoformat()}, time zone {report.timezone}",
        f"Figures until: {report.until.isoformat()}",
        f"Units sold: {report.units_sold}; revenue: {report.revenue} {currency}".rstrip(),
        f"Alerts raised: {report.alerts_raised}, still open: {report.alerts_open}; excursions: {report.excursions}",
        *(f"Note: {note}" for note in report.notes),
    ]
    tables = [
        Table(
            title="Sales by hour",
            columns=["hour", "units", "revenue", "currency"],
            rows=[[h.hour, h.units, h.revenue, currency] for h in report.sales_by_hour]
            + [["total", report.units_sold, report.revenue, currency]],
        ),
        Table(
            title="Sales by SKU",
            columns=["sku_id", "name", "units", "revenue", "currency"],
            rows=[[s.sku_id, s.name, s.units, s.revenue, currency] for s in report.sales_by_sku]
            + [["total", None, report.units_sold, report.revenue, currency]],
        ),
        Table(
            title="Below minimum",
            columns=["shelf_id", "slot", "sku_id", "name", "quantity", "min_quantity"],
            rows=[[b.shelf_id, b.slot, b.sku_id, b.name, b.quantity, b.min_quantity] for b in report.below_minimum],
        ),
        Table(
            title="Restock done",
            columns=["shelf_id", "slot", "sku_id", "name", "quantity", "opened_at", "closed_at"],
            rows=[
                [r.shelf_id, r.slot, r.sku_id, r.name, r.quantity, r.opened_at, r.closed_at]
                for r in report.restock_done
            ],
        ),
        Table(
            title="Alerts",
            columns=["severity", "raised", "open_now"],
            rows=[[a.severity, a.raised, a.open_now] for a in report.alerts],
        ),
        Table(
            title="Cold chain",
            columns=[
                "zone",
                "quantity",
                "unit",
                "readings",
                "low_limit",
                "high_limit",
                "time_outside",
                "time_in_range",
                "compliance_percent",
                "excursions",
            ],
            rows=[
                [
                    z.zone,
                    z.quantity,
                    z.unit,
                    z.readings,
                    z.low_limit,
                    z.high_limit,
                    _span(z.time_outside_s),
                    _span(z.time_in_range_s),
                    z.compliance_percent,
                    z.excursions,
                ]
                for z in report.cold_chain
            ],
        ),
    ]
    return Document(title=f"Daily summary: {name}", lines=lines, tables=tables)


_STORE_LINE_COLUMNS: Final = list(summary.StoreLine.model_fields)


def chain_document(report: summary.ChainSummary) -> Document:
    """The roll-up as a title, lines and two tables (stores, totals per currency)."""
    region = f" (region {report.region})" if report.region else ""
    lines = [
        f"Date: {report.date.isoformat()}, each store's own local date{region}",
        f"Stores: {len(report.stores)}; units sold: {report.units_sold}; alerts raised: {report.alerts_raised}, "
        f"open: {report.alerts_open}; below minimum: {report.below_minimum}; restock done: {report.restock_done}; "
        f"excursions: {report.excursions}",
        *(f"Note: {note}" for note in report.notes),
    ]
    stores = Table(
        title="Stores",
        columns=_STORE_LINE_COLUMNS,
        rows=[[getattr(line, column) for column in _STORE_LINE_COLUMNS] for line in report.stores],
    )
    totals = Table(
        title="Totals",
        columns=["currency", "stores", "units_sold", "revenue"],
        rows=[[t.currency, t.stores, t.units_sold, t.revenue] for t in report.totals],
    )
    return Document(title=f"Chain summary {report.date.isoformat()}", lines=lines, tables=[stores, totals])


async def load_daily_summary(session: AsyncSession, scope: ReportScope, *, now: datetime) -> summary.DailySummary:
    """The daily summary of the scope's store and first day."""
    store_id = _one_store(scope)
    report = await summary.daily_summary(session, store_id, scope.first_day, now=now)
    if report is None:
        raise ReportNotFoundError(f"no store {store_id!r}: it has no profile and has sent nothing")
    return report


async def scope_stores(session: AsyncSession, scope: ReportScope) -> list[str]:
    """The stores a chain-wide document covers: the named list, or the region's or every store, in reach."""
    known = await summary.store_ids(session, region=scope.region)
    if scope.store_list:
        outside = [s for s in scope.store_list if not scope.reaches(s)]
        if outside:
            raise ReportScopeError(f"store {outside[0]!r} is outside your access")
        unknown = sorted(set(scope.store_list) - set(await summary.store_ids(session)))
        if unknown:
            raise ReportNotFoundError(f"no store {unknown[0]!r}")
        chosen = set(scope.store_list) if scope.region is None else set(scope.store_list) & set(known)
        return sorted(chosen)
    return [s for s in known if scope.reaches(s)]


async def load_chain_summary(session: AsyncSession, scope: ReportScope, *, now: datetime) -> summary.ChainSummary:
    """The roll-up of the stores in reach for the scope's first day."""
    stores = await scope_stores(session, scope)
    return await summary.chain_summary(session, stores, scope.first_day, now=now, region=scope.region)


def _daily(fmt: str) -> Renderer:
    async def render(
        session: AsyncSession, scope: ReportScope, *, now: datetime, settings: HubSettings
    ) -> ReportDocument:
        report = await load_daily_summary(session, scope, now=now)
        body = _render(summary_document(report), fmt, bom=scope.bom, font=_font(settings), now=now)
        return _file("daily-summary", [report.store_id, report.date.isoformat()], fmt, body)

    return render


def _chain(fmt: str) -> Renderer:
    async def render(
        session: AsyncSession, scope: ReportScope, *, now: datetime, settings: HubSettings
    ) -> ReportDocument:
        report = await load_chain_summary(session, scope, now=now)
        body = _render(chain_document(report), fmt, bom=scope.bom, font=_font(settings), now=now)
        return _file("chain-summary", [scope.region, report.date.isoformat()], fmt, body)

    return render


# --------------------------------------------------------------------------- cold chain


async def load_cold_chain(session: AsyncSession, scope: ReportScope, *, now: datetime) -> cold_chain.ColdChainReport:
    """The cold-chain report of the scope's store and first day."""
    store_id = _one_store(scope)
    report = await cold_chain.cold_chain_report(session, store_id, scope.first_day, generated_at=now)
    if report is None:
        raise ReportNotFoundError(f"no store {store_id!r}: it has no profile and has sent nothing")
    return report


def cold_chain_table(report: cold_chain.ColdChainReport) -> Table:
    """The cold-chain CSV's rows as a table (one per zone, excursion and note, a ``record`` column says which)."""
    columns = cold_chain.CSV_COLUMNS
    return Table(
        title=report.store_id,
        columns=columns,
        rows=[[row.get(c) for c in columns] for row in cold_chain.report_rows(report)],
    )


def _cold(fmt: str) -> Renderer:
    async def render(
        session: AsyncSession, scope: ReportScope, *, now: datetime, settings: HubSettings
    ) -> ReportDocument:
        report = await load_cold_chain(session, scope, now=now)
        if fmt == "csv":
            body = csv_bytes(cold_chain.report_csv(report), bom=scope.bom)
        elif fmt == "xlsx":
            body = workbook_bytes([(report.store_id, cold_chain_table(report), [])])
        else:
            body = cold_chain.report_pdf(report, font=_font(settings))
        return _file("cold-chain", [report.store_id, report.date.isoformat()], fmt, body)

    return render


async def cold_chain_bundle(
    session: AsyncSession, scope: ReportScope, *, now: datetime, settings: HubSettings
) -> ReportDocument:
    """A ZIP of the cold chain of many stores for one day: ``<store>.pdf`` each, and ``cold-chain.xlsx`` with a
    sheet per store. The reports (small) are read first, so that one cut of the font serves every PDF; the
    PDFs go into the compressed ZIP one at a time."""
    stores = await scope_stores(session, scope)
    limit = settings.reports.bundle_max_stores
    if len(stores) > limit:
        raise BundleTooLargeError(
            f"the bundle would hold {len(stores)} stores; at most {limit} per request: name a region or fewer stores"
        )
    if not stores:
        raise ReportNotFoundError("no store to put in the bundle")
    reports = []
    for store_id in stores:
        report = await cold_chain.cold_chain_report(session, store_id, scope.first_day, generated_at=now)
        if report is not None:  # every store listed is known; a report is None only for an unknown one
            reports.append(report)
    out = io.BytesIO()
    texts = [text for report in reports for text in cold_chain.report_texts(report)]
    # One cut of the CJK font for every store's PDF (reading the whole font per PDF costs half a second).
    with (
        pdf_font(_font(settings), texts) as font,
        zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        for report in reports:
            name = f"cold-chain_{report.store_id}_{scope.first_day.isoformat()}.pdf"
            archive.writestr(name, cold_chain.report_pdf(report, font=font, subset=False))
        sheets = [(r.store_id, cold_chain_table(r), [r.store_name or r.store_id]) for r in reports]
        archive.writestr(f"cold-chain_{scope.first_day.isoformat()}.xlsx", workbook_bytes(sheets))
    return _file("cold-chain-bundle", [scope.region, scope.first_day.isoformat()], "zip", out.getvalue())


# --------------------------------------------------------------------------- period reports


@dataclass(frozen=True, kw_only=True)
class PeriodReport:
    """A period report of :mod:`hub.reports.queries`: how to get its rows and which columns to show."""

    title: str
    rows_of: Callable[[AsyncSession, ReportFilter], Awaitable[Sequence[Any]]]
    columns: tuple[str, ...]


PERIOD_REPORTS: Final[Mapping[str, PeriodReport]] = MappingProxyType(
    {
        "sales": PeriodReport(
            title="Sales",
            rows_of=queries.sales,
            columns=(
                "store_id",
                "timezone",
                "local_date",
                "local_hour",
                "sku_id",
                "name",
                "units",
                "revenue",
                "currency",
            ),
        ),
        "inventory": PeriodReport(
            title="Inventory turnover",
            rows_of=queries.stock_flow,
            columns=(
                "store_id",
                "timezone",
                "sku_id",
                "name",
                "units_sold",
                "avg_daily_units",
                "on_hand_start",
                "on_hand_end",
                "average_inventory",
                "turnover",
                "on_hand_now",
                "days_of_supply",
            ),
        ),
        "sell-through": PeriodReport(
            title="Sell-through",
            rows_of=queries.stock_flow,
            columns=(
                "store_id",
                "timezone",
                "sku_id",
                "name",
                "on_hand_start",
                "units_received",
                "units_sold",
                "on_hand_end",
                "sell_through",
            ),
        ),
        "shrink": PeriodReport(
            title="Shrink",
            rows_of=queries.shrink,
            columns=(
                "store_id",
                "timezone",
                "sku_id",
                "name",
                "shrink_units",
                "shrink_value",
                "shrink_records",
                "count_loss_units",
                "count_loss_value",
                "counts_with_loss",
                "currency",
            ),
        ),
        "alert-log": PeriodReport(
            title="Alert log",
            rows_of=queries.alert_log,
            columns=(
                "store_id",
                "opened_at",
                "severity",
                "rule_kind",
                "subject",
                "message",
                "status",
                "acknowledged_by",
                "acknowledged_at",
                "resolved_by",
                "resolved_at",
                "resolution_note",
            ),
        ),
        "alerts": PeriodReport(
            title="Alert statistics",
            rows_of=queries.alert_stats,
            columns=(
                "store_id",
                "timezone",
                "rule_kind",
                "severity",
                "alerts",
                "acknowledged",
                "mean_time_to_acknowledge_s",
                "max_time_to_acknowledge_s",
                "resolved",
                "mean_time_to_resolve_s",
                "max_time_to_resolve_s",
                "open_now",
            ),
        ),
    }
)


def period_document(kind: str, rows: Sequence[Any], filter_: ReportFilter) -> Document:
    """A period report's rows as a document with one table."""
    report = PERIOD_REPORTS[kind]
    period = f"{filter_.first_day.isoformat()} to {filter_.last_day.isoformat()}"
    where = f", store {filter_.store_id}" if filter_.store_id else ""
    table = Table(
        title=report.title,
        columns=report.columns,
        rows=[[getattr(row, column) for column in report.columns] for row in rows],
    )
    return Document(
        title=f"{report.title} {period}{where}", lines=[f"Local dates {period}, both inclusive"], tables=[table]
    )


def _period(kind: str, fmt: str) -> Renderer:
    async def render(
        session: AsyncSession, scope: ReportScope, *, now: datetime, settings: HubSettings
    ) -> ReportDocument:
        if scope.store_id is not None and not scope.reaches(scope.store_id):
            raise ReportScopeError(f"store {scope.store_id!r} is outside your access")
        filter_ = ReportFilter(first_day=scope.first_day, last_day=scope.last_day, store_id=scope.store_id, until=now)
        rows = [row for row in await PERIOD_REPORTS[kind].rows_of(session, filter_) if scope.reaches(row.store_id)]
        body = _render(period_document(kind, rows, filter_), fmt, bom=scope.bom, font=_font(settings), now=now)
        parts = [scope.store_id, scope.first_day.isoformat(), scope.last_day.isoformat()]
        return _file(kind, parts, fmt, body)

    return render


# --------------------------------------------------------------------------- the registry


def _documents() -> dict[tuple[str, str], Renderer]:
    table: dict[tuple[str, str], Renderer] = {}
    for fmt in FORMATS:
        table[("daily-summary", fmt)] = _daily(fmt)
        table[("chain-summary", fmt)] = _chain(fmt)
        table[("cold-chain", fmt)] = _cold(fmt)
        for kind in PERIOD_REPORTS:
            table[(kind, fmt)] = _period(kind, fmt)
    table[("cold-chain-bundle", "zip")] = cold_chain_bundle
    return table


# (kind, format) -> the function that renders it; scheduled delivery registers these.
DOCUMENTS: Final[Mapping[tuple[str, str], Renderer]] = MappingProxyType(_documents())
