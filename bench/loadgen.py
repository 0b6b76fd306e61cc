#!/usr/bin/env python3
"""Load generator (issue 19): K simulated stores over real MQTT against 1..N hub worker processes.

One process plays every store. Each store has two gateways, as in bench/hub_ingest.py: ``front`` (four tills
scanning sales, replayed line by line from the real invoice file, about 2 % real EAN-13 codes no SKU has) and
``back`` (four shelves with picks and refills on the store's planogram slots, the receiving scanner and stock
counts, two chillers, a freezer and the back room's temperature and humidity every sensor tick (the room's values
from a real room's log), the back door, two cameras' motion). Each gateway publishes as the edge agent does
(edge_agent/uplink.py): an EventBatch on its own events topic with its own stream and consecutive seqs, at most
``max_batch`` events a message and ``max_in_flight`` unacknowledged, and Nagle's rule with the agent's 50 ms cap
(a part-filled batch waits while one is unacknowledged). The mix per store-hour is STORE_HOUR_MIX, derived from
the real data (see docs/scaling.md, "Capacity plan"); the rate compresses store time so that K stores make the
total rate asked.

A run starts a real Mosquitto (MQTT v5) on a free port, the hub as N ``storegate hub`` processes (N > 1: an MQTT
v5 shared subscription, ``shared_subscription_group``, a client id and HTTP port each; PostgreSQL in a throwaway
database cloned from a migrated template holding the catalog; SQLite only for N = 1). Gateways enrol on first
contact (``accept_unknown_gateways``, as every harness of many gateways here). Then two phases on the same hub:
  1. saturation: as fast as the hub acknowledges, at most ``--outstanding`` events unacknowledged in total;
     sustained applied events/s = events acknowledged in the steady window (after ``--warmup`` of the phase)
     per second. The hub sends an Ack only after the commit that stored and applied the events.
  2. at 80 % of (1)'s rate (or at ``--rate`` alone when given): end-to-end latency, publish of the batch to the
     Ack that covers the event, p50/p95/p99 over the events published in the steady window; also from the event's
     creation (the agent's Nagle wait included).
Hub CPU per event: the CPU time (user + system) of every worker process over the steady window, from psutil,
divided by the events acknowledged in it. Broker and load generator CPU are printed beside it. After the run,
the events stored in the database are counted against those acknowledged (each exactly once).

Usage: .venv/bin/python bench/loadgen.py [--stores 1000] [--workers 1|1,2,2,1] [--database sqlite|postgresql]
                                          [--seconds 30] [--rate EV_S] [--json out.json] [--quick]
  --workers 1,2,2,1       runs in this order, each on a fresh broker and database (interleaved: A B B A)
  --hub-setting KEY=VALUE a hub setting for every worker (TOML value, dotted keys nest), e.g. role="worker"
  --hub-arg=ARG           an argument appended to every worker's ``storegate hub`` command line (--hub-arg=--role)
Not a test: it prints figures; docs/scaling.md records them with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import heapq
import itertools
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The edge agent's publishing rule (edge_agent/config.py, edge_agent/uplink.py).
MAX_BATCH: Final = 500
MAX_IN_FLIGHT: Final = 5000
HOLD_MAX_S: Final = 0.05

GATEWAYS: Final = ("front", "back")
# Counted over each steady window beside the CPU: the shared mode's own work, by the hub's metric that counts it.
SHARED_MODE_COUNTERS: Final = {
    "stores found locked": "storegate_hub_store_locks_busy_total",
    "rule states read again": "storegate_hub_rule_states_loaded_total",
    "events held for order": "storegate_hub_events_held_for_order_total",
}
TILLS: Final = 4
SHELVES: Final = 4
SHARE_UNKNOWN_SALES: Final = 0.02
UNIT_WEIGHT_G: Final = 250.0

# Events of one store in one trading hour, by what makes them. Sales: the real invoice file's mean checkout lines
# per trading hour (152; bench/loadgen.py --real-rate prints it). Shelf events: a pick for every third line sold
# (the rest come from the back room or the counter) plus the refills those picks cause. Sensors: five readings a
# minute (two chillers, a freezer, the back room's temperature and humidity). Two cameras, motion every two
# minutes each; the back door opened and closed twelve times; a delivery's receiving scans and a few counts.
STORE_HOUR_MIX: Final[dict[str, float]] = {
    "sale": 152.0,
    "shelf": 60.0,
    "receiving": 10.0,
    "count": 5.0,
    "sensor_tick": 60.0,  # five readings each
    "camera": 60.0,
    "door": 24.0,
}
READINGS_PER_TICK: Final = 5


def events_per_store_hour(mix: dict[str, float] = STORE_HOUR_MIX) -> float:
    """Events a store makes in an hour with ``mix`` (a sensor tick is five readings)."""
    return sum(rate * (READINGS_PER_TICK if kind == "sensor_tick" else 1) for kind, rate in mix.items())


# --------------------------------------------------------------------------- one store's devices (pure)


@dataclass(frozen=True)
class StoreData:
    """What the simulated devices replay: real checkout lines, codes no SKU has, a room's log, the planogram."""

    sale_lines: Sequence[tuple[str, int]]  # (code, quantity), in invoice order: consecutive lines are a basket
    unknown_codes: Sequence[str]
    assortment: Sequence[str]
    room: Sequence[tuple[float, float]]  # (°C, %RH) of a real room, one a minute
    slots: dict[str, list[tuple[str, int, str, int, int]]]  # store -> (shelf, slot, sku, capacity, minimum)


@dataclass(frozen=True, slots=True)
class Reported:
    """One thing a device reported: which gateway of the store carries it, the device, kind and payload."""

    gateway: str
    device_id: str
    kind: str
    payload: dict[str, Any]


class StoreSim:
    """The devices of one store: each call of :meth:`next` is one draw of STORE_HOUR_MIX."""

    def __init__(self, store_id: str, index: int, data: StoreData, rng: random.Random) -> None:
        self.store_id = store_id
        self._data = data
        self._rng = rng
        self._line = rng.randrange(len(data.sale_lines))
        self._till = index % TILLS
        self._plan = data.slots.get(store_id, [])
        self._level = {(shelf, slot): capacity for shelf, slot, _, capacity, _ in self._plan}
        self._refill: deque[tuple[str, int, str, int, int]] = deque()
        self._door_open = False
        self._room = rng.randrange(len(data.room))
        self._snapshots = 0

    def next(self, kind: str) -> list[Reported]:
        """The events of one occurrence of ``kind`` (a key of STORE_HOUR_MIX)."""
        return _MAKERS[kind](self)

    def _sale(self) -> list[Reported]:
        data, rng = self._data, self._rng
        self._till = self._till % TILLS + 1
        till = f"till-{self._till}"
        if rng.random() < SHARE_UNKNOWN_SALES:
            code = rng.choice(data.unknown_codes)
            payload: dict[str, Any] = {"code": code, "symbology": "ean13", "mode": "checkout", "gtin": code.zfill(14)}
            return [Reported("front", till, "scan.sale", payload)]
        code, quantity = data.sale_lines[self._line % len(data.sale_lines)]
        self._line += 1
        payload = {"code": code, "symbology": "code128", "mode": "checkout"}
        if quantity != 1:
            payload["quantity"] = quantity
        return [Reported("front", till, "scan.sale", payload)]

    def _shelf(self) -> list[Reported]:
        if not self._plan:
            return []
        if self._refill:  # staff refill the slot that fell below its minimum first
            shelf, slot, sku, capacity, _ = self._refill.popleft()
            delta = capacity - self._level[(shelf, slot)]
            self._level[(shelf, slot)] = capacity
            return [_shelf_event(shelf, slot, sku, delta, capacity)]
        shelf, slot, sku, capacity, minimum = entry = self._rng.choice(self._plan)
        key = (shelf, slot)
        items = min(1 if self._rng.random() < 0.75 else 2, self._level[key])
        if items == 0:
            return []
        self._level[key] -= items
        if self._level[key] < minimum and entry not in self._refill:
            self._refill.append(entry)
        return [_shelf_event(shelf, slot, sku, -items, self._level[key])]

    def _scan_back(self, mode: str, kind: str, quantity: int) -> list[Reported]:
        code = self._rng.choice(self._data.assortment)
        payload = {"code": code, "symbology": "code128", "mode": mode, "quantity": quantity}
        return [Reported("back", "scanner-back", kind, payload)]

    def _receiving(self) -> list[Reported]:
        return self._scan_back("receiving", "scan.receiving", self._rng.choice((6, 12, 24, 48)))

    def _count(self) -> list[Reported]:
        return self._scan_back("stock_count", "scan.count", self._rng.randint(1, 40))

    def _sensor_tick(self) -> list[Reported]:
        rng = self._rng
        self._room = (self._room + 1) % len(self._data.room)
        temperature, humidity = self._data.room[self._room]
        readings = (
            ("th-chiller-1", "chiller-1", "temperature", 3.2 + rng.gauss(0, 0.3)),
            ("th-chiller-2", "chiller-2", "temperature", 2.8 + rng.gauss(0, 0.3)),
            ("th-freezer-1", "freezer-1", "temperature", -20.5 + rng.gauss(0, 0.5)),
            ("th-back-room", "back-room", "temperature", temperature),
            ("th-back-room", "back-room", "humidity", humidity),
        )
        return [
            Reported(
                "back",
                device,
                "environment.reading",
                {"quantity": quantity, "value": round(value, 2), "unit": _UNITS[quantity], "zone": zone},
            )
            for device, zone, quantity, value in readings
        ]

    def _camera(self) -> list[Reported]:
        camera = f"cam-{self._rng.randint(1, 2)}"
        self._snapshots += 1
        return [Reported("back", camera, "camera.motion", {"snapshot_ref": f"snap/{self.store_id}/{self._snapshots}"})]

    def _door(self) -> list[Reported]:
        self._door_open = not self._door_open
        kind = "door.opened" if self._door_open else "door.closed"
        return [Reported("back", "door-back", kind, {"zone": "back", "open": self._door_open})]


_UNITS: Final = {"temperature": "Cel", "humidity": "%RH"}
_MAKERS: Final[dict[str, Callable[[StoreSim], list[Reported]]]] = {
    "sale": StoreSim._sale,
    "shelf": StoreSim._shelf,
    "receiving": StoreSim._receiving,
    "count": StoreSim._count,
    "sensor_tick": StoreSim._sensor_tick,
    "camera": StoreSim._camera,
    "door": StoreSim._door,
}


def _shelf_event(shelf: str, slot: int, sku: str, delta: int, count: int) -> Reported:
    payload = {"slot": slot, "sku": sku, "delta": delta, "count": count, "weight_g": count * UNIT_WEIGHT_G}
    return Reported("back", shelf, "shelf.pick" if delta < 0 else "shelf.put", payload)


# --------------------------------------------------------------------------- one gateway's outbox and window (pure)


@dataclass(slots=True)
class SentBatch:
    """A published batch waiting for its Ack: its last seq, when it went out, when each event was made."""

    last_seq: int
    published_at: float
    created: list[float]


class GatewaySim:
    """One gateway's outbox and send window, with the agent's publishing rule; no I/O."""

    def __init__(self, *, store_id: str, gateway_id: str, stream: uuid.UUID, connection: int) -> None:
        from storegate import wire

        self.store_id = store_id
        self.gateway_id = gateway_id
        self.stream = stream
        self.connection = connection
        self.topic = wire.topic(store_id, gateway_id, wire.Channel.EVENTS)
        self._prefix = (
            f'{{"v":1,"event_id":"%s","store_id":"{store_id}","gateway_id":"{gateway_id}","stream":"{stream}"'
        )
        self.last_seq = 0  # made
        self.published_seq = 0
        self.acked_seq = 0
        self.pending: deque[tuple[float, bytes]] = deque()  # (created, event JSON) not yet published
        self.sent: deque[SentBatch] = deque()
        self.last_publish_at = float("-inf")
        self.timer_armed = False

    def add(self, reported: Reported, *, event_id: uuid.UUID, ts: str, created: float) -> None:
        """Record one event in the outbox: the next seq of the stream."""
        self.last_seq += 1
        body = json.dumps(
            {
                "seq": self.last_seq,
                "device_id": reported.device_id,
                "kind": reported.kind,
                "ts": ts,
                "payload": reported.payload,
            },
            separators=(",", ":"),
        )
        self.pending.append((created, (self._prefix % event_id + "," + body[1:]).encode()))

    @property
    def in_flight(self) -> int:
        """Events published and not yet acknowledged."""
        return self.published_seq - self.acked_seq

    def ready(self, now: float) -> bool:
        """Whether the agent would publish now: nothing in flight, a full batch waiting, or the hold cap passed."""
        if not self.pending or self.in_flight >= MAX_IN_FLIGHT:
            return False
        return self.in_flight == 0 or len(self.pending) >= MAX_BATCH or now >= self.last_publish_at + HOLD_MAX_S

    def take_batch(self, now: float, sent_at: str) -> bytes:
        """The next EventBatch's payload (the pending events, up to a batch and the window's room)."""
        count = min(len(self.pending), MAX_BATCH, MAX_IN_FLIGHT - self.in_flight)
        taken = [self.pending.popleft() for _ in range(count)]
        self.published_seq += count
        self.sent.append(SentBatch(self.published_seq, now, [created for created, _ in taken]))
        self.last_publish_at = now
        head = f'{{"v":1,"store_id":"{self.store_id}","gateway_id":"{self.gateway_id}","sent_at":"{sent_at}","events":['
        return head.encode() + b",".join(body for _, body in taken) + b"]}"

    def acknowledge(self, through_seq: int) -> list[SentBatch]:
        """Take an Ack's through_seq; the batches it covers now (an older or repeated Ack covers none)."""
        if through_seq <= self.acked_seq:
            return []
        self.acked_seq = min(through_seq, self.published_seq)
        covered = []
        while self.sent and self.sent[0].last_seq <= self.acked_seq:
            covered.append(self.sent.popleft())
        return covered


# --------------------------------------------------------------------------- the fleet: every store, one process


class Publisher(Protocol):
    """Where the fleet's batches go: a connection per gateway group, QoS 1."""

    def publish(self, connection: int, topic: str, payload: bytes) -> None:
        """Publish one message (QoS 1) on connection ``connection``."""


@dataclass
class PhaseFigures:
    """What one phase measured."""

    mode: str  # "saturation" or "rate"
    offered_rate: float | None  # events/s asked (rate phase)
    seconds: float
    steady_seconds: float
    generated: int
    acked_steady: int
    applied_rate: float  # events acknowledged per second in the steady window
    published_messages: int
    events_per_message: float
    latency_publish: dict[str, float] = field(default_factory=dict)
    latency_created: dict[str, float] = field(default_factory=dict)
    latency_samples: int = 0
    unacked_after_drain: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # seconds over the steady window, by process group
    hub_cpu_us_per_event: float = 0.0

    @property
    def ceiling(self) -> float:
        """How many times this rate the machine's cores could carry at this phase's CPU per event, everything
        counted (hub, database, broker, load generator, and whatever else ran): the most that more hub workers
        could reach here without a cheaper event. 0 when not measured."""
        busy = self.cpu.get("machine_busy", 0.0)
        cores = os.cpu_count() or 1
        return cores * self.steady_seconds / busy if busy > 0 else 0.0


def quantiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of ``values`` (sorted in place), in milliseconds."""
    if not values:
        return {}
    values.sort()

    def at(q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000.0

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": values[-1] * 1000.0}


class Fleet:
    """K stores' gateways; drives phases: makes events, publishes batches by the agent's rule, takes Acks."""

    def __init__(
        self,
        stores: Sequence[str],
        data: StoreData,
        *,
        connections: int,
        seed: int,
        mix: dict[str, float] = STORE_HOUR_MIX,
    ) -> None:
        self._rng = random.Random(seed)
        self.stores = [StoreSim(store, n, data, random.Random(seed * 1_000_003 + n)) for n, store in enumerate(stores)]
        self.gateways: dict[str, GatewaySim] = {}
        self._by_store: list[dict[str, GatewaySim]] = []
        for n, store in enumerate(stores):
            own: dict[str, GatewaySim] = {}
            for role in GATEWAYS:
                gateway_id = f"gw-{store.removeprefix('store-')}-{role}"
                gateway = GatewaySim(
                    store_id=store,
                    gateway_id=gateway_id,
                    stream=uuid.UUID(int=self._rng.getrandbits(128), version=4),
                    connection=(2 * n + len(own)) % connections,
                )
                own[role] = gateway
                self.gateways[gateway_id] = gateway
            self._by_store.append(own)
        kinds = list(mix)
        self._kinds = kinds
        self._cumulative = list(itertools.accumulate(mix[k] for k in kinds))
        self.generated = 0
        self.acked = 0
        self.published_messages = 0
        self._acks: deque[tuple[str, str, int, float]] = deque()
        self._wake = threading.Event()
        self._timers: list[tuple[float, int, str]] = []
        self._timer_order = itertools.count()
        self._candidates: set[str] = set()
        self._measure_from = self._measure_until = float("inf")  # latency of the batches published in between
        self._latency_publish: list[float] = []
        self._latency_created: list[float] = []

    # -- the MQTT thread's side

    def on_ack(self, payload: bytes, received_at: float) -> None:
        """An Ack arrived (any thread): queued for the driving thread."""
        ack = json.loads(payload)
        self._acks.append((ack["gateway_id"], ack["stream"], int(ack["through_seq"]), received_at))
        self._wake.set()

    # -- the driving thread

    def make_events(self, count: int, now: float) -> int:
        """At least ``count`` events from stores drawn at random (a sensor tick makes five); returns how many."""
        rng, kinds, cumulative, total = self._rng, self._kinds, self._cumulative, self._cumulative[-1]
        ts = datetime.now(UTC).isoformat()
        made = 0
        while made < count:
            index = rng.randrange(len(self.stores))
            kind = kinds[bisect.bisect_right(cumulative, rng.random() * total)]
            for reported in self.stores[index].next(kind):
                self._add(index, reported, ts=ts, now=now)
                made += 1
        return made

    def _add(self, index: int, reported: Reported, *, ts: str, now: float) -> None:
        gateway = self._by_store[index][reported.gateway]
        gateway.add(reported, event_id=uuid.UUID(int=self._rng.getrandbits(128), version=4), ts=ts, created=now)
        self.generated += 1
        if gateway.in_flight == 0 or len(gateway.pending) >= MAX_BATCH:
            self._candidates.add(gateway.gateway_id)
        elif not gateway.timer_armed:
            gateway.timer_armed = True
            heapq.heappush(
                self._timers, (gateway.last_publish_at + HOLD_MAX_S, next(self._timer_order), gateway.gateway_id)
            )

    def first_contact(self, publisher: Publisher, *, timeout: float) -> float:
        """One event from every gateway (a sale at the front, the back door at the back), all acknowledged, before
        any phase is timed: the hub meets each gateway and stream here, not in the steady window. Returns seconds."""
        start = time.perf_counter()
        ts = datetime.now(UTC).isoformat()
        for index, store in enumerate(self.stores):
            for reported in (*store.next("sale"), *store.next("door")):
                self._add(index, reported, ts=ts, now=start)
        deadline = start + timeout
        while self.unacked() and time.perf_counter() < deadline:
            self.flush(publisher, time.perf_counter())
            self._wake.wait(0.01)
            self._wake.clear()
            self.take_acks()
        if self.unacked():
            raise SystemExit(f"first contact: {self.unacked():,} events unacknowledged after {timeout:.0f} s")
        return time.perf_counter() - start

    def take_acks(self) -> None:
        """Apply the Acks queued by the MQTT thread; latency of every event they cover."""
        while self._acks:
            gateway_id, stream, through, received_at = self._acks.popleft()
            gateway = self.gateways.get(gateway_id)
            if gateway is None or stream != str(gateway.stream):
                continue
            before = gateway.acked_seq
            for batch in gateway.acknowledge(through):
                if self._measure_from <= batch.published_at <= self._measure_until:
                    self._latency_publish.extend(itertools.repeat(received_at - batch.published_at, len(batch.created)))
                    self._latency_created.extend(received_at - created for created in batch.created)
            self.acked += gateway.acked_seq - before
            if gateway.pending:
                self._candidates.add(gateway_id)  # the agent sends what waited as soon as the hub answers

    def flush(self, publisher: Publisher, now: float) -> None:
        """Publish every gateway whose rule says so now."""
        while self._timers and self._timers[0][0] <= now:
            _, _, gateway_id = heapq.heappop(self._timers)
            self.gateways[gateway_id].timer_armed = False
            self._candidates.add(gateway_id)
        if not self._candidates:
            return
        sent_at = datetime.now(UTC).isoformat()
        for gateway_id in self._candidates:
            gateway = self.gateways[gateway_id]
            if gateway.ready(now):
                publisher.publish(gateway.connection, gateway.topic, gateway.take_batch(now, sent_at))
                self.published_messages += 1
            if gateway.pending and not gateway.timer_armed:
                gateway.timer_armed = True
                heapq.heappush(
                    self._timers, (gateway.last_publish_at + HOLD_MAX_S, next(self._timer_order), gateway_id)
                )
        self._candidates.clear()

    def unacked(self) -> int:
        """Events made and not yet acknowledged."""
        return self.generated - self.acked

    def drive(
        self,
        publisher: Publisher,
        *,
        seconds: float,
        warmup: float,
        rate: float | None,
        outstanding: int,
        drain_s: float,
        cpu: Callable[[], dict[str, float]] | None = None,
    ) -> PhaseFigures:
        """One phase: ``rate`` events/s (None: as fast as Acks allow, ``outstanding`` at most), then a drain."""
        start = time.perf_counter()
        warm_at, end = start + warmup, start + seconds
        self._measure_from = warm_at
        self._latency_publish, self._latency_created = [], []
        generated_at_start, messages_at_start = self.generated, self.published_messages
        made_here = 0
        acked_at_warm: int | None = None
        cpu_at_warm: dict[str, float] = {}
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            self.take_acks()
            if acked_at_warm is None and now >= warm_at:
                acked_at_warm, cpu_at_warm = self.acked, cpu() if cpu else {}
            room = outstanding - self.unacked()
            want = room if rate is None else min(int((now - start) * rate) - made_here, room)
            if want > 0:
                made_here += self.make_events(want, now)
            self.flush(publisher, time.perf_counter())
            next_timer = self._timers[0][0] - time.perf_counter() if self._timers else 0.01
            self._wake.wait(min(max(next_timer, 0.0), 0.002 if rate else 0.01, end - time.perf_counter()))
            self._wake.clear()
        self.take_acks()
        ended = time.perf_counter()
        acked_steady = self.acked - (acked_at_warm or 0)
        cpu_steady = {k: v - cpu_at_warm.get(k, 0.0) for k, v in (cpu() if cpu else {}).items()}
        steady = ended - warm_at
        # The batches of the window acknowledged during the drain count too: they are the latency's tail.
        self._measure_until = ended
        drain_deadline = time.perf_counter() + drain_s
        while self.unacked() and time.perf_counter() < drain_deadline:
            self._wake.wait(0.01)
            self._wake.clear()
            self.take_acks()
            self.flush(publisher, time.perf_counter())
        latency_publish, latency_created = self._latency_publish, self._latency_created
        self._measure_from = self._measure_until = float("inf")
        figures = PhaseFigures(
            mode="saturation" if rate is None else "rate",
            offered_rate=rate,
            seconds=ended - start,
            steady_seconds=steady,
            generated=self.generated - generated_at_start,
            acked_steady=acked_steady,
            applied_rate=acked_steady / steady if steady > 0 else 0.0,
            published_messages=self.published_messages - messages_at_start,
            events_per_message=(self.generated - generated_at_start)
            / max(self.published_messages - messages_at_start, 1),
            latency_samples=len(latency_publish),
            latency_publish=quantiles(latency_publish),
            latency_created=quantiles(latency_created),
            unacked_after_drain=self.unacked(),
            cpu=cpu_steady,
        )
        hub_cpu = cpu_steady.get("hub", 0.0)
        figures.hub_cpu_us_per_event = hub_cpu / acked_steady * 1e6 if acked_steady else 0.0
        return figures


# --------------------------------------------------------------------------- MQTT


class MqttFleetLink:
    """C paho connections that publish the gateways' batches, and one that takes every Ack."""

    def __init__(self, port: int, *, connections: int, on_ack: Callable[[bytes, float], None]) -> None:
        self._clients = [self._connect(port, f"loadgen-pub-{n}") for n in range(connections)]
        self._acks = self._connect(port, "loadgen-acks")
        subscribed = threading.Event()
        self._acks.on_subscribe = lambda *_: subscribed.set()
        self._acks.on_message = lambda _c, _u, message: on_ack(message.payload, time.perf_counter())
        self._acks.subscribe("storegate/v1/+/+/ack", qos=1)
        if not subscribed.wait(10):
            raise SystemExit("no SUBACK for the load generator's Ack subscription")

    @staticmethod
    def _connect(port: int, name: str) -> Any:
        import socket

        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{name}-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)  # unbounded: the fleet's own windows bound what waits
        connected = threading.Event()
        client.on_connect = lambda *_: connected.set()
        client.connect("127.0.0.1", port, keepalive=60)
        client.loop_start()
        if not connected.wait(10):
            raise SystemExit(f"{name} could not connect to the broker on port {port}")
        sock = client.socket()
        if isinstance(sock, socket.socket):  # a small PUBLISH must not wait for a delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client

    def publish(self, connection: int, topic: str, payload: bytes) -> None:
        """QoS 1 publish on one of the connections."""
        self._clients[connection].publish(topic, payload, qos=1)

    def publish_births(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Retained status messages, each PUBACKed before returning."""
        infos = [self._clients[0].publish(topic, payload, qos=1, retain=True) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(30)

    def close(self) -> None:
        """Disconnect every connection."""
        for client in (*self._clients, self._acks):
            client.disconnect()
            client.loop_stop()


def births(fleet: Fleet) -> list[tuple[str, bytes]]:
    """Each gateway's retained birth status, as the agent publishes on connect."""
    from storegate import wire

    now = wire.utc_now()
    return [
        (
            wire.topic(g.store_id, g.gateway_id, wire.Channel.STATUS),
            wire.encode(
                wire.GatewayStatus(
                    store_id=g.store_id,
                    gateway_id=g.gateway_id,
                    online=True,
                    reason="birth",
                    ts=now,
                    agent_version="loadgen",
                )
            ),
        )
        for g in fleet.gateways.values()
    ]


# --------------------------------------------------------------------------- a run: broker, workers, two phases


def store_data(stores: Sequence[str], seed: int) -> tuple[Any, StoreData]:
    """The catalog the hub imports (bench/hub_ingest.py's, from the real data) and what the devices replay."""
    # bench/ holds scripts, not a package: run as a script, this file's folder is on sys.path.
    from hub_ingest import build_catalog

    catalog = build_catalog(list(stores), seed)
    data = StoreData(
        sale_lines=catalog.sale_lines,
        unknown_codes=catalog.unknown_codes,
        assortment=catalog.assortment,
        room=catalog.room,
        slots=catalog.slots,
    )
    return catalog, data


def parse_hub_settings(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (VALUE in TOML; a bare word is a string; dotted keys nest) as a settings document."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--hub-setting {item!r}: expected KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        *outer, last = key.split(".")
        target = settings
        for part in outer:
            target = target.setdefault(part, {})
        target[last] = value
    return settings


@dataclass
class RunFigures:
    """One run: a configuration and its phases."""

    database: str
    workers: int
    stores: int
    phases: list[PhaseFigures]
    first_contact_s: float = 0.0
    log_problems: dict[str, int] = field(default_factory=dict)  # the workers' warning and error lines, by event
    events_stored: int = -1
    distinct_events_stored: int = -1
    acked_total: int = 0
    generated_total: int = 0


_LOG_PROBLEM: Final = re.compile(r"\[(warning|error|critical)\s*\]\s+(\S+)")
_LOG_EXPECTED: Final = frozenset({"database_file_made_private"})  # a fresh SQLite file from the template copy


class HubWorkers:
    """N ``storegate hub`` processes on one database and broker; N > 1 share one MQTT v5 subscription."""

    def __init__(
        self, workdir: Path, *, port: int, workers: int, url: str, settings: dict[str, Any], argv: Sequence[str]
    ) -> None:
        from launcher.broker import free_port
        from storegate.mqtt import MqttSettings
        from tests.procs import hub_service

        self.ports = [free_port() for _ in range(workers)]
        shared = {"shared_subscription_group": "storegate-hubs"} if workers > 1 else {}
        self.services = [
            hub_service(
                workdir / f"hub-{n}",
                MqttSettings(host="127.0.0.1", port=port, protocol="5"),
                http_port=self.ports[n],
                database_url=url,
                client_id=f"storegate-hub-{n}",
                log_level="WARNING",
                **(shared | settings),
            )
            for n in range(workers)
        ]
        for service in self.services:
            service.argv += list(argv)

    def start(self) -> None:
        """Start every worker."""
        for service in self.services:
            service.start()

    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [s.process.pid for s in self.services if s.process is not None]

    def log_problems(self) -> dict[str, int]:
        """Warning and error lines of every worker's log, counted by event name (the first word after the level)."""
        counts: Counter[str] = Counter()
        for service in self.services:
            if service.log_path.exists():
                for match in _LOG_PROBLEM.finditer(service.log_path.read_text(errors="replace")):
                    if match[2] not in _LOG_EXPECTED:
                        counts[f"{match[1]}:{match[2]}"] += 1
        return dict(counts.most_common(8))

    def stop(self) -> None:
        """SIGTERM every worker and wait."""
        for service in self.services:
            if service.alive:
                code = service.stop(timeout=60)
                if code != 0:
                    print(f"  {service.name} exited with {code}; its log: {service.log_path}", file=sys.stderr)


def run_once(
    *,
    kind: str,
    workers: int,
    databases: Any,
    data: StoreData,
    stores: Sequence[str],
    label: str,
    work: Path,
    args: argparse.Namespace,
) -> RunFigures:
    """One configuration on a fresh broker and database: saturation, then 80 % of it (or ``--rate``)."""
    import psutil
    from hub_ingest import HubMetricsReader, _wait, bench_token
    from sqlalchemy.engine import make_url

    from launcher.broker import start_mosquitto

    runwork = work / label
    url = asyncio.run(databases.fresh(label))
    token = bench_token(url)
    broker = start_mosquitto(runwork / "broker")
    hubs = HubWorkers(
        runwork,
        port=broker.port,
        workers=workers,
        url=url,
        settings=parse_hub_settings(args.hub_setting),
        argv=args.hub_arg,
    )
    metrics = [HubMetricsReader(port, token) for port in hubs.ports]
    fleet = Fleet(stores, data, connections=args.connections, seed=args.seed)
    link: MqttFleetLink | None = None
    figures = RunFigures(database=kind, workers=workers, stores=len(stores), phases=[])
    try:
        hubs.start()
        _wait(
            lambda: all(m.read().get("storegate_hub_mqtt_connected") == 1.0 for m in metrics),
            180,
            "every hub worker to connect to the broker",
        )
        link = MqttFleetLink(broker.port, connections=args.connections, on_ack=fleet.on_ack)
        link.publish_births(births(fleet))
        status = 'storegate_hub_messages_received_total{channel="status"}'
        _wait(
            lambda: sum(m.read().get(status, 0) for m in metrics) >= len(fleet.gateways),
            180,
            "the hub to take the births",
        )
        seconds = fleet.first_contact(link, timeout=args.drain_seconds * 5)
        figures.first_contact_s = seconds
        print(
            f"  [{label}] first contact of {len(fleet.gateways):,} gateways acknowledged in {seconds:.1f} s", flush=True
        )
        processes = {
            "hub": [psutil.Process(pid) for pid in hubs.pids()],
            "broker": [psutil.Process(broker.process.pid)],
            "loadgen": [psutil.Process()],
        }

        backend = f" {make_url(url).database} " if kind == "postgresql" else None

        def cpu() -> dict[str, float]:
            seconds = {name: sum(sum(p.cpu_times()[:2]) for p in group) for name, group in processes.items()}
            if backend is not None:
                # The PostgreSQL backends serving this run's database (their title names it); the server's shared
                # processes (WAL writer, checkpointer) serve every database on the machine and are left out.
                seconds["database"] = 0.0
                for process in psutil.process_iter(["cmdline"]):
                    if backend in " ".join(process.info["cmdline"] or ()) + " ":
                        with contextlib.suppress(psutil.Error):  # a backend that ended meanwhile
                            seconds["database"] += sum(process.cpu_times()[:2])
            times = psutil.cpu_times()
            seconds["machine_busy"] = times.user + times.nice + times.system + times.irq + times.softirq
            # Not CPU but counted the same way: the hub's transactions (units), to give events per transaction.
            samples = [m.read() for m in metrics]
            seconds["transactions"] = sum(s.get("storegate_hub_transaction_events_count", 0.0) for s in samples)
            # Shared mode's own work (zero on one worker): what two workers pay to stay correct, counted.
            for name, metric in SHARED_MODE_COUNTERS.items():
                seconds[name] = sum(sample.get(metric, 0.0) for sample in samples)
            return seconds

        phase_args = {
            "seconds": args.seconds,
            "warmup": args.warmup * args.seconds,
            "outstanding": args.outstanding,
            "drain_s": args.drain_seconds,
            "cpu": cpu,
        }
        rate = args.rate
        if rate is None:
            print(f"  [{label}] saturation, {args.seconds:.0f} s ...", flush=True)
            saturation = fleet.drive(link, rate=None, **phase_args)
            figures.phases.append(saturation)
            _print_phase(label, saturation)
            rate = 0.8 * saturation.applied_rate
        if rate > 0:
            print(f"  [{label}] at {rate:,.0f} events/s, {args.seconds:.0f} s ...", flush=True)
            steady = fleet.drive(link, rate=rate, **phase_args)
            figures.phases.append(steady)
            _print_phase(label, steady)
    finally:
        if link is not None:
            link.close()
        for reader in metrics:
            reader.close()
        hubs.stop()
        broker.stop()
        figures.log_problems = hubs.log_problems()
    if figures.log_problems:
        print(f"  [{label}] the workers logged: {figures.log_problems}", flush=True)
    figures.acked_total, figures.generated_total = fleet.acked, fleet.generated
    figures.events_stored, figures.distinct_events_stored = asyncio.run(count_events(url))
    print(
        f"  [{label}] made {fleet.generated:,}, acknowledged {fleet.acked:,}; stored {figures.events_stored:,} rows, "
        f"{figures.distinct_events_stored:,} distinct event ids",
        flush=True,
    )
    return figures


async def count_events(url: str) -> tuple[int, int]:
    """Rows in ``events`` and distinct event ids among them."""
    from sqlalchemy import text

    from hub.db.engine import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            row = (await connection.execute(text("SELECT count(*), count(DISTINCT event_id) FROM events"))).one()
            return int(row[0]), int(row[1])
    finally:
        await engine.dispose()


def _print_phase(label: str, phase: PhaseFigures) -> None:
    lat, made = phase.latency_publish, phase.latency_created
    cpu = phase.cpu
    print(
        f"  [{label}]   applied {phase.applied_rate:,.0f} events/s over {phase.steady_seconds:.0f} s steady "
        f"({phase.acked_steady:,} events; {phase.events_per_message:.1f} events a message); hub CPU "
        f"{phase.hub_cpu_us_per_event:.0f} µs/event ({cpu.get('hub', 0):.1f} s), broker {cpu.get('broker', 0):.1f} s, "
        f"loadgen {cpu.get('loadgen', 0):.1f} s, "
        + (f"PostgreSQL backends {cpu['database']:.1f} s, " if "database" in cpu else "")
        + f"machine {cpu.get('machine_busy', 0):.1f} s busy (ceiling {phase.ceiling:.2f}x this rate)",
        flush=True,
    )
    if cpu.get("transactions"):
        print(
            f"  [{label}]   {cpu['transactions']:,.0f} hub transactions in the window: "
            f"{phase.acked_steady / cpu['transactions']:.1f} events, "
            f"{cpu.get('hub', 0) / cpu['transactions'] * 1000:.1f} ms of hub CPU each",
            flush=True,
        )
    shared = {name: cpu[name] for name in SHARED_MODE_COUNTERS if cpu.get(name)}
    if shared:
        counted = ", ".join(f"{value:,.0f} {name}" for name, value in shared.items())
        print(f"  [{label}]   shared mode in the window: {counted}", flush=True)
    if lat:
        print(
            f"  [{label}]   latency publish->Ack p50 {lat['p50_ms']:.0f} ms, p95 {lat['p95_ms']:.0f} ms, "
            f"p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms; from creation p99 {made['p99_ms']:.0f} ms "
            f"({phase.latency_samples:,} events); unacked after drain {phase.unacked_after_drain:,}",
            flush=True,
        )


def real_rate() -> dict[str, float]:
    """Checkout lines per trading hour in the real invoice file (nine months), mean and p90 hour."""
    import csv
    import gzip

    from hub_ingest import _data_dir

    path = _data_dir() / "retail" / "onlineretail_2010-12-01_to_2011-08-31.csv.gz"
    hours: Counter[tuple[str, str]] = Counter()
    with gzip.open(path, "rt", newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            if row["InvoiceNo"].startswith("C") or float(row["Quantity"]) < 1:
                continue  # cancellations and write-offs are not till scans
            day, _, clock = row["InvoiceDate"].partition(" ")
            hours[(day, clock[:2])] += 1
    lines = sorted(hours.values())
    return {
        "trading_hours": len(lines),
        "lines_per_hour_mean": sum(lines) / len(lines),
        "lines_per_hour_p90": lines[int(0.9 * len(lines))],
    }


def summarise(runs: list[RunFigures]) -> dict[str, Any]:
    """Mean saturation rate and p99 at 80 % by worker count; the 2:1 ratio and the targets."""
    by_workers: dict[int, list[RunFigures]] = {}
    for run in runs:
        by_workers.setdefault(run.workers, []).append(run)
    summary: dict[str, Any] = {}
    for workers, group in sorted(by_workers.items()):
        saturation = [p.applied_rate for r in group for p in r.phases if p.mode == "saturation"]
        p99 = [p.latency_publish.get("p99_ms", 0.0) for r in group for p in r.phases if p.mode == "rate"]
        cpu = [p.hub_cpu_us_per_event for r in group for p in r.phases if p.mode == "saturation"]
        cpu_at_rate = [p.hub_cpu_us_per_event for r in group for p in r.phases if p.mode == "rate"]
        ceilings = [p.ceiling for r in group for p in r.phases if p.mode == "saturation"]
        summary[str(workers)] = {
            "runs": len(group),
            "saturation_rates": saturation,
            "saturation_mean": sum(saturation) / len(saturation) if saturation else 0.0,
            "hub_cpu_us_per_event": cpu,
            "hub_cpu_us_per_event_at_rate": cpu_at_rate,
            "p99_ms_at_rate": p99,
            # Cores over their busy share at saturation: 1.3x more workers is out of reach where this is below 1.3.
            "ceiling": ceilings,
        }
    if "1" in summary and "2" in summary and summary["1"]["saturation_mean"]:
        ratio = summary["2"]["saturation_mean"] / summary["1"]["saturation_mean"]
        summary["ratio_2_to_1"] = ratio
        summary["target_ratio_met"] = ratio >= 1.3
    p99_all = [p for s in summary.values() if isinstance(s, dict) for p in s["p99_ms_at_rate"]]
    summary["target_p99_met"] = bool(p99_all) and max(p99_all) < 250.0
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--workers", default="1", help="hub worker processes; a list (1,2,2,1) runs each in turn")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--rate", type=float, help="one phase at this many events/s instead of saturation + 80 %%")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--warmup", type=float, default=0.25, help="share of each phase before the steady window")
    parser.add_argument("--drain-seconds", type=float, default=60.0, help="wait for Acks after each phase, at most")
    parser.add_argument("--outstanding", type=int, default=20_000, help="events unacknowledged in total, at most")
    parser.add_argument("--connections", type=int, default=4, help="MQTT connections the gateways publish over")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--hub-setting", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--hub-arg", action="append", default=[], metavar="ARG")
    parser.add_argument("--postgres-url", default=os.environ.get("STOREGATE_TEST_POSTGRES_URL"))
    parser.add_argument("--quick", action="store_true", help="20 stores, 8 s phases: does it run")
    parser.add_argument("--real-rate", action="store_true", help="print the real data's events per store-hour; exit")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", type=Path, help="work in this (new) directory and keep it: hub logs, databases")
    args = parser.parse_args()
    if args.real_rate:
        rate = real_rate()
        print(json.dumps(rate | {"mix_events_per_store_hour": events_per_store_hour()}, indent=2))
        return
    if args.quick:
        args.stores, args.seconds = min(args.stores, 20), min(args.seconds, 8.0)
    worker_runs = [int(w) for w in str(args.workers).split(",")]
    if args.database == "sqlite" and any(w > 1 for w in worker_runs):
        raise SystemExit("SQLite takes one hub worker: several processes writing one SQLite file is not a setup")

    from hub_ingest import Databases, store_ids

    started = time.perf_counter()
    stores = store_ids(args.stores)
    catalog, data = store_data(stores, args.seed)
    print(f"catalog of {args.stores:,} stores built in {time.perf_counter() - started:.1f} s", flush=True)
    runs: list[RunFigures] = []
    with tempfile.TemporaryDirectory(prefix="storegate-loadgen-") as tmp:
        work = Path(tmp) if args.keep is None else args.keep
        work.mkdir(parents=True, exist_ok=True)
        databases = Databases(args.database, work, args.postgres_url)
        try:
            started = time.perf_counter()
            asyncio.run(databases.prepare(catalog))
            print(f"template database ({args.database}) ready in {time.perf_counter() - started:.1f} s", flush=True)
            for n, workers in enumerate(worker_runs):
                label = f"run{n + 1}-{args.database}-{workers}w"
                print(f"{label}: {args.stores:,} stores, {workers} worker(s)", flush=True)
                runs.append(
                    run_once(
                        kind=args.database,
                        workers=workers,
                        databases=databases,
                        data=data,
                        stores=stores,
                        label=label,
                        work=work,
                        args=args,
                    )
                )
        finally:
            asyncio.run(databases.close())
    summary = summarise(runs)
    print()
    print(f"summary ({args.database}, {args.stores:,} stores, workers {args.workers}):")
    for key, value in summary.items():
        print(f"  {key}: {value}")
    if args.json:
        document = {
            "cpus": os.cpu_count(),
            "argv": sys.argv[1:],
            "mix_events_per_store_hour": events_per_store_hour(),
            "runs": [run.__dict__ | {"phases": [phase.__dict__ for phase in run.phases]} for run in runs],
            "summary": summary,
        }
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
