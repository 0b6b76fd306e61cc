"""Operators' commands to a gateway's devices: queue one, then read what became of it.

``POST /api/v1/stores/{store}/gateways/{gateway}/devices/{device}/commands`` checks the body
(:mod:`hub.commands.requests`), the principal's capability for that command (the gate only asked for
``command``), and that the gateway is enrolled and not revoked; then writes one pending ``commands`` row
and commits. :class:`hub.commands.sender.CommandPublisher` publishes it (woken at once here) and the
gateway's result is recorded by :mod:`hub.commands.status`; ``GET /api/v1/commands/{id}`` reads it back.
The audit middleware writes the entry of every request (refused ones too); the handler adds the command.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Final

import structlog
from fastapi import APIRouter, HTTPException, Path, Request, Response

from hub.api.deps import NowDep, SessionDep
from hub.api.schemas import ApiModel, ValidationProblem
from hub.auth.audit import note_change
from hub.auth.guard import PrincipalDep
from hub.commands.requests import CommandRequest, GatewayCommandRequest, kind_of, lifetime, needed_capability, wire_args
from hub.db.models import OutgoingCommand
from hub.domain.access import AccessDenied
from hub.fleet import registry
from hub.runtime import HubRuntime
from storegate import wire

log = structlog.get_logger(__name__)

router = APIRouter(tags=["commands"])

COMMAND_PATH: Final = "/api/v1/commands/{command_id}"

StorePath = Annotated[str, Path(pattern=wire.SEGMENT_PATTERN, max_length=63, description="the store's id")]
GatewayPath = Annotated[str, Path(pattern=wire.SEGMENT_PATTERN, max_length=63, description="the gateway's id")]
# storegate.wire.DeviceId: what the gateway's devices are called on the wire.
DevicePath = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$", description="the device's id on its gateway")
]


class CommandQueuedOut(ApiModel):
    """A command queued for its gateway, and where to read what becomes of it."""

    command_id: str
    status: str
    expires_at: datetime
    status_url: str


class CommandStatusOut(ApiModel):
    """One command and what became of it (``result_detail`` is the gateway's answer)."""

    command_id: str
    store_id: str
    gateway_id: str
    device_id: str | None
    name: str
    document: str | None
    status: str
    issued_at: datetime
    expires_at: datetime | None
    sent_at: datetime | None
    result_at: datetime | None
    result_detail: str | None


def status_out(row: OutgoingCommand) -> CommandStatusOut:
    """The API form of a stored command."""
    document = row.args.get("document") if row.name == "print" else None
    return CommandStatusOut(
        command_id=row.command_id,
        store_id=row.store_id,
        gateway_id=row.gateway_id,
        device_id=row.device_id,
        name=row.name,
        document=document if isinstance(document, str) else None,
        status=row.status,
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        sent_at=row.sent_at,
        result_at=row.result_at,
        result_detail=row.result_detail,
    )


@router.post(
    "/api/v1/stores/{store_id}/gateways/{gateway_id}/devices/{device_id}/commands",
    response_model=CommandQueuedOut,
    status_code=202,
    summary="Send a device a command",
    description="Queue `print` (`args.document` `test_page` or `receipt`), `snapshot`, `status`, `ping` or "
    "`restart` (the driver stopped and started again; `done` once it is connected again) for a "
    "device of an enrolled gateway; the hub publishes it on the gateway's commands topic and records its result, "
    "readable at `status_url`. A receipt needs the `operate` capability (ops, admins); the others `maintain` "
    "(technicians, admins). The command expires unsent after `expires_in_s` (default: 15 min for a test page or "
    "a snapshot, 1 h for a receipt, 5 min for status, ping and restart).",
    responses={
        403: {"description": "the role may not send this command, or the store is outside the caller's access"},
        404: {"description": "the store has no gateway of that id"},
        409: {"description": "the gateway was revoked"},
        422: {"model": ValidationProblem, "description": "an unknown command, bad or oversized arguments"},
    },
)
async def send_command(
    request: Request,
    response: Response,
    session: SessionDep,
    now: NowDep,
    who: PrincipalDep,
    store_id: StorePath,
    gateway_id: GatewayPath,
    device_id: DevicePath,
    body: CommandRequest,
) -> CommandQueuedOut:
    """Queue ``body`` for ``device_id`` behind ``gateway_id`` of ``store_id``; 202 with its id."""
    target = f"device:{store_id}/{gateway_id}/{device_id}"
    return await _queue(request, response, session, now, who, store_id, gateway_id, device_id, body, target=target)


@router.post(
    "/api/v1/stores/{store_id}/gateways/{gateway_id}/commands",
    response_model=CommandQueuedOut,
    status_code=202,
    summary="Send a gateway a command",
    description="Queue `ping` or `resend` (`args.from_seq`: the gateway's outbox events from that seq on go to the "
    "hub again; the hub keeps each event once, and events it acknowledged are no longer on the gateway) for an "
    "enrolled gateway; its result is readable at `status_url`. Needs `maintain` (technicians, admins). A config "
    "goes by `PUT .../config`, not here.",
    responses={
        403: {"description": "the role may not send this command, or the store is outside the caller's access"},
        404: {"description": "the store has no gateway of that id"},
        409: {"description": "the gateway was revoked"},
        422: {"model": ValidationProblem, "description": "an unknown command, bad or out-of-range arguments"},
    },
)
async def send_gateway_command(
    request: Request,
    response: Response,
    session: SessionDep,
    now: NowDep,
    who: PrincipalDep,
    store_id: StorePath,
    gateway_id: GatewayPath,
    body: GatewayCommandRequest,
) -> CommandQueuedOut:
    """Queue ``body`` for the gateway ``gateway_id`` of ``store_id`` itself; 202 with its id."""
    target = f"gateway:{store_id}/{gateway_id}"
    return await _queue(request, response, session, now, who, store_id, gateway_id, None, body, target=target)


async def _queue(
    request: Request,
    response: Response,
    session: SessionDep,
    now: NowDep,
    who: PrincipalDep,
    store_id: str,
    gateway_id: str,
    device_id: str | None,
    body: CommandRequest | GatewayCommandRequest,
    *,
    target: str,
) -> CommandQueuedOut:
    kind = kind_of(body)
    note_change(request, target=target, store_id=store_id, detail=kind)
    need = needed_capability(body)
    if not who.can(need):
        reason = f"the role {who.role.value!r} may not send {kind} (it needs {need.value!r})"
        runtime = getattr(request.app.state, "runtime", None)
        if isinstance(runtime, HubRuntime):  # counted with the gate's refusals
            runtime.metrics.access_refused.labels(status="403", cause="role").inc()
        log.warning("command_refused", actor=who.actor, kind=kind, store_id=store_id, reason=reason)
        raise HTTPException(status_code=403, detail=reason)
    try:
        gateway = await registry.find(session, store_id, gateway_id)
    except registry.GatewayNotFoundError as err:
        raise HTTPException(status_code=404, detail=str(err)) from None
    if gateway.revoked_at is not None:
        raise HTTPException(
            status_code=409,
            detail=f"gateway {store_id}/{gateway_id} was revoked at {gateway.revoked_at.isoformat()} "
            f"by {gateway.revoked_by}: it takes no commands until it is enrolled again",
        )
    command_id = str(uuid.uuid4())
    expires_at = now + lifetime(body)
    session.add(
        OutgoingCommand(
            command_id=command_id,
            store_id=store_id,
            gateway_id=gateway_id,
            device_id=device_id,
            name=body.name,
            args=wire_args(body),
            issued_at=now,
            expires_at=expires_at,
            status="pending",
            sent_at=None,
            result_detail=None,
            result_at=None,
        )
    )
    await session.commit()
    runtime = getattr(request.app.state, "runtime", None)
    # Publish now; an API-only process has no sender and leaves it to the leader's next poll.
    if isinstance(runtime, HubRuntime) and runtime.commands is not None:
        runtime.commands.notify()
    # What was asked, not the receipt's text: the audit log keeps who sent which command where.
    note_change(
        request,
        target=f"command:{command_id}",
        after={"command": kind, "device" if device_id else "gateway": target, "expires_at": expires_at.isoformat()},
    )
    log.info("command_queued", command_id=command_id, kind=kind, target=target, actor=who.actor)
    status_url = COMMAND_PATH.format(command_id=command_id)
    response.headers["Location"] = status_url
    return CommandQueuedOut(command_id=command_id, status="pending", expires_at=expires_at, status_url=status_url)


@router.get(
    COMMAND_PATH,
    response_model=CommandStatusOut,
    summary="One command and its result",
    responses={403: {"description": "the command's store is outside the caller's access"}, 404: {}},
)
async def get_command(session: SessionDep, who: PrincipalDep, command_id: uuid.UUID) -> CommandStatusOut:
    """A command's status (pending, sent, accepted, done, failed, rejected, expired, undeliverable) and detail."""
    row = await session.get(OutgoingCommand, str(command_id))
    if row is None:
        raise HTTPException(status_code=404, detail=f"no command {command_id}")
    try:
        who.require_store(row.store_id)
    except AccessDenied as denied:
        raise HTTPException(status_code=denied.status, detail=denied.reason) from None
    return status_out(row)
