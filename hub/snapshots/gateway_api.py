"""The gateway listener: gateways upload their stills here, known by their TLS client certificate and nothing else.

It is a listener of its own (``[snapshots] listen_port``), apart from the operators' API: TLS with
``CERT_REQUIRED`` against the CA that issued the gateways' certificates, so a connection without a valid
gateway certificate never gets past the handshake, and no session, token or password is looked at. The
installed uvicorn does not hand the peer certificate to the app (the ASGI TLS extension is not in it), so
:class:`ClientCertProtocol` reads it from the connection's transport once, when the connection is made, and
puts the certificate's name in the request state. The common name is ``<store_id>/<gateway_id>``
(:mod:`hub.pki.identity`); the gateway must be enrolled and not revoked, and may upload for its own store only.

Its own route: ``PUT /api/v1/gateway/stores/{store_id}/snapshots/{ref}``, the body the JPEG, ``?device_id=`` and
``?taken_at=`` optional. 201 stored, 200 held already (idempotent), 403 another store's or a gateway that is
not enrolled, 413 too large, 415 not a JPEG, 422 a reference that is not the body's SHA-256.

Other areas serve gateways here too (certificate renewal, self-test reports, software releases): each has a
router of its own, listed in :func:`gateway_routers`, whose routes take :data:`CallingGateway` (the calling
gateway, enrolled and not revoked, or 401/403) and reach the database through :func:`gateway_service`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final

import structlog
import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from uvicorn.protocols.http.h11_impl import H11Protocol

from hub.db import writegate
from hub.db.models import Gateway
from hub.db.writegate import WriteGate
from hub.metrics import HubMetrics
from hub.pki.identity import GatewayIdentity, IdentityError
from hub.settings import HubSettings
from hub.snapshots.settings import SnapshotSettings
from hub.snapshots.store import SnapshotFiles, SnapshotMetrics, SnapshotRefusedError, Upload, check_still, store_upload
from hub.sockets import bound_socket
from storegate import wire

log = structlog.get_logger(__name__)

UPLOAD_PATH: Final = "/api/v1/gateway/stores/{store_id}/snapshots/{ref}"
# Where ClientCertProtocol leaves the peer certificate's common name (None: no certificate) in the request state.
PEER_NAME_KEY: Final = "tls_peer_common_name"
_WRITE_TURN_WAIT_S: Final = 5.0
_TAKEN_AT: Final = TypeAdapter(wire.UtcDatetime)
_DEVICE_ID: Final = TypeAdapter(wire.DeviceId)


def common_name(peer: dict[str, Any] | None) -> str | None:
    """The common name in a certificate as ``ssl.SSLSocket.getpeercert()`` gives it, or None."""
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class ClientCertProtocol(H11Protocol):
    """uvicorn's h11 protocol, which also puts the verified client certificate's common name in the request state.

    ``app_state`` is copied into every request's ``scope["state"]``; giving each connection its own copy with
    the peer's name keeps one connection's identity out of every other's.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Take the peer's certificate from the TLS connection, then carry on as uvicorn does."""
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        peer = ssl_object.getpeercert() if ssl_object is not None else None
        self.app_state = {**self.app_state, PEER_NAME_KEY: common_name(peer)}

    def shutdown(self) -> None:
        """Close an idle connection at once; let a request in progress finish (as uvicorn does).

        A TLS close waits for the peer's close_notify, up to asyncio's 30 s, and a gateway's idle keep-alive
        connection is not reading: the hub's stop would wait that long. Nothing is in flight on it, so abort.
        """
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort()
        else:
            super().shutdown()


def server_ssl_context(*, certfile: Path, keyfile: Path, client_ca: Path) -> ssl.SSLContext:
    """TLS for the listener: its own certificate, and a client certificate from ``client_ca`` required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    context.load_cert_chain(str(certfile), str(keyfile))
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(slots=True, kw_only=True)
class SnapshotService:
    """What the listener and the operators' route share: settings, files, database, counters, clock."""

    settings: SnapshotSettings
    files: SnapshotFiles
    sessions: async_sessionmaker[AsyncSession]
    write_gate: WriteGate
    metrics: SnapshotMetrics
    accept_unknown_gateways: bool
    clock: Callable[[], datetime] = wire.utc_now
    listener: SnapshotListener | None = None  # while the gateway listener serves (its port: listener.port)
    # The whole hub's settings and counters, for other areas' routes (certificate renewal: the CA, its lifetimes).
    hub_settings: HubSettings | None = None
    hub_metrics: HubMetrics | None = None


def _refuse(service: SnapshotService, status: int, reason: str, detail: str, **context: Any) -> HTTPException:
    service.metrics.refused.labels(reason=reason).inc()
    log.warning("snapshot_upload_refused", status=status, reason=reason, detail=detail, **context)
    return HTTPException(status_code=status, detail=detail)


async def _enrolment_refusal(session: AsyncSession, gateway: GatewayIdentity, *, accept_unknown: bool) -> str | None:
    """Why this gateway may not upload (not enrolled, revoked), or None when it may."""
    row = (
        await session.execute(
            select(Gateway.revoked_at).where(
                Gateway.store_id == gateway.store_id, Gateway.gateway_id == gateway.gateway_id
            )
        )
    ).first()
    if row is None:
        return None if accept_unknown else "unknown_gateway"
    return "revoked_gateway" if row.revoked_at is not None else None


async def read_limited_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is larger than ``limit`` (the rest is not read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def gateway_service(request: Request) -> SnapshotService:
    """The listener's shared service (settings, database sessions, write gate, clock), for other areas' routes."""
    service: SnapshotService = request.app.state.gateway_service
    return service


async def calling_gateway(request: Request) -> GatewayIdentity:
    """The gateway whose certificate made this connection: enrolled and not revoked, else 401 or 403."""
    service = gateway_service(request)
    name: str | None = getattr(request.state, PEER_NAME_KEY, None)
    client = request.client.host if request.client is not None else None
    context = {"path": request.url.path, "client": client}
    if name is None:  # only when the listener was served without ClientCertProtocol: refuse, never guess
        log.warning("gateway_request_refused", reason="no_certificate", **context)
        raise HTTPException(status_code=401, detail="a gateway certificate is required")
    try:
        gateway = GatewayIdentity.parse(name)
    except IdentityError:
        log.warning("gateway_request_refused", reason="not_a_gateway", peer=name, **context)
        raise HTTPException(status_code=403, detail="the certificate is not a gateway's") from None
    async with service.sessions() as session:
        refusal = await _enrolment_refusal(session, gateway, accept_unknown=service.accept_unknown_gateways)
    if refusal is not None:
        log.warning("gateway_request_refused", reason=refusal, gateway=name, **context)
        raise HTTPException(status_code=403, detail=f"gateway {name} may not ({refusal.replace('_', ' ')})")
    return gateway


CallingGateway = Annotated[GatewayIdentity, Depends(calling_gateway)]


def gateway_routers() -> list[APIRouter]:
    """The routes other areas serve to gateways on this listener (imported here, when the listener is made)."""
    from hub.fleet import renewal  # imported when the listener is made: renewal imports this module
    from hub.releases import gateway_api as releases
    from hub.selftests import gateway_api as selftests

    return [renewal.router, releases.router, selftests.router]


def create_gateway_app(service: SnapshotService) -> FastAPI:
    """The listener's app: the stills' upload and :func:`gateway_routers` (no docs, nothing else)."""
    app = FastAPI(title="Storegate hub: gateway uploads", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway_service = service
    for router in gateway_routers():
        app.include_router(router)
    settings = service.settings

    @app.put(UPLOAD_PATH, status_code=201)
    async def upload_snapshot(
        request: Request, store_id: str, ref: str, device_id: str | None = None, taken_at: str | None = None
    ) -> JSONResponse:
        """Store one still of the calling gateway's store."""
        name: str | None = getattr(request.state, PEER_NAME_KEY, None)
        client = request.client.host if request.client is not None else None
        if name is None:  # only when the listener was served without ClientCertProtocol: refuse, never guess
            raise _refuse(service, 401, "no_certificate", "a gateway certificate is required", client=client)
        try:
            gateway = GatewayIdentity.parse(name)
        except IdentityError:
            raise _refuse(
                service, 403, "not_a_gateway", "the certificate is not a gateway's", peer=name, client=client
            ) from None
        context = {"gateway": name, "store_id": store_id, "ref": ref[:64], "client": client}
        if gateway.store_id != store_id:
            raise _refuse(
                service, 403, "wrong_store", f"gateway {name} may upload for store {gateway.store_id} only", **context
            )
        async with service.sessions() as session:
            refusal = await _enrolment_refusal(session, gateway, accept_unknown=service.accept_unknown_gateways)
        if refusal is not None:
            raise _refuse(
                service, 403, refusal, f"gateway {name} may not upload ({refusal.replace('_', ' ')})", **context
            )
        data = await read_limited_body(request, settings.max_bytes)
        if data is None:
            raise _refuse(service, 413, "too_large", f"a still may be at most {settings.max_bytes:,} bytes", **context)
        try:
            await asyncio.to_thread(
                check_still, ref, data, max_bytes=settings.max_bytes, max_pixels=settings.max_pixels
            )
            taken = None if taken_at is None else _TAKEN_AT.validate_python(taken_at)
            device = None if device_id is None else _DEVICE_ID.validate_python(device_id)
        except SnapshotRefusedError as refused:
            raise _refuse(service, refused.status, refused.reason, refused.detail, **context) from None
        except ValidationError:
            raise _refuse(
                service,
                422,
                "bad_parameter",
                "taken_at must be an ISO 8601 time with its offset, device_id a device id",
                **context,
            ) from None
        upload = Upload(
            store_id=store_id,
            gateway_id=gateway.gateway_id,
            ref=ref,
            data=data,
            device_id=device,
            taken_at=taken,
        )
        async with service.write_gate.turn(writegate.API, timeout_s=_WRITE_TURN_WAIT_S), service.sessions() as session:
            new = await store_upload(session, service.files, upload, settings=settings, now=service.clock())
        if new:
            service.metrics.stored.inc()
            log.info("snapshot_stored", size=len(data), device_id=upload.device_id, **context)
            return JSONResponse({"ref": ref, "stored": True}, status_code=201)
        service.metrics.repeated.inc()
        return JSONResponse({"ref": ref, "stored": False}, status_code=200)

    return app


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signals alone: the hub's own server handles them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """No signal handlers: the hub's lifespan stops this server."""
        yield


class SnapshotListener:
    """The gateway listener on its own port, between :meth:`start` and :meth:`stop`."""

    def __init__(self, *, service: SnapshotService, client_ca: Path) -> None:
        settings = service.settings
        if settings.listen_port is None or settings.tls_certfile is None or settings.tls_keyfile is None:
            raise ValueError("the gateway listener needs snapshots.listen_port, tls_certfile and tls_keyfile")
        context = server_ssl_context(certfile=settings.tls_certfile, keyfile=settings.tls_keyfile, client_ca=client_ca)
        self._host = settings.listen_host
        self._requested_port = settings.listen_port
        self._server = _QuietServer(
            uvicorn.Config(
                create_gateway_app(service),
                http=ClientCertProtocol,
                lifespan="off",
                log_config=None,
                server_header=False,
                ssl_context_factory=lambda config, default: context,
            )
        )
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the one the OS picked when configured as 0)."""
        if self._socket is None:
            raise RuntimeError("the gateway listener is not serving")
        return int(self._socket.getsockname()[1])

    def start(self) -> None:
        """Bind the port (OSError when it is taken) and serve it in a task of the running loop."""
        sock = bound_socket(self._host, self._requested_port)
        self._socket = sock
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="gateway listener")
        log.info("gateway_listener_serving", address=f"https://{self._host}:{self.port}")

    async def stop(self) -> None:
        """Stop serving and wait for it; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await task
        if self._socket is not None:
            self._socket.close()
            self._socket = None
