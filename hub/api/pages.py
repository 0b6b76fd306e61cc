"""``/``: the dashboard page for people in the operations room."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from hub.api.checks import check_database, check_mqtt
from hub.api.dashboard import EVENTS_PER_STORE, SignedInAs, StoreBlock, render_dashboard
from hub.api.deps import NowDep, RuntimeDep, SessionDep
from hub.api.listings import latest_events, list_gateways, list_stores, loss_summaries
from hub.auth.guard import CSRF_COOKIE, PrincipalDep
from hub.footfall.console import today_by_store
from storegate import __version__

router = APIRouter(tags=["dashboard"])


@router.get(
    "/",
    response_class=HTMLResponse,
    summary="Dashboard",
    description="Stores, their gateways online or offline, any data loss, today's visitors and conversion by "
    "hour beside sales, and each store's latest events; refreshes every 5 s.",
)
async def dashboard(
    request: Request, runtime: RuntimeDep, session: SessionDep, now: NowDep, who: PrincipalDep
) -> HTMLResponse:
    """Render the dashboard."""
    grace_s = runtime.settings.gateway_offline_grace_s
    database, mqtt = await asyncio.gather(
        check_database(runtime.engine, runtime.settings.database_url, runtime.write_gate), check_mqtt(runtime.mqtt)
    )
    problems = [c.problem for c in (database, mqtt) if c.problem is not None]
    blocks: list[StoreBlock] = []
    if database.ok:
        gateways = await list_gateways(session, now=now, grace_s=grace_s)
        summaries = [s for s in await list_stores(session, now=now, grace_s=grace_s) if who.reaches(s.store_id)]
        today = await today_by_store(
            session, [s.store_id for s in summaries], now=now, basket_gap_s=runtime.settings.footfall.basket_gap_s
        )
        for summary in summaries:
            blocks.append(
                StoreBlock(
                    summary=summary,
                    gateways=[g for g in gateways if g.gateway.store_id == summary.store_id],
                    events=await latest_events(session, summary.store_id, limit=EVENTS_PER_STORE),
                    losses=await loss_summaries(session, summary.store_id) if summary.events_lost else (),
                    today=today.get(summary.store_id),
                )
            )
    signed_in = SignedInAs(name=who.actor, role=who.role.value, csrf_token=request.cookies.get(CSRF_COOKIE))
    return HTMLResponse(render_dashboard(blocks, problems=problems, now=now, version=__version__, signed_in=signed_in))
