"""Webhooks cannot be aimed at the hub's own network: refused when created (every spelling of loopback, private,
link-local, ... addresses, user:pass@ URLs) and again when the hub connects, after DNS, so a name that rebinds
to 127.0.0.1 reaches nothing. The connection goes to the checked address while the Host header, TLS SNI and
certificate verification keep the URL's name. Neither a URL's token nor the signing secret reaches the log.

The receiver is real (uvicorn on loopback); only DNS answers are played, by substituting the resolver."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from starlette.applications import Starlette
from starlette.routing import Route

from hub.alerting import egress
from hub.alerting.egress_policy import EgressPolicy, literal_address, parse_allowed
from hub.alerting.models import WebhookDelivery
from hub.api.deps import get_now, get_session
from hub.app import create_app
from hub.db.engine import session_factory
from hub.settings import load_hub_settings
from launcher.broker import free_port
from storegate.configfile import ConfigError
from tests.hub.alerting.test_notifications import (
    T0,
    Receiver,
    add_webhook,
    deliveries,
    dispatcher_for,
    hub_settings_for,
    receiver,
    record,
    sample,
)
from tests.hub.conftest import RunningHub, act_as, until

__all__ = ["receiver"]  # the fixture, used by name

NO_ALLOW_LIST: dict[str, Any] = {"webhook_allowed_networks": ()}
REFUSED = "storegate_hub_webhook_targets_refused_total"


@dataclass
class PlayedDns:
    """DNS answers the test chooses, per name; every question is recorded."""

    answers: dict[str, list[str]]
    asked: list[str]

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> PlayedDns:
    """The system resolver replaced, at its lowest layer, by answers the test sets."""
    played = PlayedDns(answers={}, asked=[])
    monkeypatch.setattr(egress, "resolve", played)
    return played


def api_for(engine: AsyncEngine, tmp_path: Path, **notifications: Any) -> httpx.AsyncClient:
    """An HTTP client on the hub's app whose webhooks have these notification settings."""
    app = create_app(hub_settings_for(tmp_path, notifications=notifications))
    sessions = session_factory(engine)

    async def session() -> AsyncIterator[AsyncSession]:
        async with sessions() as s:
            yield s

    app.dependency_overrides[get_session] = session
    app.dependency_overrides[get_now] = lambda: T0
    act_as(app)  # an admin: the gate's own tests are in tests/hub/auth
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


# --------------------------------------------------------------------------- the policy, pure


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("0x7f000001", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("[fe80::1%25eth0]".replace("%25", "%"), "fe80::1"),
        ("alarms.example.com", None),
        ("1.example", None),
    ],
)
def test_every_spelling_of_an_address_is_read_as_the_resolver_would(host: str, address: str | None) -> None:
    assert literal_address(host) == (None if address is None else ipaddress.ip_address(address))


def test_the_allow_list_takes_networks_and_host_names_and_refuses_anything_else() -> None:
    policy = EgressPolicy.from_entries(["10.20.0.0/16", "127.0.0.1", "Receiver.Internal."])
    assert policy.addresses_problem("10.20.3.4", [ipaddress.ip_address("10.20.3.4")]) is None
    assert policy.addresses_problem("x", [ipaddress.ip_address("10.21.0.1")]) is not None
    assert policy.addresses_problem("::ffff:127.0.0.1", [ipaddress.ip_address("::ffff:127.0.0.1")]) is None
    assert policy.addresses_problem("receiver.internal", [ipaddress.ip_address("192.168.9.9")]) is None
    # A public and a private answer together: refused, whichever the connection would have used.
    mixed = [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("192.168.0.1")]
    assert "192.168.0.1, a private address" in (EgressPolicy().addresses_problem("shop.example", mixed) or "")
    for bad in ("", "10.0.0.0/33", "a b", "http://x"):
        with pytest.raises(ValueError, match=r"empty|neither a network"):
            parse_allowed(bad)


def test_a_bad_allow_list_entry_is_a_settings_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="webhook_allowed_networks"):
        load_hub_settings(
            None,
            database_url="sqlite+aiosqlite:///unused.sqlite3",
            notifications={"webhook_allowed_networks": ["10.0.0.0/33"]},
        )


# --------------------------------------------------------------------------- refused when created


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:6379/", "127.0.0.1 is a loopback address"),
        ("http://localhost:5432/", "localhost resolves to 127.0.0.1, a loopback address"),
        ("http://LocalHost.:3306/", "localhost resolves to 127.0.0.1, a loopback address"),
        ("http://db.localhost/", "db.localhost resolves to 127.0.0.1, a loopback address"),
        ("http://[::1]:8000/", "::1 is a loopback address"),
        ("http://0x7f000001/", "0x7f000001 is 127.0.0.1, a loopback address"),
        ("http://2130706433/", "2130706433 is 127.0.0.1, a loopback address"),
        ("http://017700000001/", "017700000001 is 127.0.0.1, a loopback address"),
        ("http://127.1/", "127.1 is 127.0.0.1, a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1 is 127.0.0.1, a loopback address"),
        ("http://[::ffff:a9fe:a9fe]/", "169.254.169.254, a link-local address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("https://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("https://192.168.1.20/hook", "192.168.1.20 is a private address"),
        ("https://172.16.0.1/hook", "172.16.0.1 is a private address"),
        ("http://[fd00::1]/", "fd00::1 is a private address"),
        ("http://[fe80::1]/", "fe80::1 is a link-local address"),
        ("http://224.0.0.1/", "224.0.0.1 is a multicast address"),
        ("http://0.0.0.0:8000/", "0.0.0.0 is an unspecified address"),
        ("http://[::]/", ":: is an unspecified address"),
        ("http://100.64.0.1/", "100.64.0.1 is a not globally routable address"),
        ("http://240.0.0.1/", "240.0.0.1 is a"),
    ],
)
async def test_create_refuses_targets_on_the_hubs_own_network(
    sqlite_engine: AsyncEngine, tmp_path: Path, url: str, why: str
) -> None:
    async with api_for(sqlite_engine, tmp_path, **NO_ALLOW_LIST) as api:
        response = await api.post("/api/v1/webhooks", json={"url": url})
        assert response.status_code == 422, response.text
        message = response.json()["message"]
        assert message.startswith("url: "), message
        assert why in message
        assert "notifications.webhook_allowed_networks" in message  # says how an admin would allow it
        assert (await api.get("/api/v1/webhooks")).json()["items"] == []


@pytest.mark.parametrize(
    "url",
    [
        "https://alice:hunter2-password@alarms.example.com/in",
        "https://alice@alarms.example.com/in",
        "https://:hunter2-password@alarms.example.com/in",
        "https://alarms.example.com@127.0.0.1/in",
    ],
)
async def test_create_refuses_userinfo_without_echoing_it(sqlite_engine: AsyncEngine, tmp_path: Path, url: str) -> None:
    async with api_for(sqlite_engine, tmp_path, **NO_ALLOW_LIST) as api:
        response = await api.post("/api/v1/webhooks", json={"url": url})
        assert response.status_code == 422, response.text
        assert response.json()["message"].startswith("url: must not contain a user name or password")
        assert "hunter2" not in response.text
        assert (await api.get("/api/v1/webhooks")).json()["items"] == []


async def test_create_resolves_a_name_and_refuses_one_that_points_inside(
    engine: AsyncEngine, dns: PlayedDns, tmp_path: Path
) -> None:
    dns.answers["intranet.example"] = ["10.9.8.7"]
    dns.answers["alarms.example"] = ["93.184.216.34", "2606:2800:220:1::1"]
    async with api_for(engine, tmp_path, **NO_ALLOW_LIST) as api:
        inside = await api.post("/api/v1/webhooks", json={"url": "https://intranet.example/hook"})
        assert inside.status_code == 422
        assert "intranet.example resolves to 10.9.8.7, a private address" in inside.json()["message"]
        public = await api.post("/api/v1/webhooks", json={"url": "https://alarms.example/hook"})
        assert public.status_code == 201, public.text
        # Unknown to DNS today: accepted, and checked again (after DNS) each time the hub connects.
        later = await api.post("/api/v1/webhooks", json={"url": "https://not-yet.example/hook"})
        assert later.status_code == 201, later.text
    assert dns.asked == ["intranet.example", "alarms.example", "not-yet.example"]


async def test_an_admin_allow_list_lets_a_named_or_numbered_inside_target_through(
    engine: AsyncEngine, dns: PlayedDns, tmp_path: Path
) -> None:
    dns.answers["receiver.internal"] = ["10.9.8.7"]
    async with api_for(engine, tmp_path, webhook_allowed_networks=["127.0.0.1/32", "receiver.internal"]) as api:
        for url in ("http://127.0.0.1:8080/in", "http://0x7f000001:8080/in", "https://receiver.internal/in"):
            response = await api.post("/api/v1/webhooks", json={"url": url})
            assert response.status_code == 201, (url, response.text)
        # Only what is listed: ::1 is loopback too, and not on the list.
        assert (await api.post("/api/v1/webhooks", json={"url": "http://[::1]:8080/in"})).status_code == 422
        assert (await api.post("/api/v1/webhooks", json={"url": "http://localhost:8080/in"})).status_code == 422
        assert (await api.post("/api/v1/webhooks", json={"url": "http://10.9.8.8/in"})).status_code == 422


async def test_the_running_hub_counts_and_logs_what_it_refuses(
    hub: RunningHub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await hub.client.post("/api/v1/webhooks", json={"url": "http://169.254.169.254/latest/meta-data/"})
    assert response.status_code == 422
    assert sample(hub.runtime.metrics.registry, "storegate_hub_webhook_urls_refused_total") == 1
    assert "webhook_url_refused" in caplog.text
    assert "169.254.169.254 is a link-local address" in caplog.text
    assert (await hub.client.get("/api/v1/webhooks")).json()["items"] == []


# --------------------------------------------------------------------------- refused when connecting


async def test_stored_targets_on_loopback_are_never_contacted(engine: AsyncEngine, receiver: Receiver) -> None:
    """Webhooks stored before this check (or edited in the database) still cannot reach loopback services."""
    port = receiver.base_url.rsplit(":", 1)[1]
    targets = [
        f"{receiver.base_url}/redis",
        f"http://localhost:{port}/postgres",
        f"http://0x7f000001:{port}/mariadb",
        f"http://[::ffff:127.0.0.1]:{port}/mapped",
        "http://127.0.0.1:6379/",  # the real Redis of this machine
        "http://127.0.0.1:5432/",  # PostgreSQL
        "http://127.0.0.1:3306/",  # MariaDB
    ]
    ids = [await add_webhook(engine, url) for url in targets]
    await record(engine)
    registry = CollectorRegistry()
    dispatcher = dispatcher_for(engine, registry=registry, **NO_ALLOW_LIST)
    try:
        assert await dispatcher.deliver_due() == len(targets)
    finally:
        await dispatcher.stop()
    outcome = {d.webhook_id: d for d in await deliveries(engine)}
    for webhook_id, url in zip(ids, targets, strict=True):
        error = outcome[webhook_id].last_error or ""
        assert "WebhookTargetRefused" in error, (url, error)
        assert "loopback address" in error, (url, error)
        assert outcome[webhook_id].last_status_code is None
        assert outcome[webhook_id].status == "pending"  # retried later like any unreachable receiver
    assert receiver.hits == []
    assert sample(registry, REFUSED) == len(targets)


async def test_dns_rebinding_to_loopback_is_refused_at_connect_time(
    engine: AsyncEngine, receiver: Receiver, dns: PlayedDns, tmp_path: Path
) -> None:
    port = receiver.base_url.rsplit(":", 1)[1]
    dns.answers["rebind.example"] = ["93.184.216.34"]  # public when the webhook is created
    async with api_for(engine, tmp_path, **NO_ALLOW_LIST) as api:
        created = await api.post("/api/v1/webhooks", json={"url": f"http://rebind.example:{port}/in"})
        assert created.status_code == 201, created.text
    webhook_id = created.json()["webhook_id"]
    await record(engine)
    registry = CollectorRegistry()
    dispatcher = dispatcher_for(engine, registry=registry, **NO_ALLOW_LIST)
    try:
        for answers in (["127.0.0.1"], ["93.184.216.34", "127.0.0.1"], ["::ffff:7f00:1"]):
            dns.answers["rebind.example"] = answers  # the attacker's DNS now answers loopback
            await dispatcher.webhooks.close()  # no pooled connection: the next attempt resolves again
            async with session_factory(engine)() as session, session.begin():  # due again now
                await session.execute(update(WebhookDelivery).values(next_attempt_at=T0))
            assert await dispatcher.deliver_due() == 1
            [delivery] = await deliveries(engine, webhook_id)
            assert "rebind.example resolves to 127.0.0.1, a loopback address" in (delivery.last_error or "")
    finally:
        await dispatcher.stop()
    assert receiver.hits == []
    assert sample(registry, REFUSED) == 3


async def test_connection_is_pinned_to_the_checked_address_and_keeps_the_host_header(
    engine: AsyncEngine, receiver: Receiver, dns: PlayedDns, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = receiver.base_url.rsplit(":", 1)[1]
    dns.answers["alarms.test"] = ["127.0.0.1"]
    # A proxy from the environment is never used: it would make the connection, unchecked.
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    webhook_id = await add_webhook(engine, f"http://alarms.test:{port}/ok")
    await record(engine)
    dispatcher = dispatcher_for(engine, webhook_allowed_networks=("127.0.0.1/32",))
    try:
        assert await dispatcher.deliver_due() == 1
    finally:
        await dispatcher.stop()
    [hit] = receiver.hits
    assert hit.headers["host"] == f"alarms.test:{port}"
    assert [d.status for d in await deliveries(engine, webhook_id)] == ["delivered"]
    assert dns.asked == ["alarms.test"]


# --------------------------------------------------------------------------- TLS keeps the name


@dataclass
class Tls:
    """A CA and a server certificate for one DNS name, as files and as a client context trusting the CA."""

    cert_file: Path
    key_file: Path
    client_context: ssl.SSLContext


def make_tls(directory: Path, name: str) -> Tls:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "storegate test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return Tls(cert_file=cert_file, key_file=key_file, client_context=context)


async def test_tls_is_verified_for_the_urls_name_while_connecting_to_the_pinned_address(
    engine: AsyncEngine, dns: PlayedDns, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path, "alarms.test")
    state = Receiver()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/{name}", state.handle, methods=["POST"])]),
            lifespan="off",
            log_config=None,
            ssl_certfile=str(tls.cert_file),
            ssl_keyfile=str(tls.key_file),
        )
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await until(lambda: server.started, timeout=10, what="the TLS receiver listening")
        dns.answers["alarms.test"] = ["127.0.0.1"]
        dns.answers["impostor.test"] = ["127.0.0.1"]  # same address, a name the certificate does not cover
        good = await add_webhook(engine, f"https://alarms.test:{port}/ok")
        bad = await add_webhook(engine, f"https://impostor.test:{port}/ok")
        await record(engine)
        dispatcher = dispatcher_for(engine, ssl_context=tls.client_context, webhook_allowed_networks=("127.0.0.1/32",))
        try:
            assert await dispatcher.deliver_due() == 2
        finally:
            await dispatcher.stop()
        outcome = {d.webhook_id: d for d in await deliveries(engine)}
        assert outcome[good].status == "delivered", outcome[good].last_error
        assert "certificate" in (outcome[bad].last_error or "").lower(), outcome[bad].last_error
        assert [hit.headers["host"] for hit in state.hits] == [f"alarms.test:{port}"]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


# --------------------------------------------------------------------------- nothing secret in the log


async def test_no_log_line_carries_a_urls_token_or_the_signing_secret(
    engine: AsyncEngine, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, as a hub run with log_level = "DEBUG"
    secret = "signing-secret-never-logged-42"
    token = "url-token-never-logged-42"
    dispatcher = dispatcher_for(engine, max_attempts=1)  # the hub starts, then webhooks are added
    try:
        await add_webhook(engine, f"{receiver.base_url}/ok?token={token}", secret=secret)
        await add_webhook(engine, f"{receiver.base_url}/broken?token={token}", secret=secret)
        await add_webhook(engine, f"http://127.0.0.1:{free_port()}/nobody?token={token}", secret=secret)
        await record(engine)
        assert await dispatcher.deliver_due() == 3
    finally:
        await dispatcher.stop()
    assert {d.status for d in await deliveries(engine)} == {"delivered", "failed"}
    assert len(receiver.hits) == 2
    # uvicorn is the receiver's server here, and a receiver may log what it likes of its own requests.
    hub_lines = [f"{r.getMessage()} {r.__dict__}" for r in caplog.records if not r.name.startswith("uvicorn")]
    assert any("webhook_delivery_failed" in line for line in hub_lines)  # the sender did log
    for text in (secret, token):
        assert not [line for line in hub_lines if text in line]
