"""End to end over a real Mosquitto: simulated sensors -> agent -> outbox -> broker -> hub -> database and API.

An independent observer subscribes to the events topic, so the test compares three
views of the same events: what the drivers produced, what crossed the wire, and what
the hub stored and serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import select

from device_drivers.base import Driver, Reading
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig, DeviceConfig
from edge_agent.devices import make_driver
from edge_agent.outbox import Outbox
from hub.app import serve
from hub.db.engine import create_engine
from hub.db.models import GatewayStream, StoredEvent
from hub.fleet.commands import add_gateway
from hub.settings import HubSettings
from launcher.broker import free_port
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.hub.conftest import token_in_database

STORE, GATEWAY = "store-0007", "gw-2"
SENSORS = ("chiller-1", "freezer-1", "backroom-1")
READINGS_PER_SENSOR = 40


class RecordingDriver:
    """Wraps a real driver and keeps every reading it produced, and stops after ``limit`` readings."""

    def __init__(self, inner: Driver, produced: list[Reading], limit: int) -> None:
        self._inner = inner
        self._produced = produced
        self._limit = limit

    async def __aenter__(self) -> RecordingDriver:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.__aexit__(None, None, None)

    async def readings(self) -> AsyncIterator[Reading]:
        count = 0
        async for reading in self._inner.readings():
            self._produced.append(reading)
            yield reading
            count += 1
            if count >= self._limit:
                await asyncio.Event().wait()  # a sensor that goes quiet, like a real one between readings

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class WireObserver:
    """A plain paho client that records every EventBatch published on the events topic."""

    def __init__(self, settings: MqttSettings) -> None:
        self.batches: list[wire.EventBatch] = []
        self._lock = threading.Lock()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.connect(settings.host, settings.port)
        self._client.subscribe(wire.subscription(wire.Channel.EVENTS), qos=1)
        self._client.loop_start()
        assert self._subscribed.wait(10), "observer could not subscribe"

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.batches.append(wire.decode(wire.EventBatch, bytes(message.payload)))

    def events(self) -> dict[str, wire.Event]:
        with self._lock:
            return {str(e.event_id): e for batch in self.batches for e in batch.events}

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def observer(mqtt_settings: MqttSettings) -> Iterator[WireObserver]:
    watcher = WireObserver(mqtt_settings)
    yield watcher
    watcher.close()


async def test_readings_reach_hub_database_and_api_intact(
    tmp_path: Path, mqtt_settings: MqttSettings, observer: WireObserver
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}"
    http_port = free_port()
    hub_settings = HubSettings(database_url=database_url, mqtt=mqtt_settings, http_port=http_port)
    agent_config = AgentConfig.model_validate(
        {
            "store_id": STORE,
            "gateway_id": GATEWAY,
            "mqtt": mqtt_settings.model_dump(),
            "outbox": {"path": tmp_path / "outbox.sqlite3", "max_batch": 16},
            "devices": [
                {"device_id": d, "driver": "simulated-temperature", "zone": d, "interval_s": 0.01, "seed": i}
                for i, d in enumerate(SENSORS)
            ],
        }
    )
    produced: list[Reading] = []

    def recording_factory(config: DeviceConfig) -> Driver:
        return RecordingDriver(make_driver(config), produced, READINGS_PER_SENSOR)

    expected_total = READINGS_PER_SENSOR * len(SENSORS)
    hub_stop, agent_stop = asyncio.Event(), asyncio.Event()
    # A hub as deployed takes only enrolled gateways: this one is added first, as an operator would.
    await add_gateway(database_url, f"{STORE}/{GATEWAY}", by="test-operator")
    reader = {"Authorization": f"Bearer {await token_in_database(database_url, 'viewer')}"}
    hub_task = asyncio.create_task(serve(hub_settings, stop=hub_stop))
    agent = EdgeAgent(config=agent_config, driver_factory=recording_factory)
    agent_task = asyncio.create_task(agent.run(agent_stop))
    engine = create_engine(database_url)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=5.0, headers=reader) as http:

            async def api_events() -> list[dict[str, Any]]:
                with contextlib.suppress(httpx.HTTPError):
                    response = await http.get("/api/v1/events", params={"store_id": STORE, "limit": 1000})
                    if response.status_code == 200:
                        items: list[dict[str, Any]] = response.json()["items"]
                        return items if len(items) >= expected_total else []
                return []

            served = await eventually(api_events, timeout=30, what=f"{expected_total} events through the API")

            async def all_acked() -> bool:
                return agent.stats.acked >= expected_total and agent.stats.depth == 0

            await eventually(all_acked, timeout=15, what="the hub's acks to empty the outbox")
        agent_stop.set()
        await asyncio.wait_for(agent_task, 20)

        # 1. Every reading the drivers produced is stored once, with its device, time and value.
        async with engine.connect() as conn:
            rows = (await conn.execute(select(StoredEvent.__table__))).mappings().all()
            through = (await conn.execute(select(GatewayStream.through_seq))).scalars().all()
        assert len(produced) == expected_total
        assert len(rows) == expected_total
        stored_readings = sorted(
            (r["device_id"], r["device_ts"], json.dumps(r["payload"], sort_keys=True)) for r in rows
        )
        produced_readings = sorted((p.device_id, p.ts, json.dumps(p.payload, sort_keys=True)) for p in produced)
        assert stored_readings == produced_readings

        # 2. Every field of every event on the wire is stored as sent.
        on_wire = observer.events()
        assert set(on_wire) == {r["event_id"] for r in rows}
        for row in rows:
            sent = on_wire[row["event_id"]]
            assert (row["store_id"], row["gateway_id"], row["stream"], row["seq"]) == (
                sent.store_id,
                sent.gateway_id,
                str(sent.stream),
                sent.seq,
            )
            assert (row["device_id"], row["kind"], row["payload"]) == (sent.device_id, sent.kind, sent.payload)
            assert isinstance(row["device_ts"], datetime)
            assert row["device_ts"] == sent.ts
        assert sorted(r["seq"] for r in rows) == list(range(1, expected_total + 1))
        assert through == [expected_total]

        # 3. The API serves the same events with the same fields.
        assert {e["event_id"] for e in served} == set(on_wire)
        one = served[0]
        sent = on_wire[one["event_id"]]
        assert wire.Event.model_validate({k: one[k] for k in wire.Event.model_fields if k != "v"}) == sent

        # 4. The agent's outbox keeps nothing the hub has acknowledged.
        async with Outbox(path=agent_config.outbox.path) as outbox:
            assert outbox.depth() == 0
            assert await outbox.read_after(0, 10) == []
            assert outbox.last_seq == expected_total
    finally:
        agent_stop.set()
        hub_stop.set()
        await asyncio.gather(agent_task, hub_task, return_exceptions=True)
        await engine.dispose()
