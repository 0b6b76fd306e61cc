"""Helpers for the agent tests: configs, a running agent, and a minimal hub made of plain paho."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from device_drivers.base import Reading
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from launcher.broker import free_port
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.conftest import wait_until

STORE = "store-0042"
GATEWAY = "gw-1"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def make_config(tmp_path: Path, mqtt: MqttSettings, **sections: Any) -> AgentConfig:
    """An agent config for the test's broker with an outbox in tmp_path; ``sections`` override keys."""
    document: dict[str, Any] = {
        "store_id": STORE,
        "gateway_id": GATEWAY,
        "mqtt": mqtt.model_dump(),
        "outbox": {"path": tmp_path / "outbox.sqlite3", **sections.pop("outbox", {})},
        **sections,
    }
    return AgentConfig.model_validate(document)


@pytest.fixture
def unreachable_mqtt() -> MqttSettings:
    """Settings for a broker that is not there (a free port nobody listens on)."""
    return MqttSettings(port=free_port(), reconnect_min_s=0.2, reconnect_max_s=1.0)


def temperature(n: int, *, device_id: str = "chiller-1") -> Reading:
    """The n-th test reading: a valid environment.reading a second after the previous one."""
    return Reading(
        device_id=device_id,
        kind="environment.reading",
        ts=T0 + timedelta(seconds=n),
        payload={"quantity": "temperature", "value": 3.0 + n / 100, "unit": "Cel", "zone": "chiller-1"},
    )


@asynccontextmanager
async def running(agent: EdgeAgent) -> AsyncIterator[asyncio.Task[None]]:
    """Run the agent for the block, then stop it and wait for a clean exit (re-raising its failure)."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)


def seq_gaps(held: set[int], through: int, *, limit: int = 100) -> list[wire.SeqRange]:
    """What is missing between ``through`` and the highest seq held above it, as the hub reports it."""
    gaps: list[wire.SeqRange] = []
    expected = through + 1
    for seq in sorted(held):
        if seq > expected and len(gaps) < limit:
            gaps.append(wire.SeqRange(first=expected, last=seq - 1))
        expected = max(expected, seq + 1)
    return gaps


class FakeHub:
    """A minimal hub on plain paho: records what the gateway sends and acknowledges on request.

    With ``auto_ack`` it acknowledges, after every batch, the highest seq up to which it
    has every event of the stream (or a loss record for it), as the real hub does, and
    names the gaps above it. ``drop`` lists seqs it loses the first time they arrive
    (as if the broker had lost them); :meth:`restore` forgets what it held above a seq
    (as if restored from an older backup).
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        auto_ack: bool,
        store_id: str = STORE,
        gateway_id: str = GATEWAY,
        drop: set[int] | None = None,
    ):
        self.auto_ack = auto_ack
        self.store_id = store_id
        self.gateway_id = gateway_id
        self._lock = threading.Lock()
        self.events: list[wire.Event] = []
        self.dropped: list[wire.Event] = []
        self.statuses: list[wire.GatewayStatus] = []
        self.health: list[wire.GatewayHealth] = []
        self._drop = set(drop or ())
        self._have: dict[UUID, set[int]] = {}  # per stream, the seqs held above its through_seq
        self._through: dict[UUID, int] = {}
        self._subscribed = threading.Event()
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"fake-hub-{id(self)}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._settings = settings

    def __enter__(self) -> FakeHub:
        self._client.connect(self._settings.host, self._settings.port)
        self._client.loop_start()
        wait_until(self._subscribed.is_set, what="fake hub subscribed")
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _topic(self, channel: wire.Channel) -> str:
        return wire.topic(self.store_id, self.gateway_id, channel)

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        self._subscribed.clear()
        client.subscribe(
            [
                (self._topic(wire.Channel.EVENTS), 1),
                (self._topic(wire.Channel.STATUS), 1),
                (self._topic(wire.Channel.HEALTH), 0),
            ]
        )

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, rcs: object, props: object) -> None:
        self._subscribed.set()

    @property
    def subscribed(self) -> bool:
        """Whether the hub is subscribed on its current connection."""
        return self._subscribed.is_set()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        channel = wire.parse_topic(message.topic).channel
        with self._lock:
            if channel is wire.Channel.STATUS:
                self.statuses.append(wire.decode(wire.GatewayStatus, bytes(message.payload)))
            elif channel is wire.Channel.HEALTH:
                self.health.append(wire.decode(wire.GatewayHealth, bytes(message.payload)))
            elif channel is wire.Channel.EVENTS:
                batch = wire.decode(wire.EventBatch, bytes(message.payload))
                stream = batch.events[0].stream
                have = self._have.setdefault(stream, set())
                for event in batch.events:
                    if event.seq in self._drop:
                        self._drop.discard(event.seq)
                        self.dropped.append(event)
                        continue
                    self.events.append(event)
                    have.add(event.seq)
                    loss = event.typed_payload()
                    if isinstance(loss, wire.DataLoss):  # the hub counts a recorded loss as held
                        for r in loss.ranges:
                            have.update(range(r.first, r.last + 1))
                through = self._through.get(stream, 0)
                while through + 1 in have:
                    through += 1
                    have.discard(through)  # only what lies above through_seq is kept
                have.difference_update([seq for seq in have if seq <= through])
                self._through[stream] = through
                if self.auto_ack:
                    self._publish_ack(stream, through, stored=len(batch.events), gaps=seq_gaps(have, through))

    def _publish_ack(
        self, stream: UUID, through_seq: int, *, stored: int = 0, gaps: list[wire.SeqRange] | None = None
    ) -> None:
        ack = wire.Ack(
            store_id=self.store_id,
            gateway_id=self.gateway_id,
            stream=stream,
            through_seq=through_seq,
            stored=stored,
            duplicates=0,
            ts=wire.utc_now(),
            gaps=gaps or [],
        )
        self._client.publish(self._topic(wire.Channel.ACK), wire.encode(ack), qos=1)

    def ack(self, stream: UUID, through_seq: int, *, gaps: list[wire.SeqRange] | None = None) -> None:
        """Acknowledge ``stream`` through ``through_seq`` now (naming ``gaps`` above it)."""
        self._publish_ack(stream, through_seq, gaps=gaps)

    def restore(self, stream: UUID, through_seq: int) -> None:
        """Forget everything of ``stream`` above ``through_seq``, as a hub restored from a backup would."""
        with self._lock:
            self._have[stream] = set()
            self._through[stream] = through_seq

    def publish_raw_ack(self, payload: bytes) -> None:
        """Publish anything on the gateway's ack topic."""
        self._client.publish(self._topic(wire.Channel.ACK), payload, qos=1)

    def received(self) -> list[wire.Event]:
        """Every event kept so far, duplicates included, in arrival order."""
        with self._lock:
            return list(self.events)

    def unique(self) -> dict[int, wire.Event]:
        """The received events by seq (the last copy of each)."""
        return {event.seq: event for event in self.received()}

    def losses(self) -> list[wire.DataLoss]:
        """The loss records received (each once, by seq)."""
        return [
            loss
            for event in sorted(self.unique().values(), key=lambda e: e.seq)
            if isinstance(loss := event.typed_payload(), wire.DataLoss)
        ]

    def last_status(self) -> wire.GatewayStatus | None:
        """The latest status message received."""
        with self._lock:
            return self.statuses[-1] if self.statuses else None

    def last_health(self) -> wire.GatewayHealth | None:
        """The latest health message received."""
        with self._lock:
            return self.health[-1] if self.health else None


@pytest.fixture
def fake_hub_factory(mqtt_settings: MqttSettings) -> Callable[..., FakeHub]:
    """Makes FakeHubs on the test's broker; use them as context managers."""

    def make(*, auto_ack: bool, drop: set[int] | None = None) -> FakeHub:
        return FakeHub(mqtt_settings, auto_ack=auto_ack, drop=drop)

    return make


def retained(settings: MqttSettings, topic: str, *, timeout: float = 10.0) -> bytes:
    """The retained message of ``topic``, read by a fresh subscriber."""
    got: list[bytes] = []
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.on_connect = lambda c, *_: c.subscribe(topic, 1)
    client.on_message = lambda c, u, message: got.append(bytes(message.payload))
    client.connect(settings.host, settings.port)
    client.loop_start()
    try:
        wait_until(lambda: got, timeout=timeout, what=f"a retained message on {topic}")
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]
