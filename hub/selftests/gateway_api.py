"""``POST /api/v1/gateway/selftests`` on the gateway listener: a gateway uploads its self-test report.

The gateway is known by its certificate (:data:`hub.snapshots.gateway_api.CallingGateway`: enrolled, not revoked);
a report must be its own (store and gateway as in the certificate), else 403. The body is a
:class:`storegate.wire.SelftestReport` (422 otherwise, 413 beyond :data:`MAX_REPORT_BYTES`). 201 with the row's id.
Each report stored is logged and audited (``selftest.received``, the actor ``gateway:<store>/<gateway>``).
"""

from __future__ import annotations

from typing import Final

import structlog
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict

from hub.auth import audit
from hub.db import writegate
from hub.db.models import SelftestReportRow
from hub.snapshots.gateway_api import CallingGateway, gateway_service
from storegate import wire

log = structlog.get_logger(__name__)

REPORT_PATH: Final = "/api/v1/gateway/selftests"
# 256 devices with a reason each fit well within this.
MAX_REPORT_BYTES: Final = 512 * 1024
_WRITE_TURN_WAIT_S: Final = 5.0

router = APIRouter(tags=["gateway"])


class StoredReport(BaseModel):
    """The answer to an upload: the report's id at the hub."""

    model_config = ConfigDict(extra="forbid")

    id: int


@router.post(REPORT_PATH, status_code=201)
async def upload_selftest(request: Request, gateway: CallingGateway) -> StoredReport:
    """Store the calling gateway's self-test report."""
    service = gateway_service(request)
    body = await request.body()
    if len(body) > MAX_REPORT_BYTES:
        log.warning("selftest_refused", reason="too_large", gateway=gateway.common_name, bytes=len(body))
        raise HTTPException(status_code=413, detail=f"a self-test report is at most {MAX_REPORT_BYTES} bytes")
    try:
        report = wire.decode(wire.SelftestReport, body)
    except wire.WireError as err:
        log.warning("selftest_refused", reason="invalid", gateway=gateway.common_name, detail=str(err))
        raise HTTPException(status_code=422, detail=f"not a self-test report: {err}") from None
    if (report.store_id, report.gateway_id) != (gateway.store_id, gateway.gateway_id):
        log.warning(
            "selftest_refused",
            reason="another_gateway",
            gateway=gateway.common_name,
            report_of=f"{report.store_id}/{report.gateway_id}",
        )
        raise HTTPException(status_code=403, detail=f"gateway {gateway.common_name} may send only its own report")
    row = SelftestReportRow(
        store_id=report.store_id,
        gateway_id=report.gateway_id,
        received_at=service.clock(),
        started_at=report.started_at,
        finished_at=report.finished_at,
        passed=report.passed,
        failed=sum(1 for result in report.results if result.outcome is wire.SelftestOutcome.FAILED),
        report=report.model_dump(mode="json"),
    )
    async with service.write_gate.turn(writegate.API, timeout_s=_WRITE_TURN_WAIT_S), service.sessions() as session:
        session.add(row)
        await session.flush()
        stored = row.id
        # A system action, in the same audit log as the operators' (the gateway's certificate is the actor).
        event = audit.AuditEvent(
            action="selftest.received",
            actor=f"gateway:{gateway.common_name}",
            actor_kind="gateway",
            outcome="201",
            target=f"selftest:{stored}",
            store_id=report.store_id,
            client=request.client.host if request.client is not None else None,
            detail=f"{'passed' if report.passed else 'failed'}: {row.failed} of {len(report.results)} devices failed",
        )
        await audit.append(session, [event], at=row.received_at)
        await session.commit()
    log.info("selftest_stored", gateway=gateway.common_name, passed=report.passed, failed=row.failed, id=stored)
    return StoredReport(id=stored)
