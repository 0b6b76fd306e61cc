"""``/api/v1/stores``: the stores the hub knows (a gateway of theirs was enrolled)."""

from __future__ import annotations

from fastapi import APIRouter

from hub.api.deps import NowDep, SessionDep, SettingsDep
from hub.api.listings import list_stores
from hub.api.schemas import StoreList, StoreOut
from hub.auth.guard import PrincipalDep

router = APIRouter(prefix="/api/v1/stores", tags=["stores"])


@router.get(
    "",
    response_model=StoreList,
    summary="List stores",
    description="Every store with its gateway counts, event count, when its last new event was stored, "
    "and how many events its gateways reported lost.",
)
async def get_stores(session: SessionDep, settings: SettingsDep, now: NowDep, who: PrincipalDep) -> StoreList:
    """Every store (the principal reaches), by id."""
    summaries = await list_stores(session, now=now, grace_s=settings.gateway_offline_grace_s)
    return StoreList(
        items=[
            StoreOut(
                store_id=s.store_id,
                first_seen=s.first_seen,
                gateway_count=s.gateway_count,
                online_gateway_count=s.online_gateway_count,
                event_count=s.event_count,
                last_event_at=s.last_event_at,
                events_lost=s.events_lost,
            )
            for s in summaries
            if who.reaches(s.store_id)
        ]
    )
