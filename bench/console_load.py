#!/usr/bin/env python3
"""The ops console under load (issue 16): page latency for many clients, bytes on the wire, and live alerts.

Seeds a fresh PostgreSQL database (created on 127.0.0.1:5432 with trust auth, migrated by the hub's migrations,
dropped at the end unless ``--keep-database``) with COPY through asyncpg:

- ``--stores`` stores (1,000) with profiles: English and Chinese names, seven time zones and currencies, regions;
  one gateway each (8 of them offline), two climate devices each;
- ``--alerts`` alerts (100,000) over the last 30 days: mixed rules and severities, ``--open-fraction`` open and
  half as many acknowledged, the rest resolved, with their history rows (opened, acknowledged, resolved);
- a week (``--days``) of environment readings of a chiller and a freezer per store, one every ``--reading-minutes``
  (30: 672,000 rows for 1,000 stores), in the events table as the ingest writes it.

Then starts the hub as two uvicorn processes, ``role = "api"`` (the pages) and ``role = "worker"`` (the consumer,
so events published through Mosquitto raise alerts), and a bare FastAPI endpoint served by uvicorn in a third,
and measures:

- p50/p95 latency of ``/``, ``/alerts`` and ``/stores/<id>`` for ``--clients`` concurrent clients (50, httpx,
  signed in), beside the bare endpoint in the same run (the baseline: what this machine's HTTP costs);
- the first load of ``/`` over the wire: the HTML and every script and style it references, gzip, in KB;
- the size of one live update (the first server-sent event after an alert is raised), in bytes;
- the time from an alert's commit to its row on screen, measured in Chromium with ``/alerts`` open, over
  ``--live-alerts`` alerts raised by receipt printers out of paper published through Mosquitto (p50/p95).

A page the hub does not serve (404) is reported as missing, not a crash. Not a test: it prints figures;
docs/benchmarks.md ("Ops console") records them with this command. Each phase is bounded in time.

Usage: .venv/bin/python bench/console_load.py [--stores 1000] [--alerts 100000] [--days 7] [--reading-minutes 30]
       [--clients 50] [--requests 500] [--phase-s 45] [--live-alerts 20] [--json out.json] [--keep-database]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.auth import operators  # noqa: E402 - after the path is set
from hub.auth.guard import CSRF_COOKIE, SESSION_COOKIE  # noqa: E402
from hub.db.engine import create_engine, session_factory  # noqa: E402
from hub.db.migrate import upgrade_to_head  # noqa: E402
from launcher.broker import LocalBroker, free_port, start_mosquitto  # noqa: E402
from storegate import wire  # noqa: E402
from storegate.mqtt import MqttSettings  # noqa: E402
from tests.browser.chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

ADMIN_CANDIDATES: Final = ("postgres", "root")
PASSWORD: Final = "bench console load password"
OPERATOR: Final = "bench-admin"
# (time zone, currency, region, names): a chain across Taiwan, China, Hong Kong, Japan, the UK, Germany and the US.
PLACES: Final = (
    ("Asia/Taipei", "TWD", "tw", ("台北信義店", "高雄左營店", "台中逢甲店")),
    ("Asia/Shanghai", "CNY", "cn", ("上海静安店", "北京朝阳店", "广州天河店")),
    ("Asia/Hong_Kong", "HKD", "hk", ("旺角店", "銅鑼灣店")),
    ("Asia/Tokyo", "JPY", "jp", ("Shibuya", "Umeda")),
    ("Europe/London", "GBP", "uk", ("Riverside", "Old Town", "Station Square")),
    ("Europe/Berlin", "EUR", "de", ("Hauptbahnhof", "Altstadt")),
    ("America/New_York", "USD", "us", ("Harbour View", "Hillside", "Midtown")),
)
# (rule id, kind, category, subject kind, severity, message)
RULES: Final = (
    ("door-after-hours", "door_after_hours", "security", "door", "critical", "door {s} opened while closed"),
    ("freezers", "environment_range", "environment", "zone", "critical", "freezer {s} above -18 °C"),
    ("gateway-offline", "gateway_offline", "operations", "gateway", "critical", "gateway {s} offline"),
    ("chillers", "environment_range", "environment", "zone", "warning", "chiller {s} outside 0-5 °C"),
    ("printer-paper-out", "printer_paper_out", "operations", "device", "warning", "printer {s} out of paper"),
    ("device-unplugged", "device_unplugged", "operations", "device", "warning", "device {s} unplugged"),
    ("back-room-humidity", "environment_range", "environment", "zone", "info", "humidity in {s} outside 30-70 %"),
)
OFFLINE_GATEWAYS: Final = 8
ALERT_DAYS: Final = 30


# --------------------------------------------------------------------------- the servers (subprocesses)


def serve_main(args: argparse.Namespace) -> None:
    """``--serve``: run one server in this process until SIGTERM (the bench's own subprocesses)."""
    from storegate.logs import configure_logging

    configure_logging(level="WARNING", json=False, process=args.serve)
    if args.serve == "bare":
        import uvicorn
        from fastapi import FastAPI

        bare = FastAPI()

        @bare.get("/bare")
        async def bare_endpoint() -> dict[str, str]:
            return {"status": "ok"}

        uvicorn.run(bare, host="127.0.0.1", port=args.port, log_level="warning", server_header=False)
        return
    from hub.app import serve
    from hub.settings import load_hub_settings

    settings = load_hub_settings(
        None,
        database_url=args.database_url,
        mqtt=MqttSettings(host="127.0.0.1", port=args.mqtt_port),
        http_port=args.port,
        role=args.serve.removeprefix("hub-"),
        client_id=f"bench-{args.serve}-{uuid.uuid4().hex[:6]}",
        secrets_dir=Path(args.secrets),
        accept_unknown_gateways=True,
        log_level="WARNING",
    )
    asyncio.run(serve(settings))


@contextlib.contextmanager
def server(kind: str, port: int, **options: str) -> Iterator[subprocess.Popen[bytes]]:
    """This script with ``--serve kind`` in a subprocess, stopped (SIGTERM, then SIGKILL) at the end."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port", str(port)]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", value]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


async def wait_http(url: str, process: subprocess.Popen[bytes], *, timeout: float = 60.0) -> None:
    """Until ``url`` answers 200; fails when the process died or the deadline passed."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the server for {url} exited with {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


# --------------------------------------------------------------------------- the database


async def admin_connection() -> asyncpg.Connection:
    errors = []
    for user in ADMIN_CANDIDATES:
        try:
            return await asyncpg.connect(host="127.0.0.1", port=5432, user=user, database="test", timeout=5)
        except (OSError, asyncpg.PostgresError) as err:
            errors.append(f"{user}: {err}")
    raise SystemExit("PostgreSQL at 127.0.0.1:5432 (trust auth, database test) is not reachable: " + "; ".join(errors))


@contextlib.asynccontextmanager
async def fresh_database(keep: bool) -> AsyncIterator[tuple[str, str]]:
    """A new database: its SQLAlchemy URL and the user; dropped at the end unless ``keep``."""
    admin = await admin_connection()
    user = str(admin._params.user)
    name = f"storegate_bench_console_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield f"postgresql+asyncpg://{user}@127.0.0.1:5432/{name}", user
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            admin = await admin_connection()
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


@dataclass
class Seeded:
    """What was written, for the report."""

    stores: int = 0
    gateways: int = 0
    offline_gateways: int = 0
    alerts: int = 0
    alerts_by_state: dict[str, int] = field(default_factory=dict)
    alerts_by_severity: dict[str, int] = field(default_factory=dict)
    alert_history: int = 0
    readings: int = 0
    seconds: float = 0.0


def store_ids(count: int) -> list[str]:
    return [f"store-{n:04d}" for n in range(1, count + 1)]


async def seed(database_url: str, args: argparse.Namespace, rng: random.Random) -> Seeded:
    """Stores, profiles, gateways, alerts with history and a week of readings, by COPY."""
    started = time.monotonic()
    seeded = Seeded()
    url = database_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(url)
    now = datetime.now(UTC).replace(microsecond=0)
    ids = store_ids(args.stores)
    try:
        # Stores, profiles and gateways.
        profiles, stores, gateways = [], [], []
        offline = set(rng.sample(ids, min(OFFLINE_GATEWAYS, len(ids))))
        per_store_readings = (args.days * 24 * 60 // args.reading_minutes) * 2
        for n, store_id in enumerate(ids):
            zone, currency, region, names = PLACES[n % len(PLACES)]
            name = f"{names[(n // len(PLACES)) % len(names)]} {n + 1}"
            profiles.append((store_id, name, zone, currency, json.dumps({}), None, None, region, now))
            stores.append((store_id, now - timedelta(days=90), now, per_store_readings))
            down = store_id in offline
            gateways.append(
                (
                    store_id,
                    "gw-1",
                    not down,
                    "lost" if down else "birth",
                    now - timedelta(hours=2 if down else 30),
                    now - timedelta(days=90),
                    now - timedelta(hours=2) if down else now,
                    "0.1.0",
                    "sha256:bench",
                    json.dumps(["climate-chiller", "climate-freezer", "receipt-printer"]),
                    None,
                    None,
                    now - timedelta(days=90),
                    "bench",
                    "operator",
                    None,
                    None,
                )
            )
        await connection.copy_records_to_table(
            "stores", records=stores, columns=["store_id", "first_seen", "last_event_at", "event_count"]
        )
        await connection.copy_records_to_table(
            "store_profiles",
            records=profiles,
            columns=[
                "store_id",
                "name",
                "timezone",
                "currency",
                "opening_hours",
                "latitude",
                "longitude",
                "region",
                "updated_at",
            ],
        )
        await connection.copy_records_to_table(
            "gateways",
            records=gateways,
            columns=[
                "store_id",
                "gateway_id",
                "online",
                "last_status_reason",
                "status_changed_at",
                "first_seen",
                "last_seen_at",
                "agent_version",
                "config_hash",
                "devices",
                "last_health",
                "last_health_at",
                "enrolled_at",
                "enrolled_by",
                "enrolment",
                "revoked_at",
                "revoked_by",
            ],
        )
        seeded.stores, seeded.gateways, seeded.offline_gateways = len(ids), len(gateways), len(offline)

        # Alerts and their history.
        alerts: list[tuple[Any, ...]] = []
        history: list[tuple[Any, ...]] = []
        states: Counter[str] = Counter()
        severities: Counter[str] = Counter()
        span_s = ALERT_DAYS * 86400
        for n in range(args.alerts):
            rule_id, kind, category, subject_kind, severity, message = RULES[rng.randrange(len(RULES))]
            store_id = ids[rng.randrange(len(ids))]
            draw = rng.random()
            state = (
                "open"
                if draw < args.open_fraction
                else "acknowledged"
                if draw < args.open_fraction * 1.5
                else "resolved"
            )
            subject = f"{subject_kind}-{n}"  # unique, so each live alert has its own active key
            opened = now - timedelta(seconds=rng.randrange(60, span_s))
            alert_id = str(uuid.uuid4())
            acknowledged_at = opened + timedelta(minutes=rng.randint(1, 30)) if state != "open" else None
            resolved_at = (
                acknowledged_at + timedelta(minutes=rng.randint(1, 120))
                if state == "resolved" and acknowledged_at
                else None
            )
            actor = f"ops-{rng.randint(1, 20)}"
            alerts.append(
                (
                    alert_id,
                    store_id,
                    rule_id,
                    kind,
                    category,
                    subject_kind,
                    subject,
                    f"{store_id}|{rule_id}|{subject_kind}:{subject}" if state != "resolved" else None,
                    severity,
                    state,
                    message.format(s=subject),
                    opened,
                    resolved_at or acknowledged_at or opened,
                    1,
                    json.dumps([str(uuid.uuid4())]),
                    None,
                    json.dumps([]),
                    0,
                    actor if acknowledged_at else None,
                    acknowledged_at,
                    actor if resolved_at else None,
                    resolved_at,
                    "done" if resolved_at else None,
                )
            )
            history.append((alert_id, opened, "opened", "rules", "open", None, None, opened))
            if acknowledged_at:
                history.append(
                    (alert_id, acknowledged_at, "acknowledged", actor, "acknowledged", "on it", None, acknowledged_at)
                )
            if resolved_at:
                history.append((alert_id, resolved_at, "resolved", actor, "resolved", "done", None, resolved_at))
            states[state] += 1
            severities[severity] += 1
        await connection.copy_records_to_table(
            "alerts",
            records=alerts,
            columns=[
                "alert_id",
                "store_id",
                "rule_id",
                "rule_kind",
                "category",
                "subject_kind",
                "subject_id",
                "active_key",
                "severity",
                "status",
                "message",
                "opened_at",
                "last_seen_at",
                "count",
                "evidence",
                "snapshot_ref",
                "escalate_after_s",
                "escalation_level",
                "acknowledged_by",
                "acknowledged_at",
                "resolved_by",
                "resolved_at",
                "resolution_note",
            ],
        )
        await connection.copy_records_to_table(
            "alert_history",
            records=history,
            columns=["alert_id", "at", "action", "actor", "status", "note", "level", "recorded_at"],
        )
        seeded.alerts, seeded.alert_history = len(alerts), len(history)
        seeded.alerts_by_state, seeded.alerts_by_severity = dict(states), dict(severities)

        # A week of readings, a store at a time (bounded memory), as the ingest stores them.
        start = now - timedelta(days=args.days)
        step = timedelta(minutes=args.reading_minutes)
        slots = args.days * 24 * 60 // args.reading_minutes
        columns = ["event_id", "store_id", "gateway_id", "stream", "seq", "device_id", "kind", "device_ts"]
        columns += ["received_at", "payload", "clock_issue"]
        chunk: list[tuple[Any, ...]] = []
        streams = []
        for store_id in ids:
            stream = str(uuid.uuid4())
            seq = 0
            for slot in range(slots):
                at = start + slot * step
                for device, zone, base in (
                    ("climate-chiller", "chiller-1", 3.5),
                    ("climate-freezer", "freezer-1", -20),
                ):
                    seq += 1
                    value = round(base + rng.gauss(0, 0.6), 2)
                    payload = {"quantity": "temperature", "value": value, "unit": "Cel", "zone": zone}
                    chunk.append(
                        (
                            str(uuid.uuid4()),
                            store_id,
                            "gw-1",
                            stream,
                            seq,
                            device,
                            "environment.reading",
                            at,
                            at + timedelta(seconds=1),
                            json.dumps(payload),
                            None,
                        )
                    )
            streams.append((store_id, "gw-1", stream, seq, seq, now))
            if len(chunk) >= 50_000:
                await connection.copy_records_to_table("events", records=chunk, columns=columns)
                seeded.readings += len(chunk)
                chunk = []
        if chunk:
            await connection.copy_records_to_table("events", records=chunk, columns=columns)
            seeded.readings += len(chunk)
        await connection.copy_records_to_table(
            "gateway_streams",
            records=streams,
            columns=["store_id", "gateway_id", "stream", "through_seq", "max_seq", "updated_at"],
        )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    seeded.seconds = time.monotonic() - started
    return seeded


async def add_admin(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            await operators.add_operator(
                session,
                username=OPERATOR,
                role="admin",
                password=PASSWORD,
                scope=operators.Scope(),
                by="bench",
                now=wire.utc_now(),
            )
            await session.commit()
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- measuring


@dataclass
class Latency:
    """One target's figures under load."""

    name: str
    path: str
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p95_ms: float | None = None
    rps: float | None = None
    note: str = ""


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


async def sign_in(base_url: str) -> dict[str, str]:
    """The session and CSRF cookies of OPERATOR, signed in through the form."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.post("/login", data={"username": OPERATOR, "password": PASSWORD, "next": "/"})
        if response.status_code != 303:
            raise SystemExit(f"signing in failed: {response.status_code} {response.text[:200]}")
        cookies: dict[str, str] = {}
        for header in response.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            cookies[name] = rest.split(";", 1)[0]
    return {SESSION_COOKIE: cookies[SESSION_COOKIE], CSRF_COOKIE: cookies[CSRF_COOKIE]}


def cookie_header(cookies: dict[str, str]) -> str:
    # Sent by hand: the cookies are Secure, and httpx keeps those for https only.
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


async def load(
    name: str,
    url: str,
    *,
    clients: int,
    requests: int,
    phase_s: float,
    headers: dict[str, str],
    think_s: float = 0.0,
) -> Latency:
    """``requests`` GETs of ``url`` by ``clients`` concurrent clients, stopping early at ``phase_s``.

    ``think_s`` 0: each client asks again as soon as it has its answer (the server saturated: latency is the queue of
    50 requests). Otherwise each client waits 0.5 to 1.5 times ``think_s`` between requests, as people do, so the
    latency is what a person waits with 50 of them at their screens.
    """
    pacing = random.Random(7)
    figures = Latency(name=name, path=httpx.URL(url).path)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as client:
        for _ in range(min(10, requests)):  # warm-up: connections, caches, the first query plans
            await client.get(url)
        remaining = requests
        deadline = time.monotonic() + phase_s

        async def worker() -> None:
            nonlocal remaining
            if think_s > 0:  # people do not all press enter in the same millisecond
                await asyncio.sleep(think_s * pacing.uniform(0.0, 1.0))
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                started = time.perf_counter()
                try:
                    response = await client.get(url)
                    await response.aread()
                    statuses[str(response.status_code)] += 1
                except httpx.HTTPError as err:
                    statuses[type(err).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                if think_s > 0:
                    await asyncio.sleep(think_s * pacing.uniform(0.5, 1.5))

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.monotonic() - began
    figures.requests = sum(statuses.values())
    figures.statuses = dict(statuses)
    if statuses.get("404", 0) == figures.requests:
        figures.note = "missing: 404 (the page is not served by this hub)"
        return figures
    if latencies:
        figures.p50_ms = round(statistics.median(latencies) * 1000, 1)
        figures.p95_ms = round(percentile(latencies, 0.95) * 1000, 1)
        figures.rps = round(figures.requests / elapsed, 1)
    if remaining > 0:
        figures.note = f"stopped at {phase_s:.0f} s"
    return figures


async def first_load_kb(base_url: str, headers: dict[str, str]) -> tuple[float | None, int, str]:
    """Bytes on the wire for ``/`` and every /static file it references (gzip; headers counted); KB, files, note."""
    total = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=60, headers={**headers, "accept-encoding": "gzip"}) as c:
        page = await c.get("/")
        if page.status_code != 200:
            return None, 0, f"/ answered {page.status_code}"

        def wire_bytes(response: httpx.Response) -> int:
            head = sum(len(k) + len(v) + 4 for k, v in response.headers.raw) + 17
            return head + response.num_bytes_downloaded

        total += wire_bytes(page)
        assets = sorted(set(re.findall(r"""(?:src|href)=["'](/static/[^"']+)["']""", page.text)))
        for asset in assets:
            total += wire_bytes(await c.get(asset))
        note = "" if "console.js" in page.text else "not the console's page (no console.js): the old dashboard?"
    return round(total / 1024, 1), len(assets), note


async def live_update_bytes(
    base_url: str, headers: dict[str, str], mqtt: MqttSettings, store_id: str
) -> tuple[int | None, str]:
    """The size of the first server-sent event after an alert is raised (decoded bytes), or why there is none."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers) as client:
        page = await client.get("/alerts")
        if page.status_code != 200:
            return None, f"/alerts answered {page.status_code}"
        found = re.search(r"""sse-connect=["']([^"']+)["']""", page.text)
        if found is None:
            return None, "no sse-connect on /alerts"
        stream_url = found.group(1).replace("&amp;", "&")
        messages: asyncio.Queue[str] = asyncio.Queue()
        opened = asyncio.Event()

        async def listen() -> None:
            async with client.stream("GET", stream_url, timeout=httpx.Timeout(30, read=None)) as response:
                opened.set()
                buffer = ""
                async for text in response.aiter_text():
                    buffer += text
                    while "\n\n" in buffer:
                        message, buffer = buffer.split("\n\n", 1)
                        if any(line.startswith("data:") for line in message.splitlines()):
                            await messages.put(message + "\n\n")

        listener = asyncio.create_task(listen())
        try:
            await asyncio.wait_for(opened.wait(), timeout=10)
            while not messages.empty():  # what the stream sends on connecting is not an update
                messages.get_nowait()
            await publish_printer_out(mqtt, store_id, f"bench-sse-printer-{uuid.uuid4().hex[:6]}")
            message = await asyncio.wait_for(messages.get(), timeout=10)
        except TimeoutError:
            return None, f"no event on {stream_url} within 10 s of an alert"
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    return len(message.encode()), stream_url


async def publish_printer_out(mqtt: MqttSettings, store_id: str, device_id: str) -> None:
    """A receipt printer out of paper, as its gateway's batch: the default rule raises a warning at once."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    event = wire.Event(
        event_id=uuid.uuid4(),
        store_id=store_id,
        gateway_id="gw-1",
        stream=uuid.uuid4(),
        seq=1,
        device_id=device_id,
        kind=wire.EventKind.PRINTER_STATUS,
        ts=wire.utc_now(),
        payload={"online": True, "paper": "out", "cover_open": False},
    )
    batch = wire.EventBatch(store_id=store_id, gateway_id="gw-1", sent_at=wire.utc_now(), events=[event])

    def send() -> None:
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"bench-gw-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.connect(mqtt.host, mqtt.port, keepalive=10)
        client.loop_start()
        try:
            info = client.publish(wire.topic(store_id, "gw-1", wire.Channel.EVENTS), wire.encode(batch), qos=1)
            info.wait_for_publish(5)
        finally:
            client.disconnect()
            client.loop_stop()

    await asyncio.to_thread(send)


# Stamps the moment each alert row is first drawn (the frame after it entered the DOM), by the page's clock.
OBSERVER_JS: Final = """() => {
    window.benchSeen = {};
    const stamp = (row) => {
        if (row.id in window.benchSeen) return;
        window.benchSeen[row.id] = null;
        requestAnimationFrame(() => { window.benchSeen[row.id] = Date.now(); });
    };
    new MutationObserver((mutations) => {
        for (const mutation of mutations) for (const node of mutation.addedNodes) {
            if (node.nodeType !== 1) continue;
            if (node.matches('tr[id^="alert-"]')) stamp(node);
            node.querySelectorAll('tr[id^="alert-"]').forEach(stamp);
        }
    }).observe(document.body, {childList: true, subtree: true});
    document.querySelectorAll('tr[id^="alert-"]').forEach((row) => { window.benchSeen[row.id] = 0; });
}"""


@dataclass
class LiveFigures:
    alerts: int = 0
    commit_to_screen_p50_ms: float | None = None
    commit_to_screen_p95_ms: float | None = None
    publish_to_screen_p50_ms: float | None = None
    publish_to_screen_p95_ms: float | None = None
    note: str = ""


async def commit_to_screen(
    base_url: str, database_url: str, mqtt: MqttSettings, stores: Sequence[str], count: int, rng: random.Random
) -> LiveFigures:
    """Alerts raised one after another with /alerts open in Chromium: from commit (and from publish) to screen.

    The commit is seen by polling the database every 10 ms (so commit-to-screen is short by up to that); the
    screen time is the page's first frame with the row.
    """
    figures = LiveFigures()
    if not CHROMIUM.is_file():
        figures.note = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        return figures
    from playwright.async_api import async_playwright

    url = database_url.replace("postgresql+asyncpg://", "postgresql://")
    database = await asyncpg.connect(url)
    from_commit: list[float] = []
    from_publish: list[float] = []
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
            try:
                page = await (await browser.new_context(base_url=base_url)).new_page()
                await page.goto("/login?next=/alerts")
                await page.fill("#username", OPERATOR)
                await page.fill("#password", PASSWORD)
                async with page.expect_navigation():
                    await page.click("button[type=submit]")
                response = await page.goto("/alerts")
                if response is None or response.status != 200:
                    figures.note = f"/alerts answered {response.status if response else 'nothing'}"
                    return figures
                try:
                    await page.wait_for_selector('body[data-live="on"]', timeout=10_000)
                except Exception:  # Playwright's TimeoutError: report it, do not crash
                    figures.note = "the page never went live (body[data-live=on])"
                    return figures
                await page.evaluate(OBSERVER_JS)
                for n in range(count):
                    device = f"bench-printer-{n}-{uuid.uuid4().hex[:4]}"
                    published = time.time()
                    await publish_printer_out(mqtt, stores[rng.randrange(len(stores))], device)
                    alert_id = None
                    deadline = time.monotonic() + 10
                    while alert_id is None and time.monotonic() < deadline:
                        alert_id = await database.fetchval("SELECT alert_id FROM alerts WHERE subject_id = $1", device)
                        if alert_id is None:
                            await asyncio.sleep(0.01)
                    committed = time.time()
                    if alert_id is None:
                        figures.note = f"no alert committed for {device} within 10 s"
                        break
                    try:
                        handle = await page.wait_for_function(
                            "(id) => window.benchSeen[id] || null", arg=f"alert-{alert_id}", timeout=10_000
                        )
                    except Exception:  # Playwright's TimeoutError
                        figures.note = f"alert {alert_id} not on screen within 10 s of its commit"
                        break
                    shown = float(await handle.json_value()) / 1000
                    from_commit.append(max(0.0, shown - committed))
                    from_publish.append(shown - published)
            finally:
                await browser.close()
    finally:
        await database.close()
    figures.alerts = len(from_commit)
    if from_commit:
        figures.commit_to_screen_p50_ms = round(statistics.median(from_commit) * 1000)
        figures.commit_to_screen_p95_ms = round(percentile(from_commit, 0.95) * 1000)
        figures.publish_to_screen_p50_ms = round(statistics.median(from_publish) * 1000)
        figures.publish_to_screen_p95_ms = round(percentile(from_publish, 0.95) * 1000)
    return figures


# --------------------------------------------------------------------------- the run


def show(line: str) -> None:
    print(line, flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    results: dict[str, Any] = {"options": {k: v for k, v in vars(args).items() if k != "serve"}}
    async with fresh_database(args.keep_database) as (database_url, _user):
        show(f"database: {database_url}")
        await upgrade_to_head(database_url)
        seeded = await seed(database_url, args, rng)
        results["seeded"] = asdict(seeded)
        show(
            f"seeded in {seeded.seconds:.1f} s: {seeded.stores} stores ({seeded.offline_gateways} gateways offline), "
            f"{seeded.alerts} alerts {seeded.alerts_by_state} {seeded.alerts_by_severity}, "
            f"{seeded.alert_history} history rows, {seeded.readings} readings"
        )
        await add_admin(database_url)
        with tempfile.TemporaryDirectory(prefix="bench-console-") as workdir:
            broker: LocalBroker = start_mosquitto(Path(workdir) / "mosquitto")
            mqtt = MqttSettings(host=broker.host, port=broker.port)
            try:
                ports = {"hub-worker": free_port(), "hub-api": free_port(), "bare": free_port()}
                common = {"database_url": database_url, "mqtt_port": str(broker.port), "secrets": f"{workdir}/secrets"}
                with (
                    server("hub-worker", ports["hub-worker"], **common) as worker,
                    server("hub-api", ports["hub-api"], **common) as api,
                    server("bare", ports["bare"]) as bare,
                ):
                    base = f"http://127.0.0.1:{ports['hub-api']}"
                    await wait_http(f"http://127.0.0.1:{ports['hub-worker']}/healthz", worker)
                    await wait_http(f"{base}/healthz", api)
                    await wait_http(f"http://127.0.0.1:{ports['bare']}/bare", bare)
                    cookies = await sign_in(base)
                    headers = {"cookie": cookie_header(cookies), "accept-encoding": "gzip"}
                    store = store_ids(args.stores)[rng.randrange(args.stores)]
                    targets = [
                        ("bare FastAPI (baseline)", f"http://127.0.0.1:{ports['bare']}/bare"),
                        ("overview", f"{base}/"),
                        ("alerts", f"{base}/alerts"),
                        ("store page", f"{base}/stores/{store}"),
                    ]
                    latencies = []
                    for think_s in (0.0, args.think_s) if args.think_s > 0 else (0.0,):
                        pace = f"each waiting about {think_s:g} s between pages" if think_s else "back to back"
                        show(
                            f"\n{args.clients} concurrent clients, {pace}, "
                            f"up to {args.requests} requests or {args.phase_s:.0f} s each"
                        )
                        show(
                            f"{'target':<26}{'path':<24}{'requests':>9}{'p50 ms':>9}{'p95 ms':>9}{'req/s':>8}  statuses"
                        )
                        for name, url in targets:
                            figures = await load(
                                name,
                                url,
                                clients=args.clients,
                                requests=args.requests,
                                phase_s=args.phase_s,
                                headers=headers,
                                think_s=think_s,
                            )
                            latencies.append({**asdict(figures), "think_s": think_s})
                            show(
                                f"{name:<26}{figures.path:<24}{figures.requests:>9}{figures.p50_ms or '-':>9}"
                                f"{figures.p95_ms or '-':>9}{figures.rps or '-':>8}  {figures.statuses} {figures.note}"
                            )
                    results["latency"] = latencies
                    kb, files, note = await first_load_kb(base, {"cookie": cookie_header(cookies)})
                    results["first_load"] = {"kb": kb, "files": files, "note": note}
                    show(f"\nfirst load of /: {kb} KB over the wire (HTML and {files} static files, gzip) {note}")
                    size, where = await live_update_bytes(base, {"cookie": cookie_header(cookies)}, mqtt, store)
                    results["live_update"] = {"bytes": size, "stream": where}
                    show(f"one live update: {size} bytes ({where})" if size else f"one live update: - ({where})")
                    live = await commit_to_screen(
                        base, database_url, mqtt, store_ids(args.stores), args.live_alerts, rng
                    )
                    results["commit_to_screen"] = asdict(live)
                    show(
                        f"commit to screen in Chromium over {live.alerts} alerts: p50 "
                        f"{live.commit_to_screen_p50_ms} ms, p95 {live.commit_to_screen_p95_ms} ms "
                        f"(from publish: p50 {live.publish_to_screen_p50_ms} ms, "
                        f"p95 {live.publish_to_screen_p95_ms} ms)"
                        f" {live.note}"
                    )
            finally:
                broker.stop(kill=True)
    return results


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--open-fraction", type=float, default=0.01, help="of the alerts, open (half as many acked)")
    parser.add_argument("--days", type=int, default=7, help="days of readings")
    parser.add_argument("--reading-minutes", type=int, default=30, help="minutes between readings of a zone")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=500, help="requests per target")
    parser.add_argument(
        "--think-s", type=float, default=2.0, help="a second pass with clients pausing about this long (0: none)"
    )
    parser.add_argument("--phase-s", type=float, default=45.0, help="at most this long per target")
    parser.add_argument("--live-alerts", type=int, default=20, help="alerts timed from commit to screen")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--keep-database", action="store_true")
    # The bench's own subprocesses.
    parser.add_argument("--serve", choices=["hub-api", "hub-worker", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--mqtt-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--secrets", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is None and (args.stores < 1 or args.alerts < 0 or args.clients < 1 or args.reading_minutes < 1):
        parser.error("--stores, --clients and --reading-minutes must be at least 1, --alerts at least 0")
    return args


def main() -> None:
    args = parse()
    if args.serve is not None:
        serve_main(args)
        return
    results = asyncio.run(run(args))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        show(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
