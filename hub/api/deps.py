"""Dependencies shared by the routers, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db import writegate
from hub.db.engine import SQLITE_BUSY_TIMEOUT_MS
from hub.runtime import HubRuntime
from hub.settings import HubSettings
from storegate import wire


def get_runtime(request: Request) -> HubRuntime:
    """The running hub's long-lived objects, created by the app's lifespan."""
    runtime: HubRuntime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise HTTPException(status_code=503, detail="the hub is starting or stopping")
    return runtime


def get_settings(request: Request) -> HubSettings:
    """The settings the app was created with."""
    settings: HubSettings = request.app.state.settings
    return settings


# Methods that only read: they never wait for a turn to write.
READ_ONLY_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# How long a change waits for its turn at SQLite's write lock before it is answered 503: as long as SQLite's
# own busy timeout, which still applies to writers outside the hub (a script, sqlite3 on the command line).
WRITE_TURN_WAIT_S: Final = SQLITE_BUSY_TIMEOUT_MS / 1000


async def get_session(
    request: Request, runtime: Annotated[HubRuntime, Depends(get_runtime)]
) -> AsyncIterator[AsyncSession]:
    """A database session for one request; a request that may change something first takes its turn to write.

    The turn is held for the whole request (they are short), so the consumer's next unit queues behind it
    and a change made during a backlog waits only for the unit in progress (hub.db.writegate).
    """
    if request.method in READ_ONLY_METHODS:
        async with runtime.sessions() as session:
            yield session
        return
    async with runtime.write_gate.turn(writegate.API, timeout_s=WRITE_TURN_WAIT_S), runtime.sessions() as session:
        yield session


def get_now() -> datetime:
    """The current time, UTC (a dependency, so tests can fix it)."""
    return wire.utc_now()


RuntimeDep = Annotated[HubRuntime, Depends(get_runtime)]
SettingsDep = Annotated[HubSettings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
NowDep = Annotated[datetime, Depends(get_now)]


async def catalog_may_change(request: Request) -> AsyncIterator[None]:
    """After a request that may have changed the catalog, have the consumer reload it at its next unit."""
    yield
    runtime: HubRuntime | None = getattr(request.app.state, "runtime", None)
    if request.method != "GET" and runtime is not None and runtime.operations is not None:
        runtime.operations.catalog.invalidate()


async def rules_may_change(request: Request) -> AsyncIterator[None]:
    """After a request that may have changed the rules, have the rules engine check them at its next unit."""
    yield
    runtime: HubRuntime | None = getattr(request.app.state, "runtime", None)
    if request.method != "GET" and runtime is not None and runtime.operations is not None:
        runtime.operations.engine.invalidate_rules()
