"""Stills served to people: only to roles that may see evidence (ops, admins), in their stores, each fetch audited.

``GET /api/v1/stores/{store_id}/snapshots/{ref}``: the JPEG (``Cache-Control: no-store``), 404 for a still the
hub does not hold (or no longer: retention), 403 for a role without the ``evidence`` capability or a store
outside the principal's scope (decided by the gate, hub.auth.policy). Every fetch that reaches the handler is
written to the audit log, found or not: who, which still, which store.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, Request, Response

from hub.api.deps import RuntimeDep, SessionDep
from hub.auth import audit
from hub.auth.guard import PrincipalDep, client_address
from hub.snapshots import store

router = APIRouter(prefix="/api/v1/stores/{store_id}/snapshots", tags=["evidence"])


@router.get(
    "/{ref}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "the still"}, 404: {"description": "no such still"}},
)
async def get_snapshot(
    request: Request, store_id: str, ref: str, principal: PrincipalDep, runtime: RuntimeDep, session: SessionDep
) -> Response:
    """A camera still of the store, as the gateway uploaded it (faces blurred on the gateway)."""
    found = await store.find(session, store_id, ref[:64])
    data = None
    service = runtime.snapshots
    if found is not None and service is not None:
        data = await asyncio.to_thread(service.files.read, found.path)
    audit.add_event(
        request,
        audit.AuditEvent(
            action="snapshot.viewed",
            actor=principal.actor,
            actor_kind=principal.kind,
            outcome="200" if data is not None else "404",
            target=f"snapshot {ref[:64]}",
            store_id=store_id,
            client=client_address(request),
            detail=None if found is None else f"camera {found.device_id or '?'} via {found.gateway_id}",
        ),
    )
    if data is None or service is None:
        raise HTTPException(status_code=404, detail=f"store {store_id} has no still {ref[:64]!r} (or no longer)")
    service.metrics.served.inc()
    return Response(content=data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
