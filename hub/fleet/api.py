"""``/api/v1/stores/{store_id}/gateways``: one store's gateways; enrolling and revoking them (for admins).

A gateway is (store_id, gateway_id). Enrolment and revocation go through :func:`hub.fleet.registry.enrol` and
:func:`hub.fleet.registry.revoke`, as the ``storegate hub gateways`` commands do, and the gateway's certificate
follows (:mod:`hub.fleet.credentials`): issued with the enrolment and answered once, revoked with the gateway.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import structlog
from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError

from hub.api.deps import NowDep, SessionDep, SettingsDep
from hub.api.gateways import gateway_out
from hub.api.listings import list_gateways
from hub.api.schemas import (
    GatewayCredentialsOut,
    GatewayEnrolIn,
    GatewayEnrolledOut,
    GatewayList,
    GatewayOut,
    ValidationProblem,
)
from hub.auth.audit import note_change
from hub.auth.guard import PrincipalDep
from hub.fleet import credentials, registry
from hub.pki.authority import IssuedCertificate
from hub.pki.identity import IdentityError
from hub.runtime import HubRuntime
from storegate import wire

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1/stores/{store_id}/gateways", tags=["gateways"])

# Ids are topic segments (storegate.wire): a path that is not one is a 422 before anything is looked up.
StorePath = Annotated[str, Path(pattern=wire.SEGMENT_PATTERN, max_length=63, description="the store's id")]
GatewayPath = Annotated[
    str, Path(pattern=wire.SEGMENT_PATTERN, max_length=63, description="the gateway's id within its store")
]


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
    response_model=GatewayEnrolledOut,
    status_code=201,
    summary="Enrol a gateway",
    description="Add a gateway to the store: from now on the hub accepts its events, status, health and command "
    "results. When the hub runs the gateways' CA, the answer carries the gateway's new client certificate, its key "
    "(shown once, kept nowhere by the hub) and the CA certificate, and the broker admits it. A revoked gateway can "
    "be enrolled again. 409 if it is enrolled already.",
    responses={
        409: {"description": "enrolled already"},
        422: {
            "model": ValidationProblem,
            "description": "ids that are not topic segments, or too long together for a certificate's name",
        },
    },
)
async def enrol_gateway(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    who: PrincipalDep,
    store_id: StorePath,
    body: GatewayEnrolIn,
) -> GatewayEnrolledOut:
    """Enrol ``body.gateway_id`` in ``store_id`` and issue its certificate."""
    gateway_id = body.gateway_id
    try:
        credentials.check_identity(settings, store_id, gateway_id)
        row = await registry.enrol(session, store_id, gateway_id, by=who.actor, now=now)
        # Issued before the commit: if the CA fails, the enrolment is not kept either.
        issued = await asyncio.to_thread(credentials.issue_credentials, settings, store_id, gateway_id)
        if issued is not None:
            row.certificate_expires_at = issued.record.not_after
    except registry.AlreadyEnrolledError as err:
        raise HTTPException(status_code=409, detail=str(err)) from None
    except (registry.InvalidGatewayError, IdentityError) as err:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "gateway_id"), "msg": str(err), "input": gateway_id}]
        ) from None
    await session.commit()
    serial = None if issued is None else format(issued.record.serial, "x")
    log.info("gateway_enrolled", store_id=store_id, gateway_id=gateway_id, by=who.actor, certificate=serial)
    note_change(
        request,
        target=f"gateway:{store_id}/{gateway_id}",
        store_id=store_id,
        after={"enrolled": True, "certificate_serial": serial},
    )
    gateway = await _one(session, settings, now, store_id, gateway_id)
    return GatewayEnrolledOut(**gateway.model_dump(), credentials=_credentials_out(issued))


def _credentials_out(issued: IssuedCertificate | None) -> GatewayCredentialsOut | None:
    if issued is None:
        return None
    return GatewayCredentialsOut(
        certificate_pem=issued.certificate_pem.decode(),
        private_key_pem=issued.key_pem.decode(),
        ca_certificate_pem=issued.ca_pem.decode(),
        serial=format(issued.record.serial, "x"),
        not_after=issued.record.not_after,
    )


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
    who: PrincipalDep,
    store_id: StorePath,
    gateway_id: GatewayPath,
) -> GatewayOut:
    """Revoke ``gateway_id`` of ``store_id`` and its certificates."""
    try:
        await registry.revoke(session, store_id, gateway_id, by=who.actor, now=now)
    except registry.GatewayNotFoundError as err:
        raise HTTPException(status_code=404, detail=str(err)) from None
    except registry.AlreadyRevokedError as err:
        raise HTTPException(status_code=409, detail=str(err)) from None
    await session.commit()
    # After the commit: the hub refuses the gateway from now on even if the broker cannot be told at once.
    certificates = await asyncio.to_thread(credentials.revoke_credentials, settings, store_id, gateway_id)
    log.info("gateway_revoked", store_id=store_id, gateway_id=gateway_id, by=who.actor, certificates=certificates)
    note_change(
        request,
        target=f"gateway:{store_id}/{gateway_id}",
        store_id=store_id,
        before={"enrolled": True},
        after={"enrolled": False, "certificates_revoked": certificates},
    )
    runtime: HubRuntime | None = getattr(request.app.state, "runtime", None)
    if runtime is not None:  # its health gauges go with it
        runtime.metrics.forget_gateway(store_id, gateway_id)
    return await _one(session, settings, now, store_id, gateway_id)
