"""``storegate hub users ...`` and ``storegate hub tokens ...``: operators and API tokens from the command line.

This is how the first admin comes to be (there is no default password). Each command migrates the
database first (so it works before the hub's first start), writes its audit entry as ``cli:<os user>``
and returns an exit code. Passwords come in as arguments of these functions, read by the launcher from
a prompt, a file or stdin, never from the command line's arguments.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from hub.auth import audit, operators
from hub.auth.audit import AuditEvent
from hub.auth.operators import OperatorConflictError, OperatorError, OperatorNotFoundError, Scope
from hub.db.engine import create_engine, describe_error, session_factory
from hub.db.migrate import upgrade_to_head
from hub.settings import HubSettings, load_hub_settings
from storegate import wire
from storegate.configfile import ConfigError
from storegate.process import EXIT_CONFIG, EXIT_FAILED, EXIT_OK

T = TypeVar("T")

_DURATION: Final = re.compile(r"^\s*(\d{1,5})\s*([dh])\s*$")


def parse_lifetime(text: str) -> timedelta:
    """``90d`` or ``12h`` as a duration; ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a lifetime: give days or hours, e.g. 90d or 12h")
    count, unit = int(match.group(1)), match.group(2)
    if count == 0:
        raise ValueError("a token's lifetime must be more than 0")
    return timedelta(days=count) if unit == "d" else timedelta(hours=count)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container)
        return "cli"


def _settings(config: Path | None, overrides: Mapping[str, Any]) -> HubSettings | None:
    try:
        return load_hub_settings(config, **dict(overrides))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return None


async def _with_session(settings: HubSettings, work: Callable[[AsyncSession, HubSettings], Awaitable[T]]) -> T:
    await upgrade_to_head(settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            return await work(session, settings)
    finally:
        await engine.dispose()


Work = Callable[[AsyncSession, HubSettings], Awaitable[int]]


def _run(config: Path | None, overrides: Mapping[str, Any], work: Work) -> int:
    settings = _settings(config, overrides)
    if settings is None:
        return EXIT_CONFIG
    try:
        return asyncio.run(_with_session(settings, work))
    except (OperatorError, OperatorConflictError, OperatorNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as err:
        print(f"error: cannot reach the database: {describe_error(err)}", file=sys.stderr)
        return EXIT_FAILED


async def _audit(session: AsyncSession, action: str, target: str, **fields: Any) -> None:
    event = AuditEvent(action=action, actor=_actor(), actor_kind="cli", outcome="ok", target=target, **fields)
    await audit.append(session, [event], at=wire.utc_now())


def users_add(
    config: Path | None,
    overrides: Mapping[str, Any],
    *,
    username: str,
    role: str,
    password: str,
    store_ids: Sequence[str],
    regions: Sequence[str],
) -> int:
    """Add an operator; the first admin is made this way."""

    async def work(session: AsyncSession, settings: HubSettings) -> int:
        operator = await operators.add_operator(
            session,
            username=username,
            role=role,
            password=password,
            scope=Scope.of(store_ids, regions),
            by=_actor(),
            now=wire.utc_now(),
        )
        await _audit(session, "user.added", f"operator:{operator.username}", after=operators.operator_json(operator))
        await session.commit()
        print(f"added {operator.username} ({operator.role}); sign in at the hub's /login")
        return EXIT_OK

    return _run(config, overrides, work)


def users_list(config: Path | None, overrides: Mapping[str, Any]) -> int:
    """Print every operator: name, role, scope, enabled."""

    async def work(session: AsyncSession, settings: HubSettings) -> int:
        for o in await operators.list_operators(session):
            scope = Scope.of(o.store_ids, o.regions)
            where = "every store" if scope.everywhere else _scope_words(scope)
            print(f"{o.username}\t{o.role}\t{where}\t{'disabled' if o.disabled else 'enabled'}")
        return EXIT_OK

    return _run(config, overrides, work)


def users_disable(config: Path | None, overrides: Mapping[str, Any], username: str) -> int:
    """Disable an operator and end its sessions."""

    async def work(session: AsyncSession, settings: HubSettings) -> int:
        before, operator = await operators.disable_operator(session, username)
        after = operators.operator_json(operator)
        await _audit(session, "user.disabled", f"operator:{operator.username}", before=before, after=after)
        await session.commit()
        print(f"disabled {operator.username}")
        return EXIT_OK

    return _run(config, overrides, work)


def tokens_create(
    config: Path | None,
    overrides: Mapping[str, Any],
    *,
    name: str,
    role: str,
    lifetime: timedelta,
    store_ids: Sequence[str],
    regions: Sequence[str],
) -> int:
    """Create a token and print it once."""

    async def work(session: AsyncSession, settings: HubSettings) -> int:
        settings_max = timedelta(days=settings.auth.token_max_days)
        if lifetime > settings_max:
            raise OperatorError(f"a token lives at most {settings_max.days} days")
        token, text = await operators.create_token(
            session,
            name=name,
            role=role,
            scope=Scope.of(store_ids, regions),
            lifetime=lifetime,
            by=_actor(),
            now=wire.utc_now(),
        )
        await _audit(session, "token.created", f"token:{token.token_id}", after=operators.token_json(token))
        await session.commit()
        print(f"token {token.token_id} ({token.name}, {token.role}), expires {token.expires_at.isoformat()}:")
        print(text)
        print("It is shown once: keep it now. Send it as 'Authorization: Bearer <token>'.", file=sys.stderr)
        return EXIT_OK

    return _run(config, overrides, work)


def tokens_list(config: Path | None, overrides: Mapping[str, Any]) -> int:
    """Print every token (never its text)."""

    async def work(session: AsyncSession, settings: HubSettings) -> int:
        now = wire.utc_now()
        for t in await operators.list_tokens(session):
            state = "revoked" if t.revoked_at else "expired" if t.expires_at <= now else "active"
            scope = Scope.of(t.store_ids, t.regions)
            where = "every store" if scope.everywhere else _scope_words(scope)
            print(f"{t.token_id}\t{t.name}\t{t.role}\t{where}\t{state}\texpires {t.expires_at.isoformat()}")
        return EXIT_OK

    return _run(config, overrides, work)


def tokens_revoke(config: Path | None, overrides: Mapping[str, Any], token_id: str) -> int:
    """Revoke a token by id."""

    async def work(session: AsyncSession, settings: HubSettings) -> int:
        before, token = await operators.revoke_token(session, token_id, by=_actor(), now=wire.utc_now())
        await _audit(
            session, "token.revoked", f"token:{token.token_id}", before=before, after=operators.token_json(token)
        )
        await session.commit()
        print(f"revoked {token.token_id} ({token.name})")
        return EXIT_OK

    return _run(config, overrides, work)


def _scope_words(scope: Scope) -> str:
    parts = [f"stores {','.join(scope.store_ids)}"] if scope.store_ids else []
    parts += [f"regions {','.join(scope.regions)}"] if scope.regions else []
    return "; ".join(parts)
