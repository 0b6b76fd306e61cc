"""Newly stored ``camera.footfall`` events into ``footfall_counts``, in the ingest transaction.

Cheap by design: an entrance camera sends a few events a minute, so a unit usually has none and costs a
filter over its events; otherwise one upsert statement. Each (store, gateway, camera, line, period start) is
one row whose counts the event sets (never adds to), so applying the same event again changes nothing. A
camera states each period once; should it state one twice (a driver restarted within the minute and counted it
again), the later statement replaces the earlier: the minute may then be short, but never counted twice.
Cameras and lines add up only in the report, per store.

A period that does not lie around its event's time was stamped by a clock the hub does not believe
(:func:`hub.domain.footfall.period_is_plausible`): it is not counted, and is logged with the event's id; the
event itself stays in the event log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.bulk import BulkColumn, bulk_write
from hub.domain.footfall import period_is_plausible
from hub.footfall.models import FootfallCount
from storegate import wire
from storegate.wire import EventKind

log = structlog.get_logger(__name__)

FOOTFALL_KIND: Final = EventKind.CAMERA_FOOTFALL.value

_COLUMNS: Final = tuple(
    BulkColumn(name, pg_type)
    for name, pg_type in (
        ("store_id", "varchar"),
        ("gateway_id", "varchar"),
        ("device_id", "varchar"),
        ("line", "varchar"),
        ("period_start", "timestamptz"),
        ("period_s", "int"),
        ("entered", "int"),
        ("exited", "int"),
        ("event_id", "varchar"),
        ("recorded_at", "timestamptz"),
    )
)
_KEY: Final = "store_id, gateway_id, device_id, line, period_start"
_UPSERT: Final = (
    f"ON CONFLICT ({_KEY}) DO UPDATE SET period_s = excluded.period_s, entered = excluded.entered, "
    "exited = excluded.exited, event_id = excluded.event_id, recorded_at = excluded.recorded_at"
)


@dataclass(slots=True)
class FootfallOutcome:
    """What one unit wrote: periods counted, and periods not counted for their implausible time."""

    periods: int = 0
    implausible: int = 0


def footfall_rows(events: Sequence[wire.Event], *, now: datetime) -> tuple[list[tuple[Any, ...]], int]:
    """The ``footfall_counts`` rows of the footfall events among ``events`` (the last of a key wins), and how
    many periods were left out for an implausible time."""
    rows: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    implausible = 0
    for event in events:
        if event.kind != FOOTFALL_KIND:
            continue
        counts = wire.CameraFootfall.model_validate(event.payload)
        if not period_is_plausible(period_start=counts.period_start, period_s=counts.period_s, event_ts=event.ts):
            implausible += 1
            log.warning(
                "footfall_period_implausible",
                store_id=event.store_id,
                gateway_id=event.gateway_id,
                device_id=event.device_id,
                event_id=str(event.event_id),
                period_start=counts.period_start.isoformat(),
                event_ts=event.ts.isoformat(),
            )
            continue
        key = (event.store_id, event.gateway_id, event.device_id, counts.line, counts.period_start)
        # One statement may not update a row twice on PostgreSQL: a key stated twice in a unit keeps the later.
        rows[key] = (*key, counts.period_s, counts.entered, counts.exited, str(event.event_id), now)
    return list(rows.values()), implausible


async def apply_footfall(session: AsyncSession, events: Sequence[wire.Event], *, now: datetime) -> FootfallOutcome:
    """Write the counts of the footfall events among a unit's newly stored ``events``."""
    rows, implausible = footfall_rows(events, now=now)
    await bulk_write(session, FootfallCount.__tablename__, _COLUMNS, rows, on_conflict=_UPSERT)
    return FootfallOutcome(periods=len(rows), implausible=implausible)
