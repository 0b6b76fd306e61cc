"""Browser sessions on a real uvicorn on loopback: the login form, cookie flags, CSRF, forged cookies, sign-out,
and throttling of failed sign-ins."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path

import httpx

from hub.app import serve
from hub.auth import operators
from hub.auth.guard import CSRF_COOKIE, SESSION_COOKIE
from hub.db.engine import create_engine, session_factory
from hub.settings import HubSettings, load_hub_settings
from launcher.broker import free_port
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.hub.conftest import token_in_database

PASSWORD = "correct horse battery staple"


async def add_operator(database_url: str, username: str, role: str, password: str = PASSWORD) -> None:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            await operators.add_operator(
                session,
                username=username,
                role=role,
                password=password,
                scope=operators.Scope(),
                by="tests",
                now=wire.utc_now(),
            )
            await session.commit()
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def served(settings: HubSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The hub served by uvicorn on a free loopback port, and a plain client (no cookie jar use) for it."""
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop=stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", timeout=5) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, timeout=10, what="the hub to answer on loopback")
            yield client
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=10)


def settings_for(sqlite_url: str, mqtt_settings: MqttSettings, tmp_path: Path, **auth: object) -> HubSettings:
    return load_hub_settings(
        None,
        database_url=sqlite_url,
        mqtt=mqtt_settings,
        http_port=free_port(),
        secrets_dir=tmp_path / "secrets",
        auth=auth,
    )


async def login(client: httpx.AsyncClient, username: str, password: str, next_path: str = "/") -> httpx.Response:
    return await client.post(
        "/login", data={"username": username, "password": password, "next": next_path}, follow_redirects=False
    )


def cookies_of(response: httpx.Response) -> dict[str, SimpleCookie]:
    """Each Set-Cookie header parsed, by cookie name (the raw attributes kept)."""
    parsed: dict[str, SimpleCookie] = {}
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        parsed.update({name: cookie for name in cookie})
    return parsed


async def test_a_browser_signs_in_changes_things_with_its_csrf_token_and_signs_out(
    sqlite_url: str, mqtt_settings: MqttSettings, tmp_path: Path
) -> None:
    await add_operator(sqlite_url, "alice", "admin")
    async with served(settings_for(sqlite_url, mqtt_settings, tmp_path)) as client:
        page = await client.get("/", follow_redirects=False)
        assert (page.status_code, page.headers["location"]) == (303, "/login?next=/")
        form = await client.get("/login", params={"next": "/"})
        assert form.status_code == 200
        assert '<form method="post" action="/login"' in form.text
        assert "<script" not in form.text  # no script on the sign-in page
        assert "http" not in form.text  # no external assets: its one stylesheet is the hub's own
        assert form.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
        chinese = await client.get("/login", headers={"accept-language": "zh-TW,zh;q=0.9"})
        assert "使用者名稱" in chinese.text
        assert 'lang="zh-Hant"' in chinese.text

        wrong = await login(client, "alice", "not the password")
        unknown = await login(client, "nobody-by-that-name", "not the password")
        assert (wrong.status_code, unknown.status_code) == (401, 401)
        assert "Wrong username or password." in wrong.text
        assert wrong.text.replace("alice", "X") == unknown.text.replace("nobody-by-that-name", "X")
        assert "set-cookie" not in wrong.headers

        signed = await login(client, "alice", PASSWORD, next_path="//evil.example/steal")
        assert (signed.status_code, signed.headers["location"]) == (303, "/")  # never off-site
        cookies = cookies_of(signed)
        session_cookie = cookies[SESSION_COOKIE][SESSION_COOKIE]
        csrf_cookie = cookies[CSRF_COOKIE][CSRF_COOKIE]
        assert session_cookie["httponly"] is True
        assert session_cookie["secure"] is True
        assert session_cookie["samesite"] == "strict"
        assert session_cookie["path"] == "/"
        assert csrf_cookie["secure"] is True
        assert csrf_cookie["samesite"] == "strict"
        assert not csrf_cookie["httponly"]  # the page reads it to send it back
        jar = {"Cookie": f"{SESSION_COOKIE}={session_cookie.value}; {CSRF_COOKIE}={csrf_cookie.value}"}

        dashboard = await client.get("/", headers=jar)
        assert dashboard.status_code == 200
        assert '<span class="who">alice</span>' in dashboard.text
        assert (await client.get("/api/v1/me", headers=jar)).json()["kind"] == "user"

        body = {"name": "from-a-browser", "role": "viewer", "expires_in_days": 1}
        no_csrf = await client.post("/api/v1/tokens", json=body, headers=jar)
        assert no_csrf.status_code == 403
        assert "X-CSRF-Token" in no_csrf.json()["detail"]
        forged_csrf = await client.post("/api/v1/tokens", json=body, headers={**jar, "X-CSRF-Token": "guess"})
        assert forged_csrf.status_code == 403
        made = await client.post("/api/v1/tokens", json=body, headers={**jar, "X-CSRF-Token": csrf_cookie.value})
        assert made.status_code == 201, made.text
        assert made.json()["created_by"] == "alice"

        forged = {"Cookie": f"{SESSION_COOKIE}=forged-session-id; {CSRF_COOKIE}=x"}
        assert (await client.get("/api/v1/me", headers=forged)).status_code == 401
        cross_site = await client.post(
            "/login",
            data={"username": "alice", "password": PASSWORD},
            headers={"Origin": "https://evil.example"},
            follow_redirects=False,
        )
        assert cross_site.status_code == 403
        assert "set-cookie" not in cross_site.headers

        out = await client.post(
            "/logout",
            data={"csrf_token": csrf_cookie.value},
            headers=jar,
            follow_redirects=False,
        )
        assert (out.status_code, out.headers["location"]) == (303, "/login")
        assert (await client.get("/api/v1/me", headers=jar)).status_code == 401

        admin = await login(client, "alice", PASSWORD)
        again = {"Cookie": f"{SESSION_COOKIE}={cookies_of(admin)[SESSION_COOKIE][SESSION_COOKIE].value}"}

        async def audited() -> list[tuple[str, str]]:
            entries = (await client.get("/api/v1/audit", params={"limit": 50}, headers=again)).json()["items"]
            return [(e["action"], e["actor"]) for e in reversed(entries) if "/api/v1/audit" not in (e["target"] or "")]

        expected = [
            ("login.failed", "alice"),
            ("login.failed", "nobody-by-that-name"),
            ("login.succeeded", "alice"),
            ("csrf.refused", "alice"),
            ("csrf.refused", "alice"),
            ("POST /api/v1/tokens", "alice"),
            ("login.failed", "alice"),
            ("logout", "alice"),
            ("login.succeeded", "alice"),
        ]

        async def all_written() -> bool:
            return await audited() == expected

        # An entry is written once its response is sent: wait for it rather than race it.
        await eventually(all_written, timeout=5, what="the audit entries of the session")


async def test_failed_sign_ins_lock_the_name_and_the_address_for_a_while(
    sqlite_url: str, mqtt_settings: MqttSettings, tmp_path: Path
) -> None:
    await add_operator(sqlite_url, "carol", "viewer")
    settings = settings_for(sqlite_url, mqtt_settings, tmp_path, login_max_failures=3, login_lockout_s=600)
    async with served(settings) as client:
        statuses = [(await login(client, "carol", f"guess {n}")).status_code for n in range(3)]
        assert statuses == [401, 401, 401]
        locked = await login(client, "carol", PASSWORD)  # even the right password waits out the lockout
        assert locked.status_code == 429
        assert "Too many failed sign-ins" in locked.text
        assert 0 < int(locked.headers["retry-after"]) <= 600
        assert "set-cookie" not in locked.headers
        other_name = await login(client, "dave", PASSWORD)  # the address is locked as well
        assert other_name.status_code == 429
        metrics_token = await token_in_database(sqlite_url, "viewer")
        text = (await client.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"})).text
        assert 'storegate_hub_logins_total{outcome="failed"} 3.0' in text
        assert 'storegate_hub_logins_total{outcome="throttled"} 2.0' in text
