"""``storegate hub gateways add|revoke|list``: the registry from the command line, on the hub's database.

Each command migrates the database to this version first (as the hub does on start), then makes its change
in one transaction through :func:`hub.fleet.registry.enrol` or :func:`hub.fleet.registry.revoke`, the same
functions the API calls. A running hub sees the change with the next message it receives.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.engine import create_engine, describe_error, session_factory
from hub.db.migrate import upgrade_to_head
from hub.db.models import Gateway
from hub.fleet import registry
from hub.settings import load_hub_settings
from storegate import wire
from storegate.configfile import ConfigError
from storegate.process import EXIT_CONFIG, EXIT_FAILED, EXIT_OK

T = TypeVar("T")


def default_actor() -> str:
    """Who runs the command, for the registry's record: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli"


async def add_gateway(database_url: str, text: str, *, by: str, now: datetime | None = None) -> Gateway:
    """Enrol ``STORE/GATEWAY`` in the database at ``database_url`` (migrated first)."""
    store_id, gateway_id = registry.parse_gateway(text)
    return await _in_transaction(
        database_url, lambda session: registry.enrol(session, store_id, gateway_id, by=by, now=now or wire.utc_now())
    )


async def revoke_gateway(database_url: str, text: str, *, by: str, now: datetime | None = None) -> Gateway:
    """Revoke ``STORE/GATEWAY`` in the database at ``database_url`` (migrated first)."""
    store_id, gateway_id = registry.parse_gateway(text)
    return await _in_transaction(
        database_url, lambda session: registry.revoke(session, store_id, gateway_id, by=by, now=now or wire.utc_now())
    )


async def gateways(database_url: str, *, store_id: str | None = None) -> Sequence[Gateway]:
    """Every gateway (or one store's) of the database at ``database_url`` (migrated first)."""
    return await _in_transaction(database_url, lambda session: registry.list_gateways(session, store_id=store_id))


async def _in_transaction(database_url: str, change: Callable[[AsyncSession], Coroutine[Any, Any, T]]) -> T:
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            result = await change(session)
        return result
    finally:
        await engine.dispose()


def describe(gateway: Gateway) -> str:
    """One line about a gateway's enrolment, for people."""
    state = (
        f"revoked {gateway.revoked_at:%Y-%m-%d %H:%M} UTC by {gateway.revoked_by}"
        if gateway.revoked_at is not None
        else "enrolled"
    )
    seen = (
        "never heard from" if gateway.last_seen_at is None else f"last heard {gateway.last_seen_at:%Y-%m-%d %H:%M} UTC"
    )
    return (
        f"{gateway.store_id}/{gateway.gateway_id}  {state}; enrolled {gateway.enrolled_at:%Y-%m-%d %H:%M} UTC "
        f"by {gateway.enrolled_by} ({gateway.enrolment}); {seen}"
    )


def _run(
    config_path: Path | None, overrides: Mapping[str, Any], operation: Callable[[str], Coroutine[Any, Any, Any]]
) -> Any:
    try:
        database_url = load_hub_settings(config_path, **overrides).database_url
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(operation(database_url))
    except registry.REGISTRY_ERRORS as err:
        print(err, file=sys.stderr)
        return EXIT_FAILED
    except (SQLAlchemyError, OSError) as err:
        print(f"the hub's database could not be used: {describe_error(err)}", file=sys.stderr)
        return EXIT_FAILED


def run_add(config_path: Path | None, overrides: Mapping[str, Any], text: str, *, by: str | None) -> int:
    """``storegate hub gateways add STORE/GATEWAY``: 0 and the gateway, 1 with the reason, 2 for bad settings."""
    result = _run(config_path, overrides, lambda url: add_gateway(url, text, by=by or default_actor()))
    if isinstance(result, Gateway):
        print(describe(result))
        return EXIT_OK
    return int(result)


def run_revoke(config_path: Path | None, overrides: Mapping[str, Any], text: str, *, by: str | None) -> int:
    """``storegate hub gateways revoke STORE/GATEWAY``: 0 and the gateway, 1 with the reason, 2 for bad settings."""
    result = _run(config_path, overrides, lambda url: revoke_gateway(url, text, by=by or default_actor()))
    if isinstance(result, Gateway):
        print(describe(result))
        return EXIT_OK
    return int(result)


def run_list(config_path: Path | None, overrides: Mapping[str, Any], *, store_id: str | None) -> int:
    """``storegate hub gateways list``: 0 and one line per gateway, 1 with the reason, 2 for bad settings."""
    result = _run(config_path, overrides, lambda url: gateways(url, store_id=store_id))
    if isinstance(result, int):
        return result
    for gateway in result:
        print(describe(gateway))
    if not result:
        print("no gateway is enrolled" + (f" in {store_id}" if store_id else ""))
    return EXIT_OK
