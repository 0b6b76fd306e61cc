"""A session ends when it expires and when its operator is disabled (the ASGI transport, whose cookie jar
keeps the Secure cookies of an https base URL)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
from sqlalchemy import update

from hub.auth import operators
from hub.auth.models import OperatorSession
from hub.db.engine import session_factory
from storegate import wire
from tests.hub.conftest import RunningHub

PASSWORD = "a long enough password"


@contextlib.asynccontextmanager
async def browser_of(hub: RunningHub, username: str, role: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser signed in as a new operator."""
    async with session_factory(hub.runtime.engine)() as session:
        await operators.add_operator(
            session,
            username=username,
            role=role,
            password=PASSWORD,
            scope=operators.Scope(),
            by="tests",
            now=wire.utc_now(),
        )
        await session.commit()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.app), base_url="https://127.0.0.1") as browser:
        signed = await browser.post("/login", data={"username": username, "password": PASSWORD})
        assert signed.status_code == 303, signed.text
        assert (await browser.get("/api/v1/me")).json()["name"] == username
        yield browser


async def test_an_expired_session_is_signed_out(hub: RunningHub) -> None:
    async with browser_of(hub, "gina", "viewer") as browser:
        async with session_factory(hub.runtime.engine)() as session:
            await session.execute(update(OperatorSession).values(expires_at=wire.utc_now() - timedelta(seconds=1)))
            await session.commit()
        assert (await browser.get("/api/v1/me")).status_code == 401
        page = await browser.get("/", follow_redirects=False)
        assert (page.status_code, page.headers["location"]) == (303, "/login?next=/")


async def test_disabling_an_operator_ends_its_sessions_at_once(hub: RunningHub) -> None:
    async with browser_of(hub, "hal", "ops") as browser:
        assert (await hub.client.post("/api/v1/users/hal/disable")).status_code == 200
        assert (await browser.get("/api/v1/me")).status_code == 401
        again = await browser.post("/login", data={"username": "hal", "password": PASSWORD})
        assert again.status_code == 401
        assert "Wrong username or password." in again.text
