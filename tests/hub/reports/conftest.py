"""An HTTP client on the reports router with the test's database, clock, reader and hub settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.domain.access import Principal
from hub.reports.api import router
from hub.reports.settings import ReportSettings
from hub.settings import HubSettings
from tests.hub.conftest import TEST_ADMIN, router_client


@asynccontextmanager
async def reports_client(
    engine: AsyncEngine,
    *,
    now: Callable[[], datetime],
    who: Principal = TEST_ADMIN,
    reports: ReportSettings | None = None,
    routers: tuple[Any, ...] = (router,),
) -> AsyncIterator[httpx.AsyncClient]:
    """:func:`tests.hub.conftest.router_client` on the reports router, with settings on the app (the PDF font,
    the bundle's limit) as the hub's lifespan would put them; ``routers`` to serve other report routers."""
    async with router_client(engine, *routers, now=now, who=who) as http:
        transport = http._transport
        assert isinstance(transport, httpx.ASGITransport)
        app = cast(FastAPI, transport.app)
        app.state.settings = HubSettings(reports=reports or ReportSettings())
        yield http
