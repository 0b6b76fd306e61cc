"""Operators, API tokens and browser sessions in the database, and the principals they become.

Every function takes a session and leaves the commit to its caller, so a change and its audit entry
can go in one transaction.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.auth import credentials
from hub.auth.models import ApiToken, Operator, OperatorSession
from hub.catalog.models import StoreProfile
from hub.domain.access import Principal, Role
from hub.errors import HubError

USERNAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
SCOPE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
TOKEN_PREFIX_ACTOR: Final = "token:"  # noqa: S105  # how a token is named as an actor, not a secret


class OperatorError(HubError, ValueError):
    """A username, password, role or scope that cannot be accepted."""


class OperatorNotFoundError(HubError, LookupError):
    """No operator (or token) by that name or id."""


class OperatorConflictError(HubError, RuntimeError):
    """The change conflicts with what is stored: a taken username, the last admin."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scope:
    """Stores and regions a role applies to; both None: every store."""

    store_ids: tuple[str, ...] | None = None
    regions: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for value in (*(self.store_ids or ()), *(self.regions or ())):
            if not re.fullmatch(SCOPE_ID_PATTERN, value):
                raise OperatorError(f"{value!r} is not a store or region id")

    @classmethod
    def of(cls, store_ids: Sequence[str] | None, regions: Sequence[str] | None) -> Scope:
        """A scope from lists (empty lists mean "not given")."""
        return cls(
            store_ids=tuple(sorted(set(store_ids))) if store_ids else None,
            regions=tuple(sorted(set(regions))) if regions else None,
        )

    @property
    def everywhere(self) -> bool:
        """True when not limited to stores or regions."""
        return self.store_ids is None and self.regions is None

    def as_json(self) -> dict[str, Any]:
        """For the audit log and the API."""
        return {"store_ids": list(self.store_ids or []) or None, "regions": list(self.regions or []) or None}


def check_username(username: str) -> str:
    """The username, or OperatorError."""
    if not re.fullmatch(USERNAME_PATTERN, username):
        raise OperatorError("a username is 1 to 64 letters, digits and _.@- , starting with a letter or digit")
    return username


def role_of(value: str) -> Role:
    """The role named ``value``, or OperatorError."""
    try:
        return Role(value)
    except ValueError:
        raise OperatorError(f"no role {value!r}: one of {', '.join(r.value for r in Role)}") from None


async def expand_scope(session: AsyncSession, scope: Scope) -> frozenset[str] | None:
    """The stores a scope reaches: its stores plus those whose profile is in one of its regions."""
    if scope.everywhere:
        return None
    stores = set(scope.store_ids or ())
    if scope.regions:
        rows = await session.scalars(select(StoreProfile.store_id).where(StoreProfile.region.in_(scope.regions)))
        stores.update(rows.all())
    return frozenset(stores)


def operator_json(operator: Operator) -> dict[str, Any]:
    """An operator for the audit log and the API: never the hash."""
    return {
        "username": operator.username,
        "role": operator.role,
        "store_ids": operator.store_ids,
        "regions": operator.regions,
        "disabled": operator.disabled,
    }


def token_json(token: ApiToken) -> dict[str, Any]:
    """A token for the audit log and the API: never the token or its digest."""
    return {
        "token_id": token.token_id,
        "name": token.name,
        "role": token.role,
        "store_ids": token.store_ids,
        "regions": token.regions,
        "expires_at": token.expires_at.isoformat(),
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
    }


# --------------------------------------------------------------------------- operators


async def add_operator(
    session: AsyncSession, *, username: str, role: str, password: str, scope: Scope, by: str, now: datetime
) -> Operator:
    """A new operator (the caller commits); OperatorError for bad values, OperatorConflictError for a taken name."""
    check_username(username)
    checked_role = role_of(role)
    if (problem := credentials.password_problem(password)) is not None:
        raise OperatorError(problem)
    if await operator_named(session, username) is not None:
        raise OperatorConflictError(f"the username {username!r} is taken")
    operator = Operator(
        username=username,
        role=checked_role.value,
        password_hash=credentials.hash_password(password),
        store_ids=list(scope.store_ids) if scope.store_ids else None,
        regions=list(scope.regions) if scope.regions else None,
        disabled=False,
        created_at=now,
        created_by=by,
    )
    session.add(operator)
    await session.flush()
    return operator


async def operator_named(session: AsyncSession, username: str) -> Operator | None:
    """The operator with this username (case-insensitively), or None."""
    rows = await session.scalars(select(Operator))
    wanted = username.casefold()
    # Usernames are few; comparing case-folded here keeps "Alice" and "alice" one account on both databases.
    return next((o for o in rows.all() if o.username.casefold() == wanted), None)


async def list_operators(session: AsyncSession) -> list[Operator]:
    """Every operator by username."""
    return list((await session.scalars(select(Operator).order_by(Operator.username))).all())


async def disable_operator(session: AsyncSession, username: str) -> tuple[dict[str, Any], Operator]:
    """Disable an operator and end its sessions; refuses to disable the last enabled chain-wide admin."""
    operator = await operator_named(session, username)
    if operator is None:
        raise OperatorNotFoundError(f"no operator {username!r}")
    before = operator_json(operator)
    if operator.role == Role.ADMIN and operator.store_ids is None and operator.regions is None:
        others = [
            o
            for o in await list_operators(session)
            if o.operator_id != operator.operator_id
            and not o.disabled
            and o.role == Role.ADMIN
            and o.store_ids is None
            and o.regions is None
        ]
        if not others and not operator.disabled:
            raise OperatorConflictError(f"{username!r} is the last admin of the whole chain: add another first")
    operator.disabled = True
    await session.execute(delete(OperatorSession).where(OperatorSession.operator_id == operator.operator_id))
    await session.flush()
    return before, operator


async def check_login(session: AsyncSession, username: str, password: str) -> Operator | None:
    """The enabled operator whose password this is, or None; as slow for an unknown name as for a wrong password."""
    operator = await operator_named(session, username) if len(username) <= 64 else None
    usable = operator is not None and not operator.disabled
    if not credentials.verify_password(operator.password_hash if operator is not None and usable else None, password):
        return None
    assert operator is not None  # verify_password says no without a hash
    if credentials.needs_rehash(operator.password_hash):
        operator.password_hash = credentials.hash_password(password)
    return operator


async def principal_of_operator(session: AsyncSession, operator: Operator, *, session_id: str | None) -> Principal:
    """The principal an operator signs in as."""
    return Principal(
        kind="user",
        name=operator.username,
        role=Role(operator.role),
        store_ids=await expand_scope(session, Scope.of(operator.store_ids, operator.regions)),
        operator_id=operator.operator_id,
        session_id=session_id,
    )


# --------------------------------------------------------------------------- sessions


async def start_session(
    session: AsyncSession, operator: Operator, *, now: datetime, ttl: timedelta, client: str | None
) -> tuple[str, str]:
    """A new browser session: (session id, CSRF token), both shown only to this browser."""
    session_id, csrf = credentials.new_secret(), credentials.new_secret()
    await session.execute(delete(OperatorSession).where(OperatorSession.expires_at <= now))
    session.add(
        OperatorSession(
            session_digest=credentials.digest(session_id),
            operator_id=operator.operator_id,
            csrf_digest=credentials.digest(csrf),
            created_at=now,
            expires_at=now + ttl,
            client=client[:64] if client else None,
        )
    )
    await session.flush()
    return session_id, csrf


async def end_session(session: AsyncSession, session_id: str) -> None:
    """Forget a browser session."""
    await session.execute(
        delete(OperatorSession).where(OperatorSession.session_digest == credentials.digest(session_id))
    )


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A live browser session: its principal and the digest of its CSRF token."""

    principal: Principal
    csrf_digest: str


async def signed_in(session: AsyncSession, session_id: str, *, now: datetime) -> SignedIn | None:
    """The session's operator, when the session is live and the operator enabled."""
    row = await session.get(OperatorSession, credentials.digest(session_id))
    if row is None or row.expires_at <= now:
        return None
    operator = await session.get(Operator, row.operator_id)
    if operator is None or operator.disabled:
        return None
    return SignedIn(await principal_of_operator(session, operator, session_id=session_id), row.csrf_digest)


# --------------------------------------------------------------------------- API tokens


async def create_token(
    session: AsyncSession, *, name: str, role: str, scope: Scope, lifetime: timedelta, by: str, now: datetime
) -> tuple[ApiToken, str]:
    """A new token and its text, which is shown once and never stored (the caller commits)."""
    check_username(name)
    checked_role = role_of(role)
    if lifetime <= timedelta(0):
        raise OperatorError("a token's lifetime must be positive")
    text = credentials.new_token()
    token = ApiToken(
        token_id=str(uuid.uuid4()),
        name=name,
        token_digest=credentials.digest(text),
        role=checked_role.value,
        store_ids=list(scope.store_ids) if scope.store_ids else None,
        regions=list(scope.regions) if scope.regions else None,
        created_at=now,
        created_by=by,
        expires_at=now + lifetime,
        revoked_at=None,
        revoked_by=None,
        last_used_at=None,
    )
    session.add(token)
    await session.flush()
    return token, text


async def list_tokens(session: AsyncSession) -> list[ApiToken]:
    """Every token, newest first."""
    return list((await session.scalars(select(ApiToken).order_by(ApiToken.created_at.desc()))).all())


async def revoke_token(
    session: AsyncSession, token_id: str, *, by: str, now: datetime
) -> tuple[dict[str, Any], ApiToken]:
    """Revoke a token (again is a no-op); (before, token)."""
    token = await session.get(ApiToken, token_id)
    if token is None:
        raise OperatorNotFoundError(f"no token {token_id!r}")
    before = token_json(token)
    if token.revoked_at is None:
        token.revoked_at, token.revoked_by = now, by
        await session.flush()
    return before, token


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """A token looked up: its principal, or why it is refused (and its row, for the audit log)."""

    principal: Principal | None
    refusal: str | None
    token: ApiToken | None


async def check_token(session: AsyncSession, text: str, *, now: datetime) -> TokenCheck:
    """The principal of an API token, unless it is unknown, revoked or expired."""
    if not text.startswith(credentials.TOKEN_PREFIX) or len(text) > 200:
        return TokenCheck(None, "not a token of this hub", None)
    token = (
        await session.scalars(select(ApiToken).where(ApiToken.token_digest == credentials.digest(text)))
    ).one_or_none()
    if token is None:
        return TokenCheck(None, "unknown token", None)
    if token.revoked_at is not None:
        return TokenCheck(None, "revoked token", token)
    if token.expires_at <= now:
        return TokenCheck(None, "expired token", token)
    principal = Principal(
        kind="token",
        name=TOKEN_PREFIX_ACTOR + token.name,
        role=Role(token.role),
        store_ids=await expand_scope(session, Scope.of(token.store_ids, token.regions)),
        token_id=token.token_id,
    )
    return TokenCheck(principal, None, token)
