"""The gateways' side of updates, on the gateway listener (their client certificate is their only credential).

* ``GET /api/v1/gateway/releases/{version}/wheel``: the release's wheel (the gateway checks its SHA-256 against the
  one its ``update`` command carries).
* ``POST /api/v1/gateway/updates/{command_id}/outcome``: the final outcome of an ``update`` command, reported by the
  agent that runs after the switch (the new release once its probation passed, or the old one after switching
  back), since the agent that received the command is no longer running. Only the gateway the command was sent to
  may report it; a status moves only forward (:func:`hub.commands.status.set_command_status`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path as FilePath
from typing import Annotated, Final, Literal
from uuid import UUID

import structlog
from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from hub.commands.status import set_command_status
from hub.db import writegate
from hub.db.models import OutgoingCommand, Release
from hub.releases.runner import DOWNLOAD_PATH, UPDATE_COMMAND
from hub.snapshots.gateway_api import CallingGateway, gateway_service
from storegate.wheels import VERSION_PATTERN

log = structlog.get_logger(__name__)

router = APIRouter()

OUTCOME_PATH: Final = "/api/v1/gateway/updates/{command_id}/outcome"
_WRITE_TURN_WAIT_S: Final = 5.0


class UpdateOutcomeIn(BaseModel):
    """What became of an update on the gateway (edge_agent.updates sends it)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["done", "failed"]
    detail: str = Field(max_length=2000)


@router.get(DOWNLOAD_PATH)
async def download_release(
    request: Request,
    gateway: CallingGateway,
    version: Annotated[str, Path(pattern=VERSION_PATTERN, max_length=64)],
) -> FileResponse:
    """The wheel of release ``version``."""
    service = gateway_service(request)
    async with service.sessions() as session:
        release = await session.get(Release, version)
    if release is None or not await asyncio.to_thread(FilePath(release.path).is_file):
        log.warning("release_download_refused", gateway=str(gateway), version=version, reason="no_release")
        raise HTTPException(status_code=404, detail=f"no release {version} on this hub")
    log.info("release_downloaded", gateway=str(gateway), version=version)
    return FileResponse(release.path, media_type="application/octet-stream", filename=f"storegate-{version}.whl")


@router.post(OUTCOME_PATH)
async def report_outcome(
    request: Request, gateway: CallingGateway, command_id: UUID, outcome: UpdateOutcomeIn
) -> dict[str, str]:
    """Record the outcome of the calling gateway's ``update`` command."""
    service = gateway_service(request)
    async with service.write_gate.turn(writegate.API, timeout_s=_WRITE_TURN_WAIT_S), service.sessions() as session:
        row = await session.get(OutgoingCommand, str(command_id))
        if (
            row is None
            or row.name != UPDATE_COMMAND
            or (row.store_id, row.gateway_id) != (gateway.store_id, gateway.gateway_id)
        ):
            log.warning("update_outcome_refused", gateway=str(gateway), command_id=str(command_id))
            raise HTTPException(status_code=404, detail=f"no update command {command_id} for this gateway")
        await set_command_status(session, [row.command_id], outcome.status, detail=outcome.detail, at=service.clock())
        await session.commit()
    log.info("update_outcome", gateway=str(gateway), command_id=str(command_id), status=outcome.status)
    return {"command_id": str(command_id), "status": outcome.status}
