"""What the console's tests share: a hub with a catalog of stores, and browsers signed in as operators."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

import httpx

from hub.auth import operators
from hub.auth.guard import CSRF_COOKIE
from storegate import wire
from tests.hub.conftest import RunningHub

PASSWORD: Final = "correct horse battery staple"
# Cookies of a session are Secure (and __Host- prefixed): a client keeps and sends them over https only.
CONSOLE_BASE_URL: Final = "https://127.0.0.1"


async def add_operator(
    hub: RunningHub,
    username: str,
    role: str,
    *,
    store_ids: tuple[str, ...] | None = None,
    regions: tuple[str, ...] | None = None,
) -> None:
    """An operator with the shared test password, scoped to stores or regions when given."""
    async with hub.runtime.sessions() as session:
        await operators.add_operator(
            session,
            username=username,
            role=role,
            password=PASSWORD,
            scope=operators.Scope(store_ids=store_ids, regions=regions),
            by="tests",
            now=wire.utc_now(),
        )
        await session.commit()


@contextlib.asynccontextmanager
async def browser(hub: RunningHub, username: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in as ``username`` through the login form; it sends the CSRF token with every change,
    as console.js does."""
    transport = httpx.ASGITransport(app=hub.app)
    async with httpx.AsyncClient(transport=transport, base_url=CONSOLE_BASE_URL) as client:
        response = await client.post("/login", data={"username": username, "password": PASSWORD, "next": "/"})
        assert response.status_code == 303, response.text
        token = client.cookies.get(CSRF_COOKIE)
        assert token is not None
        client.headers["X-CSRF-Token"] = token
        yield client
