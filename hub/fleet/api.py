"""``/api/v1/stores/{store_id}/gateways``: one store's gateways; enrolling and revoking them (for admins).

A gateway is (store_id, gateway_id). Enrolment and revocation go through :func:`hub.fleet.registry.enrol` and
:func:`hub.fleet.registry.revoke`, as the ``storegate hub gateways`` commands do.
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, HTTPException, Path, Request

from hub.api.deps import NowDep, SessionDep, SettingsDep
from hub.api.gateways import gateway_out
from hub.api.listings import list_gateways
from hub.api.schemas import GatewayEnrolIn, GatewayList, GatewayOut, GatewayRevokeIn
from hub.fleet import registry
from hub.runtime import HubRuntime

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1/stores/{store_id}/gateways", tags=["gateways"])

StorePath = Annotated[str, Path(max_length=63, description="the store's id")]
GatewayPath = Annotated[str, Path(max_length=63, description="the gateway's id within its store")]


async def _one(session: SessionDep, settings: SettingsDep, now: NowDep, store_id: str, gateway_id: str) -> GatewayOut:
    views = await list_gateways(
        session, now=now, grace_s=settings.gateway_offline_grace_s, store_id=store_id, gateway_id=gateway_id
    )
    if not views:
        raise HTTPException(status_code=404, detail=f"store {store_id} has no gateway {gateway_id}")
    return gateway_out(views[0])


@router.get("", response_model=GatewayList, summary="List a store's gateways")
async def get_store_gateways(
    session: SessionDep, settings: SettingsDep, now: NowDep, store_id: StorePath
) -> GatewayList:
    """The store's gateways, enrolled or revoked, by id."""
    views = await list_gateways(session, now=now, grace_s=settings.gateway_offline_grace_s, store_id=store_id)
    return GatewayList(items=[gateway_out(view) for view in views])


@router.get(
    "/{gateway_id}",
    response_model=GatewayOut,
    summary="One gateway",
    responses={404: {"description": "the store has no gateway of that id"}},
)
async def get_gateway(
    session: SessionDep, settings: SettingsDep, now: NowDep, store_id: StorePath, gateway_id: GatewayPath
) -> GatewayOut:
    """One gateway of one store: enrolment, presence, stream mark, health."""
    return await _one(session, settings, now, store_id, gateway_id)


@router.post(
    "",
    response_model=GatewayOut,
    status_code=201,
    summary="Enrol a gateway",
    description="Add a gateway to the store: from now on the hub accepts its events, status, health and command "
    "results. A revoked gateway can be enrolled again. 409 if it is enrolled already.",
    responses={409: {"description": "enrolled already"}, 422: {"description": "ids that are not topic segments"}},
)
async def enrol_gateway(
    session: SessionDep, settings: SettingsDep, now: NowDep, store_id: StorePath, body: GatewayEnrolIn
) -> GatewayOut:
    """Enrol ``body.gateway_id`` in ``store_id``."""
    try:
        await registry.enrol(session, store_id, body.gateway_id, by=body.by, now=now)
    except registry.AlreadyEnrolledError as err:
        raise HTTPException(status_code=409, detail=str(err)) from None
    except registry.InvalidGatewayError as err:
        raise HTTPException(status_code=422, detail=str(err)) from None
    await session.commit()
    log.info("gateway_enrolled", store_id=store_id, gateway_id=body.gateway_id, by=body.by)
    return await _one(session, settings, now, store_id, body.gateway_id)


@router.post(
    "/{gateway_id}/revoke",
    response_model=GatewayOut,
    summary="Revoke a gateway",
    description="Nothing the gateway sends is accepted from now on (refused as revoked_gateway); what it sent "
    "before stays, and its commands not yet sent are cancelled. 404 if unknown, 409 if revoked already.",
    responses={404: {"description": "no such gateway"}, 409: {"description": "revoked already"}},
)
async def revoke_gateway(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    store_id: StorePath,
    gateway_id: GatewayPath,
    body: GatewayRevokeIn,
) -> GatewayOut:
    """Revoke ``gateway_id`` of ``store_id``."""
    try:
        await registry.revoke(session, store_id, gateway_id, by=body.by, now=now)
    except registry.GatewayNotFoundError as err:
        raise HTTPException(status_code=404, detail=str(err)) from None
    except registry.AlreadyRevokedError as err:
        raise HTTPException(status_code=409, detail=str(err)) from None
    except registry.InvalidGatewayError as err:
        raise HTTPException(status_code=422, detail=str(err)) from None
    await session.commit()
    log.info("gateway_revoked", store_id=store_id, gateway_id=gateway_id, by=body.by)
    runtime: HubRuntime | None = getattr(request.app.state, "runtime", None)
    if runtime is not None:  # its health gauges go with it
        runtime.metrics.forget_gateway(store_id, gateway_id)
    return await _one(session, settings, now, store_id, gateway_id)
