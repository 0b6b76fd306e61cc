"""``GET /api/v1/stores/{store_id}/gateways/{gateway_id}/selftests``: a gateway's self-test reports, newest first.

Who may read them is the gate's (hub.auth.policy: anyone who may read the store); each report is as the gateway
sent it (:class:`storegate.wire.SelftestReport`), with the hub's id and when it arrived.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from hub.api.deps import SessionDep
from hub.db.models import SelftestReportRow
from hub.fleet.api import GatewayPath, StorePath
from storegate import wire

router = APIRouter(prefix="/api/v1/stores/{store_id}/gateways/{gateway_id}/selftests", tags=["gateways"])


class SelftestOut(BaseModel):
    """One stored report."""

    model_config = ConfigDict(extra="forbid")

    id: int
    received_at: datetime
    passed: bool
    failed: int
    report: wire.SelftestReport


class SelftestList(BaseModel):
    """A gateway's reports, newest first."""

    model_config = ConfigDict(extra="forbid")

    items: list[SelftestOut]


@router.get("", response_model=SelftestList, summary="A gateway's self-test reports, newest first")
async def get_selftests(
    session: SessionDep,
    store_id: StorePath,
    gateway_id: GatewayPath,
    limit: Annotated[int, Query(ge=1, le=100, description="reports at most")] = 20,
) -> SelftestList:
    """The gateway's self-test reports, newest first: each device's outcome and the reason in words."""
    rows = (
        await session.execute(
            select(SelftestReportRow)
            .where(SelftestReportRow.store_id == store_id, SelftestReportRow.gateway_id == gateway_id)
            .order_by(SelftestReportRow.received_at.desc(), SelftestReportRow.id.desc())
            .limit(limit)
        )
    ).scalars()
    return SelftestList(
        items=[
            SelftestOut(
                id=row.id,
                received_at=row.received_at,
                passed=row.passed,
                failed=row.failed,
                report=wire.SelftestReport.model_validate(row.report),
            )
            for row in rows
        ]
    )
