"""Fixtures of the scheduled reports' tests: a clock the test moves, a webhook receiver served by uvicorn on
loopback, a real SMTP server (aiosmtpd) on loopback, and schedules written as the API writes them."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.alerting.secret_box import SecretBox, key_file, new_key
from hub.db.engine import session_factory
from hub.metrics import HubMetrics
from hub.reports.schedules.models import ReportDelivery, ReportSchedule
from hub.reports.schedules.runner import ScheduleRunner
from hub.reports.schedules.timing import When, parse_local_time, zone_of
from hub.settings import HubSettings, load_hub_settings
from storegate.private_files import private_dir, write_private
from tests.hub.conftest import until

# The webhook key of these tests: schedules are sealed with it, runners open with it.
TEST_KEY = new_key()
TEST_BOX = SecretBox([TEST_KEY])
SECRET = "report-secret-0123456789abcdef"
# A Tuesday morning in UTC: a daily run at 06:00 UTC reports Monday 2025-03-03.
T0 = datetime(2025, 3, 4, 6, 0, 30, tzinfo=UTC)
LOOPBACK_ALLOWED: dict[str, Any] = {"webhook_allowed_networks": ("127.0.0.1/32",)}


@dataclass
class FakeClock:
    """The runner's clock, moved by the test."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def settings_for(tmp_path: Path, database_url: str, **overrides: Any) -> HubSettings:
    """Settings on ``database_url`` whose secrets directory holds TEST_KEY; loopback webhooks allowed."""
    secrets_dir = private_dir(tmp_path / "hub-secrets")
    if not key_file(secrets_dir).exists():
        write_private(key_file(secrets_dir), TEST_KEY + "\n")
    overrides.setdefault("notifications", LOOPBACK_ALLOWED)
    return load_hub_settings(None, database_url=database_url, secrets_dir=secrets_dir, **overrides)


def runner_for(engine: AsyncEngine, settings: HubSettings, clock: FakeClock) -> ScheduleRunner:
    """A runner as the hub makes one (not started: the test runs its passes)."""
    return ScheduleRunner(engine=engine, settings=settings, metrics=HubMetrics(), secret_box=TEST_BOX, clock=clock)


async def add_schedule(
    engine: AsyncEngine,
    *,
    now: datetime = T0 - timedelta(days=1),
    kind: str = "sales",
    output: str = "csv",
    webhook_url: str | None = None,
    email_to: list[str] | None = None,
    cadence: str = "daily",
    weekday: int | None = None,
    at: str = "06:00",
    timezone: str = "UTC",
    store_ids: list[str] | None = None,
    region: str | None = None,
    next_run_at: datetime | None = None,
) -> str:
    """A schedule as the API stores one; it fires next at its first time after ``now``. Its id."""
    when = When(cadence=cadence, at=parse_local_time(at), zone=zone_of(timezone), weekday=weekday)  # type: ignore[arg-type]
    schedule_id = str(uuid.uuid4())
    async with session_factory(engine)() as session:
        session.add(
            ReportSchedule(
                schedule_id=schedule_id,
                name="Daily sales",
                kind=kind,
                format=output,
                store_scope="region" if region is not None else "all" if store_ids is None else "stores",
                region=region,
                store_ids=store_ids,
                cadence=cadence,
                weekday=weekday,
                local_time=at,
                timezone=timezone,
                webhook_url=webhook_url,
                webhook_secret_sealed=TEST_BOX.seal(SECRET) if webhook_url is not None else None,
                email_to=email_to,
                enabled=True,
                next_run_at=next_run_at or when.next_after(now),
                created_at=now,
                created_by="tests",
                updated_at=now,
            )
        )
        await session.commit()
    return schedule_id


async def deliveries_of(engine: AsyncEngine, schedule_id: str) -> list[ReportDelivery]:
    """The schedule's deliveries, oldest first."""
    from sqlalchemy import select

    async with session_factory(engine)() as session:
        query = select(ReportDelivery).where(ReportDelivery.schedule_id == schedule_id).order_by(ReportDelivery.id)
        return list((await session.scalars(query)).all())


# --------------------------------------------------------------------------- a webhook receiver


@dataclass
class Hit:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A tiny HTTP server that records requests; ``/flaky`` fails the first ``fail_first`` with 500."""

    base_url: str = ""
    fail_first: int = 0
    hits: list[Hit] = field(default_factory=list)

    def on(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        self.hits.append(Hit(path, {k.lower(): v for k, v in request.headers.items()}, await request.body()))
        if path == "/broken":
            return Response(b"<html>internal token abc</html>", status_code=500)
        if path == "/flaky" and len(self.on("/flaky")) <= self.fail_first:
            return Response(b"receiver down for maintenance", status_code=503)
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
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


# --------------------------------------------------------------------------- an SMTP server


SMTP_USER = "hub"
SMTP_PASSWORD = "smtp-pass-9f8e7d"


@dataclass
class Mailbox:
    """What the SMTP server accepted: (envelope sender, recipients, message)."""

    port: int = 0
    messages: list[tuple[str, list[str], Message]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self.lock:
            self.messages.append((str(envelope.mail_from), list(envelope.rcpt_tos), message_from_bytes(content)))
        return "250 OK"

    def received(self) -> list[tuple[str, list[str], Message]]:
        with self.lock:
            return list(self.messages)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def smtp_server(**options: Any) -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) on loopback that takes a login of SMTP_USER / SMTP_PASSWORD."""
    box = Mailbox()

    def authenticate(server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any) -> Any:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == SMTP_USER.encode()
            and data.password == SMTP_PASSWORD.encode()
        )
        if ok:
            box.logins.append(SMTP_USER)
        return AuthResult(success=ok)

    box.port = _free_port()
    controller = Controller(box, hostname="127.0.0.1", port=box.port, authenticator=authenticate, **options)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """An SMTP server without TLS (a login allowed in plain text: a relay on loopback)."""
    with smtp_server(auth_require_tls=False) as box:
        yield box


@dataclass
class Tls:
    """A CA and a certificate for ``localhost`` signed by it: the CA's PEM file and the server's context."""

    ca_file: Path
    server_context: ssl.SSLContext


def make_tls(directory: Path) -> Tls:
    """A throwaway CA and a server certificate for the name ``localhost``."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "storegate test mail CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = directory / "mail-ca.pem", directory / "mail.pem", directory / "mail.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return Tls(ca_file=ca_file, server_context=context)
