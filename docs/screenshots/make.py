#!/usr/bin/env python3
"""Screenshots of the ops console for the docs: a demo hub with seeded stores, photographed by Debian's Chromium.

Starts Mosquitto and a hub (SQLite in a temporary directory, uvicorn on a free loopback port), gives it six stores
(English and Chinese names, their own time zones and currencies), then sends what their gateways would through the
broker: birth messages (one store's gateway then vanishes), two hours of chiller and freezer readings (one freezer
warming past its limit) and receipt printers out of paper, so the hub's own rules raise the alerts. Then signs in
as an admin and saves PNGs of the overview, the alerts, a store page and the fleet at a desk's size and a phone's
(390x844), and the overview in Traditional Chinese, into this directory.

A page the hub does not serve is reported and skipped. Run with the project's venv (Debian's chromium installed):

    .venv/bin/python docs/screenshots/make.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402 - after the path is set
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402
from playwright.async_api import Page, ViewportSize, async_playwright  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from hub.alerting.models import AlertRow  # noqa: E402
from hub.app import serve  # noqa: E402
from hub.auth import operators  # noqa: E402
from hub.auth.guard import CSRF_COOKIE, CSRF_HEADER  # noqa: E402
from hub.catalog.models import StoreProfile  # noqa: E402
from hub.db.engine import create_engine, session_factory  # noqa: E402
from hub.db.migrate import upgrade_to_head  # noqa: E402
from hub.settings import load_hub_settings  # noqa: E402
from launcher.broker import free_port, start_mosquitto  # noqa: E402
from storegate import wire  # noqa: E402
from storegate.logs import configure_logging  # noqa: E402
from storegate.mqtt import MqttSettings  # noqa: E402
from tests.browser.chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

USER: Final = "demo-admin"
PASSWORD: Final = "screenshots only, never a real password"  # noqa: S105 - a throwaway demo hub
# (store id, name, time zone, currency, region)
STORES: Final = (
    ("store-0001", "台北信義店", "Asia/Taipei", "TWD", "tw"),
    ("store-0002", "上海静安店", "Asia/Shanghai", "CNY", "cn"),
    ("store-0003", "旺角店", "Asia/Hong_Kong", "HKD", "hk"),
    ("store-0004", "Riverside", "Europe/London", "GBP", "uk"),
    ("store-0005", "Altstadt", "Europe/Berlin", "EUR", "de"),
    ("store-0006", "Harbour View", "America/New_York", "USD", "us"),
)
OFFLINE_STORE: Final = "store-0004"
WARM_FREEZER_STORE: Final = "store-0002"
PAPER_OUT_STORES: Final = ("store-0001", "store-0006")
VIEWPORTS: Final[dict[str, ViewportSize]] = {
    "desktop": ViewportSize(width=1280, height=800),
    "phone": ViewportSize(width=390, height=844),
}


class Gateways:
    """One paho client publishing for every store's gw-1 (a demo, not a gateway: no acks are awaited)."""

    def __init__(self, mqtt: MqttSettings) -> None:
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"screenshots-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.connect(mqtt.host, mqtt.port, keepalive=30)
        self.client.loop_start()

    def send(self, topic: str, message: wire.WireModel, *, retain: bool = False) -> None:
        info = self.client.publish(topic, wire.encode(message), qos=1, retain=retain)
        info.wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def store_traffic(store_id: str, now: datetime) -> list[wire.Event]:
    """Two hours of a chiller and a freezer every minute; a warm freezer or a printer out of paper where set."""
    stream = uuid.uuid4()
    events: list[wire.Event] = []

    def event(kind: str, device_id: str, at: datetime, payload: dict[str, Any]) -> None:
        events.append(
            wire.Event(
                event_id=uuid.uuid4(),
                store_id=store_id,
                gateway_id="gw-1",
                stream=stream,
                seq=len(events) + 1,
                device_id=device_id,
                kind=kind,
                ts=at,
                payload=payload,
            )
        )

    start = now - timedelta(hours=2)
    for minute in range(120):
        at = start + timedelta(minutes=minute)
        chill = 3.2 + 0.6 * ((minute % 17) / 17)
        warm = store_id == WARM_FREEZER_STORE and minute >= 80
        freeze = -12.5 + 0.1 * (minute % 5) if warm else -20.5 + 0.4 * ((minute % 11) / 11)
        for device, zone, value in (("climate-1", "chiller-1", chill), ("climate-2", "freezer-1", freeze)):
            event(
                "environment.reading",
                device,
                at,
                {"quantity": "temperature", "value": round(value, 2), "unit": "Cel", "zone": zone},
            )
    if store_id in PAPER_OUT_STORES:
        event("printer.status", "receipt-printer", now, {"online": True, "paper": "out", "cover_open": False})
    return events


async def seed(database_url: str, mqtt: MqttSettings, now: datetime) -> None:
    """Profiles and the admin in the database; everything else through the broker, as gateways send it."""
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            await operators.add_operator(
                session, username=USER, role="admin", password=PASSWORD, scope=operators.Scope(), by="demo", now=now
            )
            for store_id, name, zone, currency, region in STORES:
                hours = {day: ["08:00-22:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
                await session.execute(
                    insert(StoreProfile).values(
                        store_id=store_id,
                        name=name,
                        timezone=zone,
                        currency=currency,
                        opening_hours=hours,
                        region=region,
                        updated_at=now,
                    )
                )
            await session.commit()
    finally:
        await engine.dispose()

    def publish() -> None:
        gateways = Gateways(mqtt)
        try:
            for store_id, *_ in STORES:
                status = wire.GatewayStatus(
                    store_id=store_id,
                    gateway_id="gw-1",
                    online=True,
                    reason="birth",
                    ts=wire.utc_now(),
                    agent_version="0.1.0",
                )
                gateways.send(wire.topic(store_id, "gw-1", wire.Channel.STATUS), status, retain=True)
                events = store_traffic(store_id, now)
                for first in range(0, len(events), 100):
                    batch = wire.EventBatch(
                        store_id=store_id, gateway_id="gw-1", sent_at=wire.utc_now(), events=events[first : first + 100]
                    )
                    gateways.send(wire.topic(store_id, "gw-1", wire.Channel.EVENTS), batch)
            lost = wire.GatewayStatus(
                store_id=OFFLINE_STORE, gateway_id="gw-1", online=False, reason="lost", ts=wire.utc_now()
            )
            gateways.send(wire.topic(OFFLINE_STORE, "gw-1", wire.Channel.STATUS), lost, retain=True)
        finally:
            gateways.close()

    await asyncio.to_thread(publish)
    engine = create_engine(database_url)
    try:
        deadline = time.monotonic() + 30
        expected = len(PAPER_OUT_STORES)
        while time.monotonic() < deadline:
            async with session_factory(engine)() as session:
                raised = await session.scalar(select(func.count()).select_from(AlertRow))
            if (raised or 0) >= expected:
                return
            await asyncio.sleep(0.2)
        print(f"warning: fewer than {expected} alerts raised within 30 s; the pages may look empty", flush=True)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def demo_hub(workdir: Path) -> AsyncIterator[tuple[str, str, MqttSettings]]:
    """Mosquitto and a hub on SQLite served on loopback: its URL, database URL and broker."""
    broker = start_mosquitto(workdir / "mosquitto")
    mqtt = MqttSettings(host=broker.host, port=broker.port)
    database_url = f"sqlite+aiosqlite:///{workdir / 'hub.sqlite3'}"
    await upgrade_to_head(database_url)
    settings = load_hub_settings(
        None,
        database_url=database_url,
        mqtt=mqtt,
        http_port=free_port(),
        secrets_dir=workdir / "secrets",
        accept_unknown_gateways=True,
        log_level="WARNING",
    )
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, stop=stop))
    base_url = f"http://127.0.0.1:{settings.http_port}"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                if server.done():
                    server.result()
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit("the demo hub did not answer within 30 s")
                await asyncio.sleep(0.1)
        yield base_url, database_url, mqtt
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=15)
        broker.stop(kill=True)


async def choose_language(page: Page, language: str) -> None:
    """The signed-in operator's language, as the header's menu sets it (POST /console/language)."""
    token = next(c["value"] for c in await page.context.cookies() if c["name"] == CSRF_COOKIE)
    await page.request.post(
        "/console/language", form={"language": language, "next": "/"}, headers={CSRF_HEADER: token}, max_redirects=0
    )


async def photograph(base_url: str, out: Path) -> list[Path]:
    """PNG files of each page at each size (and the overview in Traditional Chinese); the files written."""
    if not CHROMIUM.is_file():
        raise SystemExit(f"no Chromium at {CHROMIUM}: apt-get install chromium fonts-wqy-microhei")
    pages = {"overview": "/", "alerts": "/alerts", "store": f"/stores/{STORES[1][0]}", "fleet": "/fleet"}
    written: list[Path] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        try:
            for size_name, viewport in VIEWPORTS.items():
                phone = size_name == "phone"
                context = await browser.new_context(
                    base_url=base_url,
                    viewport=viewport,
                    device_scale_factor=2 if phone else 1,
                    is_mobile=phone,
                    has_touch=phone,
                    locale="en-GB",
                    timezone_id="UTC",
                )
                page = await context.new_page()
                await page.goto("/login?next=/")
                await page.fill("#username", USER)
                await page.fill("#password", PASSWORD)
                async with page.expect_navigation():
                    await page.click("button[type=submit]")
                shots = list(pages.items())
                if not phone:
                    shots.append(("overview-zh_Hant", "/"))
                for name, path in shots:
                    language = "zh_Hant" if name.endswith("zh_Hant") else "en"
                    await choose_language(page, language)  # kept on the operator's account: set for every shot
                    response = await page.goto(path)
                    if response is None or response.status != 200:
                        print(f"skipped {name} ({size_name}): {path} answered {response.status if response else '-'}")
                        continue
                    await page.wait_for_load_state("networkidle")
                    file = out / f"{name}-{size_name}.png"
                    await page.screenshot(path=str(file))  # what the screen shows, not the whole scroll
                    written.append(file)
                    print(f"wrote {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}", flush=True)
                await context.close()
        finally:
            await browser.close()
    return written


async def make(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="storegate-screenshots-") as workdir:
        async with demo_hub(Path(workdir)) as (base_url, database_url, mqtt):
            await seed(database_url, mqtt, datetime.now(UTC).replace(microsecond=0))
            await photograph(base_url, out)


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshots of the ops console for docs/.")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="where the PNGs go")
    args = parser.parse_args()
    configure_logging(level="WARNING", json=False)
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(make(args.out))


if __name__ == "__main__":
    main()
