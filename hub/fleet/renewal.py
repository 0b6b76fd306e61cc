"""``POST /api/v1/gateway/certificate`` on the gateway listener: a gateway renews its certificate with its current one.

The agent (edge_agent.renewal) sends the CSR of a key it just made, over mTLS with the certificate it has; the
listener's :data:`CallingGateway` has checked that certificate and that the gateway is enrolled and not revoked
(403 otherwise, and an unknown gateway is refused here even where the hub accepts unknown gateways' events). The hub
signs a certificate for the same ``<store>/<gateway>`` on the new key and records its end in the registry; the old
certificate stays valid until it ends, so a gateway that loses the answer still connects and asks again.
"""

from __future__ import annotations

import asyncio
from typing import Final

import structlog
from fastapi import APIRouter, HTTPException, Request
from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.auth import audit
from hub.db import writegate
from hub.db.models import Gateway
from hub.fleet import credentials, enrolment
from hub.snapshots.gateway_api import CallingGateway, SnapshotService, gateway_service, read_limited_body
from storegate.enrolment import MAX_CSR_CHARS, RENEW_PATH, RenewAnswer, RenewRequest

log = structlog.get_logger(__name__)

router = APIRouter(tags=["gateway"])

# The JSON around a CSR of at most MAX_CSR_CHARS characters (escaped newlines included).
MAX_BODY_BYTES: Final = 2 * MAX_CSR_CHARS
_WRITE_TURN_WAIT_S: Final = 5.0


def _count(service: SnapshotService, outcome: str) -> None:
    if service.hub_metrics is not None:
        service.hub_metrics.certificate_renewals.labels(outcome=outcome).inc()


async def _audit(
    session: AsyncSession, service: SnapshotService, store_id: str, name: str, *, outcome: str, detail: str
) -> None:
    """The gateway's own action, in the audit log beside the operators' (actor kind "gateway")."""
    event = audit.AuditEvent(
        action="gateway.certificate_renewal",
        actor=f"gateway:{name}",
        actor_kind="gateway",
        outcome=outcome,
        target=f"gateway:{name}",
        store_id=store_id,
        detail=detail,
    )
    await audit.append(session, [event], at=service.clock())


@router.post(RENEW_PATH, status_code=201, response_model=RenewAnswer)
async def renew_certificate(request: Request, gateway: CallingGateway) -> RenewAnswer:
    """A new certificate for the calling gateway's new key: 201; 403 revoked or unknown, 413, 422 a bad CSR."""
    service = gateway_service(request)
    settings = service.hub_settings
    name = gateway.common_name
    if settings is None:  # a listener made without the hub's settings (never by hub.app)
        raise HTTPException(status_code=503, detail="the hub cannot sign certificates here")
    body = await read_limited_body(request, MAX_BODY_BYTES)
    if body is None:
        _count(service, "bad_csr")
        raise HTTPException(status_code=413, detail=f"a renewal request is at most {MAX_BODY_BYTES} bytes")
    try:
        public_key = enrolment.read_csr(RenewRequest.model_validate_json(body).csr_pem)
    except (ValidationError, enrolment.CsrError) as err:
        _count(service, "bad_csr")
        detail = str(err) if isinstance(err, enrolment.CsrError) else 'the body must be {"csr_pem": "<PEM>"}'
        log.warning("certificate_renewal_refused", gateway=name, reason="bad_csr", detail=detail)
        raise HTTPException(status_code=422, detail=detail) from None
    authority = await asyncio.to_thread(credentials.hub_authority, settings)
    if authority is None:
        raise HTTPException(status_code=503, detail="the hub runs no CA")
    async with service.write_gate.turn(writegate.API, timeout_s=_WRITE_TURN_WAIT_S), service.sessions() as session:
        # Only a gateway the registry holds, unrevoked (CallingGateway let an unknown one by under accept_unknown).
        known = await session.get(Gateway, (gateway.store_id, gateway.gateway_id))
        if known is None or known.revoked_at is not None:
            _count(service, "refused")
            reason = "not enrolled" if known is None else "revoked"
            log.warning("certificate_renewal_refused", gateway=name, reason=reason)
            await _audit(session, service, gateway.store_id, name, outcome="403", detail=f"refused: {reason}")
            await session.commit()
            raise HTTPException(status_code=403, detail=f"gateway {name} may not renew ({reason})")
        signed = await asyncio.to_thread(
            credentials.sign_gateway_key,
            authority,
            settings,
            gateway.store_id,
            gateway.gateway_id,
            public_key,
            sync=False,  # the broker knows the name already; the new certificate is from the same CA
        )
        await session.execute(
            update(Gateway)
            .where(Gateway.store_id == gateway.store_id, Gateway.gateway_id == gateway.gateway_id)
            .values(certificate_expires_at=signed.record.not_after)
        )
        serial = format(signed.record.serial, "x")
        await _audit(
            session,
            service,
            gateway.store_id,
            name,
            outcome="ok",
            detail=f"new certificate {serial} until {signed.record.not_after.isoformat()}",
        )
        await session.commit()
    _count(service, "renewed")
    log.info("certificate_renewed", gateway=name, serial=serial, not_after=signed.record.not_after.isoformat())
    return RenewAnswer(
        certificate_pem=signed.certificate_pem,
        ca_certificate_pem=signed.ca_pem,
        serial=serial,
        not_after=signed.record.not_after,
    )
