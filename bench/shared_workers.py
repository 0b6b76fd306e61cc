#!/usr/bin/env python3
"""N hub workers on one MQTT 5 shared subscription (issue 19): how much the store locks cost them.

Starts a Mosquitto and N ``storegate hub --role worker`` processes with ``shared_subscription_group`` on a
throwaway PostgreSQL database (127.0.0.1:5432), then plays K stores, each one gateway sending freezer
readings and till sales in batches, ``--in-flight`` batches unacknowledged per gateway (as an agent does,
so the broker deals one gateway's batches to several workers). Timed from the first publish to the Ack that
covers the last event. From each worker's ``/metrics``: units, the time units and ticks waited for their
stores' advisory locks (another worker held one), events held for order, rule states read again; from the
OS: each worker's CPU time. Then checks: events stored == sent, ledger rows == sales.

Usage: .venv/bin/python bench/shared_workers.py [--workers 2] [--stores 1000] [--events-per-store 40]
Not a test: it prints figures; docs/scaling.md records them with this command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GTIN: Final = "04006381333931"
ADMIN_URL: Final = "postgresql://postgres@127.0.0.1:5432/postgres"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--events-per-store", type=int, default=40)
    parser.add_argument("--batch", type=int, default=10, help="events per batch")
    parser.add_argument("--in-flight", type=int, default=2, help="batches per gateway unacknowledged")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--profile", type=Path, help="run each worker under cProfile; dumps DIR/worker-N.prof")
    return parser.parse_args()


async def make_database() -> tuple[str, str]:
    import asyncpg  # type: ignore[import-untyped]

    name = f"storegate_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name, f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def drop_database(name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def prepare(url: str, stores: list[str]) -> str:
    """Migrate, seed one SKU and the freezer rule, and make an admin token for /metrics."""
    from sqlalchemy import insert

    from hub.alerting.models import ChainRule
    from hub.auth.operators import Scope, create_token
    from hub.catalog.models import Sku
    from hub.db.engine import create_engine, session_factory
    from hub.db.migrate import upgrade_to_head
    from storegate import wire

    await upgrade_to_head(url)
    engine = create_engine(url)
    now = wire.utc_now()
    try:
        async with session_factory(engine)() as session, session.begin():
            await session.execute(
                insert(Sku).values(
                    sku_id="A",
                    gtin=GTIN,
                    name="Biscuits",
                    pack_size=6,
                    price=Decimal("1.5"),
                    currency="GBP",
                    updated_at=now,
                )
            )
            rule = {"kind": "environment_range", "zone": "freezer-*", "high": -18, "alarm_after_s": 600}
            await session.execute(
                insert(ChainRule).values(rule_id="freezers", definition=rule, updated_at=now, updated_by="bench")
            )
            _, token = await create_token(
                session, name="bench", role="admin", scope=Scope(), lifetime=timedelta(days=1), by="bench", now=now
            )
    finally:
        await engine.dispose()
    return token


def workload(stores: list[str], per_store: int, batch: int) -> dict[tuple[str, str], list[bytes]]:
    """Each store's gateway: readings and sales alternating, as encoded batches."""
    from storegate import wire

    start = wire.utc_now() - timedelta(hours=1)
    batches: dict[tuple[str, str], list[bytes]] = {}
    for store_id in stores:
        stream = uuid.uuid4()
        events = []
        for seq in range(1, per_store + 1):
            at = start + timedelta(seconds=30 * seq)
            if seq % 2:
                kind, device = "environment.reading", "freezer-1-probe"
                payload: dict[str, Any] = {
                    "quantity": "temperature",
                    "value": -20.0,
                    "unit": "Cel",
                    "zone": "freezer-1",
                }
            else:
                kind, device = "scan.sale", "till-1"
                payload = {"code": GTIN, "gtin": GTIN, "symbology": "ean13", "mode": "checkout", "quantity": 1}
            events.append(
                wire.Event(
                    event_id=uuid.uuid4(),
                    store_id=store_id,
                    gateway_id="gw-1",
                    stream=stream,
                    seq=seq,
                    device_id=device,
                    kind=kind,
                    ts=at,
                    payload=payload,
                )
            )
        batches[(store_id, "gw-1")] = [
            wire.encode(
                wire.EventBatch(
                    store_id=store_id, gateway_id="gw-1", sent_at=wire.utc_now(), events=events[i : i + batch]
                )
            )
            for i in range(0, len(events), batch)
        ]
    return batches


async def feed(
    port: int, batches: dict[tuple[str, str], list[bytes]], *, batch: int, in_flight: int, limit_s: float
) -> float:
    """Publish every gateway's batches, ``in_flight`` at a time; the seconds until the last Ack."""
    from storegate import wire
    from storegate.mqtt import MqttLink, MqttSettings

    acked = dict.fromkeys(batches, 0)
    moved = {key: asyncio.Event() for key in batches}
    link = MqttLink(
        settings=MqttSettings(host="127.0.0.1", port=port, protocol="5"),
        client_id="bench-feeder",
        subscriptions=[(wire.subscription(wire.Channel.ACK), 1)],
        queue_size=100_000,
    )

    async def read_acks() -> None:
        async for message in link.messages():
            ack = wire.decode(wire.Ack, message.payload)
            key = (ack.store_id, ack.gateway_id)
            if ack.through_seq > acked[key]:
                acked[key] = ack.through_seq
                moved[key].set()

    last_seq = {key: wire.decode(wire.EventBatch, own[-1]).events[-1].seq for key, own in batches.items()}

    async def send(key: tuple[str, str]) -> None:
        topic = wire.topic(*key, wire.Channel.EVENTS)
        own = batches[key]
        sent = 0
        while acked[key] < last_seq[key]:
            while sent < len(own) and sent - acked[key] // batch < in_flight:
                link.publish(topic, own[sent])
                sent += 1
            moved[key].clear()
            try:
                await asyncio.wait_for(moved[key].wait(), 5.0)
            except TimeoutError:  # resend what has no Ack, as the agent does
                for i in range(acked[key] // batch, sent):
                    link.publish(topic, own[i])

    async with link:
        if not await link.wait_connected(10):
            raise SystemExit("the feeder could not connect to the broker")
        reader = asyncio.create_task(read_acks())
        started = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(send(key) for key in batches)), limit_s)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        return time.perf_counter() - started


def read_metrics(port: int, token: str) -> dict[str, float]:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5).text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                samples[name] = float(value)
    return samples


async def count(url: str) -> tuple[int, int]:
    from sqlalchemy import text

    from hub.db.engine import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            events = (await connection.execute(text("SELECT count(*) FROM events"))).scalar_one()
            ledger = (await connection.execute(text("SELECT count(*) FROM ledger WHERE kind = 'sale'"))).scalar_one()
    finally:
        await engine.dispose()
    return int(events), int(ledger)


def main() -> int:
    import psutil

    from launcher.broker import free_port, start_mosquitto
    from storegate.mqtt import MqttSettings
    from tests.procs import hub_service

    args = parse()
    stores = [f"store-{n:05d}" for n in range(1, args.stores + 1)]
    name, url = asyncio.run(make_database())
    workdir = Path(tempfile.mkdtemp(prefix="storegate-shared-"))
    broker = start_mosquitto(workdir / "broker")
    workers = []
    try:
        token = asyncio.run(prepare(url, stores))
        for n in range(args.workers):
            service = hub_service(
                workdir / f"worker-{n}",
                MqttSettings(host=broker.host, port=broker.port, protocol="5"),
                http_port=free_port(),
                database_url=url,
                client_id=f"bench-worker-{n}",
                role="worker",
                shared_subscription_group="bench",
                secrets_dir=str(workdir / "secrets"),
            )
            if args.profile:  # bench/hub_ingest.py runs `storegate hub` under cProfile in its --hub-child mode
                args.profile.mkdir(parents=True, exist_ok=True)
                config = workdir / f"worker-{n}" / "hub.toml"
                out = args.profile / f"worker-{n}.prof"
                service.argv = [sys.executable, str(ROOT / "bench" / "hub_ingest.py"), "--hub-child", str(config)]
                service.argv += ["--profile-out", str(out)]
            service.start()
            workers.append(service)
        http_ports = [_port_of(workdir / f"worker-{n}" / "hub.toml") for n in range(args.workers)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if all(read_metrics(p, token).get("storegate_hub_mqtt_connected") == 1.0 for p in http_ports):
                    break
            time.sleep(0.2)  # polling the workers' start, bounded by the deadline
        else:
            raise SystemExit("the workers did not connect")
        batches = workload(stores, args.events_per_store, args.batch)
        total = args.stores * args.events_per_store
        processes = [psutil.Process(w.process.pid) for w in workers if w.process is not None]
        cpu_before = [sum(p.cpu_times()[:2]) for p in processes]
        before = [read_metrics(p, token) for p in http_ports]
        seconds = asyncio.run(
            feed(broker.port, batches, batch=args.batch, in_flight=args.in_flight, limit_s=args.max_seconds)
        )
        cpu = [sum(p.cpu_times()[:2]) - c for p, c in zip(processes, cpu_before, strict=True)]
        after = [read_metrics(p, token) for p in http_ports]
        events, sales = asyncio.run(count(url))
    finally:
        for worker in workers:
            if worker.alive:
                worker.stop(timeout=60)
        broker.stop()
        asyncio.run(drop_database(name))

    def delta(i: int, key: str) -> float:
        return after[i].get(key, 0.0) - before[i].get(key, 0.0)

    print(
        f"{args.workers} worker(s), {args.stores:,} stores, {total:,} events, batches of {args.batch}, "
        f"{args.in_flight} in flight per gateway"
    )
    print(
        f"  {total / seconds:,.0f} events/s ({seconds:.1f} s); hub CPU {sum(cpu):.1f} s = "
        f"{1e6 * sum(cpu) / total:.0f} us/event"
    )
    for i in range(args.workers):
        units = delta(i, "storegate_hub_transaction_events_count")
        waits = delta(i, 'storegate_hub_store_lock_wait_seconds_count{holder="unit"}')
        waited = delta(i, 'storegate_hub_store_lock_wait_seconds_sum{holder="unit"}')
        busy = delta(i, "storegate_hub_store_locks_busy_total")
        print(
            f"  worker {i}: {units:,.0f} units, CPU {cpu[i]:.1f} s; stores busy (carried to the next unit) "
            f"{busy:,.0f}; waits for all-busy units {waits:,.0f}, {waited:.2f} s in all; "
            f"held for order {delta(i, 'storegate_hub_events_held_for_order_total'):,.0f}, "
            f"states read again {delta(i, 'storegate_hub_rule_states_loaded_total'):,.0f}, "
            f"leader {after[i].get('storegate_hub_leader', 0):.0f}"
        )
    checks = {"events stored == sent": events == total, "sale ledger rows == sales": sales == total // 2}
    for check, ok in checks.items():
        print(f"  check {check}: {'ok' if ok else 'FAILED'} ({events:,} events, {sales:,} sales)")
    return 0 if all(checks.values()) else 1


def _port_of(config: Path) -> int:
    import tomllib

    return int(tomllib.loads(config.read_text())["http_port"])


if __name__ == "__main__":
    raise SystemExit(main())
