"""Fixtures of the hub's tests: databases (SQLite in tmp_path, a throwaway PostgreSQL database), messages, a
running hub app, and a plain paho client that plays the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]
import httpx
import paho.mqtt.client as paho
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.api.deps import get_now, get_runtime, get_session
from hub.app import _validation_error, create_app, lifespan
from hub.auth import credentials, guard, operators
from hub.db.engine import create_engine, session_factory
from hub.db.migrate import upgrade_to_head
from hub.domain.access import Principal, Role
from hub.runtime import HubRuntime
from hub.settings import HubSettings, load_hub_settings
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.conftest import eventually, wait_until

# Where the PostgreSQL of the tests is: STOREGATE_TEST_POSTGRES_URL, else these (trust auth on loopback).
POSTGRES_CANDIDATES = (
    "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    "postgresql+asyncpg://root@127.0.0.1:5432/test",
)


async def until(predicate: Callable[[], object], *, timeout: float = 5.0, what: str) -> None:
    """Wait, without blocking the loop, until ``predicate()`` is truthy; fail after ``timeout`` seconds."""

    async def probe() -> bool:
        return bool(predicate())

    await eventually(probe, timeout=timeout, what=what)


# Argon2id with the least work argon2-cffi allows. The hub's parameters (argon2-cffi's defaults: 64 MiB, 3
# passes) cost a third of a second a hash or a check on the test machine, and the tests add and sign in
# hundreds of operators; what they test (the hashing and checking code, the refusals, the decoy) is the same.
TEST_PASSWORD_HASHER: Final = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(autouse=True)
def _cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash operators' passwords with TEST_PASSWORD_HASHER in this process."""
    monkeypatch.setattr(credentials, "_hasher", TEST_PASSWORD_HASHER)


@pytest.fixture(autouse=True)
def _no_hub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings of the machine running the tests must not leak into them."""
    for key in list(os.environ):
        if key.upper().startswith("STOREGATE_HUB_"):
            monkeypatch.delenv(key)


# --------------------------------------------------------------------------- databases


# Each test gets a database of its own, cloned from one migrated once per session: migrating takes
# longer than copying. The migrations themselves are tested on empty databases (empty_database_url).


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the newest revision, for tests to copy."""
    path = tmp_path_factory.mktemp("migrated") / "hub.sqlite3"
    asyncio.run(upgrade_to_head(f"sqlite+aiosqlite:///{path}"))
    with contextlib.closing(sqlite3.connect(path)) as connection:  # everything into the main file
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, migrated_sqlite_file: Path) -> str:
    """A SQLite database file in this test's directory, at the newest revision."""
    path = tmp_path / "hub.sqlite3"
    shutil.copyfile(migrated_sqlite_file, path)
    return f"sqlite+aiosqlite:///{path}"


async def _admin_connection() -> tuple[asyncpg.Connection, str]:
    configured = os.environ.get("STOREGATE_TEST_POSTGRES_URL")
    errors = []
    for candidate in (configured,) if configured else POSTGRES_CANDIDATES:
        url = make_url(candidate)
        try:
            connection = await asyncpg.connect(
                host=url.host,
                port=url.port or 5432,
                user=url.username,
                password=url.password,
                database=url.database,
                timeout=5,
            )
        except (OSError, asyncpg.PostgresError) as err:
            errors.append(f"{url.render_as_string(hide_password=True)}: {err}")
            continue
        return connection, candidate
    message = "PostgreSQL for the tests is not reachable: " + "; ".join(errors)
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run the PostgreSQL tests: start PostgreSQL in .ci/run)")
    pytest.skip(message)


async def _create_database(template: str | None = None) -> tuple[str, str]:
    """Create a database (as a copy of ``template``); return its name and URL."""
    admin, base_url = await _admin_connection()
    name = f"storegate_test_{uuid.uuid4().hex[:16]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    finally:
        await admin.close()
    return name, make_url(base_url).set(database=name).render_as_string(hide_password=False)


async def _drop_database(name: str) -> None:
    admin, _ = await _admin_connection()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """The name of a PostgreSQL database at the newest revision, the template of each test's database."""
    name, url = asyncio.run(_create_database())
    try:
        asyncio.run(upgrade_to_head(url))
        yield name
    finally:
        asyncio.run(_drop_database(name))


class PostgresDropper:
    """Drops the tests' PostgreSQL databases in threads, so that no test waits for it.

    On PostgreSQL 15 DROP DATABASE forces an immediate checkpoint: a second or more on a busy machine. Several
    droppers run at once, so that checkpoints requested together are done once. The session waits for every
    drop at its end, and a drop that failed fails the run there.
    """

    def __init__(self) -> None:
        self._threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="postgres-drop")
        self._drops: list[Future[None]] = []

    def drop(self, name: str) -> None:
        """Drop the database ``name`` (its connections forced closed) in the background."""
        self._drops.append(self._threads.submit(asyncio.run, _drop_database(name)))

    def close(self) -> None:
        """Wait for every drop; raise the first that failed."""
        self._threads.shutdown()
        for dropped in self._drops:
            dropped.result()


@pytest.fixture(scope="session")
def postgres_dropper() -> Iterator[PostgresDropper]:
    """The session's dropper of PostgreSQL databases."""
    dropper = PostgresDropper()
    try:
        yield dropper
    finally:
        dropper.close()


class PostgresCopies:
    """Fresh copies of the template, each made in a thread before a test asks for it.

    A copy is as fresh as before (made from the template, used by one test, then dropped); only the waiting
    moves. CREATE DATABASE writes the whole copy to the WAL: a second or more on a busy machine, which each
    PostgreSQL test used to spend in its setup. Now the next test's copy is made while a test runs.
    """

    def __init__(self, template: str, dropper: PostgresDropper) -> None:
        self._template = template
        self._dropper = dropper
        # One maker: a copy ahead is enough, and the copies do not compete with each other for the disk.
        self._maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="postgres-copy")
        self._ahead: deque[Future[tuple[str, str]]] = deque()

    def _make_one(self) -> None:
        self._ahead.append(self._maker.submit(asyncio.run, _create_database(self._template)))

    async def take(self) -> tuple[str, str]:
        """A fresh copy's name and URL (drop it with the dropper); the next test's copy is started."""
        if not self._ahead:
            self._make_one()
        made = self._ahead.popleft()
        self._make_one()
        return await asyncio.wrap_future(made)

    def close(self) -> None:
        """Drop the copies made ahead that no test took."""
        self._maker.shutdown()
        for made in self._ahead:
            with contextlib.suppress(BaseException):  # a copy that could not be made has nothing to drop
                self._dropper.drop(made.result()[0])


@pytest.fixture(scope="session")
def postgres_copies(postgres_template: str, postgres_dropper: PostgresDropper) -> Iterator[PostgresCopies]:
    """The session's maker of copies of the template."""
    copies = PostgresCopies(postgres_template, postgres_dropper)
    try:
        yield copies
    finally:
        copies.close()


@pytest.fixture
async def postgres_url(postgres_copies: PostgresCopies, postgres_dropper: PostgresDropper) -> AsyncIterator[str]:
    """A PostgreSQL database of its own for this test, at the newest revision, dropped afterwards."""
    name, url = await postgres_copies.take()
    try:
        yield url
    finally:
        postgres_dropper.drop(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL, each database at the newest revision."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database, before any migration, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    dropper: PostgresDropper = request.getfixturevalue("postgres_dropper")
    name, url = await _create_database()
    try:
        yield url
    finally:
        dropper.drop(name)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database and its engine."""
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite database and its engine, for tests of what is refused before anything is stored (the
    database plays no part, so running them on PostgreSQL too would prove nothing more)."""
    engine = create_engine(sqlite_url)
    try:
        yield engine
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- messages

BASE_TS = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def reading(
    *,
    store_id: str = "store-0001",
    gateway_id: str = "gw-1",
    stream: uuid.UUID,
    seq: int,
    device_id: str = "fridge-1",
    value: float = 4.2,
    event_id: uuid.UUID | None = None,
    ts: datetime | None = None,
) -> wire.Event:
    """One temperature reading event."""
    return wire.Event(
        event_id=event_id or uuid.uuid4(),
        store_id=store_id,
        gateway_id=gateway_id,
        stream=stream,
        seq=seq,
        device_id=device_id,
        kind="environment.reading",
        ts=ts or BASE_TS + timedelta(seconds=seq),
        payload={"quantity": "temperature", "value": value, "unit": "Cel"},
    )


def batch_of(events: list[wire.Event]) -> wire.EventBatch:
    """The events as one batch of their gateway."""
    return wire.EventBatch(
        store_id=events[0].store_id, gateway_id=events[0].gateway_id, sent_at=wire.utc_now(), events=events
    )


def status(
    online: bool, reason: str, *, store_id: str = "store-0001", gateway_id: str = "gw-1", **extra: Any
) -> wire.GatewayStatus:
    """A birth or last-will message."""
    return wire.GatewayStatus(
        store_id=store_id, gateway_id=gateway_id, online=online, reason=reason, ts=wire.utc_now(), **extra
    )


# --------------------------------------------------------------------------- the hub


@pytest.fixture
def hub_settings(sqlite_url: str, mqtt_settings: MqttSettings, tmp_path: Path) -> HubSettings:
    """Settings of a hub on this test's broker and SQLite file, with its secrets in this test's directory.

    It accepts gateways it has never seen (enrolling them on first contact), so tests about other things need
    not enrol their gateways; tests/hub/fleet proves the refusal with the setting off.
    """
    return load_hub_settings(
        None,
        database_url=sqlite_url,
        mqtt=mqtt_settings,
        client_id=f"hub-{uuid.uuid4().hex[:8]}",
        secrets_dir=tmp_path / "hub-secrets",
        accept_unknown_gateways=True,
    )


HUB_BASE_URL = "http://127.0.0.1"


async def make_token(
    runtime: HubRuntime,
    role: str,
    *,
    store_ids: Sequence[str] | None = None,
    regions: Sequence[str] | None = None,
    name: str | None = None,
    lifetime: timedelta = timedelta(days=1),
) -> str:
    """An API token of ``role`` (optionally scoped), made through hub.auth as an admin would; its text."""
    async with runtime.sessions() as session:
        _, text = await operators.create_token(
            session,
            name=name or f"test-{role}-{uuid.uuid4().hex[:6]}",
            role=role,
            scope=operators.Scope.of(store_ids, regions),
            lifetime=lifetime,
            by="tests",
            now=wire.utc_now(),
        )
        await session.commit()
    return text


async def token_in_database(database_url: str, role: str = "admin", *, name: str | None = None) -> str:
    """An API token written straight into the database, migrated first (for hubs served by ``serve``); its text."""
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            _, text = await operators.create_token(
                session,
                name=name or f"test-{role}",
                role=role,
                scope=operators.Scope(),
                lifetime=timedelta(days=1),
                by="tests",
                now=wire.utc_now(),
            )
            await session.commit()
    finally:
        await engine.dispose()
    return text


@dataclass
class RunningHub:
    """An app whose lifespan has run, and an HTTP client for it, signed in as an admin of the whole chain."""

    app: FastAPI
    client: httpx.AsyncClient

    @property
    def runtime(self) -> HubRuntime:
        """The app's long-lived objects."""
        runtime: HubRuntime = self.app.state.runtime
        return runtime

    def anonymous(self) -> httpx.AsyncClient:
        """A client without credentials (close it, or use it in ``async with``)."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=HUB_BASE_URL)

    def client_with(self, token: str) -> httpx.AsyncClient:
        """A client that sends ``token``."""
        client = self.anonymous()
        client.headers["Authorization"] = f"Bearer {token}"
        return client

    async def client_as(
        self, role: str, *, store_ids: Sequence[str] | None = None, regions: Sequence[str] | None = None
    ) -> httpx.AsyncClient:
        """A client with a fresh token of ``role``, optionally scoped to stores or regions."""
        return self.client_with(await make_token(self.runtime, role, store_ids=store_ids, regions=regions))


@contextlib.asynccontextmanager
async def running_hub(settings: HubSettings, *, role: str | None = "admin") -> AsyncIterator[RunningHub]:
    """Start a hub app (migrations, MQTT, consumer) and give an HTTP client on it with a token of ``role``
    (None: an anonymous client)."""
    app = create_app(settings)
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=HUB_BASE_URL) as client:
            if role is not None:
                client.headers["Authorization"] = f"Bearer {await make_token(app.state.runtime, role)}"
            yield RunningHub(app, client)


@pytest.fixture
async def hub(hub_settings: HubSettings) -> AsyncIterator[RunningHub]:
    """A running hub connected to this test's broker."""
    async with running_hub(hub_settings) as running:
        assert await running.runtime.link.wait_connected(5.0), "the hub did not connect to the test broker"
        yield running


# --------------------------------------------------------------------------- a gateway made of plain paho


@dataclass
class Received:
    """Messages a paho client received, guarded for the network thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    messages: list[paho.MQTTMessage] = field(default_factory=list)

    def on(self, topic: str) -> list[bytes]:
        """Payloads received on ``topic``."""
        with self.lock:
            return [bytes(m.payload) for m in self.messages if m.topic == topic]


class PlainGateway:
    """A paho client that publishes what a gateway would and collects what the hub sends back."""

    def __init__(self, settings: MqttSettings, *, client_id: str, will: tuple[str, bytes] | None = None) -> None:
        self.received = Received()
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self._subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect(settings.host, settings.port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self.received.lock:
            self.received.messages.append(message)

    def subscribe(self, topic: str) -> None:
        """Subscribe at QoS 1 and wait for the broker's SUBACK."""
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(5), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)
        assert info.is_published(), f"broker did not take the message on {topic}"

    def vanish(self) -> None:
        """Drop the TCP connection without DISCONNECT, so the broker publishes the last will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        """Disconnect cleanly."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gateway_client(mqtt_settings: MqttSettings) -> Iterator[PlainGateway]:
    """A plain paho client connected to this test's broker."""
    client = PlainGateway(mqtt_settings, client_id=f"test-gw-{uuid.uuid4().hex[:8]}")
    wait_until(client.client.is_connected, timeout=5, what="test client connected")
    try:
        yield client
    finally:
        client.close()


# The principal of apps built without the gate or without a lifespan (router_client, act_as).
TEST_ADMIN = Principal(kind="user", name="test-admin", role=Role.ADMIN, store_ids=None)


def act_as(app: FastAPI, who: Principal = TEST_ADMIN) -> None:
    """Make an app that runs without its lifespan (so without the database of its gate) take every request
    as ``who``: the gate's principal lookup is replaced, its policy is not checked. Tests of access itself
    use a running hub instead."""

    async def as_who(request: Request) -> None:
        request.state.principal = who

    app.dependency_overrides[guard.authorize] = as_who
    app.dependency_overrides[guard.principal] = lambda: who
    app.dependency_overrides[guard.maybe_principal] = lambda: who


@contextlib.asynccontextmanager
async def router_client(
    engine: AsyncEngine,
    *routers: Any,
    now: Callable[[], datetime],
    runtime: Any = None,
    who: Principal = TEST_ADMIN,
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on an app with only ``routers``, sessions of ``engine`` and the test's clock.

    The hub's 422 handler is installed, so errors read as they do in the hub; ``runtime`` stands in for
    the running hub's objects where a router needs them; handlers see ``who`` as the principal (the
    gate is not on this app: access is tested on the whole app, tests/hub/auth).
    """

    sessions = session_factory(engine)
    app = FastAPI()
    for router in routers:
        app.include_router(router)
    app.add_exception_handler(RequestValidationError, _validation_error)

    async def session() -> AsyncIterator[Any]:
        async with sessions() as s:
            yield s

    app.dependency_overrides[get_session] = session
    app.dependency_overrides[get_now] = now
    act_as(app, who)
    if runtime is not None:
        app.dependency_overrides[get_runtime] = lambda: runtime
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        yield http


async def refuse_device_in_events(hub: RunningHub, device_id: str) -> None:
    """Make the database refuse to insert events of ``device_id``, on SQLite and on PostgreSQL."""
    async with hub.runtime.engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            await connection.exec_driver_sql(
                f"CREATE TRIGGER refuse_poison BEFORE INSERT ON events WHEN NEW.device_id = '{device_id}' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
            return
        await connection.exec_driver_sql(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$BEGIN IF NEW.device_id = '{device_id}' THEN RAISE EXCEPTION 'refused by the test'; END IF; "
            "RETURN NEW; END$$"
        )
        await connection.exec_driver_sql(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
        )
