"""``/login`` and ``/logout``: the sign-in form for people (no script, no external assets) and signing out.

A good sign-in sets two cookies, both ``Secure``, ``SameSite=Strict`` and ``__Host-`` prefixed: the
session (``HttpOnly``) and its CSRF token (readable by the page, sent back in ``X-CSRF-Token`` or the
form field ``csrf_token`` with every change). A wrong name and a wrong password answer the same words
after the same work; repeated failures lock the name and the address for a while (hub.auth.throttle).
"""

from __future__ import annotations

import math
from datetime import timedelta
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
from hub.console.assets import CONSOLE_CSP
from hub.console.i18n import negotiate
from hub.console.templating import render_in
from hub.db import writegate
from storegate import wire

log = structlog.get_logger(__name__)

router = APIRouter(tags=["dashboard"])

MAX_FIELD: Final = 1024


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of this hub only, never another site (``//evil``, ``https://``)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/"


def render_login(
    *, next_path: str, locale: str = "en", problem: str | None = None, minutes: int = 0, username: str = ""
) -> HTMLResponse:
    """The sign-in page in ``locale``; ``problem`` ("wrong", "throttled", "cross_site") says why it is shown again."""
    body = render_in(
        "login.html", locale, {"next_path": next_path, "problem": problem, "minutes": minutes, "username": username}
    )
    # The hub's default Referrer-Policy is no-referrer, under which a browser sends "Origin: null" with the form, which
    # the origin check of the sign-in must refuse; same-origin still tells other sites nothing.
    return HTMLResponse(body, headers={"content-security-policy": CONSOLE_CSP, "referrer-policy": "same-origin"})


@router.get("/login", response_class=HTMLResponse, summary="Sign-in page")
async def login_page(
    request: Request,
    next_path: Annotated[str | None, Query(alias="next", max_length=MAX_FIELD)] = None,
) -> HTMLResponse:
    """The form, in the browser's language; it posts to ``/login``."""
    return render_login(next_path=safe_next(next_path), locale=negotiate(request.headers.get("accept-language")))


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
    locale = negotiate(request.headers.get("accept-language"))

    def refused(outcome: str, status: int, problem: str, detail: str | None = None, minutes: int = 0) -> HTMLResponse:
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
        page = render_login(next_path=target, locale=locale, problem=problem, minutes=minutes, username=username[:64])
        page.status_code = status
        if outcome == "throttled" and detail:
            page.headers["Retry-After"] = detail.split()[-1]
        return page

    if not _same_origin(request):
        return refused("failed", 403, "cross_site", "cross-site sign-in refused")
    wait_s = throttle.retry_after(keys)
    if wait_s > 0:
        minutes = math.ceil(wait_s / 60)
        return refused(
            "throttled",
            429,
            "throttled",
            f"retry after {math.ceil(wait_s)}",
            minutes=minutes,
        )
    now = wire.utc_now()
    async with runtime.write_gate.turn(writegate.API, timeout_s=WRITE_TURN_WAIT_S), runtime.sessions() as session:
        operator = await check_login(session, username, password)
        if operator is None:
            locked = throttle.failed(keys)
            return refused("failed", 401, "wrong", "locked by this failure" if locked else None)
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
