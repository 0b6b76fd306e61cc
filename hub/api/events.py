"""``/api/v1/events``: stored events, filtered, newest received first (or by device time), with keyset pagination."""

from __future__ import annotations

from typing import Annotated, Final
from uuid import UUID

from fastapi import APIRouter, Query

from hub.api.deps import SessionDep
from hub.api.listings import EventFilter, EventTime, list_events
from hub.api.params import IsoDatetime, aware, cursor_of, invalid
from hub.api.schemas import EventOut, EventPageOut
from hub.db.models import StoredEvent
from hub.ingest.clock import ClockIssue

router = APIRouter(prefix="/api/v1/events", tags=["events"])

MAX_LIMIT: Final = 1000
_ID_MAX: Final = 128


def event_out(row: StoredEvent) -> EventOut:
    """The API form of a stored event."""
    return EventOut(
        event_id=UUID(row.event_id),
        store_id=row.store_id,
        gateway_id=row.gateway_id,
        stream=UUID(row.stream),
        seq=row.seq,
        device_id=row.device_id,
        kind=row.kind,
        ts=row.device_ts,
        payload=row.payload,
        received_at=row.received_at,
        clock_issue=None if row.clock_issue is None else ClockIssue(row.clock_issue),
    )


@router.get(
    "",
    response_model=EventPageOut,
    summary="List events",
    description="Stored events matching every given filter, newest first by the time the hub received them "
    "(`time=device`: by the device's own timestamp, which a gateway's wrong clock can put decades off; "
    "`clock_issue` flags those). Follow `next_cursor` for older events, with the same `time`. "
    "Times are ISO 8601 with a time zone.",
)
async def get_events(
    session: SessionDep,
    store_id: Annotated[str | None, Query(max_length=_ID_MAX, description="only this store")] = None,
    gateway_id: Annotated[str | None, Query(max_length=_ID_MAX, description="only this gateway")] = None,
    device_id: Annotated[str | None, Query(max_length=_ID_MAX, description="only this device")] = None,
    kind: Annotated[str | None, Query(max_length=64, description="only this kind, e.g. environment.reading")] = None,
    since: Annotated[IsoDatetime | None, Query(description="`time` at or after this, with time zone")] = None,
    until: Annotated[IsoDatetime | None, Query(description="`time` before this, with time zone")] = None,
    time: Annotated[
        EventTime,
        Query(
            description="which time sorts the list and bounds since/until: when the hub received the event "
            "(received) or the device's timestamp (device)"
        ),
    ] = "received",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="events per page")] = 100,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
) -> EventPageOut:
    """One page of events."""
    since, until = aware("since", since), aware("until", until)
    if since is not None and until is not None and until <= since:
        raise invalid("until", "until must be later than since", until.isoformat())
    position = cursor_of(cursor, order=time)
    event_filter = EventFilter(
        store_id=store_id, gateway_id=gateway_id, device_id=device_id, kind=kind, since=since, until=until, time=time
    )
    page = await list_events(session, event_filter, limit=limit, cursor=position)
    return EventPageOut(items=[event_out(row) for row in page.items], next_cursor=page.next_cursor)
