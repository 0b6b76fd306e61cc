"""``/login`` and ``/logout``: the sign-in form for people (no script, no external assets) and signing out.

A good sign-in sets two cookies, both ``Secure``, ``SameSite=Strict`` and ``__Host-`` prefixed: the
session (``HttpOnly``) and its CSRF token (readable by the page, sent back in ``X-CSRF-Token`` or the
form field ``csrf_token`` with every change). A wrong name and a wrong password answer the same words
after the same work; repeated failures lock the name and the address for a while (hub.auth.throttle).
"""

from __future__ import annotations

import base64
import hashlib
import math
from datetime import timedelta
from html import escape
from typing import Annotated, Final
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hub.api.deps import WRITE_TURN_WAIT_S, RuntimeDep
from hub.auth import audit
from hub.auth.audit import AuditEvent
from hub.auth.guard import CSRF_COOKIE, LOGIN_PATH, SESSION_COOKIE, PrincipalDep, client_address
from hub.auth.operators import check_login, end_session, start_session
from hub.auth.throttle import LoginThrottle, throttle_keys
from hub.db import writegate
from storegate import wire

log = structlog.get_logger(__name__)

router = APIRouter(tags=["dashboard"])

WRONG_CREDENTIALS: Final = "Wrong username or password."
MAX_FIELD: Final = 1024

_STYLE: Final = """
body { font-family: system-ui, sans-serif; margin: 3rem auto; max-width: 22rem; color: #1b1b1b; background: #fafafa; }
h1 { font-size: 1.4rem; } label { display: block; margin: .75rem 0 .25rem 0; }
input[type=text], input[type=password] { width: 100%; padding: .4rem; box-sizing: border-box; }
button { margin-top: 1rem; padding: .4rem 1.2rem; } .error { color: #b3261e; }
"""
# The sign-in page's own policy: its one inline style (by its hash) and its form, which posts to this hub. The
# hub's default policy (hub.api.edge) has form-action 'none': under it a browser would not send the form at all.
LOGIN_CSP: Final = (
    f"default-src 'none'; style-src 'sha256-{base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()}'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The hub's default Referrer-Policy is no-referrer, and under it a browser sends "Origin: null" with the form, which
# the origin check below must refuse; same-origin still tells other sites nothing.
LOGIN_HEADERS: Final = {"content-security-policy": LOGIN_CSP, "referrer-policy": "same-origin"}


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of this hub only, never another site (``//evil``, ``https://``)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/"


def render_login(*, next_path: str, message: str | None = None, username: str = "") -> str:
    """The sign-in page."""
    error = f"<p class='error' role='alert'>{escape(message)}</p>" if message else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Sign in - Storegate hub</title><style>{_STYLE}</style></head><body>"
        "<h1>Storegate hub</h1>"
        f"{error}"
        f"<form method='post' action='{LOGIN_PATH}'>"
        f"<input type='hidden' name='next' value='{escape(next_path)}'>"
        "<label for='username'>Username</label>"
        f"<input id='username' name='username' type='text' autocomplete='username' required value='{escape(username)}'>"
        "<label for='password'>Password</label>"
        "<input id='password' name='password' type='password' autocomplete='current-password' required>"
        "<button type='submit'>Sign in</button></form></body></html>"
    )


@router.get("/login", response_class=HTMLResponse, summary="Sign-in page")
async def login_page(
    next_path: Annotated[str | None, Query(alias="next", max_length=MAX_FIELD)] = None,
) -> HTMLResponse:
    """The form; it posts to ``/login``."""
    return HTMLResponse(render_login(next_path=safe_next(next_path)), headers=LOGIN_HEADERS)


def _same_origin(request: Request) -> bool:
    """A browser's Origin, when sent, must be this hub: another site cannot sign a visitor in (login CSRF)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _throttle(request: Request) -> LoginThrottle:
    throttle: LoginThrottle = request.app.state.login_throttle
    return throttle


@router.post(
    "/login",
    summary="Sign in",
    description="Form fields `username`, `password` and `next`. Sets the session and CSRF cookies and redirects "
    "to `next` (303); 401 with the form again when the name or password is wrong; 429 while locked.",
    response_class=HTMLResponse,
    responses={
        303: {"description": "signed in"},
        # The form again, for a person: HTML, not a Problem (hub.app keeps errors marked x-html as they are).
        401: {"description": "wrong", "content": {"text/html": {"schema": {"type": "string"}}}, "x-html": True},
        429: {"description": "locked", "content": {"text/html": {"schema": {"type": "string"}}}, "x-html": True},
    },
)
async def login(
    request: Request,
    runtime: RuntimeDep,
    username: Annotated[str, Form(max_length=MAX_FIELD)],
    password: Annotated[str, Form(max_length=MAX_FIELD)],
    next_path: Annotated[str | None, Form(alias="next", max_length=MAX_FIELD)] = None,
) -> Response:
    """Check the credentials; on success start a session."""
    target = safe_next(next_path)
    client = client_address(request)
    keys = throttle_keys(username, client)
    throttle = _throttle(request)

    def refused(outcome: str, status: int, message: str, detail: str | None = None) -> HTMLResponse:
        runtime.metrics.logins.labels(outcome=outcome).inc()
        log.warning("login_refused", username=username[:64], client=client, outcome=outcome, detail=detail)
        audit.add_event(
            request,
            AuditEvent(
                action=f"login.{outcome}",
                actor=username[:64] or "anonymous",
                actor_kind="anonymous",
                outcome=str(status),
                client=client,
                detail=detail,
            ),
            instead_of_generic=True,
        )
        headers = dict(LOGIN_HEADERS)
        if outcome == "throttled" and detail:
            headers["Retry-After"] = detail.split()[-1]
        return HTMLResponse(
            render_login(next_path=target, message=message, username=username[:64]), status_code=status, headers=headers
        )

    if not _same_origin(request):
        return refused("failed", 403, "Sign in from this hub's own page.", "cross-site sign-in refused")
    wait_s = throttle.retry_after(keys)
    if wait_s > 0:
        minutes = math.ceil(wait_s / 60)
        return refused(
            "throttled",
            429,
            f"Too many failed sign-ins: try again in {minutes} min.",
            f"retry after {math.ceil(wait_s)}",
        )
    now = wire.utc_now()
    async with runtime.write_gate.turn(writegate.API, timeout_s=WRITE_TURN_WAIT_S), runtime.sessions() as session:
        operator = await check_login(session, username, password)
        if operator is None:
            locked = throttle.failed(keys)
            return refused("failed", 401, WRONG_CREDENTIALS, "locked by this failure" if locked else None)
        ttl = timedelta(seconds=runtime.settings.auth.session_ttl_s)
        session_id, csrf = await start_session(session, operator, now=now, ttl=ttl, client=client)
        await session.commit()
        name = operator.username
    throttle.succeeded(keys)
    runtime.metrics.logins.labels(outcome="succeeded").inc()
    log.info("login_succeeded", username=name, client=client)
    audit.add_event(
        request,
        AuditEvent(action="login.succeeded", actor=name, actor_kind="user", outcome="303", client=client),
        instead_of_generic=True,
    )
    response = RedirectResponse(target, status_code=303)
    max_age = int(ttl.total_seconds())
    for cookie, value, http_only in ((SESSION_COOKIE, session_id, True), (CSRF_COOKIE, csrf, False)):
        response.set_cookie(
            cookie, value, max_age=max_age, path="/", secure=True, httponly=http_only, samesite="strict"
        )
    return response


@router.post(
    "/logout",
    summary="Sign out",
    description="Ends the browser session (send the CSRF token) and redirects to the sign-in page.",
    responses={303: {"description": "signed out"}},
)
async def logout(request: Request, runtime: RuntimeDep, who: PrincipalDep) -> Response:
    """Forget the session; clear the cookies."""
    if who.session_id is not None:
        async with runtime.write_gate.turn(writegate.API, timeout_s=WRITE_TURN_WAIT_S), runtime.sessions() as session:
            await end_session(session, who.session_id)
            await session.commit()
    audit.add_event(
        request,
        AuditEvent(
            action="logout", actor=who.actor, actor_kind=who.kind, outcome="303", client=client_address(request)
        ),
        instead_of_generic=True,
    )
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    for cookie in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(cookie, path="/", secure=True, samesite="strict")
    return response
