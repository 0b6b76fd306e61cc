"""Chromium against the hub on loopback: the login form, the session's Secure cookies over http://127.0.0.1, the
console's static files, and the language an operator chooses from a page.

The console's pages themselves are proven in test_console_pages.py.
"""

from __future__ import annotations

from playwright.async_api import expect
from sqlalchemy import select

from hub.auth.guard import CSRF_COOKIE, SESSION_COOKIE
from hub.auth.models import Operator
from hub.console.assets import asset_url
from hub.db.engine import create_engine, session_factory
from tests.browser.conftest import (
    LIVE_LOOP,
    PHONE,
    Browsers,
    ServedHub,
    horizontal_overflow,
    post_from_page,
    sign_in,
)

pytestmark = LIVE_LOOP


async def language_of(hub: ServedHub, username: str) -> str | None:
    engine = create_engine(hub.database_url)
    try:
        async with session_factory(engine)() as session:
            return await session.scalar(select(Operator.language).where(Operator.username == username))
    finally:
        await engine.dispose()


async def test_chromium_signs_in_through_the_form_and_keeps_the_secure_cookies(browsers: Browsers) -> None:
    page = await browsers.page()
    anonymous = await page.request.get("/", max_redirects=0)
    assert (anonymous.status, anonymous.headers["location"]) == (303, "/login?next=/")

    refused: list[str] = []  # what the page's Content-Security-Policy blocked (its style, its form)
    page.on(
        "console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None
    )
    await page.goto("/login?next=/")
    await page.fill("#username", "otto")
    await page.fill("#password", "not the password")
    await page.click("button[type=submit]")
    await expect(page.get_by_text("Wrong username or password.")).to_be_visible()
    assert refused == []  # the sign-in page's own style and form are allowed by its policy
    assert [c["name"] for c in await page.context.cookies()] == []

    await sign_in(page, "otto", "/")  # the form was sent: the page's policy lets it post to the hub
    # Chromium treats http://127.0.0.1 as a secure context: it keeps the __Host- Secure cookies and sends them.
    assert await page.evaluate("window.isSecureContext") is True
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session, csrf = cookies[SESSION_COOKIE], cookies[CSRF_COOKIE]
    assert (session["secure"], session["httpOnly"], session["sameSite"], session["path"]) == (True, True, "Strict", "/")
    assert (csrf["secure"], csrf["httpOnly"], csrf["sameSite"]) == (True, False, "Strict")
    # A script of the page reads the CSRF token (console.js sends it back), never the session.
    visible = await page.evaluate("document.cookie")
    assert CSRF_COOKIE in visible
    assert SESSION_COOKIE not in visible
    signed = await page.request.get("/", max_redirects=0)
    assert signed.status == 200


async def test_the_console_files_reach_chromium_compressed_and_cached(browsers: Browsers) -> None:
    page = await browsers.page()
    for name in ("console.css", "console.js", "vendor/htmx.min.js", "vendor/htmx-ext-sse.min.js"):
        response = await page.goto(asset_url(name))
        assert response is not None
        assert response.ok, name
        headers = await response.all_headers()
        assert headers["content-encoding"] == "gzip", name
        assert headers["cache-control"] == "public, max-age=31536000, immutable", name
    missing = await page.goto("/static/no-such.js")
    assert missing is not None
    assert missing.status == 404


async def test_a_language_chosen_in_the_browser_is_kept_on_the_account(browsers: Browsers, hub: ServedHub) -> None:
    page = await browsers.signed_in("vera")  # a viewer may choose its own language
    assert await post_from_page(page, "/console/language", {"language": "zh_Hant", "next": "/alerts"}) == 303
    assert await language_of(hub, "vera") == "zh_Hant"
    # Refused, and nothing changes: a form without the token (another site's), a language the console lacks.
    assert await post_from_page(page, "/console/language", {"language": "zh_Hans"}, csrf=False) == 403
    assert await post_from_page(page, "/console/language", {"language": "fr"}) == 422
    assert await language_of(hub, "vera") == "zh_Hant"


async def test_the_login_form_fits_a_phone_and_signs_in_by_touch(browsers: Browsers) -> None:
    page = await browsers.page(PHONE)
    await page.goto("/login?next=/")
    assert await horizontal_overflow(page) <= 0
    await page.fill("#username", "ada")
    await page.fill("#password", "correct horse battery staple")
    async with page.expect_navigation():
        await page.tap("button[type=submit]")
    assert "/login" not in page.url
    assert SESSION_COOKIE in {c["name"] for c in await page.context.cookies()}
