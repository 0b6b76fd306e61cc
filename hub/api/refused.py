"""``/api/v1/refused-events``: events set aside from enrolled gateways' batches, newest first, paginated."""

from __future__ import annotations

from typing import Annotated, Final, Literal, cast
from uuid import UUID

from fastapi import APIRouter, Query

from hub.api.deps import SessionDep
from hub.api.listings import RefusedFilter, list_refused
from hub.api.params import cursor_of
from hub.api.schemas import RefusedEventOut, RefusedEventPageOut
from hub.db.models import RefusedEvent

router = APIRouter(prefix="/api/v1/refused-events", tags=["events"])

MAX_LIMIT: Final = 1000
_ID_MAX: Final = 128

RefusedReason = Literal["invalid_event", "not_of_sender", "storage_error"]


def refused_out(row: RefusedEvent) -> RefusedEventOut:
    """The API form of a refused event."""
    return RefusedEventOut(
        id=row.id,
        store_id=row.store_id,
        gateway_id=row.gateway_id,
        stream=UUID(row.stream) if row.stream is not None else None,
        seq=row.seq,
        event_id=row.event_id,
        kind=row.kind,
        reason=cast(RefusedReason, row.reason),
        detail=row.detail,
        event_json=row.event_json,
        received_at=row.received_at,
        recorded_at=row.recorded_at,
    )


@router.get(
    "",
    response_model=RefusedEventPageOut,
    summary="List refused events",
    description="Events of enrolled gateways' batches that the hub set aside instead of storing, with the reason: "
    "invalid, naming another gateway, or refused by the database. The rest of each batch was stored, and the "
    "Ack moved past these seqs, so no gateway's stream stalls on one bad event. Newest first; follow `next_cursor`.",
)
async def get_refused_events(
    session: SessionDep,
    store_id: Annotated[str | None, Query(max_length=_ID_MAX, description="only this store")] = None,
    gateway_id: Annotated[str | None, Query(max_length=_ID_MAX, description="only this gateway id")] = None,
    reason: Annotated[RefusedReason | None, Query(description="only this reason")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="events per page")] = 100,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
) -> RefusedEventPageOut:
    """One page of refused events."""
    refused_filter = RefusedFilter(store_id=store_id, gateway_id=gateway_id, reason=reason)
    page = await list_refused(session, refused_filter, limit=limit, cursor=cursor_of(cursor, order="recorded"))
    return RefusedEventPageOut(items=[refused_out(row) for row in page.items], next_cursor=page.next_cursor)
