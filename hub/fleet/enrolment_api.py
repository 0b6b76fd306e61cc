"""``/api/v1/enrolment-tokens`` (admins, and technicians for their stores) and ``POST /api/v1/enrol`` (the gateway).

A token is made for one store's gateway and answered once, with the exact command the technician runs on the Pi
and an enrolment link (the token in its fragment) for a QR code. ``POST /api/v1/enrol`` is open to anonymous
callers, as ``/login`` is: the token in its body is its credential. The hub checks the token and the CSR, marks the
token used, enrols the gateway, signs a certificate for ``<store>/<gateway>`` on the gateway's own key, admits it at
the broker, and answers the certificate, the CA, the broker's address and a first agent config, all in one
transaction: a CA that fails leaves the token unused and nothing enrolled.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Final

import structlog
from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import NowDep, SessionDep, SettingsDep
from hub.api.schemas import ApiModel, Problem
from hub.auth.audit import note_change
from hub.auth.guard import PrincipalDep, client_address
from hub.db.models import EnrolmentToken
from hub.fleet import credentials, enrolment, registry
from hub.pki.identity import IdentityError
from hub.runtime import HubRuntime
from hub.settings import HubSettings
from storegate import wire
from storegate.enrolment import (
    EnrolAnswer,
    EnrolledAgentConfig,
    EnrolRequest,
    ca_pin,
    enrolment_link,
)

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1", tags=["enrolment"])

TokenIdPath = Annotated[
    str, Path(min_length=1, max_length=64, description="the token's id (the second part of its text)")
]
_SEGMENT = Field(pattern=wire.SEGMENT_PATTERN, max_length=63)


class EnrolmentTokenIn(BaseModel):
    """A token for one gateway of one store."""

    model_config = ConfigDict(extra="forbid")

    store_id: str = _SEGMENT
    gateway_id: str = _SEGMENT
    valid_hours: float | None = Field(
        default=None, gt=0, le=24 * 30, description="its lifetime; default enrolment.token_hours (24)"
    )


class EnrolmentTokenOut(ApiModel):
    """A token, never its secret."""

    token_id: str
    store_id: str
    gateway_id: str
    state: str = Field(description="live, used, revoked or expired")
    created_at: datetime
    created_by: str
    expires_at: datetime
    used_at: datetime | None
    used_from: str | None = Field(description="the address the enrolment came from")
    certificate_serial: str | None = Field(description="the certificate the enrolment was answered with (hex)")
    revoked_at: datetime | None
    revoked_by: str | None


class EnrolmentTokenCreatedOut(EnrolmentTokenOut):
    """A token just made, with its text: the only time it is shown."""

    token: str = Field(description="the token; shown once")
    command: str = Field(description="what the technician runs on the gateway")
    link: str = Field(description="the enrolment link (the token in its fragment), e.g. for a QR code")


class EnrolmentTokenList(ApiModel):
    """Tokens newest first."""

    items: list[EnrolmentTokenOut]


_TOKEN_REFUSED: Final[dict[int | str, dict[str, Any]]] = {
    403: {"model": Problem, "description": "the token is forged, expired, used or revoked (the detail says which)"},
    409: {"model": Problem, "description": "the gateway is enrolled already, or the hub runs no CA to sign with"},
}


def _out(row: EnrolmentToken, now: datetime) -> EnrolmentTokenOut:
    return EnrolmentTokenOut(
        token_id=row.token_id,
        store_id=row.store_id,
        gateway_id=row.gateway_id,
        state=enrolment.token_state(row, now),
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        used_at=row.used_at,
        used_from=row.used_from,
        certificate_serial=row.certificate_serial,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
    )


def _runtime(request: Request) -> HubRuntime | None:
    runtime: HubRuntime | None = getattr(request.app.state, "runtime", None)
    return runtime


def hub_url(settings: HubSettings, request: Request) -> str:
    """The operators' API as a gateway reaches it: enrolment.hub_url, else the address this request used."""
    return settings.enrolment.hub_url or str(request.base_url).rstrip("/")


def gateway_listener_url(settings: HubSettings, request: Request) -> str | None:
    """The gateway listener as a gateway reaches it, or None when the hub has none."""
    if settings.enrolment.gateway_listener_url is not None:
        return settings.enrolment.gateway_listener_url
    snapshots = settings.snapshots
    if snapshots.listen_port is None:
        return None
    runtime = _runtime(request)
    listener = runtime.snapshots.listener if runtime is not None and runtime.snapshots is not None else None
    port = listener.port if listener is not None else snapshots.listen_port  # the bound one when configured as 0
    return f"https://{snapshots.listen_host}:{port}"


@router.post(
    "/enrolment-tokens",
    response_model=EnrolmentTokenCreatedOut,
    status_code=201,
    summary="Create an enrolment token",
    description="A one-time token with which one gateway of one store enrols itself "
    "(`storegate provision enroll`). Shown once; the hub keeps only its hash. 409 if the gateway is enrolled "
    "already (revoke it first) or the hub runs no CA (storegate hub pki init).",
    responses={
        409: {"model": Problem, "description": "the gateway is enrolled already, or the hub runs no CA"},
    },
)
async def post_enrolment_token(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    who: PrincipalDep,
    body: EnrolmentTokenIn,
) -> EnrolmentTokenCreatedOut:
    """Make a token for ``body.store_id/body.gateway_id``."""
    authority = await asyncio.to_thread(credentials.hub_authority, settings)
    if authority is None:
        raise HTTPException(status_code=409, detail="the hub runs no CA: run `storegate hub pki init` first")
    limits = settings.enrolment
    try:
        credentials.check_identity(settings, body.store_id, body.gateway_id)
        valid_for = enrolment.lifetime(
            body.valid_hours, default_hours=limits.token_hours, max_hours=limits.token_max_hours
        )
        made = await enrolment.create_token(
            session,
            store_id=body.store_id,
            gateway_id=body.gateway_id,
            ca_pin=ca_pin(authority.ca_cert_path.read_bytes()),
            valid_for=valid_for,
            by=who.actor,
            now=now,
        )
    except enrolment.EnrolmentError as err:
        if "enrolled already" in str(err):
            raise HTTPException(status_code=409, detail=str(err)) from None
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body",), "msg": str(err), "input": None}]
        ) from None
    except IdentityError as err:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "gateway_id"), "msg": str(err), "input": body.gateway_id}]
        ) from None
    await session.commit()
    row = made.row
    log.info(
        "enrolment_token_created",
        token_id=row.token_id,
        store_id=row.store_id,
        gateway_id=row.gateway_id,
        expires_at=row.expires_at.isoformat(),
        by=who.actor,
    )
    note_change(
        request,
        target=f"enrolment-token:{row.token_id}",
        store_id=row.store_id,
        after={"gateway": f"{row.store_id}/{row.gateway_id}", "expires_at": row.expires_at.isoformat()},
    )
    url = hub_url(settings, request)
    return EnrolmentTokenCreatedOut(
        **_out(row, now).model_dump(),
        token=made.text,
        command=f"storegate provision enroll --hub {url} --token {made.text}",
        link=enrolment_link(url, made.text),
    )


@router.get("/enrolment-tokens", response_model=EnrolmentTokenList, summary="List enrolment tokens")
async def get_enrolment_tokens(session: SessionDep, now: NowDep, who: PrincipalDep) -> EnrolmentTokenList:
    """Tokens of the caller's stores, newest first, whatever their state; never their secret."""
    rows = await enrolment.list_tokens(session, store_ids=who.store_ids)
    return EnrolmentTokenList(items=[_out(row, now) for row in rows])


@router.delete(
    "/enrolment-tokens/{token_id}",
    response_model=EnrolmentTokenOut,
    summary="Revoke an enrolment token",
    responses={
        404: {"model": Problem, "description": "no such token (or not of your stores)"},
        409: {"model": Problem, "description": "used or revoked already"},
    },
)
async def delete_enrolment_token(
    request: Request, session: SessionDep, now: NowDep, who: PrincipalDep, token_id: TokenIdPath
) -> EnrolmentTokenOut:
    """The token enrols nothing from now on."""
    try:
        row = await enrolment.find_token(session, token_id)
        if not who.reaches(row.store_id):  # the same answer as an unknown id: its existence is not told
            raise enrolment.TokenNotFoundError(f"no enrolment token {token_id}")
        before = enrolment.token_state(row, now)
        await enrolment.revoke_token(session, row, by=who.actor, now=now)
    except enrolment.TokenNotFoundError as err:
        raise HTTPException(status_code=404, detail=str(err)) from None
    except enrolment.EnrolmentError as err:
        raise HTTPException(status_code=409, detail=str(err)) from None
    await session.commit()
    log.info("enrolment_token_revoked", token_id=token_id, store_id=row.store_id, by=who.actor)
    note_change(
        request,
        target=f"enrolment-token:{token_id}",
        store_id=row.store_id,
        before={"state": before},
        after={"state": "revoked"},
    )
    return _out(row, now)


@router.post(
    "/enrol",
    response_model=EnrolAnswer,
    status_code=201,
    summary="Enrol a gateway with a one-time token",
    description="For `storegate provision enroll` on the gateway: the token (its credential; no other is looked at) "
    "and a PEM CSR for a key the gateway made. Answers the gateway's certificate, the CA certificate, the broker's "
    "address, the gateway listener and a first agent config. 403 says whether the token is forged, expired, used or "
    "revoked; 409 if the gateway is enrolled already or the hub runs no CA; 422 for a CSR the hub does not sign.",
    responses=_TOKEN_REFUSED,
)
async def post_enrol(
    request: Request, session: SessionDep, settings: SettingsDep, now: NowDep, body: EnrolRequest
) -> EnrolAnswer:
    """Spend the token, enrol its gateway and sign the CSR."""
    runtime = _runtime(request)
    client = client_address(request)

    def refused(reason: str, status: int, detail: str, **context: Any) -> HTTPException:
        if runtime is not None:
            runtime.metrics.enrolments_refused.labels(reason=reason).inc()
        # Never the token: its id only once it is known to be one of ours (context).
        log.warning("enrolment_refused", reason=reason, status=status, client=client, detail=detail, **context)
        return HTTPException(status_code=status, detail=detail)

    authority = await asyncio.to_thread(credentials.hub_authority, settings)
    if authority is None:
        raise HTTPException(status_code=409, detail="the hub runs no CA: an operator runs `storegate hub pki init`")
    try:
        public_key = enrolment.read_csr(body.csr_pem)
    except enrolment.CsrError as err:
        if runtime is not None:
            runtime.metrics.enrolments_refused.labels(reason="bad_csr").inc()
        log.warning("enrolment_refused", reason="bad_csr", status=422, client=client, detail=str(err))
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "csr_pem"), "msg": str(err), "input": None}]
        ) from None
    try:
        pin = ca_pin(await asyncio.to_thread(authority.ca_cert_path.read_bytes))
        row = await enrolment.claim(session, body.token, ca_pin=pin, client=client, now=now)
    except enrolment.TokenRefusedError as err:
        raise refused(err.reason, 403, str(err)) from None
    store_id, gateway_id = row.store_id, row.gateway_id
    context = {"token_id": row.token_id, "store_id": store_id, "gateway_id": gateway_id}
    try:
        gateway = await registry.enrol(
            session, store_id, gateway_id, by=f"token:{row.token_id} of {row.created_by}", now=now, how="token"
        )
    except registry.AlreadyEnrolledError as err:
        await session.rollback()  # the token stays unused: an operator may revoke the gateway and it enrols
        raise refused("gateway_enrolled", 409, f"{err}; an operator revokes it first", **context) from None
    # Signed before the commit: a CA that fails leaves the token unused and nothing enrolled.
    signed = await asyncio.to_thread(
        credentials.sign_gateway_key, authority, settings, store_id, gateway_id, public_key
    )
    serial = format(signed.record.serial, "x")
    row.certificate_serial = serial
    gateway.certificate_expires_at = signed.record.not_after
    await session.commit()
    if runtime is not None:
        runtime.metrics.enrolments.inc()
    log.info("gateway_enrolled_by_token", certificate=serial, client=client, **context)
    note_change(
        request,
        target=f"gateway:{store_id}/{gateway_id}",
        store_id=store_id,
        after={"enrolled": True, "by_token": row.token_id, "certificate_serial": serial},
        detail=f"enrolled with token {row.token_id} made by {row.created_by}",
    )
    broker_host = settings.enrolment.broker_host or settings.broker.hosts[0]
    broker_port = settings.enrolment.broker_port or settings.broker.port
    listener = gateway_listener_url(settings, request)
    return EnrolAnswer(
        store_id=store_id,
        gateway_id=gateway_id,
        certificate_pem=signed.certificate_pem,
        ca_certificate_pem=signed.ca_pem,
        serial=serial,
        not_after=signed.record.not_after,
        broker_host=broker_host,
        broker_port=broker_port,
        gateway_listener_url=listener,
        agent_config=EnrolledAgentConfig(
            store_id=store_id,
            gateway_id=gateway_id,
            broker_host=broker_host,
            broker_port=broker_port,
            hub_url=listener,
        ),
    )
