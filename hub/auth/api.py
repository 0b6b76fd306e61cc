"""``/api/v1/me``, ``/api/v1/users``, ``/api/v1/tokens`` and ``/api/v1/audit``: operators, API tokens and
the audit log, for admins (who can see who they are: everyone).

A token's text is in the answer to its creation and nowhere else; passwords and hashes never leave.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import NowDep, SessionDep
from hub.api.params import IsoDatetime, aware
from hub.api.schemas import ApiModel, Problem
from hub.auth import audit, operators
from hub.auth.guard import PrincipalDep
from hub.auth.models import ApiToken, AuditEntry, Operator
from hub.auth.operators import OperatorConflictError, OperatorError, OperatorNotFoundError, Scope
from hub.db.bounds import INT64_MAX
from hub.domain.access import Role

router = APIRouter(prefix="/api/v1", tags=["operators"])

MAX_AUDIT_PAGE: Final = 1000

ScopeIds = Annotated[list[str] | None, Field(default=None, max_length=1000)]


class MeOut(ApiModel):
    """Who the request is made as."""

    name: str
    kind: str = Field(description="user (a browser session) or token")
    role: Role
    store_ids: list[str] | None = Field(description="the stores it reaches; null: every store")


class OperatorIn(BaseModel):
    """A new operator; the password is never echoed."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    role: Role
    password: str = Field(min_length=1, max_length=1024, repr=False)
    store_ids: ScopeIds = None
    regions: ScopeIds = None


class OperatorOut(ApiModel):
    """An operator, without its password hash."""

    username: str
    role: str
    store_ids: list[str] | None
    regions: list[str] | None
    disabled: bool
    created_at: datetime
    created_by: str


class OperatorList(ApiModel):
    """Every operator by username."""

    items: list[OperatorOut]


class TokenIn(BaseModel):
    """A new API token for an integration."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="what uses it, e.g. prometheus or erp-export")
    role: Role
    store_ids: ScopeIds = None
    regions: ScopeIds = None
    expires_in_days: int = Field(ge=1, le=3660, description="it stops working after this many days")


class TokenOut(ApiModel):
    """A token, never its text."""

    token_id: str
    name: str
    role: str
    store_ids: list[str] | None
    regions: list[str] | None
    created_at: datetime
    created_by: str
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    last_used_at: datetime | None = Field(description="within the hour (it is recorded at most hourly)")


class TokenCreatedOut(TokenOut):
    """A token just made, with its text: the only time it is shown."""

    token: str = Field(description="send as 'Authorization: Bearer <token>'; keep it, it is not shown again")


class TokenList(ApiModel):
    """Every token, newest first."""

    items: list[TokenOut]


class AuditOut(ApiModel):
    """One audit entry."""

    id: int
    at: datetime
    actor: str
    actor_kind: str
    action: str
    target: str | None
    store_id: str | None
    outcome: str
    client: str | None
    before: dict[str, object] | None
    after: dict[str, object] | None
    detail: str | None


class AuditPage(ApiModel):
    """Audit entries, newest first."""

    items: list[AuditOut]
    next_before: int | None = Field(description="pass as ?before= for older entries; null on the last page")


def _operator_out(operator: Operator) -> OperatorOut:
    return OperatorOut.model_validate(operator, from_attributes=True)


def _token_out(token: ApiToken) -> TokenOut:
    return TokenOut.model_validate(token, from_attributes=True)


def _refusal(err: Exception) -> Exception:
    """404 or 409 as a Problem; anything else the request's fault, a 422 in the shape of every 422."""
    if isinstance(err, OperatorNotFoundError | OperatorConflictError):
        return HTTPException(status_code=404 if isinstance(err, OperatorNotFoundError) else 409, detail=str(err))
    return RequestValidationError([{"type": "value_error", "loc": ("body",), "msg": str(err), "input": None}])


_NOT_FOUND_OR_CONFLICT: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": Problem, "description": "no such operator or token"},
    409: {"model": Problem, "description": "the change conflicts with what is there (e.g. the last chain-wide admin)"},
}


@router.get("/me", response_model=MeOut, summary="Who am I")
async def get_me(who: PrincipalDep) -> MeOut:
    """The principal of this request: name, role and stores."""
    return MeOut(
        name=who.name,
        kind=who.kind,
        role=who.role,
        store_ids=sorted(who.store_ids) if who.store_ids is not None else None,
    )


@router.get("/users", response_model=OperatorList, summary="List operators")
async def get_users(session: SessionDep) -> OperatorList:
    """Every operator, enabled or not."""
    return OperatorList(items=[_operator_out(o) for o in await operators.list_operators(session)])


@router.post(
    "/users", response_model=OperatorOut, status_code=201, summary="Add an operator", responses=_NOT_FOUND_OR_CONFLICT
)
async def post_user(
    request: Request, session: SessionDep, now: NowDep, who: PrincipalDep, body: OperatorIn
) -> OperatorOut:
    """Add an operator with a password (at least 12 characters); 409 when the username is taken."""
    try:
        operator = await operators.add_operator(
            session,
            username=body.username,
            role=body.role.value,
            password=body.password,
            scope=Scope.of(body.store_ids, body.regions),
            by=who.actor,
            now=now,
        )
    except (OperatorError, OperatorConflictError) as err:
        raise _refusal(err) from None
    await session.commit()
    audit.note_change(request, target=f"operator:{operator.username}", after=operators.operator_json(operator))
    return _operator_out(operator)


@router.post(
    "/users/{username}/disable",
    response_model=OperatorOut,
    summary="Disable an operator",
    responses=_NOT_FOUND_OR_CONFLICT,
)
async def post_user_disable(
    request: Request, session: SessionDep, username: Annotated[str, Path(max_length=64)]
) -> OperatorOut:
    """The operator can no longer sign in; its sessions end now. 409 for the last chain-wide admin."""
    try:
        before, operator = await operators.disable_operator(session, username)
    except (OperatorNotFoundError, OperatorConflictError) as err:
        raise _refusal(err) from None
    await session.commit()
    audit.note_change(
        request, target=f"operator:{operator.username}", before=before, after=operators.operator_json(operator)
    )
    return _operator_out(operator)


@router.get("/tokens", response_model=TokenList, summary="List API tokens")
async def get_tokens(session: SessionDep) -> TokenList:
    """Every token, revoked and expired ones too; never their text."""
    return TokenList(items=[_token_out(t) for t in await operators.list_tokens(session)])


@router.post("/tokens", response_model=TokenCreatedOut, status_code=201, summary="Create an API token")
async def post_token(
    request: Request, session: SessionDep, now: NowDep, who: PrincipalDep, body: TokenIn
) -> TokenCreatedOut:
    """A token for an integration, with a role, optional stores or regions and an expiry; shown once."""
    max_days = request.app.state.settings.auth.token_max_days
    if body.expires_in_days > max_days:
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": ("body", "expires_in_days"),
                    "msg": f"at most {max_days} days (auth.token_max_days)",
                    "input": body.expires_in_days,
                }
            ]
        )
    try:
        token, text = await operators.create_token(
            session,
            name=body.name,
            role=body.role.value,
            scope=Scope.of(body.store_ids, body.regions),
            lifetime=timedelta(days=body.expires_in_days),
            by=who.actor,
            now=now,
        )
    except OperatorError as err:
        raise _refusal(err) from None
    await session.commit()
    audit.note_change(request, target=f"token:{token.token_id}", after=operators.token_json(token))
    return TokenCreatedOut(**_token_out(token).model_dump(), token=text)


@router.delete(
    "/tokens/{token_id}", response_model=TokenOut, summary="Revoke an API token", responses=_NOT_FOUND_OR_CONFLICT
)
async def delete_token(
    request: Request,
    session: SessionDep,
    now: NowDep,
    who: PrincipalDep,
    token_id: Annotated[str, Path(max_length=36)],
) -> TokenOut:
    """The token stops working at once; it stays listed, revoked."""
    try:
        before, token = await operators.revoke_token(session, token_id, by=who.actor, now=now)
    except OperatorNotFoundError as err:
        raise _refusal(err) from None
    await session.commit()
    audit.note_change(request, target=f"token:{token.token_id}", before=before, after=operators.token_json(token))
    return _token_out(token)


@router.get("/audit", response_model=AuditPage, summary="The audit log")
async def get_audit(
    session: SessionDep,
    actor: Annotated[
        str | None, Query(max_length=128, description="exactly this actor, e.g. alice or token:erp")
    ] = None,
    action: Annotated[
        str | None, Query(max_length=160, description="actions starting with this, e.g. login or 'POST /api/v1/alerts'")
    ] = None,
    store_id: Annotated[str | None, Query(max_length=63)] = None,
    outcome: Annotated[str | None, Query(max_length=32, description="e.g. 201, 403, ok")] = None,
    since: Annotated[IsoDatetime | None, Query(description="at or after, with time zone")] = None,
    until: Annotated[IsoDatetime | None, Query(description="before, with time zone")] = None,
    before: Annotated[int | None, Query(ge=1, le=INT64_MAX, description="next_before of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE)] = 100,
) -> AuditPage:
    """Entries matching every filter, newest first."""
    wanted = audit.AuditFilter(
        actor=actor,
        action=action,
        store_id=store_id,
        outcome=outcome,
        since=aware("since", since),
        until=aware("until", until),
    )
    rows: list[AuditEntry] = await audit.read_entries(session, wanted, limit=limit, before_id=before)
    return AuditPage(
        items=[AuditOut.model_validate(r, from_attributes=True) for r in rows],
        next_before=rows[-1].id if len(rows) == limit else None,
    )
