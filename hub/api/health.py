"""Operations endpoints: ``/healthz`` for load balancers and people, ``/metrics`` for Prometheus."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.api.checks import check_consumer, check_database, check_leadership, check_mqtt, check_operations
from hub.api.deps import RuntimeDep
from hub.api.schemas import CheckOut, HealthOut, HealthStatusOut
from hub.auth.guard import MaybePrincipalDep
from storegate import __version__

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    response_model=HealthOut | HealthStatusOut,
    summary="Health of the hub",
    description="Checks the database, the MQTT session, the event consumer and the operations on events "
    "(inventory, rules ticker). HTTP 200 when all pass, "
    "503 when any fails; `problems` then says in words what is wrong. Without a token or session the "
    "answer is the status only: the checks name addresses and versions.",
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": HealthOut, "description": "at least one check failed"}},
)
async def healthz(runtime: RuntimeDep, response: Response, who: MaybePrincipalDep) -> HealthOut | HealthStatusOut:
    """Run every check and report them."""
    database, mqtt = await asyncio.gather(
        check_database(runtime.engine, runtime.settings.database_url, runtime.write_gate), check_mqtt(runtime.mqtt)
    )
    results = {
        "database": database,
        "mqtt": mqtt,
        "consumer": check_consumer(runtime.consumer),
        "operations": check_operations(runtime.operations),
    }
    if runtime.leadership is not None:
        results["leader"] = check_leadership(runtime.leadership)
    problems = [result.problem for result in results.values() if result.problem is not None]
    if problems:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    if who is None:
        return HealthStatusOut(status="degraded" if problems else "ok")
    return HealthOut(
        status="degraded" if problems else "ok",
        problems=problems,
        checks={name: CheckOut(ok=result.ok, detail=result.detail) for name, result in results.items()},
        version=__version__,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="The hub's metrics (`storegate_hub_*`) in the Prometheus text exposition format.",
    response_class=Response,
    responses={status.HTTP_200_OK: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "metrics"}},
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Expose this app's registry."""
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
