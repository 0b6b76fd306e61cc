"""``storegate hub gateways add|revoke|list``: the registry from the command line, on the hub's database.

Each command migrates the database to this version first (as the hub does on start), then makes its change
in one transaction through :func:`hub.fleet.registry.enrol` or :func:`hub.fleet.registry.revoke`, the same
functions the API calls. A running hub sees the change with the next message it receives. When the hub runs the
gateways' CA (``storegate hub pki init``), ``add`` also issues the gateway's certificate and key into ``--out``
and ``revoke`` revokes them; both rewrite the broker's files (:mod:`hub.fleet.credentials`).
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
from hub.errors import HubError
from hub.fleet import credentials, registry
from hub.pki.authority import IssuedCertificate
from hub.settings import HubSettings, load_hub_settings
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


async def add_gateway(
    database_url: str, text: str, *, by: str, now: datetime | None = None, settings: HubSettings | None = None
) -> tuple[Gateway, IssuedCertificate | None]:
    """Enrol ``STORE/GATEWAY`` in the database at ``database_url`` (migrated first); with ``settings`` of a hub
    that runs the CA, also issue its certificate (before the commit: a CA that fails leaves nothing enrolled)."""
    store_id, gateway_id = registry.parse_gateway(text)
    if settings is not None:
        credentials.check_identity(settings, store_id, gateway_id)

    async def change(session: AsyncSession) -> tuple[Gateway, IssuedCertificate | None]:
        gateway = await registry.enrol(session, store_id, gateway_id, by=by, now=now or wire.utc_now())
        issued = None if settings is None else credentials.issue_credentials(settings, store_id, gateway_id)
        if issued is not None:
            gateway.certificate_expires_at = issued.record.not_after
        return gateway, issued

    return await _in_transaction(database_url, change)


async def revoke_gateway(
    database_url: str, text: str, *, by: str, now: datetime | None = None, settings: HubSettings | None = None
) -> tuple[Gateway, int]:
    """Revoke ``STORE/GATEWAY`` in the database at ``database_url`` (migrated first); with ``settings`` of a hub
    that runs the CA, also revoke its certificates (after the commit: the hub refuses it whatever the CA does)."""
    store_id, gateway_id = registry.parse_gateway(text)
    gateway = await _in_transaction(
        database_url, lambda session: registry.revoke(session, store_id, gateway_id, by=by, now=now or wire.utc_now())
    )
    revoked = 0 if settings is None else credentials.revoke_credentials(settings, store_id, gateway_id)
    return gateway, revoked


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
    config_path: Path | None,
    overrides: Mapping[str, Any],
    operation: Callable[[HubSettings], Coroutine[Any, Any, Any]],
) -> Any:
    try:
        settings = load_hub_settings(config_path, **overrides)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(operation(settings))
    except registry.REGISTRY_ERRORS as err:
        print(err, file=sys.stderr)
        return EXIT_FAILED
    except HubError as err:  # the CA's: a name too long for a certificate, its files missing or wrong
        print(f"failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    except (SQLAlchemyError, OSError) as err:
        print(f"the hub's database could not be used: {describe_error(err)}", file=sys.stderr)
        return EXIT_FAILED


def run_add(
    config_path: Path | None, overrides: Mapping[str, Any], text: str, *, by: str | None, out: Path | None = None
) -> int:
    """``storegate hub gateways add STORE/GATEWAY [--out DIR]``: 0 and the gateway (and where its certificate and
    key are), 1 with the reason, 2 for bad settings or a missing --out when the hub runs the CA."""

    async def add(settings: HubSettings) -> tuple[Gateway, IssuedCertificate | None] | int:
        if out is None and credentials.hub_authority(settings) is not None:
            print(
                "the hub runs the gateways' CA: give --out DIR for the gateway's certificate and key",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        return await add_gateway(settings.database_url, text, by=by or default_actor(), settings=settings)

    result = _run(config_path, overrides, add)
    if isinstance(result, int):
        return result
    gateway, issued = result
    print(describe(gateway))
    if issued is not None and out is not None:
        cert, key, ca = issued.write(out, stem="gateway")
        print(f"certificate {issued.record.serial:x}, valid until {issued.record.not_after:%Y-%m-%d}:")
        print(f"  {cert}\n  {key} (0600: copy it to the gateway only, then delete it here)\n  {ca}")
        print("  storegate provision agent-config --tls-ca ca.crt --tls-cert gateway.crt --tls-key gateway.key ...")
    elif issued is None:
        print("no certificate issued: this hub runs no CA (storegate hub pki init)")
    return EXIT_OK


def run_revoke(config_path: Path | None, overrides: Mapping[str, Any], text: str, *, by: str | None) -> int:
    """``storegate hub gateways revoke STORE/GATEWAY``: 0 and the gateway, 1 with the reason, 2 for bad settings."""

    async def revoke(settings: HubSettings) -> tuple[Gateway, int]:
        return await revoke_gateway(settings.database_url, text, by=by or default_actor(), settings=settings)

    result = _run(config_path, overrides, revoke)
    if isinstance(result, int):
        return result
    gateway, certificates = result
    print(describe(gateway))
    print(f"certificates revoked: {certificates}")
    return EXIT_OK


def run_list(config_path: Path | None, overrides: Mapping[str, Any], *, store_id: str | None) -> int:
    """``storegate hub gateways list``: 0 and one line per gateway, 1 with the reason, 2 for bad settings."""
    result = _run(config_path, overrides, lambda settings: gateways(settings.database_url, store_id=store_id))
    if isinstance(result, int):
        return result
    for gateway in result:
        print(describe(gateway))
    if not result:
        print("no gateway is enrolled" + (f" in {store_id}" if store_id else ""))
    return EXIT_OK
