"""Browser tests of the ops console: Debian's Chromium driven by Playwright against a hub served by uvicorn.

The Python package drives the system's Chromium (``/usr/bin/chromium``, Debian's ``chromium``); no browser is ever
downloaded. The machine's network is closed, so Chromium is started with the flags that keep it from calling home.
Each test gets a hub of its own (SQLite, a real Mosquitto, uvicorn on a free loopback port), operators of every role
with the shared password, and a browser context per page (a fresh profile: no cookie or storage carried over).

Chromium is started once per session (per xdist worker), so every test and async fixture here runs on the
session's event loop (``LIVE_LOOP``, each test module's ``pytestmark``).

No sleeps: Playwright's ``expect`` waits for a condition with an explicit timeout, and ``eventually`` waits on the
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize, async_playwright, expect
from sqlalchemy import insert, select

from hub.alerting.models import AlertRow
from hub.app import serve
from hub.auth import operators
from hub.auth.guard import CSRF_COOKIE, CSRF_HEADER
from hub.catalog.models import StoreProfile
from hub.db.engine import create_engine, session_factory
from hub.settings import HubSettings, load_hub_settings
from launcher.broker import free_port
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.browser.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import eventually
from tests.hub.conftest import (  # noqa: F401  (fixtures: migrated databases, no STOREGATE_HUB_* leaking in)
    PlainGateway,
    _cheap_password_hashes,
    _no_hub_env,
    migrated_sqlite_file,
    postgres_copies,
    postgres_dropper,
    postgres_template,
    postgres_url,
    sqlite_url,
)

DESKTOP: Final = ViewportSize(width=1280, height=800)
PHONE: Final = ViewportSize(width=390, height=844)
VIEWPORTS: Final[Mapping[str, ViewportSize]] = {"desktop": DESKTOP, "phone": PHONE}
# How long expect() waits for what a page should show: generous for 2 shared cores, never a sleep.
EXPECT_MS: Final = 10_000

PASSWORD: Final = "correct horse battery staple"
STORE: Final = "store-0001"
STORE_NAME: Final = "台北信義店"
GATEWAY: Final = "gw-1"
OTHER_STORE: Final = "store-0002"
# The stores' profiles: (store id, name, time zone, currency, region).
PROFILES: Final = (
    (STORE, STORE_NAME, "Asia/Taipei", "TWD", "north"),
    (OTHER_STORE, "Riverside", "Europe/London", "GBP", "south"),
)
# The operators every test has: (username, role, the stores it is scoped to or None for the whole chain).
OPERATORS: Final[tuple[tuple[str, str, tuple[str, ...] | None], ...]] = (
    ("ada", "admin", None),
    ("otto", "ops", None),
    ("vera", "viewer", None),
    ("sam", "ops", (STORE,)),
)

expect.set_options(timeout=EXPECT_MS)
# The event loop of the browser tests: the session's, where the shared Chromium lives.
LIVE_LOOP: Final = pytest.mark.asyncio(loop_scope="session")


class ChromiumMissingError(RuntimeError):
    """The system's Chromium is not installed: the browser tests cannot run (they fail, never skip)."""


def chromium_executable(path: Path = CHROMIUM) -> Path:
    """The Chromium to drive; raises ChromiumMissingError naming the Debian package to install."""
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ChromiumMissingError(
            f"no Chromium at {path}: install Debian's packages: apt-get install chromium fonts-wqy-microhei "
            "(.ci/run does this); the browser tests never download a browser"
        )
    return path


@contextlib.asynccontextmanager
async def launched_chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, started by Playwright and closed afterwards."""
    executable = chromium_executable()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=list(CHROMIUM_ARGS), timeout=30_000
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium() -> AsyncIterator[Browser]:
    """One Chromium for the session (per xdist worker), each test in contexts of its own; a test fails (not skips)
    when Debian's chromium is not installed."""
    try:
        executable = chromium_executable()
    except ChromiumMissingError as missing:
        pytest.fail(str(missing))
    assert executable.is_file()
    async with launched_chromium() as browser:
        yield browser


# --------------------------------------------------------------------------- the hub


@dataclass
class ServedHub:
    """A hub served by uvicorn on loopback: its address, database and broker."""

    settings: HubSettings
    mqtt: MqttSettings

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    async def alerts(self) -> list[AlertRow]:
        """Every alert in the hub's database, oldest first."""
        engine = create_engine(self.database_url)
        try:
            async with session_factory(engine)() as session:
                return list(await session.scalars(select(AlertRow).order_by(AlertRow.opened_at)))
        finally:
            await engine.dispose()

    async def publish_printer_out(
        self, *, store_id: str = STORE, gateway_id: str = GATEWAY, device_id: str = "receipt-printer"
    ) -> wire.Event:
        """A receipt printer out of paper, published as its gateway's event batch through Mosquitto.

        The chain's default rule ``printer-paper-out`` raises a warning alert for it at once (no grace time), so
        the alert on screen follows the event's commit without waiting on a rule's timer.
        """
        event = wire.Event(
            event_id=uuid.uuid4(),
            store_id=store_id,
            gateway_id=gateway_id,
            stream=uuid.uuid4(),
            seq=1,
            device_id=device_id,
            kind=wire.EventKind.PRINTER_STATUS,
            ts=wire.utc_now(),
            payload={"online": True, "paper": "out", "cover_open": False},
        )
        batch = wire.EventBatch(store_id=store_id, gateway_id=gateway_id, sent_at=wire.utc_now(), events=[event])

        def send() -> None:
            gateway = PlainGateway(self.mqtt, client_id=f"test-gw-{uuid.uuid4().hex[:8]}")
            try:
                gateway.publish(wire.topic(store_id, gateway_id, wire.Channel.EVENTS), wire.encode(batch))
            finally:
                gateway.close()

        await asyncio.to_thread(send)  # paho blocks on the PUBACK; the hub's loop must keep running meanwhile
        return event

    async def alert_for(self, device_id: str, *, timeout: float = 10.0) -> AlertRow:
        """The alert the hub raised about ``device_id``, once committed."""

        async def found() -> AlertRow | None:
            return next((a for a in await self.alerts() if a.subject_id == device_id), None)

        alert = await eventually(found, timeout=timeout, what=f"the hub's alert about {device_id}")
        assert alert is not None
        return alert


async def prepare_database(database_url: str, *, now: datetime) -> None:
    """The operators of OPERATORS and the stores' PROFILES (one with a Chinese name, Taipei time and TWD)."""
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            for username, role, store_ids in OPERATORS:
                await operators.add_operator(
                    session,
                    username=username,
                    role=role,
                    password=PASSWORD,
                    scope=operators.Scope(store_ids=store_ids),
                    by="tests",
                    now=now,
                )
            for store_id, name, time_zone, currency, region in PROFILES:
                await session.execute(
                    insert(StoreProfile).values(
                        store_id=store_id,
                        name=name,
                        timezone=time_zone,
                        currency=currency,
                        opening_hours={},
                        region=region,
                        updated_at=now,
                    )
                )
            await session.commit()
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def served_hub(database_url: str, mqtt: MqttSettings, secrets_dir: Path) -> AsyncIterator[ServedHub]:
    """The hub (role api, every router) served by uvicorn on a free loopback port until the block ends."""
    settings = load_hub_settings(
        None,
        database_url=database_url,
        mqtt=mqtt,
        http_port=free_port(),
        client_id=f"hub-{uuid.uuid4().hex[:8]}",
        secrets_dir=secrets_dir,
        accept_unknown_gateways=True,
    )
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop=stop))
    hub = ServedHub(settings=settings, mqtt=mqtt)
    try:
        async with httpx.AsyncClient(base_url=hub.base_url, timeout=5) as client:

            async def up() -> bool:
                if server.done():
                    server.result()  # the hub could not start: say why
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, timeout=15, what="the hub to answer on loopback")
        yield hub
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=15)


@pytest.fixture
def hub_database_url(request: pytest.FixtureRequest) -> str:
    """This test's database: SQLite, or PostgreSQL where a test parametrizes ``hub_database_url`` indirectly with
    "postgresql" (the live stream may take another path there: API and consumer can be processes apart)."""
    kind = getattr(request, "param", "sqlite")
    return str(request.getfixturevalue("postgres_url" if kind == "postgresql" else "sqlite_url"))


@pytest_asyncio.fixture(loop_scope="session")
async def hub(hub_database_url: str, mqtt_settings: MqttSettings, tmp_path: Path) -> AsyncIterator[ServedHub]:
    """A hub on this test's database and Mosquitto, served on loopback, with OPERATORS and the stores' PROFILES."""
    await prepare_database(hub_database_url, now=wire.utc_now())
    async with served_hub(hub_database_url, mqtt_settings, tmp_path / "hub-secrets") as served:
        yield served


# --------------------------------------------------------------------------- browser contexts


@dataclass
class Browsers:
    """Pages in fresh browser contexts (a new profile each), closed when the test ends."""

    browser: Browser
    hub: ServedHub
    contexts: list[BrowserContext] = field(default_factory=list)

    async def page(self, viewport: ViewportSize = DESKTOP, *, accept_language: str = "en-US") -> Page:
        """A blank page in a new context at ``viewport`` (a phone's is touch and mobile)."""
        phone = viewport["width"] < 600
        context = await self.browser.new_context(
            base_url=self.hub.base_url,
            viewport=viewport,
            is_mobile=phone,
            has_touch=phone,
            locale=accept_language,
            service_workers="block",
        )
        context.set_default_timeout(EXPECT_MS)
        self.contexts.append(context)
        return await context.new_page()

    async def signed_in(self, username: str, next_path: str = "/", *, viewport: ViewportSize = DESKTOP) -> Page:
        """A page signed in as ``username`` through the login form, on ``next_path``."""
        page = await self.page(viewport)
        await sign_in(page, username, next_path)
        return page

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


async def sign_in(page: Page, username: str, next_path: str = "/", password: str = PASSWORD) -> None:
    """Fill the login form and send it, as a person would; wait until the browser has left the form."""
    await page.goto(f"/login?next={next_path}")
    await page.fill("#username", username)
    await page.fill("#password", password)
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    await expect(page).not_to_have_url(re.compile(r"/login"))


@pytest_asyncio.fixture(loop_scope="session")
async def browsers(chromium: Browser, hub: ServedHub) -> AsyncIterator[Browsers]:
    """Fresh browser contexts on this test's hub."""
    opened = Browsers(chromium, hub)
    try:
        yield opened
    finally:
        await opened.close()


async def post_from_page(
    page: Page, path: str, form: Mapping[str, str], *, csrf: bool = True, as_json: bool = False
) -> int:
    """POST a form with the page's session (its browser context's cookies); the status, redirects not followed.

    With ``csrf`` the token is taken from its cookie and sent as console.js does; without it, as a form posted from
    another site would arrive. ``as_json`` sends the fields as a JSON body (the API's way) instead of a form.
    """
    headers = {}
    if csrf:
        token = next((c["value"] for c in await page.context.cookies() if c["name"] == CSRF_COOKIE), None)
        assert token is not None, "the page is not signed in"
        headers[CSRF_HEADER] = token
    if as_json:
        response = await page.request.post(path, data=dict(form), headers=headers, max_redirects=0)
    else:
        response = await page.request.post(path, form=dict(form), headers=headers, max_redirects=0)
    return response.status


async def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the window (0: nothing to scroll sideways)."""
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert isinstance(overflow, int)
    return overflow
