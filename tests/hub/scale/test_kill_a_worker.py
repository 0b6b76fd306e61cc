"""The proof of issue 19: two hub workers on one MQTT v5 shared subscription, one killed mid-stream.

Real parts only: Mosquitto (MQTT 5), PostgreSQL, and ``storegate hub`` processes (``hub.runner.run_hub``). A
feeder plays eight gateways of four stores (sensors on one gateway, shelves and tills on the other) with three
batches in flight each, so the broker deals one gateway's batches to both workers and they arrive out of order.
Once a third of the events are acknowledged the first worker (the leader) is killed with SIGKILL; the feeder
resends what it has no Ack for, as a gateway does. Then every event must be stored once and applied once
(ledger, stock), and the alerts must be those one worker raises from the same input, door alarms of the
rules ticker included (so the surviving worker took over as leader).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.alerting.models import AlertRow, ChainRule, ExcursionRow
from hub.catalog.models import Shelf, Sku, Slot, StoreProfile
from hub.db.engine import create_engine, session_factory
from hub.db.models import StoredEvent
from hub.inventory.models import LedgerRow, StockPosition
from launcher.broker import free_port
from storegate import wire
from storegate.mqtt import MqttLink, MqttSettings
from tests.conftest import eventually, wait_until
from tests.hub.conftest import PostgresCopies, PostgresDropper

pytestmark = pytest.mark.timeout(150)

ROOT: Final = Path(__file__).resolve().parents[3]
RUN: Final = (
    "import sys; from pathlib import Path; from hub.runner import run_hub; sys.exit(run_hub(Path(sys.argv[1])))"
)
STORES: Final = [f"store-{n:04d}" for n in range(1, 5)]
GTIN: Final = "04006381333931"
RECEIVED: Final = 100
SALES: Final = 30
PICKS: Final = 40
BATCH: Final = 8
IN_FLIGHT: Final = 3  # batches per gateway published and not yet acknowledged
RESEND_S: Final = 1.5  # a gateway resends what has no Ack after this long (the agent's timer, shortened)
RULES: Final[dict[str, dict[str, Any]]] = {
    "door-held-open": {"kind": "door_held_open", "grace_s": 300},
    "shelf-sweep": {"kind": "shelf_sweep", "min_items": 6, "window_s": 30},
    "freezers": {"kind": "environment_range", "zone": "freezer-*", "high": -18, "alarm_after_s": 600},
}
# Every store: the freezer excursion (raised, then cleared), a sweep of its shelf, and a door left open.
EXPECTED_RULES: Final = {"door-held-open", "shelf-sweep", "freezers"}


# --------------------------------------------------------------------------- the input


@dataclass
class Gateway:
    """One gateway's events in batches, and how far the hub has acknowledged them."""

    store_id: str
    gateway_id: str
    events: list[wire.Event]
    acked: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def batches(self) -> list[list[wire.Event]]:
        return [self.events[i : i + BATCH] for i in range(0, len(self.events), BATCH)]

    @property
    def done(self) -> bool:
        return self.acked >= len(self.events)


def _events(store_id: str, gateway_id: str, items: list[tuple[str, str, datetime, dict[str, Any]]]) -> list[wire.Event]:
    stream = uuid.uuid4()
    return [
        wire.Event(
            event_id=uuid.uuid4(),
            store_id=store_id,
            gateway_id=gateway_id,
            stream=stream,
            seq=seq,
            device_id=device,
            kind=kind,
            ts=at,
            payload=payload,
        )
        for seq, (kind, device, at, payload) in enumerate(items, start=1)
    ]


def store_input(store_id: str, start: datetime) -> list[Gateway]:
    """A store's two gateways: sensors (freezer readings, a door left open) and shelf plus till."""
    sensors: list[tuple[str, str, datetime, dict[str, Any]]] = []
    for i in range(60):  # above -18 from reading 10 to 39: 15 minutes, past the 10 allowed
        value = -10.0 if 10 <= i < 40 else -20.0
        payload = {"quantity": "temperature", "value": value, "unit": "Cel", "zone": "freezer-1"}
        sensors.append(("environment.reading", "freezer-1-probe", start + timedelta(seconds=30 * i), payload))
    sensors.insert(20, ("door.opened", "door-1", start + timedelta(seconds=605), {"zone": "back", "open": True}))
    shelf: list[tuple[str, str, datetime, dict[str, Any]]] = [
        (
            "scan.receiving",
            "till-1",
            start,
            {"code": GTIN, "gtin": GTIN, "symbology": "ean13", "mode": "receiving", "quantity": RECEIVED},
        ),
    ]
    count = 50
    for k in range(PICKS):  # picks 2 s apart: a sweep of 6 within 30 s
        count -= 1
        payload = {"slot": 1, "delta": -1, "count": count, "weight_g": 100.0 * count}
        shelf.append(("shelf.pick", "shelf-1", start + timedelta(seconds=60 + 2 * k), payload))
    for k in range(SALES):
        sale = {"code": GTIN, "gtin": GTIN, "symbology": "ean13", "mode": "checkout", "quantity": 1}
        shelf.append(("scan.sale", "till-1", start + timedelta(seconds=200 + 5 * k), sale))
    return [
        Gateway(store_id, "gw-sensors", _events(store_id, "gw-sensors", sensors)),
        Gateway(store_id, "gw-shelf", _events(store_id, "gw-shelf", shelf)),
    ]


def chain_input(start: datetime) -> list[Gateway]:
    return [gateway for store_id in STORES for gateway in store_input(store_id, start)]


async def seed(engine: AsyncEngine) -> None:
    """The catalog (one SKU on one slot of each store) and the three rules."""
    now = wire.utc_now()
    hours = {day: ["00:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    async with session_factory(engine)() as session, session.begin():
        await session.execute(
            insert(Sku).values(
                sku_id="A",
                gtin=GTIN,
                name="Biscuits",
                pack_size=6,
                price=Decimal("1.50"),
                currency="GBP",
                updated_at=now,
            )
        )
        for store_id in STORES:
            await session.execute(
                insert(StoreProfile).values(
                    store_id=store_id,
                    name=store_id,
                    timezone="UTC",
                    currency="GBP",
                    opening_hours=hours,
                    updated_at=now,
                )
            )
            await session.execute(insert(Shelf).values(store_id=store_id, shelf_id="shelf-1"))
            await session.execute(
                insert(Slot).values(
                    store_id=store_id,
                    shelf_id="shelf-1",
                    slot=1,
                    sku_id="A",
                    capacity=60,
                    min_quantity=0,
                    updated_at=now,
                )
            )
        await session.execute(
            insert(ChainRule),
            [{"rule_id": r, "definition": d, "updated_at": now, "updated_by": "test"} for r, d in RULES.items()],
        )


# --------------------------------------------------------------------------- the processes


@dataclass
class Worker:
    name: str
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def logged(self, text: str) -> bool:
        return self.log.exists() and text in self.log.read_text(errors="replace")


def start_worker(tmp_path: Path, name: str, *, database_url: str, mqtt: MqttSettings, shared: bool) -> Worker:
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / f"{name}.toml"
    lines = [
        f'database_url = "{database_url}"',
        f"http_port = {port}",
        f'client_id = "{name}"',
        'role = "worker"',
        "accept_unknown_gateways = true",
        f'secrets_dir = "{tmp_path / "secrets"}"',
        *(['shared_subscription_group = "hubs"'] if shared else []),
        "[mqtt]",
        f'host = "{mqtt.host}"',
        f"port = {mqtt.port}",
        'protocol = "5"',
        "reconnect_min_s = 0.2",
        "reconnect_max_s = 1.0",
        "[operations]",
        "rules_tick_s = 0.5",
    ]
    config.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STOREGATE_HUB_")}
    env["PYTHONPATH"] = str(ROOT)
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", RUN, str(config)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    worker = Worker(name, port, log, process)
    wait_until(lambda: worker.healthy() or process.poll() is not None, timeout=30, what=f"{name} to become healthy")
    assert process.poll() is None, log.read_text()
    return worker


@contextlib.contextmanager
def stopping(workers: list[Worker]) -> Iterator[None]:
    try:
        yield
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(timeout=10)


@pytest.fixture
async def databases(
    postgres_copies: PostgresCopies, postgres_dropper: PostgresDropper
) -> AsyncIterator[tuple[str, str]]:
    """Two databases at the newest revision: one for one worker, one for two."""
    names: list[str] = []
    try:
        urls = []
        for _ in range(2):
            name, url = await postgres_copies.take()
            names.append(name)
            urls.append(url)
        yield urls[0], urls[1]
    finally:
        for name in names:
            postgres_dropper.drop(name)


# --------------------------------------------------------------------------- the feeder


async def feed(
    gateways: list[Gateway], mqtt: MqttSettings, *, at_fraction: float = 1.0, then: Any = None, timeout: float
) -> None:
    """Publish every gateway's batches, IN_FLIGHT at a time, resending what stays unacknowledged; ``then`` is
    called once ``at_fraction`` of all events are acknowledged."""
    by_key = {(g.store_id, g.gateway_id): g for g in gateways}
    total = sum(len(g.events) for g in gateways)
    link = MqttLink(
        settings=mqtt.model_copy(update={"protocol": "5"}),
        client_id=f"feeder-{uuid.uuid4().hex[:8]}",
        subscriptions=[(wire.subscription(wire.Channel.ACK), 1)],
    )
    fired = asyncio.Event()

    async def read_acks() -> None:
        async for message in link.messages():
            ack = wire.decode(wire.Ack, message.payload)
            gateway = by_key[(ack.store_id, ack.gateway_id)]
            if ack.through_seq > gateway.acked:
                gateway.acked = ack.through_seq
                gateway.progress.set()
            if then is not None and not fired.is_set() and sum(g.acked for g in gateways) >= at_fraction * total:
                fired.set()
                then()

    def publish(gateway: Gateway, batch: list[wire.Event]) -> None:
        message = wire.EventBatch(
            store_id=gateway.store_id, gateway_id=gateway.gateway_id, sent_at=wire.utc_now(), events=batch
        )
        link.publish(wire.topic(gateway.store_id, gateway.gateway_id, wire.Channel.EVENTS), wire.encode(message))

    async def send(gateway: Gateway) -> None:
        batches = gateway.batches
        sent = 0
        while not gateway.done:
            unacked = [i for i in range(sent) if batches[i][-1].seq > gateway.acked]
            while sent < len(batches) and len(unacked) < IN_FLIGHT:
                publish(gateway, batches[sent])
                unacked.append(sent)
                sent += 1
            gateway.progress.clear()
            try:
                await asyncio.wait_for(gateway.progress.wait(), RESEND_S)
            except TimeoutError:  # no Ack moved: resend what is unacknowledged, as the agent does
                for i in unacked:
                    if batches[i][-1].seq > gateway.acked:
                        publish(gateway, batches[i])

    async with link:
        assert await link.wait_connected(10)
        reader = asyncio.create_task(read_acks())
        try:
            await asyncio.wait_for(asyncio.gather(*(send(g) for g in gateways)), timeout)
        except TimeoutError:
            behind = {f"{g.store_id}/{g.gateway_id}": f"{g.acked} of {len(g.events)}" for g in gateways if not g.done}
            raise AssertionError(f"not every event acknowledged within {timeout} s: {behind}") from None
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


# --------------------------------------------------------------------------- what the hub did


@dataclass(frozen=True)
class Outcome:
    events: int
    distinct_events: int
    ledger: list[tuple[str, str, str, int]]
    stock: list[tuple[str, str, int]]
    alerts: set[tuple[str, str, str, str]]
    open_alerts: set[tuple[str, str, str]]
    # A reading applied out of order is refused by the excursion's state machine: the count would differ.
    excursions: list[tuple[str, str, datetime, datetime, int]]


async def outcome_of(engine: AsyncEngine) -> Outcome:
    async with session_factory(engine)() as session:
        events = await session.scalar(select(func.count()).select_from(StoredEvent))
        distinct = await session.scalar(select(func.count(func.distinct(StoredEvent.event_id))))
        ledger = [
            (store, event, kind, quantity)
            for store, event, kind, quantity in await session.execute(
                select(LedgerRow.store_id, LedgerRow.event_id, LedgerRow.kind, LedgerRow.quantity)
            )
        ]
        stock = [
            (store, sku, on_hand)
            for store, sku, on_hand in await session.execute(
                select(StockPosition.store_id, StockPosition.sku_id, StockPosition.on_hand)
            )
        ]
        excursions = [
            (store, zone, started, ended, readings)
            for store, zone, started, ended, readings in await session.execute(
                select(
                    ExcursionRow.store_id,
                    ExcursionRow.zone,
                    ExcursionRow.started_at,
                    ExcursionRow.ended_at,
                    ExcursionRow.readings,
                )
            )
        ]
        rows = [
            (rule, store, subject, severity, status)
            for rule, store, subject, severity, status in await session.execute(
                select(AlertRow.rule_id, AlertRow.store_id, AlertRow.subject_id, AlertRow.severity, AlertRow.status)
            )
        ]
    return Outcome(
        events=int(events or 0),
        distinct_events=int(distinct or 0),
        ledger=sorted(ledger),
        stock=sorted(stock),
        alerts={(rule, store, subject, severity) for rule, store, subject, severity, _ in rows},
        open_alerts={(rule, store, subject) for rule, store, subject, _, status in rows if status != "resolved"},
        excursions=sorted(excursions),
    )


async def settled(engine: AsyncEngine, expected_events: int) -> Outcome:
    """The outcome once every event is stored and each store has its three alerts (doors come from ticks)."""

    last: list[Outcome] = []

    async def probe() -> Outcome | None:  # eventually() waits for a truthy value
        result = await outcome_of(engine)
        last[:] = [result]
        rules = {(rule, store) for rule, store, _, _ in result.alerts}
        complete = result.events == expected_events and rules >= {(r, s) for r in EXPECTED_RULES for s in STORES}
        return result if complete else None

    try:
        found = await eventually(probe, timeout=30, interval=0.2, what="every event stored and every alert raised")
    except AssertionError:
        seen = last[0] if last else None
        raise AssertionError(
            f"expected {expected_events} events and every alert; got {seen.events if seen else None} events and "
            f"alerts {sorted(seen.alerts) if seen else None}"
        ) from None
    assert found is not None
    return found


async def run(
    tmp_path: Path, database_url: str, mqtt: MqttSettings, *, workers: int, start: datetime
) -> tuple[Outcome, list[Worker]]:
    engine = create_engine(database_url)
    try:
        await seed(engine)
        gateways = chain_input(start)
        total = sum(len(g.events) for g in gateways)
        started = [
            start_worker(tmp_path, f"hub-{workers}-{n}", database_url=database_url, mqtt=mqtt, shared=workers > 1)
            for n in range(workers)
        ]
        with stopping(started):
            if workers > 1:
                wait_until(lambda: started[0].logged("hub_leader_elected"), timeout=10, what="the first worker to lead")

                def kill_the_leader() -> None:
                    started[0].process.send_signal(signal.SIGKILL)

                await feed(gateways, mqtt, at_fraction=1 / 3, then=kill_the_leader, timeout=60)
                assert started[0].process.wait(timeout=10) == -signal.SIGKILL
            else:
                await feed(gateways, mqtt, timeout=60)
            result = await settled(engine, total)
            for worker in started[workers > 1 :]:
                assert worker.process.poll() is None, worker.log.read_text()[-3000:]
        return result, started
    finally:
        await engine.dispose()


async def test_two_workers_one_killed_apply_every_event_once_and_raise_the_alerts_of_one(
    tmp_path: Path, databases: tuple[str, str], mqtt_settings: MqttSettings
) -> None:
    start = (wire.utc_now() - timedelta(minutes=40)).replace(microsecond=0)  # the same store day for both runs
    one, _ = await run(tmp_path / "one", databases[0], mqtt_settings, workers=1, start=start)
    two, workers = await run(tmp_path / "two", databases[1], mqtt_settings, workers=2, start=start)

    total = len(STORES) * (60 + 1 + 1 + PICKS + SALES)
    # Stored once: no event lost with the killed worker, none twice though the feeder resent.
    assert one.events == one.distinct_events == total
    assert two.events == two.distinct_events == total
    # Applied once: one ledger row per movement, the same as one worker's; stock is what the events add up to.
    assert len(two.ledger) == len({(store, event, kind) for store, event, kind, _ in two.ledger})
    assert [(store, kind, qty) for store, _, kind, qty in two.ledger] != []
    assert sorted((s, k, q) for s, _, k, q in two.ledger) == sorted((s, k, q) for s, _, k, q in one.ledger)
    assert two.stock == one.stock == [(store, "A", RECEIVED - SALES) for store in STORES]
    # The same alerts as one worker: freezer (raised in order although its readings went to both workers),
    # sweep, and the door alarm that only the rules ticker raises: the surviving worker took over the ticks.
    assert two.alerts == one.alerts
    assert {(rule, store) for rule, store, _, _ in two.alerts} == {(r, s) for r in EXPECTED_RULES for s in STORES}
    assert two.open_alerts == one.open_alerts
    # Each freezer's excursion with every one of its readings: applied in order though dealt to both workers.
    assert len(one.excursions) == len(STORES)
    assert two.excursions == one.excursions
    assert workers[1].logged("hub_leader_elected"), "the second worker never became the leader"
