"""``/api/v1/data-losses``: events that gateways reported lost, newest report first, with keyset pagination."""

from __future__ import annotations

from typing import Annotated, Final, Literal, cast
from uuid import UUID

from fastapi import APIRouter, Query

from hub.api.deps import SessionDep
from hub.api.listings import LossFilter, list_losses
from hub.api.params import IsoDatetime, aware, cursor_of
from hub.api.schemas import DataLossOut, DataLossPageOut
from hub.db.models import DataLossRecord

router = APIRouter(prefix="/api/v1/data-losses", tags=["data losses"])

MAX_LIMIT: Final = 1000
_ID_MAX: Final = 128

LossReason = Literal["evicted", "not_held", "corrupt"]


def loss_out(row: DataLossRecord) -> DataLossOut:
    """The API form of a loss record."""
    return DataLossOut(
        id=row.id,
        store_id=row.store_id,
        gateway_id=row.gateway_id,
        stream=UUID(row.stream),
        first_seq=row.first_seq,
        last_seq=row.last_seq,
        count=row.count,
        reason=cast(LossReason, row.reason),
        detail=row.detail,
        by_kind=row.by_kind,
        event_id=UUID(row.event_id),
        reported_at=row.reported_at,
        recorded_at=row.recorded_at,
    )


@router.get(
    "",
    response_model=DataLossPageOut,
    summary="List data losses",
    description="Ranges of events that gateways reported they can never deliver (`outbox.loss` events), "
    "newest report first. A report's ranges are recorded less what the hub holds or had recorded already, "
    "so `count` adds up to distinct lost events. Follow `next_cursor` for older records.",
)
async def get_data_losses(
    session: SessionDep,
    store_id: Annotated[str | None, Query(max_length=_ID_MAX, description="only this store")] = None,
    gateway_id: Annotated[str | None, Query(max_length=_ID_MAX, description="only this gateway")] = None,
    reason: Annotated[LossReason | None, Query(description="only this reason")] = None,
    since: Annotated[IsoDatetime | None, Query(description="reported at or after this, with time zone")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="records per page")] = 100,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = None,
) -> DataLossPageOut:
    """One page of loss records."""
    loss_filter = LossFilter(store_id=store_id, gateway_id=gateway_id, reason=reason, since=aware("since", since))
    page = await list_losses(session, loss_filter, limit=limit, cursor=cursor_of(cursor, order="reported"))
    return DataLossPageOut(items=[loss_out(row) for row in page.items], next_cursor=page.next_cursor)
