"""``/api/v1/stores/{store_id}/gateways/{gateway_id}/config``: push a gateway's agent.toml, read its versions.

``PUT`` checks what the hub can (:func:`hub.fleet.configs.push_problems`), then writes the next version and a
pending ``config.apply`` command in one transaction; the command sender publishes it and the gateway's results
move the version on (``accepted`` on probation, then ``applied``, ``rolled_back``, ``rejected``...). ``GET``
answers the version in force and the history. Technicians of the store and admins may push (``maintain``).
The audit middleware writes each request's entry, the handler adds the version; the gateway's results are
system entries (:func:`hub.commands.status.config_results`).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated

import structlog
from fastapi import APIRouter, HTTPException, Path, Request, Response
from fastapi.exceptions import RequestValidationError

from hub.api.deps import NowDep, SessionDep
from hub.api.schemas import ApiModel, ValidationProblem
from hub.auth.audit import note_change
from hub.auth.guard import PrincipalDep
from hub.commands.api import COMMAND_PATH
from hub.db.models import GatewayConfig, OutgoingCommand
from hub.fleet import configs, registry
from hub.runtime import HubRuntime
from storegate import wire

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1/stores/{store_id}/gateways/{gateway_id}/config", tags=["gateways"])

StorePath = Annotated[str, Path(pattern=wire.SEGMENT_PATTERN, max_length=63, description="the store's id")]
GatewayPath = Annotated[
    str, Path(pattern=wire.SEGMENT_PATTERN, max_length=63, description="the gateway's id within its store")
]


class ConfigPushedOut(ApiModel):
    """A version queued for its gateway, and where to follow it."""

    version: int
    command_id: str
    status: str
    sha256: str
    probation_s: float
    expires_at: datetime
    status_url: str


class ConfigVersionOut(ApiModel):
    """One pushed version and what the gateway made of it (``detail`` is its answer)."""

    version: int
    status: str
    sha256: str
    probation_s: float
    pushed_by: str
    pushed_at: datetime
    command_id: str
    detail: str | None
    result_at: datetime | None


class ConfigCurrentOut(ApiModel):
    """The last version the gateway applied, with its text."""

    version: int
    sha256: str
    toml: str
    applied_at: datetime | None


class GatewayConfigOut(ApiModel):
    """A gateway's pushed configs: the one in force (None before any push was applied) and the history."""

    store_id: str
    gateway_id: str
    current: ConfigCurrentOut | None
    history: list[ConfigVersionOut]


def version_out(row: GatewayConfig) -> ConfigVersionOut:
    """The API form of a pushed version (without its text)."""
    return ConfigVersionOut(
        version=row.version,
        status=row.status,
        sha256=row.toml_sha256,
        probation_s=row.probation_s,
        pushed_by=row.pushed_by,
        pushed_at=row.pushed_at,
        command_id=row.command_id,
        detail=row.detail,
        result_at=row.result_at,
    )


async def _enrolled(session: SessionDep, store_id: str, gateway_id: str) -> None:
    try:
        gateway = await registry.find(session, store_id, gateway_id)
    except registry.GatewayNotFoundError as err:
        raise HTTPException(status_code=404, detail=str(err)) from None
    if gateway.revoked_at is not None:
        raise HTTPException(
            status_code=409,
            detail=f"gateway {store_id}/{gateway_id} was revoked at {gateway.revoked_at.isoformat()}: "
            "it takes no config until it is enrolled again",
        )


@router.put(
    "",
    response_model=ConfigPushedOut,
    status_code=202,
    summary="Push an agent config to a gateway",
    description="Queue the whole `agent.toml` as the gateway's next version. The hub checks the size (64 KiB), "
    "that it is TOML, that `store_id` and `gateway_id` are this gateway's, and that no `mqtt.password` is written "
    "inline; the gateway checks the rest as it checks its config at start, and refuses it with the problems in "
    "words (`rejected`, nothing changed). Applied, the gateway must reach the hub and its devices within "
    "`probation_s` or it rolls back by itself (`rolled_back`). Needs `maintain` (technicians of the store, admins).",
    responses={
        403: {"description": "the role may not push configs, or the store is outside the caller's access"},
        404: {"description": "the store has no gateway of that id"},
        409: {"description": "the gateway was revoked, or its previous version is still pending or on probation"},
        422: {"model": ValidationProblem, "description": "not TOML, another gateway's ids, a password inline, too big"},
    },
)
async def push_config(
    request: Request,
    response: Response,
    session: SessionDep,
    now: NowDep,
    who: PrincipalDep,
    store_id: StorePath,
    gateway_id: GatewayPath,
    body: configs.ConfigPush,
) -> ConfigPushedOut:
    """Write the next version of the gateway's config and its ``config.apply`` command; 202 with both."""
    gateway = f"{store_id}/{gateway_id}"
    note_change(request, target=f"gateway-config:{gateway}", store_id=store_id)
    problems = configs.push_problems(body.toml, store_id=store_id, gateway_id=gateway_id)
    if problems:
        log.warning("config_push_refused", gateway=gateway, actor=who.actor, problems=problems)
        # Not the text itself as the refused input: it may be 64 KiB.
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "toml"), "msg": problem} for problem in problems]
        )
    await _enrolled(session, store_id, gateway_id)
    waiting = await configs.open_push(session, store_id, gateway_id, now=now)
    if waiting is not None:
        raise HTTPException(
            status_code=409,
            detail=f"version {waiting.version} of {gateway} is still {waiting.status}: wait for its outcome "
            f"(GET {request.url.path})",
        )
    version = await configs.next_version(session, store_id, gateway_id)
    command_id = str(uuid.uuid4())
    expires_at = now + timedelta(seconds=body.expires_in_s)
    sha256 = configs.sha256_of(body.toml)
    session.add(
        OutgoingCommand(
            command_id=command_id,
            store_id=store_id,
            gateway_id=gateway_id,
            device_id=None,
            name=configs.APPLY_COMMAND,
            args={"version": version, "toml": body.toml, "probation_s": body.probation_s},
            issued_at=now,
            expires_at=expires_at,
            status="pending",
            sent_at=None,
            result_detail=None,
            result_at=None,
        )
    )
    session.add(
        GatewayConfig(
            store_id=store_id,
            gateway_id=gateway_id,
            version=version,
            toml=body.toml,
            toml_sha256=sha256,
            probation_s=body.probation_s,
            pushed_by=who.actor,
            pushed_at=now,
            command_id=command_id,
            status="pending",
            detail=None,
            result_at=None,
        )
    )
    await session.commit()
    runtime = getattr(request.app.state, "runtime", None)
    if isinstance(runtime, HubRuntime) and runtime.commands is not None:
        runtime.commands.notify()
    note_change(
        request,
        target=f"gateway-config:{gateway}/v{version}",
        after={"version": version, "sha256": sha256, "bytes": len(body.toml.encode()), "command_id": command_id},
        detail=f"probation {body.probation_s:g} s",
    )
    log.info("config_pushed", gateway=gateway, version=version, command_id=command_id, actor=who.actor)
    status_url = COMMAND_PATH.format(command_id=command_id)
    response.headers["Location"] = status_url
    return ConfigPushedOut(
        version=version,
        command_id=command_id,
        status="pending",
        sha256=sha256,
        probation_s=body.probation_s,
        expires_at=expires_at,
        status_url=status_url,
    )


@router.get(
    "",
    response_model=GatewayConfigOut,
    summary="A gateway's pushed configs",
    responses={
        403: {"description": "the store is outside the caller's access"},
        404: {"description": "the store has no gateway of that id"},
    },
)
async def get_config(session: SessionDep, store_id: StorePath, gateway_id: GatewayPath) -> GatewayConfigOut:
    """The version the gateway applied last (with its text) and every version pushed, newest first."""
    try:
        await registry.find(session, store_id, gateway_id)
    except registry.GatewayNotFoundError as err:
        raise HTTPException(status_code=404, detail=str(err)) from None
    rows = await configs.history(session, store_id, gateway_id)
    applied = next((row for row in rows if row.status == "applied"), None)
    current = (
        None
        if applied is None
        else ConfigCurrentOut(
            version=applied.version, sha256=applied.toml_sha256, toml=applied.toml, applied_at=applied.result_at
        )
    )
    return GatewayConfigOut(
        store_id=store_id, gateway_id=gateway_id, current=current, history=[version_out(row) for row in rows]
    )
