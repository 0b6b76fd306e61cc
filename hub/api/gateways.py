"""``/api/v1/gateways``: presence, software, devices and stream marks of the gateways."""

from __future__ import annotations

from typing import Annotated, Literal, cast
from uuid import UUID

from fastapi import APIRouter, Query

from hub.api.deps import NowDep, SessionDep, SettingsDep
from hub.api.listings import GatewayView, list_gateways
from hub.api.schemas import GatewayList, GatewayOut
from hub.auth.guard import PrincipalDep
from storegate import wire

router = APIRouter(prefix="/api/v1/gateways", tags=["gateways"])


def gateway_out(view: GatewayView) -> GatewayOut:
    """The API form of a gateway."""
    g = view.gateway
    return GatewayOut(
        store_id=g.store_id,
        gateway_id=g.gateway_id,
        enrolled_at=g.enrolled_at,
        enrolled_by=g.enrolled_by,
        enrolment=cast(Literal["operator", "token", "first_contact", "migrated"], g.enrolment),
        revoked_at=g.revoked_at,
        revoked_by=g.revoked_by,
        certificate_expires_at=g.certificate_expires_at,
        first_seen=g.first_seen,
        online=view.connectivity == "online",
        connectivity=view.connectivity,
        last_status_reason=cast(wire.StatusReason | None, g.last_status_reason),
        status_changed_at=g.status_changed_at,
        last_seen_at=g.last_seen_at,
        agent_version=g.agent_version,
        config_hash=g.config_hash,
        devices=list(g.devices),
        stream=UUID(view.stream) if view.stream else None,
        through_seq=view.through_seq,
        events_lost=view.events_lost,
        last_health=g.last_health,
        last_health_at=g.last_health_at,
    )


@router.get(
    "",
    response_model=GatewayList,
    summary="List gateways",
    description="Every gateway (or those of one store, or of one id in every store) with its enrolment, presence, "
    "agent version, config hash, devices, the contiguous mark of its current outbox stream, the events it reported "
    "lost and its last health report. A gateway is (store_id, gateway_id): `gw-1` of two stores is two gateways.",
)
async def get_gateways(
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    who: PrincipalDep,
    store_id: Annotated[str | None, Query(max_length=128, description="only this store's gateways")] = None,
    gateway_id: Annotated[str | None, Query(max_length=128, description="only gateways of this id")] = None,
) -> GatewayList:
    """Gateways (of the stores the principal reaches), by store and id."""
    views = await list_gateways(
        session, now=now, grace_s=settings.gateway_offline_grace_s, store_id=store_id, gateway_id=gateway_id
    )
    return GatewayList(items=[gateway_out(view) for view in views if who.reaches(view.gateway.store_id)])
