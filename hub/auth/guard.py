"""The gate every request passes: who is asking, what the route's policy allows, and the audit entry after.

``authorize`` is a dependency of the whole app. It finds the principal (an ``Authorization: Bearer``
API token, or the session cookie, whose unsafe requests must also carry the session's CSRF token in
``X-CSRF-Token``), looks up the matched route's policy by (method, path template) in
``hub.auth.policy`` and asks ``hub.domain.access.decide``. ``AuditMiddleware`` writes the audit entry
of every write (and of sign-ins and token use) once the request is done. ``install`` wires both
into an app, adds the API docs as ordinary routes (so they pass the same gate) and refuses an app
with a route the policy table does not cover.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Final
from urllib.parse import quote

import structlog
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute, APIRouter, iter_route_contexts
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.api.deps import READ_ONLY_METHODS, WRITE_TURN_WAIT_S
from hub.auth import audit, credentials
from hub.auth.audit import AuditEvent
from hub.auth.models import ApiToken
from hub.auth.operators import check_token, signed_in
from hub.auth.policy import policy_of, routes_without_policy
from hub.auth.throttle import LoginThrottle
from hub.db import writegate
from hub.domain.access import AccessDenied, Capability, Policy, Principal, StoreFrom, decide
from hub.errors import HubError
from hub.runtime import HubRuntime
from hub.settings import HubSettings
from storegate import wire

log = structlog.get_logger(__name__)

SESSION_COOKIE: Final = "__Host-storegate_session"
CSRF_COOKIE: Final = "__Host-storegate_csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
CSRF_FORM_FIELD: Final = "csrf_token"
LOGIN_PATH: Final = "/login"
# A token's use is written to the audit log at most this often (its writes are each written anyway).
TOKEN_USE_AUDIT_INTERVAL: Final = timedelta(hours=1)
_PRINCIPAL_KEY: Final = "principal"
_TOUCH_TOKEN_KEY: Final = "touch_token"  # noqa: S105  # a key of the request state, not a secret
_TEMPLATE_KEY: Final = "route_template"


@dataclass(frozen=True, slots=True)
class RouteTemplate:
    """An API route as the policy table knows it: its full path template, methods and the regex matching it."""

    path: str
    methods: frozenset[str]
    regex: re.Pattern[str]
    gated: bool


def route_templates(app: FastAPI) -> tuple[list[RouteTemplate], list[str]]:
    """The app's API routes with their full paths (prefixes included), and the paths of any other routes."""
    api: list[RouteTemplate] = []
    other: list[str] = []
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute) and context.path is not None:
            api.append(
                RouteTemplate(
                    path=context.path,
                    methods=frozenset(context.methods or ()),
                    regex=context.path_regex,
                    gated=GATE in context.dependencies,
                )
            )
        else:
            other.append(context.path or repr(context.original_route))
    return api, other


def _template_of(request: Request) -> str | None:
    """The path template of the route that matched (the router's first match, as Starlette picks it)."""
    templates: list[RouteTemplate] = getattr(request.app.state, "route_templates", [])
    path = request.scope["path"]
    for template in templates:
        if request.method in template.methods and template.regex.match(path):
            return template.path
    return None


class UncoveredRoutesError(HubError, RuntimeError):
    """The app has routes that the policy table does not decide."""


def client_address(request: Request) -> str | None:
    """The peer's address as the listener saw it."""
    return request.client.host if request.client is not None else None


def _runtime(request: Request) -> HubRuntime | None:
    runtime: HubRuntime | None = getattr(request.app.state, "runtime", None)
    return runtime


def _refuse(request: Request, denied: AccessDenied, *, page: bool = False) -> HTTPException:
    runtime = _runtime(request)
    if runtime is not None:
        runtime.metrics.access_refused.labels(status=str(denied.status), cause=denied.cause).inc()
    principal: Principal | None = getattr(request.state, _PRINCIPAL_KEY, None)
    log.warning(
        "api_access_refused",
        method=request.method,
        path=request.url.path,
        status=denied.status,
        cause=denied.cause,
        actor=principal.actor if principal is not None else "anonymous",
        client=client_address(request),
        reason=denied.reason,
    )
    if page and denied.status == 401:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return HTTPException(status_code=303, detail="sign in first", headers={"Location": login_url(target)})
    headers = {"WWW-Authenticate": "Bearer"} if denied.status == 401 else None
    return HTTPException(status_code=denied.status, detail=denied.reason, headers=headers)


def login_url(next_path: str) -> str:
    """The login page that leads back to ``next_path``."""
    return f"{LOGIN_PATH}?next={quote(next_path, safe='/')}"


async def _token_principal(request: Request, runtime: HubRuntime, header: str) -> Principal:
    scheme, _, text = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not text.strip():
        raise _refuse(request, AccessDenied(401, "the Authorization header must be 'Bearer <token>'", cause="token"))
    now = wire.utc_now()
    async with runtime.sessions() as session:
        checked = await check_token(session, text.strip(), now=now)
    token: ApiToken | None = checked.token
    if checked.principal is None:
        audit.add_event(
            request,
            AuditEvent(
                action="token.refused",
                actor=f"token:{token.name}" if token is not None else "anonymous",
                actor_kind="token" if token is not None else "anonymous",
                outcome="401",
                target=request.url.path,
                client=client_address(request),
                detail=checked.refusal,
            ),
        )
        raise _refuse(request, AccessDenied(401, f"{checked.refusal}: use a valid API token", cause="token"))
    assert token is not None
    if token.last_used_at is None or token.last_used_at <= now - TOKEN_USE_AUDIT_INTERVAL:
        request.state.touch_token = token.token_id
        audit.add_event(
            request,
            AuditEvent(
                action="token.used",
                actor=checked.principal.actor,
                actor_kind="token",
                outcome="ok",
                target=f"{request.method} {request.url.path}",
                client=client_address(request),
                detail=f"token {token.token_id}; recorded at most once an hour, writes each time",
            ),
        )
    return checked.principal


async def _session_principal(request: Request, runtime: HubRuntime, session_id: str) -> Principal | None:
    async with runtime.sessions() as session:
        live = await signed_in(session, session_id, now=wire.utc_now())
    if live is None:
        return None
    if request.method not in READ_ONLY_METHODS:
        given = request.headers.get(CSRF_HEADER)
        if given is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            field = (await request.form()).get(CSRF_FORM_FIELD)
            given = field if isinstance(field, str) else None
        if given is None or not credentials.same_secret(given, live.csrf_digest):
            request.state.principal = live.principal
            audit.add_event(
                request,
                AuditEvent(
                    action="csrf.refused",
                    actor=live.principal.actor,
                    actor_kind="user",
                    outcome="403",
                    target=f"{request.method} {request.url.path}",
                    client=client_address(request),
                ),
                instead_of_generic=True,
            )
            raise _refuse(
                request,
                AccessDenied(403, f"a change from a browser session needs its {CSRF_HEADER} header", cause="csrf"),
            )
    return live.principal


async def _principal(request: Request, runtime: HubRuntime) -> Principal | None:
    header = request.headers.get("authorization")
    if header is not None:
        return await _token_principal(request, runtime, header)
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        return await _session_principal(request, runtime, session_id)
    return None


async def _named_stores(request: Request, policy: Policy) -> list[str]:
    """The stores a request names: the path's store_id, ?store_id=, and the policy's body fields."""
    stores = [str(value) for value in (request.path_params.get("store_id"),) if value is not None]
    stores.extend(request.query_params.getlist("store_id"))
    if policy.store_from is StoreFrom.BODY:
        try:
            body: Any = json.loads(await request.body() or b"null")
        except ValueError:
            body = None  # the handler's validation answers 422
        if isinstance(body, dict):
            stores.extend(value for f in policy.store_fields if isinstance(value := body.get(f), str))
    return stores


async def authorize(request: Request) -> None:
    """Resolve the principal and decide the request by its route's policy; 401, 403 or a redirect to sign in."""
    template = _template_of(request)
    request.state.route_template = template
    policy = policy_of(request.method, template) if template is not None else None
    if policy is None:  # create_app refuses such an app; this is the belt to those braces
        raise _refuse(request, AccessDenied(403, "this route has no access policy", cause="policy"))
    runtime = _runtime(request)
    if runtime is None:
        if policy.need is Capability.OPEN:
            return
        raise HTTPException(status_code=503, detail="the hub is starting or stopping")
    principal = await _principal(request, runtime)
    request.state.principal = principal
    stores = await _named_stores(request, policy)
    try:
        decide(principal, policy, is_write=request.method not in READ_ONLY_METHODS, stores=stores)
    except AccessDenied as denied:
        raise _refuse(request, denied, page=policy.page) from None


def maybe_principal(request: Request) -> Principal | None:
    """Who is asking, if anyone (set by ``authorize``)."""
    principal: Principal | None = getattr(request.state, _PRINCIPAL_KEY, None)
    return principal


def principal(request: Request) -> Principal:
    """Who is asking; routes that need it are never open, so someone is."""
    found = maybe_principal(request)
    if found is None:
        raise HTTPException(status_code=401, detail="sign in first", headers={"WWW-Authenticate": "Bearer"})
    return found


PrincipalDep = Annotated[Principal, Depends(principal)]
MaybePrincipalDep = Annotated[Principal | None, Depends(maybe_principal)]


class AuditMiddleware:
    """Writes the audit entries of a request once it is done: every write, and the events handlers added."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            await self._record(scope, status[0] if status else 500)

    async def _record(self, scope: Scope, status: int) -> None:
        state: dict[str, Any] = scope.get("state", {})
        events = audit.events_of(state)
        method = scope["method"]
        # Only requests that reached a route: junk sent to paths the hub does not have changes nothing.
        if method not in READ_ONLY_METHODS and state.get(_TEMPLATE_KEY) and not audit.skips_generic(state):
            events.append(_generic_event(scope, state, status))
        if not events:
            return
        runtime: HubRuntime | None = getattr(scope["app"].state, "runtime", None)
        if runtime is None:
            return
        now = wire.utc_now()
        touch: str | None = state.get(_TOUCH_TOKEN_KEY)
        # A write's entries take the write turn like the write did. A read's (a token's hourly use, a refused
        # token) do not queue behind the consumer's units: a small insert, left to SQLite's busy timeout, so a
        # read is never held up by the write gate.
        turn = (
            runtime.write_gate.turn(writegate.AUDIT, timeout_s=WRITE_TURN_WAIT_S)
            if method not in READ_ONLY_METHODS
            else contextlib.nullcontext()
        )
        try:
            async with turn, runtime.sessions() as session:
                await audit.append(session, events, at=now)
                if touch is not None and (token := await session.get(ApiToken, touch)) is not None:
                    token.last_used_at = now
                await session.commit()
        except Exception as err:  # the request is answered already; a lost entry must be loud, not fatal
            runtime.metrics.audit_write_failures.inc()
            log.error("audit_write_failed", entries=len(events), actions=[e.action for e in events], error=str(err))


def _generic_event(scope: Scope, state: dict[str, Any], status: int) -> AuditEvent:
    template = state.get(_TEMPLATE_KEY) or scope["path"]
    who: Principal | None = state.get(_PRINCIPAL_KEY)
    note = audit.note_of(state) or audit.AuditNote()
    path_store = scope.get("path_params", {}).get("store_id")
    client = scope.get("client")
    return AuditEvent(
        action=f"{scope['method']} {template}",
        actor=who.actor if who is not None else "anonymous",
        actor_kind=who.kind if who is not None else "anonymous",
        outcome=str(status),
        target=note.target or scope["path"],
        store_id=note.store_id or (str(path_store) if path_store is not None else None),
        client=client[0] if client else None,
        before=note.before,
        after=note.after,
        detail=note.detail,
    )


def _docs_router(app: FastAPI) -> APIRouter:
    """/openapi.json, /docs and /redoc as API routes, so the policy table decides them like any other."""
    router = APIRouter(include_in_schema=False)
    title = app.title

    @router.get("/openapi.json")
    async def openapi_document(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{title} - API")

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{title} - API")

    return router


def app_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app answers; a route that is not an API route is listed as ("*", path)."""
    api, other = route_templates(app)
    found = [(method, t.path) for t in api for method in sorted(t.methods)]
    return found + [("*", path) for path in other]


GATE: Final = Depends(authorize)


def _document_bearer(app: FastAPI) -> None:
    """Name the API token in the OpenAPI document, so /docs offers "Authorize" and clients know what to send."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "an API token (storegate hub tokens create); browsers use the session of /login",
        }
        schema["security"] = [{"bearer": []}]
        # Routes open to anyone need nothing; pages answer an anonymous browser with the sign-in form.
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                policy = policy_of(method.upper(), path)
                if policy is not None and policy.need is Capability.OPEN:
                    operation["security"] = []
                elif policy is not None and policy.page:
                    operation["security"] = [{}, {"bearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


def install(app: FastAPI, settings: HubSettings) -> None:
    """Finish an app made with ``dependencies=[GATE]`` and its docs off, once its routers are included.

    Adds the docs routes and the audit middleware and the login throttle; raises UncoveredRoutesError when a
    route has no policy, or when the app was not made with the gate.
    """
    app.include_router(_docs_router(app))
    uncovered = routes_without_policy(app_routes(app))
    if uncovered:
        raise UncoveredRoutesError(
            "routes without an access policy (add a line to hub/auth/policy.py): " + ", ".join(uncovered)
        )
    templates, _ = route_templates(app)
    ungated = [t.path for t in templates if not t.gated]
    if ungated:
        raise UncoveredRoutesError(
            "routes not behind the gate (make the app with dependencies=[GATE]): " + ", ".join(ungated)
        )
    app.state.route_templates = templates
    _document_bearer(app)
    app.add_middleware(AuditMiddleware)
    auth = settings.auth
    app.state.login_throttle = LoginThrottle(
        max_failures=auth.login_max_failures,
        window_s=auth.login_window_s,
        lockout_s=auth.login_lockout_s,
        clock=time.monotonic,
    )
