"""bench/loadgen.py's publishing core for a few stores against a real Mosquitto: what it publishes is the wire
contract (EventBatch per gateway, consecutive seqs of one stream), and the Acks of a stand-in hub close its
windows and give latencies. The hub runs are the bench's (minutes), not the suite's."""

from __future__ import annotations

import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from launcher.broker import LocalBroker
from storegate import wire
from tests.bench.modules import bench_module
from tests.conftest import wait_until


@pytest.fixture(scope="module")
def loadgen() -> Iterator[ModuleType]:
    with bench_module("loadgen") as module:
        yield module


def store_data(loadgen: ModuleType, stores: list[str]) -> Any:
    """A tiny stand-in for the real data: a few checkout lines, two unknown codes, a room, four slots a store."""
    slots = {
        store: [(f"shelf-{n % 2 + 1}", n + 1, f"2200{n}", 8, 3) for n in range(4)]  # capacity 8, minimum 3
        for store in stores
    }
    return loadgen.StoreData(
        sale_lines=[("22001", 1), ("22002", 6), ("85123A", 2)],
        unknown_codes=["4006381333931", "5901234123457"],
        assortment=["22001", "22002"],
        room=[(21.5, 30.0), (21.6, 30.5), (21.7, 31.0)],
        slots=slots,
    )


class StandInHub:
    """Decodes every EventBatch with the wire contract and acknowledges it, as the hub does after its commit."""

    def __init__(self, broker: LocalBroker) -> None:
        self.batches: list[wire.EventBatch] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"stand-in-hub-{uuid.uuid4().hex[:6]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        subscribed = threading.Event()
        self._client.on_connect = lambda client, *_: client.subscribe(wire.subscription(wire.Channel.EVENTS), qos=1)
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = self._on_batch
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert subscribed.wait(10), "the stand-in hub got no SUBACK"

    def _on_batch(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            batch = wire.decode(wire.EventBatch, message.payload)
        except wire.WireError as err:
            with self._lock:
                self.errors.append(str(err))
            return
        assert wire.parse_topic(message.topic) == wire.Topic(batch.store_id, batch.gateway_id, wire.Channel.EVENTS)
        with self._lock:
            self.batches.append(batch)
        last = batch.events[-1]
        ack = wire.Ack(
            store_id=batch.store_id,
            gateway_id=batch.gateway_id,
            stream=last.stream,
            through_seq=last.seq,
            stored=len(batch.events),
            duplicates=0,
            ts=wire.utc_now(),
        )
        client.publish(wire.topic(batch.store_id, batch.gateway_id, wire.Channel.ACK), wire.encode(ack), qos=1)

    def events(self) -> int:
        with self._lock:
            return sum(len(batch.events) for batch in self.batches)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def test_published_batches_are_the_wire_contract_with_consecutive_seqs(
    loadgen: ModuleType, mosquitto: LocalBroker
) -> None:
    stores = ["store-0001", "store-0002", "store-0003"]
    fleet = loadgen.Fleet(stores, store_data(loadgen, stores), connections=2, seed=3)
    hub = StandInHub(mosquitto)
    link = loadgen.MqttFleetLink(mosquitto.port, connections=2, on_ack=fleet.on_ack)
    try:
        phase = fleet.drive(link, seconds=1.5, warmup=0.3, rate=400.0, outstanding=2000, drain_s=10.0)
        wait_until(lambda: hub.events() >= fleet.generated, timeout=10, what="every event at the stand-in hub")
    finally:
        link.close()
        hub.close()

    assert hub.errors == []
    assert fleet.generated >= 400  # 1.5 s at 400 events/s, less the first tick
    seqs: dict[str, list[int]] = defaultdict(list)
    streams: dict[str, set[uuid.UUID]] = defaultdict(set)
    kinds: Counter[str] = Counter()
    for batch in hub.batches:
        for event in batch.events:
            seqs[batch.gateway_id].append(event.seq)
            streams[batch.gateway_id].add(event.stream)
            kinds[event.kind] += 1
    assert set(seqs) == {f"gw-000{n}-{role}" for n in (1, 2, 3) for role in ("front", "back")}
    for gateway, numbers in seqs.items():
        assert numbers == list(range(1, len(numbers) + 1)), f"{gateway}: seqs not consecutive from 1"
        assert len(streams[gateway]) == 1
    assert sum(len(numbers) for numbers in seqs.values()) == fleet.generated
    assert {"scan.sale", "environment.reading", "shelf.pick", "camera.motion"} <= set(kinds)
    # The stand-in's Acks closed every window, and the phase measured what it published in its steady part.
    assert fleet.acked == fleet.generated
    assert phase.unacked_after_drain == 0
    assert phase.latency_samples > 0
    assert 0 < phase.latency_publish["p50_ms"] <= phase.latency_publish["p99_ms"] < 10_000


def test_a_gateway_holds_a_part_filled_batch_while_one_is_unacknowledged(loadgen: ModuleType) -> None:
    gateway = loadgen.GatewaySim(store_id="store-0001", gateway_id="gw-0001-back", stream=uuid.uuid4(), connection=0)
    reading = loadgen.Reported("back", "door-back", "door.opened", {"zone": "back", "open": True})

    def add(count: int) -> None:
        for _ in range(count):
            gateway.add(reading, event_id=uuid.uuid4(), ts=wire.utc_now().isoformat(), created=0.0)

    add(1)
    assert gateway.ready(now=10.0)  # nothing in flight: out at once
    first = wire.decode(wire.EventBatch, gateway.take_batch(10.0, wire.utc_now().isoformat()))
    assert [event.seq for event in first.events] == [1]
    add(3)
    assert not gateway.ready(now=10.01)  # one unacknowledged: wait for the Ack, a full batch or the cap
    assert gateway.ready(now=10.0 + loadgen.HOLD_MAX_S)
    assert [batch.last_seq for batch in gateway.acknowledge(1)] == [1]
    assert gateway.ready(now=10.01)  # acknowledged: what waited goes now
    second = wire.decode(wire.EventBatch, gateway.take_batch(10.01, wire.utc_now().isoformat()))
    assert [event.seq for event in second.events] == [2, 3, 4]
    assert gateway.acknowledge(1) == []  # an old Ack again covers nothing
    add(loadgen.MAX_BATCH)
    assert gateway.ready(now=10.02)  # a full batch waiting goes although one is in flight


def test_hub_settings_pass_through_as_toml_values_with_dotted_keys_nested(loadgen: ModuleType) -> None:
    settings = loadgen.parse_hub_settings(
        ["role=worker", 'client_id="hub-a"', "operations.enabled=false", "max_events_per_transaction=2000"]
    )
    assert settings == {
        "role": "worker",  # a bare word is a string
        "client_id": "hub-a",
        "operations": {"enabled": False},
        "max_events_per_transaction": 2000,
    }
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        loadgen.parse_hub_settings(["role"])


def test_the_ceiling_is_the_cores_over_their_busy_share(loadgen: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loadgen.os, "cpu_count", lambda: 2)
    phase = loadgen.PhaseFigures(
        mode="saturation",
        offered_rate=None,
        seconds=20.0,
        steady_seconds=15.0,
        generated=0,
        acked_steady=0,
        applied_rate=4000.0,
        published_messages=0,
        events_per_message=2.0,
        cpu={"machine_busy": 24.0},  # 80 % of two cores: at most 1.25x this rate, whatever runs the hub
    )
    assert phase.ceiling == pytest.approx(1.25)
    phase.cpu = {}
    assert phase.ceiling == 0.0
