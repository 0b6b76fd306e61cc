"""Today's footfall of stores for the console: visitors and conversion by local hour beside sales.

"Today" is each store's own local date (its profile's zone; UTC without one). One report over the span of the
stores' todays (a day at most, as zones differ) answers every store asked for: its three queries per call,
whatever the number of stores. The store page (``hub.console.store``, template ``_store_today.html``) shows one
store's today.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.catalog.models import StoreProfile
from hub.domain.footfall import DayFigures, HourFigures
from hub.footfall.queries import footfall_report
from hub.reports.queries import FALLBACK_TIME_ZONE, ReportFilter


@dataclass(frozen=True, slots=True)
class StoreToday:
    """One store's local day so far: its hours with camera counts or sales, and their totals."""

    local_date: date
    timezone: str
    hours: Sequence[HourFigures]
    day: DayFigures | None


async def today_by_store(
    session: AsyncSession, store_ids: Sequence[str], *, now: datetime, basket_gap_s: float
) -> dict[str, StoreToday]:
    """Each store's today (its own local date at ``now``), from one footfall report."""
    if not store_ids:
        return {}
    profiles = await session.execute(
        select(StoreProfile.store_id, StoreProfile.timezone).where(StoreProfile.store_id.in_(store_ids))
    )
    zones = dict.fromkeys(store_ids, FALLBACK_TIME_ZONE) | {row.store_id: row.timezone for row in profiles}
    today = {store: now.astimezone(ZoneInfo(zone)).date() for store, zone in zones.items()}
    scope = ReportFilter(
        first_day=min(today.values()),
        last_day=max(today.values()),
        store_id=store_ids[0] if len(store_ids) == 1 else None,
        until=now,
    )
    report = await footfall_report(session, scope, basket_gap_s=basket_gap_s)
    days = {(day.store_id, day.local_date): day for day in report.days}
    return {
        store: StoreToday(
            local_date=today[store],
            timezone=zones[store],
            hours=[h for h in report.hours if h.key.store_id == store and h.key.local_date == today[store]],
            day=days.get((store, today[store])),
        )
        for store in store_ids
    }
