"""Outbound alert notifications on SQLite and PostgreSQL: the outbox written with the alert, signed webhooks
to a real receiver on loopback (uvicorn) with retries, backoff and giving up, the MQTT alert topic on a real
Mosquitto (through an outage, in order), and the webhook API that shows a secret only once."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import CollectorRegistry
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.alerting.models import AlertRow, NotificationRow, Webhook, WebhookDelivery
from hub.alerting.notices import AlertNotice, NotificationEvent, alert_topic
from hub.alerting.notification_settings import NotificationSettings
from hub.alerting.notifications import NotificationDispatcher, record_notification
from hub.alerting.secret_box import SecretBox, key_file, new_key
from hub.alerting.webhooks import invalidate_webhook_cache, sign, verify_signature
from hub.api.deps import get_now, get_session
from hub.app import create_app
from hub.db.engine import session_factory
from hub.settings import HubSettings, load_hub_settings
from launcher.broker import LocalBroker, free_port, start_mosquitto
from storegate.mqtt import MqttLink, MqttSettings
from storegate.private_files import private_dir, write_private
from tests.conftest import eventually
from tests.hub.conftest import TEST_ADMIN, act_as, until

T0 = datetime(2026, 3, 2, 22, 15, tzinfo=UTC)


# --------------------------------------------------------------------------- helpers


@dataclass
class FakeClock:
    """The dispatcher's clock, moved by the test."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def open_alert(
    session: AsyncSession, *, store_id: str = "store-0001", severity: str = "critical", subject_id: str = "chiller-1"
) -> AlertRow:
    """An open environment alert, stored."""
    alert_id = str(uuid.uuid4())
    alert = AlertRow(
        alert_id=alert_id,
        store_id=store_id,
        rule_id="chiller-temperature",
        rule_kind="environment_range",
        category="environment",
        subject_kind="zone",
        subject_id=subject_id,
        active_key=f"{store_id}/chiller-temperature/zone:{subject_id}/{alert_id}",  # many alerts per test
        severity=severity,
        status="open",
        message=f"{subject_id} above 8.0 Cel for 15 min",
        opened_at=T0,
        last_seen_at=T0,
        count=1,
        evidence=[str(uuid.uuid4())],
        snapshot_ref=None,
        escalate_after_s=[],
        escalation_level=0,
    )
    session.add(alert)
    await session.flush()
    return alert


async def record(
    engine: AsyncEngine,
    event: NotificationEvent = "alert.opened",
    *,
    store_id: str = "store-0001",
    severity: str = "critical",
    now: datetime = T0,
) -> int:
    """Open an alert and record one notification of it in one transaction; return the notification's id."""
    async with session_factory(engine)() as session, session.begin():
        alert = await open_alert(session, store_id=store_id, severity=severity)
        if event == "alert.acknowledged":
            alert.status, alert.acknowledged_by, alert.acknowledged_at = "acknowledged", "alice", now
        elif event == "alert.resolved":
            alert.status, alert.resolved_by, alert.resolved_at = "resolved", "bob", now
            alert.resolution_note = "door repaired"
        await record_notification(session, alert, event, now=now, actor="system")
        await session.flush()
        newest = (await session.execute(select(NotificationRow.id).order_by(NotificationRow.id.desc()))).first()
        assert newest is not None
        return int(newest[0])


# The webhook key of these tests: add_webhook seals with it, dispatcher_for opens with it, and the API's
# secrets directory holds it (hub_settings_for).
TEST_KEY = new_key()
TEST_BOX = SecretBox([TEST_KEY])


def hub_settings_for(tmp_path: Path, **overrides: Any) -> HubSettings:
    """Settings whose secrets directory is in ``tmp_path`` and holds TEST_KEY."""
    secrets_dir = private_dir(tmp_path / "hub-secrets")
    write_private(key_file(secrets_dir), TEST_KEY + "\n")
    return load_hub_settings(
        None, database_url="sqlite+aiosqlite:///unused.sqlite3", secrets_dir=secrets_dir, **overrides
    )


async def add_webhook(
    engine: AsyncEngine,
    url: str,
    *,
    secret: str = "s3cret-of-sixteen-chars",
    store_ids: list[str] | None = None,
    events: list[str] | None = None,
) -> str:
    """A webhook stored directly (the API is tested on its own), and the recording cache told."""
    webhook_id = str(uuid.uuid4())
    async with session_factory(engine)() as session, session.begin():
        session.add(
            Webhook(
                webhook_id=webhook_id,
                url=url,
                secret_sealed=TEST_BOX.seal(secret),
                store_ids=store_ids,
                events=events,
                enabled=True,
                created_at=T0,
                created_by="test",
            )
        )
    invalidate_webhook_cache()
    return webhook_id


async def deliveries(engine: AsyncEngine, webhook_id: str | None = None) -> list[WebhookDelivery]:
    async with session_factory(engine)() as session:
        query = select(WebhookDelivery).order_by(WebhookDelivery.notification_id, WebhookDelivery.webhook_id)
        if webhook_id is not None:
            query = query.where(WebhookDelivery.webhook_id == webhook_id)
        return list((await session.scalars(query)).all())


async def notifications(engine: AsyncEngine) -> list[NotificationRow]:
    async with session_factory(engine)() as session:
        return list((await session.scalars(select(NotificationRow).order_by(NotificationRow.id))).all())


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


class NoLink:
    """An MQTT link that is never connected: for tests of webhooks only."""

    connected = False

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Any:
        raise AssertionError("nothing is published while disconnected")


# The receivers of these tests listen on loopback, which webhooks may reach only when allow-listed.
LOOPBACK_ALLOWED = {"webhook_allowed_networks": ("127.0.0.1/32",)}


def dispatcher_for(
    engine: AsyncEngine,
    *,
    link: Any = None,
    clock: Any = None,
    registry: CollectorRegistry | None = None,
    ssl_context: ssl.SSLContext | None = None,
    secret_box: SecretBox = TEST_BOX,
    **settings: Any,
) -> NotificationDispatcher:
    """A dispatcher on ``engine`` whose webhooks may reach 127.0.0.1 unless ``settings`` say otherwise."""
    settings = LOOPBACK_ALLOWED | settings
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    if ssl_context is not None:
        kwargs["ssl_context"] = ssl_context
    return NotificationDispatcher(
        engine=engine,
        secret_box=secret_box,
        link=link if link is not None else NoLink(),
        registry=registry if registry is not None else CollectorRegistry(),
        settings=NotificationSettings(**settings),
        **kwargs,
    )


# --------------------------------------------------------------------------- a webhook receiver on loopback


@dataclass
class Hit:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()


@dataclass
class Receiver:
    """A tiny HTTP server that records requests; ``/flaky`` fails the first ``fail_first`` with 500."""

    base_url: str = ""
    fail_first: int = 0
    hits: list[Hit] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def on(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        hit = Hit(path, {k.lower(): v for k, v in request.headers.items()}, await request.body(), time.monotonic())
        self.hits.append(hit)
        if path == "/broken":
            return Response(b"<html>" + b"x" * 5000 + b"</html>", status_code=500)
        if path == "/slow":  # answers only when the test ends: the hub must time out
            await asyncio.wait_for(self.release.wait(), 10)
            return Response(status_code=204)
        if path == "/flaky" and len(self.on("/flaky")) <= self.fail_first:
            return Response(b"receiver down for maintenance", status_code=500)
        return Response(status_code=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A receiver served by uvicorn on a loopback port the OS picked."""
    state = Receiver()
    app = Starlette(routes=[Route("/{name}", state.handle, methods=["POST"])])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    state.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None, timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await until(lambda: server.started, timeout=10, what="the receiver listening")
        yield state
    finally:
        state.release.set()
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


def assert_signed(hit: Hit, secret: str, *, notification_id: int, webhook_id: str, event: str) -> dict[str, Any]:
    """The request is a signed notice: headers, signature checked with the receivers' helper; its JSON."""
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["x-storegate-event"] == event
    assert hit.headers["x-storegate-delivery"] == f"{notification_id}-{webhook_id}"
    timestamp = hit.headers["x-storegate-timestamp"]
    signature = hit.headers["x-storegate-signature"]
    assert signature.startswith("sha256=")
    assert len(signature) == len("sha256=") + 64
    assert verify_signature(secret, timestamp, hit.body, signature)
    assert not verify_signature("another-secret-of-16", timestamp, hit.body, signature)
    assert not verify_signature(secret, str(int(timestamp) + 1), hit.body, signature)
    assert not verify_signature(secret, timestamp, hit.body.replace(b"store-", b"st0re-"), signature)
    body: dict[str, Any] = json.loads(hit.body)
    assert body["notification_id"] == notification_id
    assert body["event"] == event
    return body


# --------------------------------------------------------------------------- signatures (pure)


def test_signature_scheme_and_verification() -> None:
    secret, body = "0123456789abcdef", b'{"v":1,"event":"alert.opened"}'
    header = sign(secret, 1767225600, body)
    assert header == "sha256=" + hmac.new(secret.encode(), b"1767225600." + body, "sha256").hexdigest()
    assert verify_signature(secret, "1767225600", body, header)
    assert verify_signature(secret, 1767225600, body.decode(), header)
    assert not verify_signature(secret, "1767225600", body, header.removeprefix("sha256="))
    assert not verify_signature(secret, "1767225600", body, None)
    assert not verify_signature(secret, "1767225600", body, "sha256=" + "0" * 64)
    # Freshness, for receivers that refuse replays.
    assert verify_signature(secret, "1767225600", body, header, max_age_s=300, now=1767225600 + 299)
    assert not verify_signature(secret, "1767225600", body, header, max_age_s=300, now=1767225600 + 301)


def test_alert_topic_refuses_segments_that_are_not_topic_levels() -> None:
    assert alert_topic("store-0001", "critical") == "storegate/alerts/store-0001/critical"
    for store_id, severity in (("store/1", "critical"), ("store-1", "+"), ("#", "info"), ("", "info")):
        with pytest.raises(ValueError, match="topic segment"):
            alert_topic(store_id, severity)


def test_retry_schedule_follows_the_settings() -> None:
    settings = NotificationSettings(retry_delays_s=(5, 30, 120), max_attempts=6)
    assert [settings.retry_delay(n).total_seconds() for n in range(1, 6)] == [5, 30, 120, 120, 120]
    with pytest.raises(ValueError, match="more than 0"):
        NotificationSettings(retry_delays_s=(5, 0))
    with pytest.raises(ValueError, match="retry_delays_s"):
        NotificationSettings(retry_delays_s=())


# --------------------------------------------------------------------------- recording


async def test_record_writes_the_notice_and_a_delivery_per_matching_webhook(engine: AsyncEngine) -> None:
    every = await add_webhook(engine, "http://127.0.0.1:9/every")
    store_2 = await add_webhook(engine, "http://127.0.0.1:9/store-2", store_ids=["store-0002"])
    resolved = await add_webhook(engine, "http://127.0.0.1:9/resolved", events=["alert.resolved", "alert.escalated"])
    both = await add_webhook(engine, "http://127.0.0.1:9/both", store_ids=["store-0002"], events=["alert.resolved"])
    disabled = await add_webhook(engine, "http://127.0.0.1:9/disabled")
    async with session_factory(engine)() as session, session.begin():
        await session.execute(update(Webhook).where(Webhook.webhook_id == disabled).values(enabled=False))
    invalidate_webhook_cache()

    opened_1 = await record(engine, "alert.opened", store_id="store-0001")
    resolved_2 = await record(engine, "alert.resolved", store_id="store-0002", now=T0 + timedelta(minutes=5))
    resolved_1 = await record(engine, "alert.resolved", store_id="store-0001")

    targets: dict[int, set[str]] = {}
    for delivery in await deliveries(engine):
        targets.setdefault(delivery.notification_id, set()).add(delivery.webhook_id)
        assert delivery.status == "pending"
        assert delivery.attempts == 0
        assert delivery.last_error is None
    assert targets == {
        opened_1: {every},
        resolved_2: {every, store_2, resolved, both},
        resolved_1: {every, resolved},
    }
    rows = {row.id: row for row in await notifications(engine)}
    row = rows[resolved_2]
    assert (row.event, row.store_id, row.mqtt_published, row.mqtt_published_at) == (
        "alert.resolved",
        "store-0002",
        False,
        None,
    )
    notice = AlertNotice.model_validate(row.body)  # the stored body is exactly the documented message
    assert notice.v == 1
    assert notice.notification_id == resolved_2
    assert notice.alert_id == row.alert_id
    assert (notice.store_id, notice.rule_id, notice.rule_kind, notice.category) == (
        "store-0002",
        "chiller-temperature",
        "environment_range",
        "environment",
    )
    assert (notice.subject.kind, notice.subject.id, notice.severity, notice.status) == (
        "zone",
        "chiller-1",
        "critical",
        "resolved",
    )
    assert (notice.resolved_by, notice.resolution_note, notice.occurred_at) == (
        "bob",
        "door repaired",
        T0 + timedelta(minutes=5),
    )
    assert row.body["occurred_at"] == "2026-03-02T22:20:00Z"
    assert row.body["subject"] == {
        "kind": "zone",
        "id": "chiller-1",
    }


async def test_record_reads_the_webhooks_once_and_sees_api_changes(engine: AsyncEngine, tmp_path: Path) -> None:
    """Recording is on the ingest path: the webhook list is cached, and creating one through the API
    (which clears the cache) takes effect at once."""
    await add_webhook(engine, "http://127.0.0.1:9/a")
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    from sqlalchemy import event

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        for _ in range(3):
            await record(engine)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert sum("FROM webhooks" in s for s in statements) == 1
    assert len(await deliveries(engine)) == 3

    app = create_app(hub_settings_for(tmp_path))
    sessions = session_factory(engine)

    async def session() -> AsyncIterator[AsyncSession]:
        async with sessions() as s:
            yield s

    app.dependency_overrides[get_session] = session
    act_as(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        created = (await http.post("/api/v1/webhooks", json={"url": "https://alarms.example.com/in"})).json()
        await record(engine)
        assert {d.webhook_id for d in await deliveries(engine)} >= {created["webhook_id"]}
        assert (await http.delete(f"/api/v1/webhooks/{created['webhook_id']}")).status_code == 204
        before = len(await deliveries(engine, created["webhook_id"]))
        await record(engine)
        assert len(await deliveries(engine, created["webhook_id"])) == before


# --------------------------------------------------------------------------- webhooks


async def test_delivery_retries_with_backoff_until_the_receiver_takes_it(
    engine: AsyncEngine, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    secret = "a-secret-for-the-alarm-centre"
    webhook_id = await add_webhook(engine, f"{receiver.base_url}/flaky", secret=secret)
    notification_id = await record(engine)
    clock = FakeClock(T0)
    registry = CollectorRegistry()
    dispatcher = dispatcher_for(engine, clock=clock, registry=registry, retry_delays_s=(5.0, 30.0), max_attempts=4)
    try:
        assert await dispatcher.deliver_due() == 1
        [delivery] = await deliveries(engine)
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
        assert delivery.last_error == "HTTP 500"  # the status, never the receiver's words
        assert delivery.next_attempt_at == T0 + timedelta(seconds=5)

        clock.advance(4.9)
        assert await dispatcher.deliver_due() == 0  # not due yet
        assert len(receiver.hits) == 1
        clock.advance(0.1)
        assert await dispatcher.deliver_due() == 1
        [delivery] = await deliveries(engine)
        assert (delivery.status, delivery.attempts) == ("pending", 2)
        assert delivery.next_attempt_at == T0 + timedelta(seconds=5 + 30)

        clock.advance(29)
        assert await dispatcher.deliver_due() == 0
        clock.advance(1)
        assert await dispatcher.deliver_due() == 1
        [delivery] = await deliveries(engine)
        assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
            "delivered",
            3,
            204,
            None,
        )
        assert delivery.delivered_at == T0 + timedelta(seconds=35)
        assert await dispatcher.deliver_due() == 0
    finally:
        await dispatcher.stop()

    assert len(receiver.hits) == 3
    [row] = await notifications(engine)
    for hit, at in zip(receiver.hits, (T0, T0 + timedelta(seconds=5), T0 + timedelta(seconds=35)), strict=True):
        body = assert_signed(hit, secret, notification_id=notification_id, webhook_id=webhook_id, event="alert.opened")
        assert body == row.body  # the same notice every time
        assert hit.headers["x-storegate-timestamp"] == str(int(at.timestamp()))
    assert sample(registry, "storegate_hub_webhook_deliveries_total", outcome="retry") == 2
    assert sample(registry, "storegate_hub_webhook_deliveries_total", outcome="delivered") == 1
    assert sample(registry, "storegate_hub_webhook_deliveries_pending") == 0


async def test_delivery_gives_up_after_max_attempts_and_never_logs_the_secret(
    engine: AsyncEngine, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    secret = "never-log-me-0123456789"
    broken = await add_webhook(engine, f"{receiver.base_url}/broken", secret=secret)
    refused = await add_webhook(engine, f"http://127.0.0.1:{free_port()}/nobody", secret=secret)
    slow = await add_webhook(engine, f"{receiver.base_url}/slow", secret=secret)
    await record(engine)
    clock = FakeClock(T0)
    registry = CollectorRegistry()
    dispatcher = dispatcher_for(
        engine, clock=clock, registry=registry, retry_delays_s=(1.0, 2.0), max_attempts=3, timeout_s=0.3
    )
    try:
        for attempt, wait in ((1, 1.0), (2, 2.0), (3, 0.0)):
            assert await dispatcher.deliver_due() == 3, f"attempt {attempt}"
            clock.advance(wait)
        clock.advance(3600)
        assert await dispatcher.deliver_due() == 0  # given up: never tried again
    finally:
        await dispatcher.stop()

    outcome = {d.webhook_id: d for d in await deliveries(engine)}
    assert {d.status for d in outcome.values()} == {"failed"}
    assert {d.attempts for d in outcome.values()} == {3}
    assert outcome[broken].last_status_code == 500
    broken_error = outcome[broken].last_error
    assert broken_error is not None
    assert broken_error == "HTTP 500"  # not a byte of the receiver's page
    assert outcome[refused].last_status_code is None
    refused_error = outcome[refused].last_error
    assert refused_error is not None
    assert "ConnectError" in refused_error
    assert (outcome[slow].last_status_code, outcome[slow].last_error) == (None, "no answer within 0.3 s")
    assert len(receiver.on("/broken")) == 3
    assert len(receiver.on("/slow")) == 3
    assert sample(registry, "storegate_hub_webhook_deliveries_total", outcome="failed") == 3
    assert sample(registry, "storegate_hub_webhook_deliveries_total", outcome="retry") == 6
    assert sample(registry, "storegate_hub_webhook_deliveries_pending") == 0
    assert "webhook_delivery_failed" in caplog.text
    assert secret not in caplog.text
    assert all(secret not in str(record.msg) for record in caplog.records)


async def test_dispatcher_delivers_on_notify_and_schedules_retries_itself(
    engine: AsyncEngine, receiver: Receiver
) -> None:
    """Running in the background: notify() sends at once (the poll is 30 s), and retries wait their delay."""
    receiver.fail_first = 2
    secret = "background-secret-123456"
    webhook_id = await add_webhook(engine, f"{receiver.base_url}/flaky", secret=secret)
    dispatcher = dispatcher_for(engine, retry_delays_s=(0.2, 0.4), max_attempts=5, poll_interval_s=30)
    dispatcher.start()
    try:
        notification_id = await record(engine)
        dispatcher.notify()
        # A deadline well under the 30 s poll: only notify() can have woken it in time.
        await until(lambda: len(receiver.hits) >= 1, timeout=10, what="the first attempt, woken by notify()")
        await until(lambda: len(receiver.hits) >= 3, timeout=5, what="two retries")

        async def delivered() -> bool:
            return [d.status for d in await deliveries(engine)] == ["delivered"]

        await eventually(delivered, timeout=5, what="the delivery recorded as delivered")
    finally:
        await dispatcher.stop()
    first, second, third = receiver.hits
    assert second.at - first.at >= 0.2
    assert third.at - second.at >= 0.4
    for hit in receiver.hits:
        assert_signed(hit, secret, notification_id=notification_id, webhook_id=webhook_id, event="alert.opened")
        sent = int(hit.headers["x-storegate-timestamp"])
        assert verify_signature(
            secret, sent, hit.body, hit.headers["x-storegate-signature"], max_age_s=60, now=time.time()
        )


async def test_two_dispatchers_never_send_the_same_attempt(engine: AsyncEngine, receiver: Receiver) -> None:
    """Two hub processes on one database: each due delivery is claimed by exactly one of them."""
    await add_webhook(engine, f"{receiver.base_url}/ok")
    for _ in range(6):
        await record(engine)
    first, second = dispatcher_for(engine), dispatcher_for(engine)
    try:
        counts = await asyncio.gather(first.deliver_due(), second.deliver_due())
    finally:
        await first.stop()
        await second.stop()
    assert sum(counts) == 6
    assert len(receiver.hits) == 6
    assert len({hit.headers["x-storegate-delivery"] for hit in receiver.hits}) == 6
    assert {d.status for d in await deliveries(engine)} == {"delivered"}


async def test_deliveries_of_a_webhook_disabled_elsewhere_are_cancelled(
    engine: AsyncEngine, receiver: Receiver
) -> None:
    webhook_id = await add_webhook(engine, f"{receiver.base_url}/ok")
    await record(engine)
    # Disabled by another hub process: this one's cache still lists it, the dispatcher must not send.
    async with session_factory(engine)() as session, session.begin():
        await session.execute(update(Webhook).where(Webhook.webhook_id == webhook_id).values(enabled=False))
    dispatcher = dispatcher_for(engine)
    try:
        assert await dispatcher.deliver_due() == 0
    finally:
        await dispatcher.stop()
    [delivery] = await deliveries(engine)
    assert (delivery.status, delivery.last_error) == ("cancelled", "the webhook was disabled")
    assert receiver.hits == []


# --------------------------------------------------------------------------- MQTT


class Subscriber:
    """A paho client that subscribes to every alert topic (again after each reconnection)."""

    def __init__(self, settings: MqttSettings, *, client_id: str, persistent: bool = False) -> None:
        self.lock = threading.Lock()
        self.messages: list[paho.MQTTMessage] = []
        self.subscribed = threading.Event()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = lambda client, *_: client.subscribe("storegate/alerts/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        properties = None
        if persistent:  # the broker keeps the subscription and queues QoS 1 messages while away
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho's __init__ is unannotated
            properties.SessionExpiryInterval = 3600
        self.client.connect(
            settings.host, settings.port, keepalive=10, clean_start=not persistent, properties=properties
        )
        self.client.loop_start()
        assert self.subscribed.wait(5), "no SUBACK for storegate/alerts/#"

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(message)

    def received(self) -> list[tuple[str, dict[str, Any], int, bool]]:
        with self.lock:
            return [(m.topic, json.loads(m.payload), m.qos, bool(m.retain)) for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(mqtt_settings: MqttSettings) -> Iterator[Subscriber]:
    client = Subscriber(mqtt_settings, client_id=f"vms-{uuid.uuid4().hex[:8]}")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def link(mqtt_settings: MqttSettings) -> AsyncIterator[MqttLink]:
    async with MqttLink(settings=mqtt_settings, client_id=f"hub-{uuid.uuid4().hex[:8]}") as connected:
        assert await connected.wait_connected(5), "the hub's link did not connect"
        yield connected


async def test_notices_are_published_on_the_alert_topic(
    engine: AsyncEngine, link: MqttLink, subscriber: Subscriber
) -> None:
    critical = await record(engine, "alert.opened", store_id="store-0001", severity="critical")
    warning = await record(engine, "alert.acknowledged", store_id="store-0002", severity="warning")
    registry = CollectorRegistry()
    dispatcher = dispatcher_for(engine, link=link, registry=registry, poll_interval_s=30)
    dispatcher.start()
    try:
        dispatcher.notify()
        await until(lambda: len(subscriber.received()) >= 2, timeout=5, what="two notices")

        async def marked() -> bool:
            return all(row.mqtt_published for row in await notifications(engine))

        await eventually(marked, timeout=5, what="both marked published")
    finally:
        await dispatcher.stop()
    rows = {row.id: row for row in await notifications(engine)}
    assert subscriber.received() == [
        ("storegate/alerts/store-0001/critical", rows[critical].body, 1, False),
        ("storegate/alerts/store-0002/warning", rows[warning].body, 1, False),
    ]
    assert rows[warning].body["acknowledged_by"] == "alice"
    assert rows[warning].body["status"] == "acknowledged"
    assert all(row.mqtt_published_at is not None for row in rows.values())
    assert sample(registry, "storegate_hub_notifications_published_total") == 2
    assert sample(registry, "storegate_hub_notifications_unpublished") == 0


class HeldLink:
    """A connected link whose broker acknowledges only the topics it is told to (paho's own message info)."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, paho.MQTTMessageInfo]] = []
        self.acked_topics: set[str] = set()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        info = paho.MQTTMessageInfo(len(self.sent) + 1)
        if topic in self.acked_topics:
            info._set_as_published()
        self.sent.append((topic, payload, info))
        return info


async def test_a_notice_is_marked_published_only_after_the_puback(engine: AsyncEngine) -> None:
    """Accepted by paho is not enough: without the broker's PUBACK the notice (and those after it, to keep
    the order) stays unpublished and is sent again."""
    first = await record(engine, severity="warning")
    second = await record(engine, severity="critical")
    link = HeldLink()
    dispatcher = dispatcher_for(engine, link=link, publish_timeout_s=0.3)
    try:
        assert await dispatcher.publish_pending() == 0
        assert [topic for topic, _, _ in link.sent] == [
            "storegate/alerts/store-0001/warning",
            "storegate/alerts/store-0001/critical",
        ]
        assert [row.mqtt_published for row in await notifications(engine)] == [False, False]

        link.acked_topics.add("storegate/alerts/store-0001/warning")
        assert await dispatcher.publish_pending() == 1
        rows = await notifications(engine)
        assert [(row.id, row.mqtt_published) for row in rows] == [(first, True), (second, False)]
        assert json.loads(link.sent[-1][1])["notification_id"] == second  # sent again, after the first

        link.acked_topics.add("storegate/alerts/store-0001/critical")
        assert await dispatcher.publish_pending() == 1
        assert all(row.mqtt_published for row in await notifications(engine))
        assert await dispatcher.publish_pending() == 0
    finally:
        await dispatcher.stop()


async def test_notices_made_while_the_broker_is_down_go_out_in_order_when_it_is_back(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    # A broker of its own with persistence: the subscriber's session (and the notices queued for it)
    # survive the restart, so what it receives does not depend on who reconnects first.
    broker: LocalBroker = start_mosquitto(tmp_path / "broker", persistence=True)
    settings = MqttSettings(host=broker.host, port=broker.port, reconnect_min_s=0.2, reconnect_max_s=1.0)
    subscriber = Subscriber(settings, client_id=f"vms-{uuid.uuid4().hex[:8]}", persistent=True)
    try:
        async with MqttLink(settings=settings, client_id=f"hub-{uuid.uuid4().hex[:8]}") as link:
            assert await link.wait_connected(5)
            dispatcher = dispatcher_for(engine, link=link, poll_interval_s=0.2, publish_timeout_s=2)
            dispatcher.start()
            try:
                first = await record(engine, severity="warning")
                dispatcher.notify()
                await until(lambda: len(subscriber.received()) == 1, timeout=5, what="the first notice")

                broker.stop()
                await until(lambda: not link.connected, timeout=5, what="the hub's link down")
                during = [await record(engine, severity=s) for s in ("critical", "info", "warning", "critical")]
                dispatcher.notify()
                assert await dispatcher.publish_pending() == 0  # nothing is handed to paho while down
                assert [row.mqtt_published for row in await notifications(engine)] == [True] + [False] * 4

                await asyncio.to_thread(broker.restart)

                async def all_published() -> bool:
                    return all(row.mqtt_published for row in await notifications(engine))

                await eventually(all_published, timeout=15, what="the backlog published after the restart")
                await until(lambda: len(subscriber.received()) >= 5, timeout=10, what="the backlog received")
            finally:
                await dispatcher.stop()
        # At least once: a redelivery may repeat a notice; the first arrivals keep the recording order.
        first_arrivals = {body["notification_id"]: topic for topic, body, _, _ in subscriber.received()}
        assert list(first_arrivals) == [first, *during]
        assert [first_arrivals[i] for i in during] == [
            f"storegate/alerts/store-0001/{s}" for s in ("critical", "info", "warning", "critical")
        ]
    finally:
        subscriber.close()
        broker.stop(kill=True)


# --------------------------------------------------------------------------- the API


@pytest.fixture
async def api(engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The hub's app (as create_app builds it) on this test's database, without its lifespan."""
    app = create_app(hub_settings_for(tmp_path, notifications=LOOPBACK_ALLOWED))
    sessions = session_factory(engine)

    async def session() -> AsyncIterator[AsyncSession]:
        async with sessions() as s:
            yield s

    app.dependency_overrides[get_session] = session
    act_as(app)
    app.dependency_overrides[get_now] = lambda: T0
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        yield http


async def test_api_shows_the_secret_only_when_creating(
    api: httpx.AsyncClient, engine: AsyncEngine, receiver: Receiver
) -> None:
    given = "my-own-secret-of-24-chars"
    response = await api.post(
        "/api/v1/webhooks",
        json={"url": f"{receiver.base_url}/ok", "secret": given, "store_ids": ["store-0001"]},
        headers={"X-Storegate-Actor": "alice"},  # ignored: the creator is the principal
    )
    assert response.status_code == 201, response.text
    mine = response.json()
    assert mine["secret"] == given
    assert mine["created_by"] == TEST_ADMIN.actor
    assert mine["enabled"] is True
    assert mine["store_ids"] == ["store-0001"]
    assert mine["events"] is None
    # Another store's webhook: never called here (no traffic leaves the machine).
    response = await api.post(
        "/api/v1/webhooks", json={"url": "https://alarms.example.com/storegate?site=7", "store_ids": ["store-0009"]}
    )
    assert response.status_code == 201, response.text
    generated = response.json()
    assert generated["created_by"] == TEST_ADMIN.actor
    assert len(generated["secret"]) >= 40
    assert generated["secret"] != given

    listing = await api.get("/api/v1/webhooks")
    assert listing.status_code == 200
    assert [w["webhook_id"] for w in listing.json()["items"]] == sorted([mine["webhook_id"], generated["webhook_id"]])
    assert all("secret" not in w for w in listing.json()["items"])
    assert given not in listing.text
    assert generated["secret"] not in listing.text

    # Deliveries: what happened, never the secret.
    notification_id = await record(engine)
    dispatcher = dispatcher_for(engine)
    try:
        await dispatcher.deliver_due()
    finally:
        await dispatcher.stop()
    [hit] = receiver.hits
    assert_signed(hit, given, notification_id=notification_id, webhook_id=mine["webhook_id"], event="alert.opened")
    history = await api.get(f"/api/v1/webhooks/{mine['webhook_id']}/deliveries")
    assert history.status_code == 200
    assert given not in history.text
    [item] = history.json()["items"]
    assert item["notification_id"] == notification_id
    assert item["status"] == "delivered"
    assert (item["attempts"], item["last_status_code"], item["last_error"], item["next_attempt_at"]) == (
        1,
        204,
        None,
        None,
    )
    assert item["last_attempt_at"] is not None  # when, and how long: timing, never the receiver's answer
    assert 0 <= item["last_duration_ms"] < 10_000
    assert "body" not in item
    assert history.json()["next_before"] is None

    # Disabling keeps the webhook and its history; a later notice is not delivered to it.
    assert (await api.delete(f"/api/v1/webhooks/{mine['webhook_id']}")).status_code == 204
    listing = await api.get("/api/v1/webhooks")
    assert {w["webhook_id"]: w["enabled"] for w in listing.json()["items"]} == {
        mine["webhook_id"]: False,
        generated["webhook_id"]: True,
    }
    assert given not in listing.text
    await record(engine)
    assert len((await api.get(f"/api/v1/webhooks/{mine['webhook_id']}/deliveries")).json()["items"]) == 1


async def test_api_cancels_pending_deliveries_and_pages_history(api: httpx.AsyncClient, engine: AsyncEngine) -> None:
    created = (await api.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/x"})).json()
    ids = [await record(engine) for _ in range(3)]
    page = await api.get(f"/api/v1/webhooks/{created['webhook_id']}/deliveries", params={"limit": 2})
    assert [i["notification_id"] for i in page.json()["items"]] == [ids[2], ids[1]]
    assert page.json()["items"][0]["next_attempt_at"] == "2026-03-02T22:15:00Z"
    rest = await api.get(
        f"/api/v1/webhooks/{created['webhook_id']}/deliveries", params={"before": page.json()["next_before"]}
    )
    assert [i["notification_id"] for i in rest.json()["items"]] == [ids[0]]
    assert (await api.delete(f"/api/v1/webhooks/{created['webhook_id']}")).status_code == 204
    cancelled = await api.get(f"/api/v1/webhooks/{created['webhook_id']}/deliveries", params={"status": "cancelled"})
    assert [i["last_error"] for i in cancelled.json()["items"]] == ["the webhook was disabled"] * 3


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ({"url": "ftp://alarms.example.com/in"}, "url"),
        ({"url": "alarms.example.com/in"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "http://alarms.example.com:99999/in"}, "url"),
        ({"url": "https://alarms.example.com/a b"}, "url"),
        ({}, "url"),
        ({"url": "https://a.example.com", "store_ids": ["Store 1"]}, "store_ids.0"),
        ({"url": "https://a.example.com", "store_ids": []}, "store_ids"),
        ({"url": "https://a.example.com", "events": ["alert.deleted"]}, "events.0"),
        ({"url": "https://a.example.com", "colour": "red"}, "colour"),
    ],
)
async def test_api_refuses_bad_webhooks_naming_the_field(
    api: httpx.AsyncClient, engine: AsyncEngine, body: dict[str, Any], field_name: str
) -> None:
    response = await api.post("/api/v1/webhooks", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith(f"{field_name}:"), response.json()["message"]
    assert (await api.get("/api/v1/webhooks")).json()["items"] == []


async def test_api_refuses_a_short_secret_without_echoing_it(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/webhooks", json={"url": "https://a.example.com", "secret": "tooShort99"})
    assert response.status_code == 422
    assert response.json()["message"] == "secret: must have at least 16 characters"
    assert "tooShort99" not in response.text
    long = await api.post("/api/v1/webhooks", json={"url": "https://a.example.com", "secret": "k" * 257})
    assert long.status_code == 422
    assert "k" * 257 not in long.text
    assert (await api.get("/api/v1/webhooks")).json()["items"] == []


async def test_api_unknown_webhook_and_openapi(api: httpx.AsyncClient) -> None:
    unknown = uuid.uuid4()
    assert (await api.delete(f"/api/v1/webhooks/{unknown}")).status_code == 404
    assert (await api.get(f"/api/v1/webhooks/{unknown}/deliveries")).status_code == 404
    assert (await api.get("/api/v1/webhooks/not-a-uuid/deliveries")).status_code == 422
    schema = (await api.get("/openapi.json")).json()
    assert "notifications" in [tag["name"] for tag in schema["tags"]]
    assert schema["paths"]["/api/v1/webhooks"]["post"]["tags"] == ["notifications"]
    assert "secret" not in schema["components"]["schemas"]["WebhookOut"]["properties"]
