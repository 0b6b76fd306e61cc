"""The cold-chain report of one store and one local day: each zone's readings, time outside its range, excursions.

What goes in: the store's ``environment.reading`` events of the day (one store's day is small enough to read
here), the ``environment_range`` rules in force in the store (the chain's, with the store's overrides, as
:mod:`hub.domain.rules` applies them) and the recorded excursions that overlap the day. What comes out: one
:class:`ColdChainReport`, rendered as JSON, CSV (:func:`report_csv`) or PDF (:func:`report_pdf`) alike.

Times are the store's local time with their UTC offset, so a daylight-saving day reads unambiguously.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.alerting.models import ExcursionRow
from hub.alerting.rules_db import load_store_rules
from hub.catalog.models import StoreProfile
from hub.db.models import Store, StoredEvent
from hub.domain.excursions import DEFAULT_MAX_GAP_S, ZoneRange
from hub.domain.rules import EnvironmentRangeRule
from hub.reports import csv_text
from hub.reports.formats import ReportPdf, latin1, pdf_font
from storegate.wire import UNIT_OF, EnvironmentReading, EventKind

FALLBACK_TIME_ZONE: Final = "UTC"
MEAN_DIGITS: Final = 3
# Units as people write them (the core PDF fonts' Latin-1 has the degree sign too).
_UNIT_LABEL: Final[dict[str, str]] = {"Cel": "°C", "%RH": "%RH", "ppm": "ppm", "lx": "lx"}
_UNIT_CODE: Final[dict[str, str]] = {quantity.value: unit for quantity, unit in UNIT_OF.items()}


class ReportModel(BaseModel):
    """Base of the report's parts: immutable, unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ZoneSummary(ReportModel):
    """One quantity of one zone over the day."""

    zone: str = Field(description="the reading's zone; the device id for a reading without one")
    quantity: str
    unit: str = Field(description="unit code of the wire contract, e.g. Cel")
    readings: int
    minimum: float
    maximum: float
    mean: float
    first_reading: datetime = Field(description="local time with UTC offset")
    last_reading: datetime = Field(description="local time with UTC offset")
    low_limit: float | None = Field(description="the highest floor of the environment_range rules covering the zone")
    high_limit: float | None = Field(description="the lowest cap of the environment_range rules covering the zone")
    time_outside_s: float | None = Field(
        description="seconds of the day with the last reading beyond a limit (held at most max_gap_s); "
        "null when no rule covers the zone"
    )


class ExcursionLine(ReportModel):
    """A recorded excursion that overlaps the day (it may start the day before or end the day after)."""

    zone: str
    quantity: str
    unit: str
    rule_id: str
    direction: str = Field(description="high or low")
    limit: float
    start: datetime = Field(description="local time with UTC offset")
    end: datetime = Field(description="local time with UTC offset")
    peak: float = Field(description="the worst value")
    peak_at: datetime = Field(description="local time with UTC offset")
    duration_s: float
    readings: int
    gaps: int
    alert_id: str | None = Field(description="the alert it raised, if it lasted long enough")


class ColdChainReport(ReportModel):
    """A store's cold chain over one local day."""

    store_id: str
    store_name: str | None
    date: date
    timezone: str
    timezone_assumed: bool = Field(description="true when the store has no profile and UTC is used")
    day_start: datetime = Field(description="local midnight starting the day, with its UTC offset")
    day_end: datetime = Field(description="local midnight ending the day, with its UTC offset")
    until: datetime = Field(
        description="where the figures stop, local with its UTC offset: the day's end, or the moment the report "
        "was made while the day lasts (nothing after now is counted or extrapolated)"
    )
    generated_at: datetime
    zones: list[ZoneSummary]
    excursions: list[ExcursionLine]
    unreadable_readings: int = Field(description="readings of the day whose payload could not be read (left out)")
    notes: list[str]


# --------------------------------------------------------------------------- pure core


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one zone and quantity."""

    at: datetime
    value: float


@dataclass(frozen=True, slots=True)
class Limits:
    """The ranges that rules set for one zone and quantity (a reading is outside if any rule says so)."""

    ranges: tuple[ZoneRange, ...]

    @property
    def low(self) -> float | None:
        """The highest floor."""
        return max((r.low for r in self.ranges if r.low is not None), default=None)

    @property
    def high(self) -> float | None:
        """The lowest cap."""
        return min((r.high for r in self.ranges if r.high is not None), default=None)

    @property
    def max_gap_s(self) -> float:
        """How long a reading stands for the zone: the shortest continuity of the rules."""
        return min((r.max_gap_s for r in self.ranges), default=DEFAULT_MAX_GAP_S)

    def outside(self, value: float) -> bool:
        """Whether a value is beyond any rule's limit."""
        return any(r.breach(value) is not None for r in self.ranges)


def time_outside(samples: Sequence[Sample], limits: Limits, *, start: datetime, end: datetime) -> float:
    """Seconds within [start, end) that the zone was outside its limits, by its readings.

    A reading stands for the zone until the next one, or for ``max_gap_s`` at most (after that nothing is
    known, as the excursion rules see it); ``samples`` are in time order and may begin before ``start``.
    """
    held = timedelta(seconds=limits.max_gap_s)
    total = 0.0
    for current, following in itertools.zip_longest(samples, samples[1:]):
        if not limits.outside(current.value):
            continue
        until = min(current.at + held, end, following.at if following is not None else end)
        since = max(current.at, start)
        if until > since:
            total += (until - since).total_seconds()
    return total


def summarise(
    zone: str,
    quantity: str,
    samples: Sequence[Sample],
    limits: Limits | None,
    *,
    start: datetime,
    end: datetime,
    tz: ZoneInfo,
) -> ZoneSummary | None:
    """The day's summary of one zone and quantity; None when it has no reading within the day."""
    in_day = [s for s in samples if start <= s.at < end]
    if not in_day:
        return None
    values = [s.value for s in in_day]
    return ZoneSummary(
        zone=zone,
        quantity=quantity,
        unit=_UNIT_CODE.get(quantity, ""),
        readings=len(in_day),
        minimum=min(values),
        maximum=max(values),
        mean=round(sum(values) / len(values), MEAN_DIGITS),
        first_reading=in_day[0].at.astimezone(tz),
        last_reading=in_day[-1].at.astimezone(tz),
        low_limit=None if limits is None else limits.low,
        high_limit=None if limits is None else limits.high,
        time_outside_s=None if limits is None else time_outside(samples, limits, start=start, end=end),
    )


def limits_for(rules: Iterable[EnvironmentRangeRule], zone: str, quantity: str) -> Limits | None:
    """The ranges of the rules that cover a zone and quantity; None when no rule does."""
    ranges = tuple(rule.limits_of(zone) for rule in rules if rule.quantity == quantity and rule.matches(zone))
    return Limits(ranges=ranges) if ranges else None


def _offset(moment: datetime) -> str:
    text = moment.strftime("%z")  # "+0200"
    return f"{text[:3]}:{text[3:]}"


def day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Local midnight starting and ending ``day`` (23 or 25 hours apart on a DST change)."""
    return datetime.combine(day, time(), tz), datetime.combine(day + timedelta(days=1), time(), tz)


def stop_at_now(start: datetime, end: datetime, now: datetime) -> datetime:
    """Where a period's figures stop: ``end``, or ``now`` when the period has not ended (never before ``start``).

    A report of today must not hold the last reading (or anything else) beyond the present.
    """
    return max(start, min(end, now))


# --------------------------------------------------------------------------- reading the database


async def _environment_rules(session: AsyncSession, store_id: str) -> tuple[list[EnvironmentRangeRule], list[str]]:
    """The store's environment_range rules in force, and a note for each stored rule or override not in force."""
    view = await load_store_rules(session, store_id)
    rules = [rule for rule in view.rules.in_force.values() if isinstance(rule, EnvironmentRangeRule)]
    skipped = (*view.chain_skipped, *view.rules.skipped)
    return rules, [f"rule {problem.rule_id} is not applied as stored: {problem.message}" for problem in skipped]


async def _samples(
    session: AsyncSession, store_id: str, *, since: datetime, end: datetime, start: datetime
) -> tuple[dict[tuple[str, str], list[Sample]], int]:
    """Readings per (zone, quantity) from ``since`` to ``end``, in time order; and the day's unreadable ones."""
    rows = await session.execute(
        select(StoredEvent.device_id, StoredEvent.device_ts, StoredEvent.payload)
        .where(
            StoredEvent.store_id == store_id,
            StoredEvent.device_ts >= since,
            StoredEvent.device_ts < end,
            StoredEvent.kind == EventKind.ENVIRONMENT_READING,
        )
        .order_by(StoredEvent.device_ts, StoredEvent.id)
    )
    series: dict[tuple[str, str], list[Sample]] = {}
    unreadable = 0
    for device_id, at, payload in rows:
        try:
            reading = EnvironmentReading.model_validate(payload)
        except ValidationError:
            if at >= start:
                unreadable += 1
            continue
        key = (reading.zone or device_id, reading.quantity.value)
        series.setdefault(key, []).append(Sample(at=at, value=reading.value))
    return series, unreadable


def _excursion_line(row: ExcursionRow, tz: ZoneInfo) -> ExcursionLine:
    return ExcursionLine(
        zone=row.zone,
        quantity=row.quantity,
        unit=_UNIT_CODE.get(row.quantity, ""),
        rule_id=row.rule_id,
        direction=row.direction,
        limit=row.limit_value,
        start=row.started_at.astimezone(tz),
        end=row.ended_at.astimezone(tz),
        peak=row.peak,
        peak_at=row.peak_at.astimezone(tz),
        duration_s=row.duration_s,
        readings=row.readings,
        gaps=row.gaps,
        alert_id=row.alert_id,
    )


async def cold_chain_report(
    session: AsyncSession, store_id: str, day: date, *, generated_at: datetime
) -> ColdChainReport | None:
    """The cold-chain report of ``store_id`` for its local date ``day``; None when the hub knows no such store."""
    profile = await session.get(StoreProfile, store_id)
    if profile is None and await session.get(Store, store_id) is None:
        return None
    zone_name = profile.timezone if profile is not None else FALLBACK_TIME_ZONE
    tz = ZoneInfo(zone_name)
    start, day_end = day_bounds(day, tz)
    end = stop_at_now(start, day_end, generated_at).astimezone(tz)
    rules, notes = await _environment_rules(session, store_id)
    # The last reading before midnight still stands for the zone in the first minutes of the day.
    lookback = timedelta(seconds=max((rule.max_gap_s for rule in rules), default=DEFAULT_MAX_GAP_S))
    series, unreadable = await _samples(session, store_id, since=start - lookback, end=end, start=start)
    zones: list[ZoneSummary] = []
    for (zone, quantity), samples in sorted(series.items()):
        limits = limits_for(rules, zone, quantity)
        summary = summarise(zone, quantity, samples, limits, start=start, end=end, tz=tz)
        if summary is not None:  # only readings before midnight: nothing of this day
            zones.append(summary)
    excursions = await session.scalars(
        select(ExcursionRow)
        .where(ExcursionRow.store_id == store_id, ExcursionRow.started_at < end, ExcursionRow.ended_at >= start)
        .order_by(ExcursionRow.started_at, ExcursionRow.id)
    )
    if profile is None:
        notes.insert(0, f"store {store_id} has no store profile: times are in UTC")
    if generated_at < start:
        notes.append("the day has not begun: nothing is counted")
    elif end < day_end:
        notes.append(f"the day is not over: figures stop at {_when(end)}")
    if not zones:
        notes.append(f"no readings on {day.isoformat()}")
    if unreadable:
        plural = "" if unreadable == 1 else "s"
        notes.append(f"left out {unreadable} reading{plural} whose payload is not a valid reading")
    if _offset(start) != _offset(day_end):
        notes.append(f"the UTC offset changes on this day, from {_offset(start)} to {_offset(day_end)}")
    return ColdChainReport(
        store_id=store_id,
        store_name=profile.name if profile is not None else None,
        date=day,
        timezone=zone_name,
        timezone_assumed=profile is None,
        day_start=start,
        day_end=day_end,
        until=end,
        generated_at=generated_at.astimezone(UTC),
        zones=zones,
        excursions=[_excursion_line(row, tz) for row in excursions],
        unreadable_readings=unreadable,
        notes=notes,
    )


# --------------------------------------------------------------------------- CSV


def _union(*models: type[BaseModel]) -> list[str]:
    return list(dict.fromkeys(name for model in models for name in model.model_fields))


# One table: a ``record`` column says whether a row is a zone's summary, an excursion or a note, and each
# row fills the columns of its kind. Values are those of the JSON form.
CSV_COLUMNS: Final = ["record", "store_id", "date", "timezone", *_union(ZoneSummary, ExcursionLine), "note"]


def report_rows(report: ColdChainReport) -> list[Mapping[str, Any]]:
    """The report's zone, excursion and note rows in :data:`CSV_COLUMNS`, values in their JSON form."""
    head: dict[str, Any] = {"store_id": report.store_id, "date": report.date.isoformat(), "timezone": report.timezone}
    return [
        *({"record": "zone", **head, **zone.model_dump(mode="json")} for zone in report.zones),
        *({"record": "excursion", **head, **line.model_dump(mode="json")} for line in report.excursions),
        *({"record": "note", **head, "note": note} for note in report.notes),
    ]


def report_csv(report: ColdChainReport) -> str:
    """The report as one CSV table of zone, excursion and note rows."""
    return csv_text(CSV_COLUMNS, report_rows(report))


# --------------------------------------------------------------------------- PDF


def pdf_text(text: str) -> str:
    """``text`` in the Latin-1 of the core PDF fonts: dashes and quotes made plain, anything else as '?'."""
    return latin1(text)


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} {_offset(moment)}"


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "no range"
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _number(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def _range(zone: ZoneSummary, unit: str) -> str:
    if zone.low_limit is not None and zone.high_limit is not None:
        return f"{_number(zone.low_limit, unit)} .. {_number(zone.high_limit, unit)}"
    if zone.high_limit is not None:
        return f"at most {_number(zone.high_limit, unit)}"
    if zone.low_limit is not None:
        return f"at least {_number(zone.low_limit, unit)}"
    return "none"


def _table(pdf: ReportPdf, widths: tuple[int, ...], rows: Sequence[Sequence[str]], *, size: int = 8) -> None:
    pdf.use_font(size=size)
    with pdf.table(
        col_widths=widths, width=sum(widths), text_align="LEFT", first_row_as_headings=True, **pdf.heading_style()
    ) as table:
        for cells in rows:
            row = table.row()
            for cell in cells:
                row.cell(pdf.text_of(cell))
    pdf.ln(4)


_ZONE_HEADER: Final = ("Quantity", "Readings", "Min", "Max", "Mean", "Range", "Time outside", "First", "Last")
_EXCURSION_HEADER: Final = ("Zone", "Quantity", "Side", "Limit", "Start", "End", "Peak", "Peak at", "Duration", "Alert")
_ZONE_WIDTHS: Final = (30, 18, 22, 22, 22, 36, 26, 50, 50)
# Smaller type for the excursions, so a local time (with offset) and an alert id fit on one line each.
_EXCURSION_FONT_SIZE: Final = 7
_EXCURSION_WIDTHS: Final = (36, 26, 10, 18, 35, 35, 18, 35, 16, 48)


def _zone_row(summary: ZoneSummary) -> tuple[str, ...]:
    unit = f" {_UNIT_LABEL.get(summary.unit, summary.unit)}"
    return (
        summary.quantity,
        str(summary.readings),
        _number(summary.minimum, unit),
        _number(summary.maximum, unit),
        _number(summary.mean, unit),
        _range(summary, unit),
        _span(summary.time_outside_s),
        _when(summary.first_reading),
        _when(summary.last_reading),
    )


def _excursion_row(line: ExcursionLine) -> tuple[str, ...]:
    unit = f" {_UNIT_LABEL.get(line.unit, line.unit)}"
    return (
        line.zone,
        line.quantity,
        line.direction,
        _number(line.limit, unit),
        _when(line.start),
        _when(line.end),
        _number(line.peak, unit),
        _when(line.peak_at),
        _span(line.duration_s),
        line.alert_id or "none",
    )


def report_texts(report: ColdChainReport) -> list[str]:
    """The report's own words (names, zones, notes), for :func:`hub.reports.formats.pdf_font`; the rest is ASCII."""
    return [report.model_dump_json()]


def report_pdf(report: ColdChainReport, *, font: Path | None = None, subset: bool = True) -> bytes:
    """The report as an A4 landscape PDF: a title block, a table per zone, and the excursions.

    ``font`` has the Chinese glyphs of store names (:func:`hub.reports.formats.find_cjk_font`); without one the
    PDF says so at its top and writes Latin-1 only. ``subset=False`` when ``font`` is already cut down to
    the report's characters (a bundle cuts one font for all its stores).
    """
    if subset:
        with pdf_font(font, report_texts(report)) as cut:
            return report_pdf(report, font=cut, subset=False)
    name = f"{report.store_name} ({report.store_id})" if report.store_name else report.store_id
    pdf = ReportPdf(font=font, title=f"Cold-chain report {name} {report.date.isoformat()}", created=report.generated_at)
    pdf.paragraph(f"Cold-chain report: {name}", size=16, style="B")
    pdf.paragraph(f"Date: {report.date.isoformat()}")
    offsets = _offset(report.day_start)
    if _offset(report.day_end) != offsets:
        offsets = f"{offsets} at the start of the day, {_offset(report.day_end)} at its end"
    assumed = " (assumed: the store has no profile)" if report.timezone_assumed else ""
    pdf.paragraph(f"Time zone: {report.timezone}{assumed}, UTC {offsets}")
    pdf.paragraph(
        f"Day: {_when(report.day_start)} to {_when(report.day_end)}; times below are local with their UTC offset"
    )
    pdf.paragraph(f"Generated: {report.generated_at:%Y-%m-%d %H:%M:%S} UTC")
    for note in report.notes:
        pdf.paragraph(f"Note: {note}", style="I")
    pdf.ln(2)
    if not report.zones:
        pdf.paragraph("No readings on this day.", size=12, style="B")
    for zone, summaries in itertools.groupby(report.zones, key=lambda summary: summary.zone):
        pdf.paragraph(f"Zone {zone}", size=12, style="B")
        _table(pdf, _ZONE_WIDTHS, [_ZONE_HEADER, *(_zone_row(summary) for summary in summaries)])
    pdf.paragraph("Excursions", size=12, style="B")
    if report.excursions:
        rows = [_EXCURSION_HEADER, *(_excursion_row(line) for line in report.excursions)]
        _table(pdf, _EXCURSION_WIDTHS, rows, size=_EXCURSION_FONT_SIZE)
    else:
        pdf.paragraph("No excursion overlaps this day.")
    return bytes(pdf.output())
