#!/usr/bin/env python3
"""Hub ingest and apply benchmark (issue 5): events per second the hub stores *and applies*, against raw inserts.

For each database (SQLite in a temp file; PostgreSQL in a throwaway database on 127.0.0.1:5432), one run:
  1. applied: the real hub, one process (``storegate hub``), on a real Mosquitto, takes N events
     of 50 stores (two gateways each) and applies them: ledger rows, stock positions, shelf levels, restock
     tasks with printed pick lists, rules, alerts, excursions, notifications. Timed from the first publish
     to the Ack that covers the last event; the hub sends an Ack only after the commit that stored the
     events and applied them, so the Ack is the proof that both are done.
  2. stored only: the same events into a fresh database with ``operations.enabled = false``.
  3. raw: the rows the hub wrote in (1) -- events, ledger, unplaced_events -- read back and inserted into
     a fresh database with the same driver and engine settings (``hub.db.engine.create_engine``), one
     ``executemany`` per table and transaction, transactions of the hub's mean unit size; then the events
     rows alone (the baseline of (2)). Left out of the raw rows: stock_positions and shelf_levels upserts,
     stores/gateway_streams bookkeeping, restock tasks, commands, alerts and their history, excursions,
     notifications (upserts per key, or a few hundred rows).
Ratios are against (3) of the same run. Then checks: events stored == sent, ledger rows == the movements
the workload makes, unplaced == the unknown codes sent, stock positions and shelf levels == those computed
here independently, rejected messages == the deliberately malformed ones.

The workload: real SKUs (one per product of two days of a UK retailer's invoice lines), real checkout lines
replayed as scan.sale, about 2 % real EAN-13 codes no SKU has (unplaced), receiving and stock counts,
shelf picks and puts on planogram slots (refilled when below minimum: restock tasks and print commands),
picks bought at the tills a few minutes later (the rest waits in the shrink tracker), chiller/freezer
readings every minute (some excursions), back-room humidity and temperature from a real room's sensor log,
back doors (a few held open), a receipt printer unplugged (some for long), camera motion with snapshots, a
camera covered. 4,000 events a store-hour: the default 200,000 carry the times of one hour of 50 stores
(Monday 2025-03-03 from 09:00 UTC, stores open), in batches of 100 per gateway, published in the order the
batches would fill, at most 20,000 events unacknowledged.

Usage: .venv/bin/python bench/hub_ingest.py [--database sqlite|postgresql|both] [--events 200000] [--json out.json]
  --breakdown         instead of the hub runs: the consumer's unit path in this process, timed part by part
  --profile DIR       the applied run only, the hub under cProfile (DIR/hub-<database>.prof)
  --cameras-at-front  cameras on the tills' gateway: rule observations of a store arrive out of order
  --hub-preload FILE  experiments only: a Python file the hub runs before it starts (a monkeypatch)
  --operator-writes N an operator's stock adjustments through the API during the applied run: latency, status
Not a test: it prints figures; docs/benchmarks.md records them with this command.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# One store hour: Monday 2025-03-03 from 09:00 in London (GMT in March), every store open.
DAY_START: Final = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
EVENTS_PER_STORE_HOUR: Final = 4000
# Two gateways a store: the tills at the front; the receiving scanner, shelves, sensors, back door, cameras and
# the receipt printer that prints pick lists at the back. Every event a rule looks at comes through the back
# gateway unless --cameras-at-front (see docs/benchmarks.md: rules fed out of order across gateways).
GATEWAYS: Final = ("front", "back")
SHELVES: Final = 4
SLOTS_PER_SHELF: Final = 12
ASSORTMENT: Final = 400  # the most sold SKUs: what stores receive, count and put on shelves
UNIT_WEIGHT_G: Final = 250.0
SHARE_RECEIVING: Final = 0.07
SHARE_COUNT: Final = 0.03
SHARE_SHELF: Final = 0.20
SHARE_UNKNOWN_SALES: Final = 0.02
PICKS_BOUGHT: Final = 0.85  # picked items scanned at a till a few minutes later; the rest becomes shrink
ROOM_FILE: Final = "sensors/datatraining.txt"
BARCODE_FILE: Final = "barcodes/zxing_expected_texts.csv"
POSTGRES_CANDIDATES: Final = (
    "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
    "postgresql+asyncpg://root@127.0.0.1:5432/postgres",
)


# --------------------------------------------------------------------------- the real data and the catalog


@dataclass(frozen=True)
class Catalog:
    """The catalog the hub is given (as the CSV files an operator imports) and the data the workload replays."""

    skus_csv: str
    stores_csv: str
    planogram_csv: str
    sku_ids: frozenset[str]
    slots: dict[str, list[tuple[str, int, str, int, int]]]  # store -> (shelf, slot, sku, capacity, minimum)
    sale_lines: list[tuple[str, int]]  # (code, quantity) of every real checkout line, in invoice order
    assortment: list[str]
    unknown_codes: list[str]  # real EAN-13 codes that no SKU has
    room: list[tuple[float, float]]  # (°C, %RH) of a real room, one a minute


def _data_dir() -> Path:
    from device_drivers.simulated.climate import shared_data_dir
    from hub.catalog.retail_sample import INVOICE_FILE

    data = shared_data_dir()
    if data is None or not (data / INVOICE_FILE).is_file():
        raise SystemExit("the shared real data is missing: set STOREGATE_SHARED_DATA to the shared/data folder")
    return data


def store_ids(count: int) -> list[str]:
    """``store-0001`` ... of the benchmark."""
    return [f"store-{n:04d}" for n in range(1, count + 1)]


def build_catalog(stores: list[str], seed: int) -> Catalog:
    """Real SKUs from the invoice lines; profiles of the stores; 48 planogram slots per store."""
    from hub.catalog.csv_io import PLANOGRAM, SKUS, STORES, SlotRow, StoreRow, write_csv
    from hub.catalog.retail_sample import INVOICE_FILE, read_invoice_lines, skus_from_invoices
    from hub.catalog.values import normalise_gtin

    data = _data_dir()
    lines = read_invoice_lines(data / INVOICE_FILE)
    skus = skus_from_invoices(lines)
    sku_ids = frozenset(row.sku_id for row in skus)
    sale_lines = [
        (line["StockCode"].strip(), int(float(line["Quantity"])))
        for line in lines
        if not line["InvoiceNo"].startswith("C") and float(line["Quantity"]) >= 1
    ]
    sold = Counter(code for code, _ in sale_lines if code in sku_ids)
    assortment = [code for code, _ in sold.most_common(ASSORTMENT)]
    rng = random.Random(seed)
    hours = {day: "07:00-22:00" for day in ("mon", "tue", "wed", "thu", "fri", "sat")} | {"sun": "10:00-16:00"}
    store_rows = [
        StoreRow.model_validate(
            {"store_id": store, "name": f"Bench store {store[-4:]}", "timezone": "Europe/London", "currency": "GBP"}
            | hours
            | {"latitude": round(rng.uniform(50.5, 55.5), 4), "longitude": round(rng.uniform(-4.5, 1.5), 4)}
        )
        for store in stores
    ]
    slots: dict[str, list[tuple[str, int, str, int, int]]] = {}
    slot_rows = []
    for store in stores:
        chosen = rng.sample(assortment[:200], SHELVES * SLOTS_PER_SHELF)
        plan = []
        for n, sku in enumerate(chosen):
            capacity = rng.choice((12, 16, 20, 24))
            plan.append((f"shelf-{n // SLOTS_PER_SHELF + 1}", n % SLOTS_PER_SHELF + 1, sku, capacity, capacity // 4))
        slots[store] = plan
        slot_rows += [
            SlotRow(store_id=store, shelf_id=shelf, slot=slot, sku_id=sku, capacity=capacity, min_quantity=minimum)
            for shelf, slot, sku, capacity, minimum in plan
        ]
    unknown = []
    with (data / BARCODE_FILE).open(newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            code = row["text"].strip()
            if row["set"].startswith("ean13") and code.isdigit() and len(code) == 13:
                with suppress(ValueError):  # a sample whose check digit does not add up is not a GTIN
                    normalise_gtin(code)
                    unknown.append(code)
    with (data / ROOM_FILE).open(newline="", encoding="utf-8") as file:
        # Each line starts with a row number the header does not name: id, date, Temperature, Humidity, ...
        room = [(float(row[2]), float(row[3])) for row in list(csv.reader(file))[1:]]
    return Catalog(
        skus_csv=write_csv(SKUS, skus),
        stores_csv=write_csv(STORES, store_rows),
        planogram_csv=write_csv(PLANOGRAM, slot_rows),
        sku_ids=sku_ids,
        slots=slots,
        sale_lines=sale_lines,
        assortment=assortment,
        unknown_codes=sorted(set(unknown)),
        room=room,
    )


# --------------------------------------------------------------------------- the workload


@dataclass(frozen=True, slots=True)
class Planned:
    """One event of a store before it gets its ids: seconds after DAY_START, gateway, device, kind, payload."""

    t: float
    gateway: str
    device_id: str
    kind: str
    payload: dict[str, Any]


def _scan(t: float, mode: str, device: str, code: str, quantity: int, *, gtin: str | None = None) -> Planned:
    kind = {"checkout": "scan.sale", "receiving": "scan.receiving", "stock_count": "scan.count"}[mode]
    payload: dict[str, Any] = {"code": code, "symbology": "ean13" if gtin else "code128", "mode": mode}
    if gtin:
        payload["gtin"] = gtin
    if quantity != 1:
        payload["quantity"] = quantity
    gateway = "front" if mode == "checkout" else "back"
    return Planned(t, gateway, device, kind, payload)


def _reading(t: float, device: str, zone: str, quantity: str, value: float) -> Planned:
    unit = {"temperature": "Cel", "humidity": "%RH"}[quantity]
    payload = {"quantity": quantity, "value": round(value, 2), "unit": unit, "zone": zone}
    return Planned(t, "back", device, "environment.reading", payload)


def _shelf(t: float, shelf: str, slot: int, sku: str, delta: int, count: int) -> Planned:
    payload = {"slot": slot, "sku": sku, "delta": delta, "count": count, "weight_g": count * UNIT_WEIGHT_G}
    return Planned(t, "back", shelf, "shelf.pick" if delta < 0 else "shelf.put", payload)


def store_hour(
    index: int, count: int, catalog: Catalog, store: str, rng: random.Random, *, cameras: str = "back"
) -> list[Planned]:
    """``count`` events of one store, in time order, over ``count / EVENTS_PER_STORE_HOUR`` hours."""
    span = count / EVENTS_PER_STORE_HOUR * 3600.0
    minutes = int(span // 60)
    out: list[Planned] = []

    # Sensors, one reading a minute: two chillers, a freezer, the back room (a real room's log).
    warm_chiller = index % 10 == 3  # a chiller door left ajar: above 5 °C for 25 minutes -> alert, excursion
    warm_freezer = index % 25 == 7
    room_start = rng.randrange(0, len(catalog.room) - minutes - 1)
    for minute in range(minutes):
        t = minute * 60.0 + rng.uniform(0, 5)
        chiller = 3.2 + rng.gauss(0, 0.3) + (3.8 if warm_chiller and 15 <= minute < 40 else 0.0)
        freezer = -20.5 + rng.gauss(0, 0.5) + (6.5 if warm_freezer and 20 <= minute < 45 else 0.0)
        temperature, humidity = catalog.room[room_start + minute]
        out += [
            _reading(t, "th-chiller-1", "chiller-1", "temperature", chiller),
            _reading(t + 0.5, "th-chiller-2", "chiller-2", "temperature", 2.8 + rng.gauss(0, 0.3)),
            _reading(t + 1.0, "th-freezer-1", "freezer-1", "temperature", freezer),
            _reading(t + 1.5, "th-back-room", "back-room", "temperature", temperature),
            _reading(t + 1.5, "th-back-room", "back-room", "humidity", humidity),
        ]

    # The back door: deliveries and bins, open a minute or two; in some stores once held open 7 minutes.
    t = rng.expovariate(1 / 300)
    held = index % 8 == 1
    while t < span - 600:
        open_s = 420.0 if held else rng.uniform(15, 120)
        held = False
        out += [
            Planned(t, "back", "door-back", "door.opened", {"zone": "back", "open": True}),
            Planned(t + open_s, "back", "door-back", "door.closed", {"zone": "back", "open": False}),
        ]
        t += open_s + rng.expovariate(1 / 300)

    # The receipt printer: a blip (no alert), or in some stores 4 minutes unplugged (device_unplugged).
    t = rng.uniform(60, max(span - 400, 61))
    away = 240.0 if index % 6 == 2 else 20.0
    out += [
        Planned(t, "back", "receipt-printer", "device.detached", {"reason": "unplugged", "address": "usb:1-1.4"}),
        Planned(t + away, "back", "receipt-printer", "device.attached", {"profile": "escpos", "address": "usb:1-1.4"}),
    ]

    # Cameras: motion with a snapshot every two minutes or so; one store has a camera covered for two minutes.
    for camera in ("cam-1", "cam-2"):
        t = rng.expovariate(1 / 120)
        while t < span:
            out.append(Planned(t, cameras, camera, "camera.motion", {"snapshot_ref": f"snap/{store}/{camera}/{t:.0f}"}))
            t += rng.expovariate(1 / 120)
    if index % 20 == 11:
        t = rng.uniform(60, max(span - 200, 61))
        out += [
            Planned(t, cameras, "cam-2", "camera.tamper", {"snapshot_ref": f"snap/{store}/cam-2/tamper"}),
            Planned(t + 120, cameras, "cam-2", "camera.restored", {}),
        ]

    # Receiving and stock counts at the back, of the assortment.
    for _ in range(round(count * SHARE_RECEIVING)):
        sku = rng.choice(catalog.assortment)
        out.append(_scan(rng.uniform(0, span), "receiving", "scanner-back", sku, rng.choice((6, 12, 24, 48))))
    for _ in range(round(count * SHARE_COUNT)):
        sku = rng.choice(catalog.assortment)
        out.append(_scan(rng.uniform(0, span), "stock_count", "scanner-back", sku, rng.randint(1, 40)))

    # Shelves: customers pick; staff refill a slot 5-20 minutes after it falls below its minimum.
    plan = catalog.slots[store]
    level = {(shelf, slot): capacity for shelf, slot, _, capacity, _ in plan}
    refill_due: dict[tuple[str, int], float] = {}
    sweep_at = rng.uniform(300, span - 300) if index % 5 == 0 and span > 900 else None
    shelf_events: list[Planned] = []
    bought: list[Planned] = []
    till = 0

    def refill_until(now: float) -> None:
        for key, due in sorted(refill_due.items(), key=lambda item: item[1]):
            if due > now:
                break
            shelf, slot, sku, capacity, _ = next(p for p in plan if (p[0], p[1]) == key)
            shelf_events.append(_shelf(due, shelf, slot, sku, capacity - level[key], capacity))
            level[key] = capacity
            del refill_due[key]

    def pick(now: float, entry: tuple[str, int, str, int, int], items: int) -> None:
        nonlocal till
        shelf, slot, sku, _, minimum = entry
        key = (shelf, slot)
        items = min(items, level[key])
        if items == 0:
            return
        level[key] -= items
        shelf_events.append(_shelf(now, shelf, slot, sku, -items, level[key]))
        if level[key] < minimum and key not in refill_due:
            refill_due[key] = now + rng.uniform(300, 1200)
        if rng.random() < PICKS_BOUGHT:
            till = till % 4 + 1
            bought.append(_scan(now + rng.uniform(60, 900), "checkout", f"till-{till}", sku, items))

    for now in sorted(rng.uniform(0, span) for _ in range(round(count * SHARE_SHELF / 1.1))):
        refill_until(now)
        if sweep_at is not None and now >= sweep_at:
            # A sweep: three grabs of two items from one full slot within 14 s (shelf_sweep: 6 within 30 s).
            entry = max(plan, key=lambda p: level[(p[0], p[1])])
            for n in range(3):
                pick(sweep_at + 7 * n, entry, 2)
            sweep_at = None
            continue
        pick(now, rng.choice(plan), 1 if rng.random() < 0.75 else 2)
    out += shelf_events
    out += [scan for scan in bought if scan.t < span]

    # The rest are checkout lines, replayed from the real invoices from an offset of the store's own.
    line = rng.randrange(len(catalog.sale_lines))
    for _ in range(max(count - len(out), 0)):
        t = rng.uniform(0, span)
        till = till % 4 + 1
        if rng.random() < SHARE_UNKNOWN_SALES:
            code = rng.choice(catalog.unknown_codes)
            out.append(_scan(t, "checkout", f"till-{till}", code, 1, gtin=code.zfill(14)))
            continue
        code, quantity = catalog.sale_lines[line % len(catalog.sale_lines)]
        line += 1
        out.append(_scan(t, "checkout", f"till-{till}", code, quantity))
    out.sort(key=lambda planned: planned.t)
    return out[:count]


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT publish of the run: a batch of ``events`` events (0 for a malformed message)."""

    topic: str
    payload: bytes
    events: int


@dataclass
class Expected:
    """What the hub must hold after applying the workload, computed here without the hub's code."""

    events: int = 0
    movements: int = 0
    unplaced: int = 0
    on_hand: dict[tuple[str, str], int] = field(default_factory=dict)
    shelf: dict[tuple[str, str, int], int] = field(default_factory=dict)
    below_minimum: int = 0  # shelf reports under the slot's minimum: restock tasks must follow


@dataclass
class Workload:
    """Pre-encoded messages in publish order, the births, and what the hub must end with."""

    messages: list[Message]
    births: list[Message]
    last_seq: dict[str, int]  # gateway -> its last seq (one stream each)
    bad_messages: int
    kinds: Counter[str]
    expected: Expected
    stores: int
    span_s: float

    @property
    def events(self) -> int:
        """Events in the run."""
        return sum(self.last_seq.values())


def _expect(
    expected: Expected,
    store: str,
    events: Sequence[tuple[datetime, str, Planned]],
    skus: frozenset[str],
    slots: Sequence[tuple[str, int, str, int, int]],
) -> None:
    """Add one store's movements, unplaced scans, final stock and shelf levels to ``expected``."""
    minimum = {(shelf, slot): least for shelf, slot, _, _, least in slots}
    scans: list[tuple[datetime, str, str, str, int]] = []
    for at, event_id, planned in events:
        expected.events += 1
        if planned.kind.startswith("scan."):
            code = planned.payload.get("gtin") or planned.payload["code"]
            if code not in skus:  # unknown codes are GTINs no SKU carries: the hub records them unplaced
                expected.unplaced += 1
                continue
            expected.movements += 1
            scans.append((at, event_id, code, planned.kind, planned.payload.get("quantity", 1)))
        elif planned.kind in ("shelf.pick", "shelf.put"):
            expected.movements += 1
            slot_key = (store, planned.device_id, planned.payload["slot"])
            expected.shelf[slot_key] = planned.payload["count"]  # events are in time order: the last one stands
            expected.below_minimum += planned.payload["count"] < minimum[slot_key[1:]]
    for _, _, sku, kind, quantity in sorted(scans):
        key = (store, sku)
        held = expected.on_hand.get(key, 0)
        expected.on_hand[key] = {"scan.sale": held - quantity, "scan.receiving": held + quantity}.get(kind, quantity)


def build_workload(
    catalog: Catalog, *, events: int, stores: int, batch: int, bad: int, seed: int, cameras: str = "back"
) -> Workload:
    """Every store's hour as EventBatch messages of ``batch`` events per gateway, in the order they fill."""
    from storegate import wire

    rng = random.Random(seed)
    names = store_ids(stores)
    per_store = [events // stores + (1 if n < events % stores else 0) for n in range(stores)]
    expected = Expected()
    kinds: Counter[str] = Counter()
    batches: list[tuple[datetime, str, wire.EventBatch]] = []
    births: list[Message] = []
    last_seq: dict[str, int] = {}
    now = wire.utc_now()
    for index, (store, count) in enumerate(zip(names, per_store, strict=True)):
        planned = store_hour(index, count, catalog, store, rng, cameras=cameras)
        by_gateway: dict[str, list[wire.Event]] = defaultdict(list)
        timed: list[tuple[datetime, str, Planned]] = []
        streams = {role: uuid.UUID(int=rng.getrandbits(128), version=4) for role in GATEWAYS}
        for item in planned:
            gateway = f"gw-{store[-4:]}-{item.gateway}"
            at = DAY_START + timedelta(microseconds=round(item.t * 1_000_000))
            event = wire.Event(
                event_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                store_id=store,
                gateway_id=gateway,
                stream=streams[item.gateway],
                seq=len(by_gateway[gateway]) + 1,
                device_id=item.device_id,
                kind=item.kind,
                ts=at,
                payload=item.payload,
            )
            by_gateway[gateway].append(event)
            timed.append((at, str(event.event_id), item))
            kinds[item.kind] += 1
        _expect(expected, store, timed, catalog.sku_ids, catalog.slots[store])
        for gateway, gateway_events in by_gateway.items():
            last_seq[gateway] = len(gateway_events)
            for start in range(0, len(gateway_events), batch):
                chunk = gateway_events[start : start + batch]
                sent_at = chunk[-1].ts + timedelta(milliseconds=200)
                batches.append(
                    (
                        sent_at,
                        gateway,
                        wire.EventBatch(store_id=store, gateway_id=gateway, sent_at=sent_at, events=chunk),
                    )
                )
            status = wire.GatewayStatus(
                store_id=store,
                gateway_id=gateway,
                online=True,
                reason="birth",
                ts=now,
                agent_version="bench",
                devices=sorted({e.device_id for e in gateway_events}),
            )
            births.append(Message(wire.topic(store, gateway, wire.Channel.STATUS), wire.encode(status), 0))
    batches.sort(key=lambda item: (item[0], item[1]))
    messages = [
        Message(wire.topic(b.store_id, b.gateway_id, wire.Channel.EVENTS), wire.encode(b), len(b.events))
        for _, _, b in batches
    ]
    # Deliberately malformed messages, spread over the run: the hub must reject them and carry on.
    for n in range(bad):
        position = (n + 1) * len(messages) // (bad + 1)
        target = messages[position]
        messages.insert(position, Message(target.topic, b'{"v": 1, "store_id": "trunc', 0))
    span = max(per_store) / EVENTS_PER_STORE_HOUR * 3600.0
    return Workload(messages, births, last_seq, bad, kinds, expected, stores, span)


# --------------------------------------------------------------------------- databases


class Databases:
    """A migrated template database holding the catalog, cloned for every phase; all dropped by ``close``."""

    def __init__(self, kind: str, workdir: Path, postgres_url: str | None) -> None:
        self.kind = kind
        self.workdir = workdir
        self._postgres_url = postgres_url
        self._admin_url = ""
        self._template = ""
        self._created: list[str] = []

    async def prepare(self, catalog: Catalog) -> None:
        """Create the template: migrations, then the catalog through the import functions."""
        from hub.db.migrate import upgrade_to_head

        if self.kind == "sqlite":
            path = self.workdir / "template.sqlite3"
            self._template = str(path)
            url = f"sqlite+aiosqlite:///{path}"
        else:
            self._admin_url = await self._find_admin()
            self._template = f"storegate_bench_{uuid.uuid4().hex[:12]}_template"
            await self._admin(f'CREATE DATABASE "{self._template}"')
            self._created.append(self._template)
            url = self._url(self._template)
        await upgrade_to_head(url)
        await import_catalog(url, catalog)
        if self.kind == "sqlite":
            with closing(sqlite3.connect(self._template)) as connection:  # everything into the main file
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def fresh(self, label: str) -> str:
        """A new database cloned from the template."""
        if self.kind == "sqlite":
            path = self.workdir / f"{label}.sqlite3"
            shutil.copyfile(self._template, path)
            return f"sqlite+aiosqlite:///{path}"
        name = f"{self._template.removesuffix('_template')}_{label}"
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        self._created.append(name)
        return self._url(name)

    async def close(self) -> None:
        """Drop every PostgreSQL database this run created (SQLite files go with the temp directory)."""
        for name in reversed(self._created):
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._created.clear()

    def _url(self, name: str) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self._admin_url).set(database=name).render_as_string(hide_password=False)

    async def _find_admin(self) -> str:
        import asyncpg  # type: ignore[import-untyped]
        from sqlalchemy.engine import make_url

        errors = []
        for candidate in (self._postgres_url,) if self._postgres_url else POSTGRES_CANDIDATES:
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
            await connection.close()
            return candidate
        raise SystemExit("PostgreSQL is not reachable: " + "; ".join(errors))

    async def _admin(self, sql: str) -> None:
        import asyncpg
        from sqlalchemy.engine import make_url

        url = make_url(self._admin_url)
        connection = await asyncpg.connect(
            host=url.host, port=url.port or 5432, user=url.username, password=url.password, database=url.database
        )
        try:
            await connection.execute(sql)
        finally:
            await connection.close()


async def import_catalog(url: str, catalog: Catalog) -> None:
    """SKUs, store profiles and the planogram, through the same functions as the catalog API."""
    from hub.catalog.service import import_planogram, import_skus, import_stores
    from hub.db.engine import create_engine, session_factory
    from storegate import wire

    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            now = wire.utc_now()
            await import_skus(session, catalog.skus_csv, now=now)
            await import_stores(session, catalog.stores_csv, now=now)
            await import_planogram(session, catalog.planogram_csv, now=now)
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- the gateways' side


class Gateways:
    """Every gateway of the run over one MQTT connection: publishes pre-encoded messages, counts Acks."""

    def __init__(self, port: int, last_seq: dict[str, int]) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        self._total = sum(last_seq.values())
        self._through: dict[str, int] = {}
        self.acked = 0
        self.done_at: float | None = None
        self._progress = threading.Condition()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-gateways-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.max_inflight_messages_set(1000)
        connected, subscribed = threading.Event(), threading.Event()
        self._client.on_connect = lambda *_: connected.set()
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = self._on_ack
        self._client.connect("127.0.0.1", port, keepalive=60)
        self._client.loop_start()
        if not connected.wait(10):
            raise SystemExit("the benchmark's gateways could not connect to the broker")
        sock = self._client.socket()
        if isinstance(sock, socket.socket):  # a small PUBLISH must not wait for a delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client.subscribe("storegate/v1/+/+/ack", qos=1)
        if not subscribed.wait(10):
            raise SystemExit("no SUBACK for the Ack subscription")

    def _on_ack(self, client: Any, userdata: Any, message: Any) -> None:
        ack = json.loads(message.payload)
        gateway, through = ack["gateway_id"], ack["through_seq"]
        with self._progress:
            held = self._through.get(gateway, 0)
            if through > held:
                self._through[gateway] = through
                self.acked += through - held
                if self.acked == self._total:
                    self.done_at = time.perf_counter()
                self._progress.notify_all()

    def publish_and_wait(self, messages: Sequence[Message], *, retain: bool = False) -> None:
        """Publish and wait for every PUBACK (births: not timed)."""
        infos = [self._client.publish(m.topic, m.payload, qos=1, retain=retain) for m in messages]
        for info in infos:
            info.wait_for_publish(10)

    def run(self, messages: Sequence[Message], *, outstanding: int, limit_s: float) -> tuple[float, float | None, int]:
        """Publish as fast as the hub acknowledges (at most ``outstanding`` events unacknowledged).

        Returns the time of the first publish, the time of the Ack of the last event (None if ``limit_s``
        passed first) and the events sent.
        """
        started = time.perf_counter()
        deadline = started + limit_s
        sent = 0

        def room() -> bool:
            return sent - self.acked < outstanding

        for message in messages:
            with self._progress:
                if not self._progress.wait_for(room, timeout=max(deadline - time.perf_counter(), 0)):
                    break
            self._client.publish(message.topic, message.payload, qos=1)
            sent += message.events
        with self._progress:
            self._progress.wait_for(lambda: self.done_at is not None, timeout=max(deadline - time.perf_counter(), 0))
        return started, self.done_at, sent

    def close(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


class HubMetricsReader:
    """The hub's /metrics, as numbers (read with an API token: the hub answers nobody anonymously)."""

    def __init__(self, port: int, token: str) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"}
        self._client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5, headers=headers)

    def read(self) -> dict[str, float]:
        """Every sample, keyed by its name with labels as written; empty while the hub is not up."""
        import httpx

        try:
            text = self._client.get("/metrics").text
        except httpx.HTTPError:
            return {}
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with suppress(ValueError):
                    samples[name] = float(value)
        return samples

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()


OPERATOR: Final = "bench-operator"  # the name of the benchmark's API token; its ledger rows say token:<name>
OPERATOR_INTERVAL_S: Final = 0.2


def bench_token(url: str) -> str:
    """An admin API token named OPERATOR, written into the (migrated) database before the hub starts."""
    from datetime import timedelta

    from hub.auth.operators import Scope, create_token
    from hub.db.engine import create_engine, session_factory
    from hub.db.migrate import upgrade_to_head
    from storegate import wire

    async def make() -> str:
        await upgrade_to_head(url)
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as session:
                _, text = await create_token(
                    session,
                    name=OPERATOR,
                    role="admin",
                    scope=Scope(),
                    lifetime=timedelta(days=1),
                    by="bench",
                    now=wire.utc_now(),
                )
                await session.commit()
        finally:
            await engine.dispose()
        return text

    return asyncio.run(make())


class OperatorWrites:
    """An operator working in the API while the hub ingests: stock adjustments, one every ``interval`` s.

    Each is a write transaction of its own beside the consumer's units (on SQLite they take turns at its
    one write lock). Its latency and status are recorded; each 201 is one more ledger row and one more
    unit on hand of ``key``, which :func:`verify` expects.
    """

    def __init__(self, port: int, key: tuple[str, str], *, token: str, count: int, interval: float) -> None:
        import httpx

        self.key = key
        headers = {"Authorization": f"Bearer {token}"}
        self._client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers=headers)
        self._count = count
        self._interval = interval
        self._stop = threading.Event()
        self.results: list[tuple[int, float]] = []  # (status, seconds); status 0: no answer
        self._thread = threading.Thread(target=self._run, name="bench-operator", daemon=True)

    def start(self) -> None:
        """Start writing in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the write in progress."""
        self._stop.set()
        self._thread.join(timeout=120)
        self._client.close()

    @property
    def accepted(self) -> int:
        """Adjustments the hub answered 201 to."""
        return sum(1 for status, _ in self.results if status == 201)

    def _run(self) -> None:
        import httpx

        store_id, sku_id = self.key
        body = {"sku_id": sku_id, "quantity": 1, "note": "operator working during the benchmark"}
        for _ in range(self._count):
            if self._stop.wait(self._interval):
                return
            started = time.perf_counter()
            try:
                status = self._client.post(f"/api/v1/stores/{store_id}/stock/adjustments", json=body).status_code
            except httpx.HTTPError:
                status = 0
            self.results.append((status, time.perf_counter() - started))

    def figures(self) -> dict[str, Any]:
        """Count, statuses and latency quantiles of the writes made."""
        seconds = sorted(s for _, s in self.results)
        if not seconds:
            return {"writes": 0}

        def quantile(q: float) -> float:
            return seconds[min(len(seconds) - 1, int(q * len(seconds)))]

        return {
            "writes": len(seconds),
            "statuses": dict(Counter(status for status, _ in self.results)),
            "p50_s": quantile(0.5),
            "p95_s": quantile(0.95),
            "max_s": seconds[-1],
        }


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)  # polling another process's metrics; there is no event to wait on
    raise SystemExit(f"benchmark gave up waiting for {what} after {timeout:.0f}s")


# --------------------------------------------------------------------------- one hub phase


@dataclass
class HubRun:
    """One timed run of the hub."""

    operations: bool
    events: int
    seconds: float
    complete: bool
    units: int
    unit_events: float
    commit_seconds: float
    hub_cpu_seconds: float
    checks: dict[str, Any] = field(default_factory=dict)
    operator: dict[str, Any] = field(default_factory=dict)  # --operator-writes: the API writes made meanwhile

    @property
    def rate(self) -> float:
        """Events per second, first publish to the Ack of the last event."""
        return self.events / self.seconds if self.seconds else 0.0


def run_hub(url: str, workload: Workload, *, operations: bool, workdir: Path, args: argparse.Namespace) -> HubRun:
    """Start a broker and the hub on ``url``, publish the workload, time it, stop, verify."""
    import psutil

    from launcher.broker import free_port, start_mosquitto
    from storegate.mqtt import MqttSettings
    from tests.procs import hub_service

    broker = start_mosquitto(workdir / "broker")
    http_port = free_port()
    hub = hub_service(
        workdir / "hub",
        MqttSettings(host=broker.host, port=broker.port),
        http_port=http_port,
        database_url=url,
        log_level="INFO",  # the hub's default
        operations={"enabled": operations},
    )
    if (args.profile and operations) or args.hub_preload:
        # This file as the hub process, to run it under cProfile or with an experiment loaded first.
        hub.argv = [sys.executable, __file__, "--hub-child", str(workdir / "hub" / "hub.toml")]
        if args.profile and operations:
            args.profile.mkdir(parents=True, exist_ok=True)
            hub.argv += ["--profile-out", str(args.profile / f"hub-{workdir.parent.name}.prof")]
        if args.hub_preload:
            hub.argv += ["--hub-preload", str(args.hub_preload)]
    token = bench_token(url)
    metrics = HubMetricsReader(http_port, token)
    gateways: Gateways | None = None
    operator: OperatorWrites | None = None
    try:
        hub.start()
        _wait(
            lambda: metrics.read().get("storegate_hub_mqtt_connected") == 1.0, 120, "the hub to connect to the broker"
        )
        gateways = Gateways(broker.port, workload.last_seq)
        gateways.publish_and_wait(workload.births, retain=True)
        status = 'storegate_hub_messages_received_total{channel="status"}'
        _wait(lambda: metrics.read().get(status, 0) >= len(workload.births), 60, "the hub to take the births")
        before = metrics.read()
        assert hub.process is not None
        process = psutil.Process(hub.process.pid)
        cpu_before = sum(process.cpu_times()[:2])
        if operations and args.operator_writes:
            key = min(workload.expected.on_hand)  # a position the checks verify, so the writes are checked too
            operator = OperatorWrites(
                http_port, key, token=token, count=args.operator_writes, interval=OPERATOR_INTERVAL_S
            )
            operator.start()
        started, done_at, sent = gateways.run(workload.messages, outstanding=args.outstanding, limit_s=args.max_seconds)
        if operator is not None:
            operator.stop()
        ended = done_at if done_at is not None else time.perf_counter()
        cpu = sum(process.cpu_times()[:2]) - cpu_before
        after = metrics.read()
        acked = gateways.acked
    finally:
        if operator is not None:
            operator.stop()
        if gateways is not None:
            gateways.close()
        metrics.close()
        if hub.alive:
            code = hub.stop(timeout=120)
            if code != 0:
                print(f"hub exited with {code}; its log: {hub.log_path} (kept with --keep)", file=sys.stderr)
        broker.stop()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    units = int(delta("storegate_hub_transaction_events_count"))
    run = HubRun(
        operations=operations,
        events=acked,
        seconds=ended - started,
        complete=done_at is not None,
        units=units,
        unit_events=delta("storegate_hub_transaction_events_sum") / units if units else 0.0,
        commit_seconds=delta("storegate_hub_batch_commit_seconds_sum"),
        hub_cpu_seconds=cpu,
    )
    if not run.complete:
        print(f"  time limit: {acked:,} of {sent:,} sent events acknowledged after {args.max_seconds:.0f}s", flush=True)
    adjusted = None
    if operator is not None:
        run.operator = operator.figures()
        adjusted = (operator.key, operator.accepted)
    run.checks = asyncio.run(verify(url, workload, operations=operations, complete=run.complete, adjusted=adjusted))
    return run


async def verify(
    url: str,
    workload: Workload,
    *,
    operations: bool,
    complete: bool,
    adjusted: tuple[tuple[str, str], int] | None = None,
) -> dict[str, Any]:
    """What the hub holds after the run, against what the workload (and ``adjusted``: key, +1 adjustments) makes."""
    from sqlalchemy import text

    from hub.db.engine import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:

            async def scalar(sql: str) -> int:
                return int((await connection.execute(text(sql))).scalar_one())

            async def rows(sql: str) -> list[Any]:
                return list((await connection.execute(text(sql))).all())

            expected = workload.expected
            on_hand = dict(expected.on_hand)
            adjustments = 0
            if adjusted is not None:
                key, adjustments = adjusted
                on_hand[key] += adjustments
            checks: dict[str, Any] = {
                "events_sent": workload.events,
                "events_stored": await scalar("SELECT count(*) FROM events"),
                "rejected_expected": workload.bad_messages,
                "rejected": await scalar("SELECT count(*) FROM rejected_messages"),
            }
            ok = checks["rejected"] == workload.bad_messages and (
                not complete or checks["events_stored"] == workload.events
            )
            if operations:
                positions = {
                    (s, k): int(q) for s, k, q in await rows("SELECT store_id, sku_id, on_hand FROM stock_positions")
                }
                levels = {
                    (s, h, int(n)): int(q)
                    for s, h, n, q in await rows("SELECT store_id, shelf_id, slot, quantity FROM shelf_levels")
                }
                tasks = dict(await rows("SELECT status, count(*) FROM restock_tasks GROUP BY status"))
                alerts = dict(await rows("SELECT rule_id, count(*) FROM alerts GROUP BY rule_id ORDER BY rule_id"))
                checks |= {
                    "movements_expected": expected.movements,
                    "ledger_rows": await scalar("SELECT count(*) FROM ledger"),
                    "unplaced_expected": expected.unplaced,
                    "unplaced": await scalar("SELECT count(*) FROM unplaced_events"),
                    "positions_expected": len(on_hand),
                    "positions_wrong": sum(positions.get(k) != v for k, v in on_hand.items())
                    + len(positions.keys() - on_hand.keys()),
                    "shelf_levels_expected": len(expected.shelf),
                    "shelf_reports_below_minimum": expected.below_minimum,
                    "shelf_levels_wrong": sum(levels.get(k) != v for k, v in expected.shelf.items())
                    + len(levels.keys() - expected.shelf.keys()),
                    "restock_tasks": {str(k): int(v) for k, v in tasks.items()},
                    "print_commands": await scalar("SELECT count(*) FROM commands WHERE name = 'print'"),
                    "alerts": {str(k): int(v) for k, v in alerts.items()},
                    "alert_history": await scalar("SELECT count(*) FROM alert_history"),
                    "excursions": await scalar("SELECT count(*) FROM excursions"),
                    "notifications": await scalar("SELECT count(*) FROM notifications"),
                    "shrink_records": await scalar("SELECT count(*) FROM shrink_records"),
                }
                if adjusted is not None:
                    checks["operator_adjustments"] = adjustments
                    checks["operator_ledger_rows"] = await scalar(
                        f"SELECT count(*) FROM ledger WHERE actor = 'token:{OPERATOR}'"
                    )
                    ok = ok and checks["operator_ledger_rows"] == adjustments
                if complete:
                    ok = ok and checks["ledger_rows"] == expected.movements + adjustments
                    ok = ok and checks["unplaced"] == expected.unplaced
                    ok = ok and checks["positions_wrong"] == 0 and checks["shelf_levels_wrong"] == 0
                    if expected.below_minimum:
                        ok = ok and sum(tasks.values()) > 0 and checks["print_commands"] > 0
            else:
                checks["ledger_rows"] = await scalar("SELECT count(*) FROM ledger")
                ok = ok and checks["ledger_rows"] == 0
            checks["ok"] = ok
            return checks
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- the raw baseline


@dataclass
class RawRun:
    """Rows inserted with plain executemany, the hub's transaction size."""

    tables: tuple[str, ...]
    events: int
    rows: int
    transactions: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        """Events (with their other rows) per second."""
        return self.events / self.seconds

    @property
    def rows_per_s(self) -> float:
        """Rows per second over every table."""
        return self.rows / self.seconds


def _columns(table: str) -> list[str]:
    import hub.db.schema  # noqa: F401  (registers every table)
    from hub.db.models import Base

    columns = Base.metadata.tables[table].columns
    return [c.name for c in columns if not (c.name == "id" and c.primary_key)]


def _all_columns(table: str) -> set[str]:
    import hub.db.schema  # noqa: F401  (registers every table)
    from hub.db.models import Base

    return {c.name for c in Base.metadata.tables[table].columns}


def _insert_sql(dialect: str, table: str, columns: list[str]) -> str:
    marks = ", ".join("?" if dialect == "sqlite" else f"${n}" for n in range(1, len(columns) + 1))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"


async def _read(engine: Any, table: str, columns: list[str], order: str) -> list[tuple[Any, ...]]:
    from hub.db.engine import json_text

    async with engine.connect() as connection:
        result = await connection.exec_driver_sql(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")
        # asyncpg hands JSON back decoded; the insert takes it as text, like the hub's own insert.
        return [tuple(json_text(v) if isinstance(v, dict | list) else v for v in row) for row in result]


async def raw_insert(source_url: str, fresh_url: str, *, unit_events: int, tables: tuple[str, ...]) -> RawRun:
    """Insert the rows the hub wrote (read back from ``source_url``) into ``fresh_url``, timed."""
    from hub.db.engine import create_engine

    source = create_engine(source_url)
    target = create_engine(fresh_url)
    dialect = target.dialect.name
    try:
        # Untimed: what the events refer to (stores, gateways), as the hub created them.
        for table in ("stores", "gateways"):
            columns = _columns(table)
            rows = await _read(source, table, columns, columns[0])
            async with target.begin() as connection:
                await connection.exec_driver_sql(_insert_sql(dialect, table, columns), rows)
        event_columns = _columns("events")
        events = await _read(source, "events", event_columns, "id")
        chunk_of = {row[0]: n // unit_events for n, row in enumerate(events)}
        transactions = (len(events) + unit_events - 1) // unit_events
        plan: list[list[tuple[str, list[tuple[Any, ...]]]]] = [[] for _ in range(transactions)]
        for n in range(transactions):
            plan[n].append(
                (_insert_sql(dialect, "events", event_columns), events[n * unit_events : (n + 1) * unit_events])
            )
        rows_total = len(events)
        for table in tables:
            if table == "events":
                continue
            columns = _columns(table)
            by_chunk: list[list[tuple[Any, ...]]] = [[] for _ in range(transactions)]
            event_id = columns.index("event_id")
            for row in await _read(source, table, columns, "id" if "id" in _all_columns(table) else "event_id"):
                chunk = chunk_of.get(row[event_id])
                if chunk is not None:  # None: an operator's adjustment (--operator-writes), not ingested
                    by_chunk[chunk].append(row)
            for n, chunk_rows in enumerate(by_chunk):
                if chunk_rows:
                    plan[n].append((_insert_sql(dialect, table, columns), chunk_rows))
            rows_total += sum(len(r) for r in by_chunk)
        started = time.perf_counter()
        for statements in plan:
            async with target.begin() as connection:
                for sql, rows in statements:
                    await connection.exec_driver_sql(sql, rows)
        seconds = time.perf_counter() - started
    finally:
        await source.dispose()
        await target.dispose()
    return RawRun(tables, len(events), rows_total, transactions, seconds)


# --------------------------------------------------------------------------- profiling the hub child


def hub_child(config: Path, profile_out: Path | None, preload: Path | None) -> int:
    """``storegate hub --config`` in this process, under cProfile and after running ``preload`` when asked."""
    import runpy

    from hub.runner import run_hub as run_hub_process

    if preload is not None:
        runpy.run_path(str(preload), run_name="hub_preload")
    if profile_out is None:
        return run_hub_process(config)
    import cProfile

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(run_hub_process, config)
    finally:
        profiler.dump_stats(profile_out)


# --------------------------------------------------------------------------- where a unit's time goes


# The parts of a unit timed by --breakdown: (label, module, attribute). Each attribute is replaced by a timing
# wrapper for the breakdown and put back after it; an attribute that no longer exists is left out. Parts done
# while a statement runs (hub.db.overlap) are counted in both: place in store_batches, the rules in apply_placed.
BREAKDOWN_PARTS: Final = (
    ("store_batches: events, marks, stores", "hub.ingest.unit", "store_batches"),
    ("catalog snapshot", "hub.inventory.catalog_view", "CatalogCache.snapshot"),
    ("rules refresh", "hub.alerting.monitoring", "MonitoringEngine.refresh_rules"),
    ("place (pure; runs while the events are inserted)", "hub.ingest.operations", "place"),
    ("apply_placed: inventory (rules evaluated meanwhile)", "hub.ingest.operations", "apply_placed"),
    ("  unplaced_events insert", "hub.inventory.apply", "record_unplaced"),
    ("  apply_movements: ledger + positions", "hub.inventory.apply", "apply_movements"),
    ("    _update_positions", "hub.inventory.apply", "_update_positions"),
    ("      _recompute (movement out of order)", "hub.inventory.apply", "_recompute"),
    ("  _apply_levels: shelf levels", "hub.inventory.apply", "_apply_levels"),
    ("  _restock: tasks, print commands", "hub.inventory.apply", "_restock"),
    ("MonitoringEngine.evaluate: rules", "hub.alerting.monitoring", "MonitoringEngine.evaluate"),
    ("  ShrinkTracker.observe", "hub.domain.ledger", "ShrinkTracker.observe"),
    ("  ShrinkTracker.observe_all", "hub.domain.ledger", "ShrinkTracker.observe_all"),
    ("MonitoringEngine.write: alerts", "hub.alerting.monitoring", "MonitoringEngine.write"),
)


class PartTimers:
    """Wall time and calls of BREAKDOWN_PARTS while installed (a context manager)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._undo: list[tuple[Any, str, Any]] = []
        self.installed: set[str] = set()

    def __enter__(self) -> PartTimers:
        import importlib
        import inspect

        for label, module_name, path in BREAKDOWN_PARTS:
            owner: Any = importlib.import_module(module_name)
            *outer, name = path.split(".")
            for part in outer:
                owner = getattr(owner, part)
            original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
            if original is None:
                continue
            wrapper = (
                self._async(label, original) if inspect.iscoroutinefunction(original) else self._sync(label, original)
            )
            self._undo.append((owner, name, original))
            self.installed.add(label)
            setattr(owner, name, wrapper)
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)

    def _async(self, label: str, function: Any) -> Any:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started
                self.calls[label] += 1

        return timed

    def _sync(self, label: str, function: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started
                self.calls[label] += 1

        return timed


async def breakdown(url: str, workload: Workload) -> dict[str, Any]:
    """The hub's unit path in this process, without MQTT: decode, then units as the consumer commits them.

    The same calls as the consumer (``classify``, ``store_messages`` with ``HubOperations`` in one
    transaction per unit of up to 5,000 events, ``committed`` after the commit), wall time per part,
    and the SQL statements sent, by their first words.
    """
    from sqlalchemy import event

    from hub.alerting.rules_db import seed_default_rules
    from hub.db.checkpoint import WalCheckpointer
    from hub.db.engine import create_engine, session_factory, sqlite_path
    from hub.ingest.classify import classify, weight
    from hub.ingest.operations import HubOperations
    from hub.ingest.unit import store_messages
    from hub.settings import HubSettings
    from storegate import wire
    from storegate.logs import configure_logging
    from storegate.mqtt import Incoming

    configure_logging(level="WARNING")  # the hub's own lines (a task opened, an alert) are not the figures
    budget = HubSettings().max_events_per_transaction
    # The engine and the checkpoints as the hub has them (hub.app._start).
    database_file = sqlite_path(url)
    engine = create_engine(url, background_checkpoint=database_file is not None)
    checkpointer = WalCheckpointer(path=database_file) if database_file is not None else None
    if checkpointer is not None:
        checkpointer.start()
    statements: Counter[str] = Counter()
    statement_seconds: dict[str, float] = defaultdict(float)

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info["statement_started"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        what = " ".join(statement.split()[:3])[:48]
        statements[what] += 1
        statement_seconds[what] += time.perf_counter() - conn.info["statement_started"]

    try:
        sessions = session_factory(engine)
        async with sessions() as session:
            await seed_default_rules(session, now=wire.utc_now())
        operations = HubOperations(engine=engine)
        await operations.warm_up()
        started = time.perf_counter()
        received = wire.utc_now()
        items = [classify(Incoming(m.topic, m.payload, 1, False), received_at=received) for m in workload.messages]
        decode = time.perf_counter() - started
        units: list[list[Any]] = [[]]
        room = budget
        for item in items:
            if room <= 0:
                units.append([])
                room = budget
            units[-1].append(item)
            room -= weight(item)
        event.listen(engine.sync_engine, "before_cursor_execute", before)
        event.listen(engine.sync_engine, "after_cursor_execute", after)
        commit = 0.0
        with PartTimers() as timers:
            started = time.perf_counter()
            for unit in units:
                async with operations.unit():
                    async with sessions() as session, session.begin():
                        result = await store_messages(
                            session,
                            unit,
                            now=wire.utc_now(),
                            rejected_keep=10_000,
                            operations=operations,
                            accept_unknown_gateways=True,  # the bench's gateways enrol on first contact
                        )
                        committing = time.perf_counter()
                    commit += time.perf_counter() - committing
                    for outcome in result.operations:
                        operations.committed(outcome)
            seconds = time.perf_counter() - started
    finally:
        if checkpointer is not None:
            await checkpointer.stop()
        await engine.dispose()
    parts = [
        (label, timers.seconds.get(label, 0.0) if label in timers.installed else None, timers.calls.get(label, 0))
        for label, _, _ in BREAKDOWN_PARTS
    ]
    return {
        "events": workload.events,
        "units": len(units),
        "seconds": seconds,
        "decode_seconds": decode,
        "commit_seconds": commit,
        "parts": [*parts, ("commit", commit, len(units))],
        "statements": sum(statements.values()),
        "statements_top": sorted(
            ((what, n, statement_seconds[what]) for what, n in statements.items()), key=lambda row: -row[2]
        )[:12],
        "checks": await verify(url, workload, operations=True, complete=True),
    }


# --------------------------------------------------------------------------- the run


def _fmt(value: float) -> str:
    return f"{value:,.0f}"


def run_database(
    kind: str, workload: Workload, catalog: Catalog, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """All phases on one database; returns its figures."""
    dbwork = work / kind
    dbwork.mkdir(parents=True)
    databases = Databases(kind, dbwork, args.postgres_url)
    figures: dict[str, Any] = {"database": kind}
    try:
        asyncio.run(databases.prepare(catalog))
        if args.breakdown:
            print(f"[{kind}] breakdown: the unit path in this process ...", flush=True)
            return figures | {"breakdown": asyncio.run(breakdown(asyncio.run(databases.fresh("breakdown")), workload))}
        print(f"[{kind}] applied: {workload.events:,} events, operations on ...", flush=True)
        applied_url = asyncio.run(databases.fresh("applied"))
        applied = run_hub(applied_url, workload, operations=True, workdir=dbwork / "applied", args=args)
        print(
            f"[{kind}]   {_fmt(applied.rate)} events/s in {applied.seconds:.1f} s; {applied.units} units of "
            f"{applied.unit_events:,.0f} events; hub CPU {applied.hub_cpu_seconds:.1f} s",
            flush=True,
        )
        figures["applied"] = applied.__dict__ | {"rate": applied.rate}
        if applied.operator:
            o = applied.operator
            print(
                f"[{kind}]   operator writes meanwhile: {o['writes']} adjustments, statuses {o.get('statuses')}, "
                f"latency p50 {o.get('p50_s', 0):.3f} s, p95 {o.get('p95_s', 0):.3f} s, max {o.get('max_s', 0):.3f} s",
                flush=True,
            )
        if args.profile:
            print(f"[{kind}] the hub's profile: {args.profile / f'hub-{kind}.prof'} (python -m pstats)", flush=True)
            return figures
        print(f"[{kind}] stored only: operations off ...", flush=True)
        stored_url = asyncio.run(databases.fresh("stored"))
        stored = run_hub(stored_url, workload, operations=False, workdir=dbwork / "stored", args=args)
        print(
            f"[{kind}]   {_fmt(stored.rate)} events/s in {stored.seconds:.1f} s; {stored.units} units of "
            f"{stored.unit_events:,.0f} events; hub CPU {stored.hub_cpu_seconds:.1f} s",
            flush=True,
        )
        figures["stored"] = stored.__dict__ | {"rate": stored.rate}
        unit_full = max(round(applied.unit_events), 1)
        unit_events_only = max(round(stored.unit_events), 1)
        print(f"[{kind}] raw inserts of the rows the hub wrote ...", flush=True)
        raw_full = asyncio.run(
            raw_insert(
                applied_url,
                asyncio.run(databases.fresh("raw_full")),
                unit_events=unit_full,
                tables=("events", "ledger", "unplaced_events"),
            )
        )
        raw_events = asyncio.run(
            raw_insert(
                applied_url,
                asyncio.run(databases.fresh("raw_events")),
                unit_events=unit_events_only,
                tables=("events",),
            )
        )
        for name, raw in (("raw_full", raw_full), ("raw_events", raw_events)):
            print(
                f"[{kind}]   {'+'.join(raw.tables)}: {_fmt(raw.events_per_s)} events/s, {_fmt(raw.rows_per_s)} "
                f"rows/s ({raw.rows:,} rows, {raw.transactions} transactions)",
                flush=True,
            )
            figures[name] = raw.__dict__ | {"events_per_s": raw.events_per_s, "rows_per_s": raw.rows_per_s}
        figures["applied_vs_raw"] = applied.rate / raw_full.events_per_s
        figures["stored_vs_raw_events"] = stored.rate / raw_events.events_per_s
        figures["applied_vs_stored"] = applied.rate / stored.rate
        figures["target_met"] = applied.complete and applied.rate >= 5000 and figures["applied_vs_raw"] >= 0.5
        return figures
    finally:
        asyncio.run(databases.close())


def print_report(workload: Workload, results: list[dict[str, Any]]) -> None:
    """The table of figures and the checks."""
    print()
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in workload.kinds.most_common())
    print(
        f"workload: {workload.events:,} events of {workload.stores} stores ({len(workload.last_seq)} gateways), "
        f"{len(workload.messages) - workload.bad_messages:,} batches + {workload.bad_messages} malformed; "
        f"{workload.span_s / 60:.0f} min of store time"
    )
    print(f"  by kind: {kinds}")
    print()
    header = (
        "database",
        "applied ev/s",
        "stored-only ev/s",
        "raw ev+ledger+unplaced",
        "raw events only",
        "applied/raw",
        "stored/raw-ev",
        "target",
    )
    if any("raw_full" in r for r in results):
        print(" | ".join(header))
    for r in results:
        if "raw_full" not in r:
            continue
        print(
            " | ".join(
                (
                    r["database"],
                    _fmt(r["applied"]["rate"]),
                    _fmt(r["stored"]["rate"]),
                    f"{_fmt(r['raw_full']['events_per_s'])} ev/s = {_fmt(r['raw_full']['rows_per_s'])} rows/s",
                    f"{_fmt(r['raw_events']['events_per_s'])}",
                    f"{r['applied_vs_raw']:.2f}x",
                    f"{r['stored_vs_raw_events']:.2f}x",
                    "met" if r["target_met"] else "NOT met (>= 5,000 ev/s and >= 0.5x raw)",
                )
            )
        )
    print()
    for r in results:
        if "breakdown" in r:
            _print_breakdown(r["database"], r["breakdown"])
        for phase in ("applied", "stored", "breakdown"):
            if phase in r:
                checks = r[phase]["checks"]
                print(f"checks {r['database']} {phase}: {'OK' if checks['ok'] else 'FAILED'}")
                for key, value in checks.items():
                    if key != "ok":
                        print(f"    {key}: {value}")


def _print_breakdown(database: str, figures: dict[str, Any]) -> None:
    seconds = figures["seconds"]
    print(
        f"breakdown ({database}, the unit path in one process without MQTT, wall time): {figures['events']:,} events "
        f"in {figures['units']} units, {seconds:.1f} s = {_fmt(figures['events'] / seconds)} events/s; "
        f"decoding them took {figures['decode_seconds']:.1f} s more"
    )
    for label, part_seconds, calls in figures["parts"]:
        if part_seconds is None:
            print(f"    {label:<44} (not found)")
            continue
        print(f"    {label:<44} {part_seconds:7.2f} s {part_seconds / seconds:6.1%} {calls:>9,} calls")
    print(f"    SQL statements: {figures['statements']:,}; those that took the most time in the driver:")
    for what, count, statement_seconds in figures["statements_top"]:
        print(f"      {count:>8,} {statement_seconds:7.2f} s  {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--events", type=int, default=200_000, help="events per run")
    parser.add_argument("--stores", type=int, default=50)
    parser.add_argument("--batch", type=int, default=100, help="events per EventBatch")
    parser.add_argument("--outstanding", type=int, default=20_000, help="events published and not yet acknowledged")
    parser.add_argument("--bad-messages", type=int, default=5, help="malformed messages spread over the run")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="time limit of each hub run")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--cameras-at-front",
        action="store_true",
        help="cameras on the tills' gateway: their events reach the rules out of order with the back gateway's",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("STOREGATE_TEST_POSTGRES_URL"),
        help="an existing database to connect to for CREATE DATABASE (default: postgres or root on 127.0.0.1:5432)",
    )
    parser.add_argument("--profile", type=Path, help="run the applied phase only, the hub under cProfile; dumps here")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="instead of the hub runs: the hub's unit path in this process, without MQTT, timed part by part",
    )
    parser.add_argument(
        "--operator-writes",
        type=int,
        default=0,
        help=f"during each applied run, up to this many stock adjustments through the hub's API, one every "
        f"{OPERATOR_INTERVAL_S} s: their latency and status (the workload's figures then include them)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", type=Path, help="work in this (new) directory and keep it: hub logs, SQLite files")
    parser.add_argument(
        "--hub-preload",
        type=Path,
        help="EXPERIMENTS ONLY: a Python file the hub process runs before it starts (e.g. a monkeypatch of a "
        "proposed change); figures taken with it are not the hub's",
    )
    parser.add_argument("--hub-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hub_child:
        raise SystemExit(hub_child(args.hub_child, args.profile_out, args.hub_preload))

    started = time.perf_counter()
    stores = store_ids(args.stores)
    catalog = build_catalog(stores, args.seed)
    workload = build_workload(
        catalog,
        events=args.events,
        stores=args.stores,
        batch=args.batch,
        bad=args.bad_messages,
        seed=args.seed,
        cameras="front" if args.cameras_at_front else "back",
    )
    print(
        f"workload built in {time.perf_counter() - started:.1f} s: {workload.events:,} events, "
        f"{len(workload.messages):,} messages, {sum(len(m.payload) for m in workload.messages) / 2**20:.0f} MiB",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="storegate-bench-hub-") as tmp:
        work = Path(tmp) if args.keep is None else args.keep
        for kind in ("sqlite", "postgresql") if args.database == "both" else (args.database,):
            results.append(run_database(kind, workload, catalog, work, args))
    print_report(workload, results)
    if args.hub_preload:
        print(f"EXPERIMENT: the hub ran {args.hub_preload} before starting; these are not the hub's figures")
    figures = {
        "cpus": os.cpu_count(),
        "events": workload.events,
        "stores": args.stores,
        "batch": args.batch,
        "kinds": dict(workload.kinds),
        "hub_preload": str(args.hub_preload) if args.hub_preload else None,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
