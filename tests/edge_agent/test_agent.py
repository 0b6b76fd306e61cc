"""The agent against a real Mosquitto and a minimal hub: delivery, acks, resends, restarts, presence."""

from __future__ import annotations

import asyncio
import math
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Self
from uuid import uuid4

import pytest

import storegate
from device_drivers.base import DeviceUnavailableError, DriverHealth, DriverState, Reading
from device_drivers.simulated.temperature import SimulatedSensorConfig, SimulatedTemperatureSensor
from edge_agent.agent import EdgeAgent
from edge_agent.config import DeviceConfig, config_hash
from edge_agent.errors import AgentStoppedError, InvalidReadingError
from edge_agent.outbox import Outbox
from edge_agent.timing import Backoff
from launcher.broker import LocalBroker
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.edge_agent.conftest import GATEWAY, STORE, FakeHub, make_config, retained, running, temperature

HubFactory = Callable[..., FakeHub]


async def connected(agent: EdgeAgent) -> None:
    """Wait until the agent is connected to the broker."""

    async def probe() -> bool:
        return agent.stats.connected

    await eventually(probe, what="agent connected")


async def until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Wait for a synchronous condition without blocking the event loop."""

    async def probe() -> object:
        return condition()

    await eventually(probe, timeout=timeout, what=what)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_events_arrive_intact_contiguous_and_acked_events_leave_the_outbox(
    tmp_path: Path, mqtt_settings: MqttSettings, fake_hub_factory: HubFactory, protocol: str
) -> None:
    mqtt = mqtt_settings.model_copy(update={"protocol": protocol})
    config = make_config(tmp_path, mqtt, outbox={"max_batch": 7})
    agent = EdgeAgent(config=config)
    sale = Reading(
        device_id="pos-1", kind="sale.completed", ts=temperature(0).ts, payload={"total": 12.5, "items": [1]}
    )
    readings = [temperature(n) for n in range(20)] + [sale]
    with fake_hub_factory(auto_ack=True) as hub:
        async with running(agent):
            await connected(agent)
            for reading in readings:
                await agent.record(reading)
            await until(lambda: len(hub.unique()) == len(readings), "every event at the hub")
            await until(lambda: agent.stats.depth == 0, "outbox emptied by acks")
            stream = agent.stream
        events = hub.unique()
    assert sorted(events) == list(range(1, len(readings) + 1))
    for seq, reading in enumerate(readings, start=1):
        event = events[seq]
        assert (event.store_id, event.gateway_id, event.stream) == (STORE, GATEWAY, stream)
        assert (event.device_id, event.kind, event.ts, event.payload) == (
            reading.device_id,
            reading.kind,
            reading.ts,
            reading.payload,
        )
    assert len({event.event_id for event in events.values()}) == len(readings)
    stats = agent.stats
    assert (stats.acked, stats.last_ack_seq, stats.published, stats.resent) == (21, 21, 21, 0)
    async with Outbox(path=config.outbox.path) as outbox:
        assert (outbox.depth(), outbox.last_seq, outbox.stream) == (0, 21, stream)


async def test_unacknowledged_events_are_resent_after_ack_timeout(
    tmp_path: Path, mqtt_settings: MqttSettings, fake_hub_factory: HubFactory
) -> None:
    config = make_config(tmp_path, mqtt_settings, outbox={"ack_timeout_s": 0.3})
    agent = EdgeAgent(config=config)
    with fake_hub_factory(auto_ack=False) as hub:
        async with running(agent):
            await connected(agent)
            for n in range(5):
                await agent.record(temperature(n))
            await until(lambda: len(hub.received()) >= 10, "the events a second time")
            assert agent.stats.resent >= 5
            first, second = hub.received()[:5], hub.received()[5:10]
            assert [(e.seq, e.event_id) for e in first] == [(e.seq, e.event_id) for e in second]
            problems = agent.health().problems
            assert len(problems) == 1
            assert problems[0].startswith("hub has not acknowledged for"), problems
            assert problems[0].endswith("; 5 events waiting"), problems
            assert agent.stream is not None
            hub.ack(agent.stream, 5)
            await until(lambda: agent.stats.depth == 0, "outbox emptied by the late ack")
            assert agent.health().problems == []


async def test_ack_deletes_only_through_its_seq_and_ignores_other_streams(
    tmp_path: Path, mqtt_settings: MqttSettings, fake_hub_factory: HubFactory
) -> None:
    agent = EdgeAgent(config=make_config(tmp_path, mqtt_settings))
    with fake_hub_factory(auto_ack=False) as hub:
        async with running(agent):
            await connected(agent)
            for n in range(10):
                await agent.record(temperature(n))
            await until(lambda: len(hub.received()) == 10, "all ten events")
            assert agent.stream is not None
            # Acks from one publisher on one topic arrive in order, so once the last one
            # is applied, the ones before it have been handled (and ignored).
            hub.ack(uuid4(), 10)
            hub.publish_raw_ack(b"{not json")
            hub.ack(agent.stream, 99)  # beyond anything the outbox ever had
            hub.ack(agent.stream, 4)
            await until(lambda: agent.stats.last_ack_seq == 4, "the ack through 4")
            assert agent.stats.depth == 6
            assert agent.stats.acked == 4


async def test_restart_resends_unacknowledged_events_with_the_same_ids_and_seqs(
    tmp_path: Path, mqtt_settings: MqttSettings, fake_hub_factory: HubFactory
) -> None:
    config = make_config(tmp_path, mqtt_settings)
    with fake_hub_factory(auto_ack=False) as hub:
        first = EdgeAgent(config=config)
        async with running(first):
            await connected(first)
            for n in range(5):
                await first.record(temperature(n))
            await until(lambda: len(hub.received()) == 5, "five events from the first run")
            hub.ack(first.stream or uuid4(), 2)
            await until(lambda: first.stats.depth == 3, "the ack through 2")
        before = hub.received()

        second = EdgeAgent(config=config)
        async with running(second):
            await until(lambda: len(hub.received()) == 8, "the three unacknowledged events again")
            again = hub.received()[5:]
            assert second.stream == first.stream
            assert again == before[2:]
            await second.record(temperature(5))
            await until(lambda: max(hub.unique()) == 6, "a new event after the restart")
            assert second.stats.last_ack_seq == 2


async def test_after_a_broker_outage_the_agent_reconnects_and_delivers_everything(
    tmp_path: Path, mosquitto: LocalBroker, mqtt_settings: MqttSettings, fake_hub_factory: HubFactory
) -> None:
    agent = EdgeAgent(config=make_config(tmp_path, mqtt_settings))
    with fake_hub_factory(auto_ack=True) as hub:
        async with running(agent):
            await connected(agent)
            for n in range(5):
                await agent.record(temperature(n))
            await until(lambda: agent.stats.acked == 5, "the first events acknowledged")
            await asyncio.to_thread(mosquitto.stop)
            await until(lambda: not agent.stats.connected, "the agent noticing the outage")
            for n in range(5, 12):
                await agent.record(temperature(n))
            await agent.flush()
            assert agent.health().problems[0].startswith(f"broker {mqtt_settings.address} unreachable for")
            assert agent.health().problems[0].endswith("; 7 events waiting")
            await asyncio.to_thread(mosquitto.restart)
            await until(lambda: agent.stats.reconnects == 1, "the reconnect", timeout=20)
            await until(lambda: agent.stats.acked == 12, "the outage's events acknowledged", timeout=20)
            assert agent.health().problems == []
    assert sorted(hub.unique()) == list(range(1, 13))


async def test_birth_is_retained_on_connect_and_shutdown_status_on_stop(
    tmp_path: Path, mqtt_settings: MqttSettings
) -> None:
    device = {"device_id": "chiller-1", "driver": "simulated-temperature", "interval_s": 60}
    config = make_config(tmp_path, mqtt_settings, devices=[device])
    agent = EdgeAgent(config=config)
    topic = wire.topic(STORE, GATEWAY, wire.Channel.STATUS)
    async with running(agent):
        await connected(agent)
        birth = wire.decode(wire.GatewayStatus, await asyncio.to_thread(retained, mqtt_settings, topic))
        assert (birth.online, birth.reason) == (True, "birth")
        assert birth.config_hash == config_hash(config)
        assert birth.agent_version == storegate.__version__
        assert birth.devices == ["chiller-1"]
    goodbye = wire.decode(wire.GatewayStatus, await asyncio.to_thread(retained, mqtt_settings, topic))
    assert (goodbye.online, goodbye.reason) == (False, "shutdown")


async def test_health_is_published_retained(
    tmp_path: Path, mqtt_settings: MqttSettings, fake_hub_factory: HubFactory
) -> None:
    agent = EdgeAgent(config=make_config(tmp_path, mqtt_settings, health={"interval_s": 0.2}))
    with fake_hub_factory(auto_ack=True) as hub:
        async with running(agent):
            await connected(agent)
            await agent.record(temperature(0))
            await until(
                lambda: (h := hub.last_health()) is not None and h.acked_total == 1, "a health report after the ack"
            )
            report = hub.last_health()
            assert report is not None
            assert (report.outbox_depth, report.published_total, report.problems) == (0, 1, [])
            topic = wire.topic(STORE, GATEWAY, wire.Channel.HEALTH)
            assert wire.decode(wire.GatewayHealth, await asyncio.to_thread(retained, mqtt_settings, topic))


async def test_metrics_endpoint_serves_agent_metrics_and_closes_on_stop(
    tmp_path: Path, mqtt_settings: MqttSettings
) -> None:
    agent = EdgeAgent(config=make_config(tmp_path, mqtt_settings, health={"metrics_port": 0}))

    def scrape(port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    async with running(agent):
        await agent.record(temperature(0))
        await agent.flush()
        await until(lambda: agent.metrics_port, "the metrics server")
        port = agent.metrics_port
        assert port is not None
        text = await asyncio.to_thread(scrape, port)
    assert "storegate_agent_outbox_depth" in text
    assert "storegate_agent_published_total" in text
    assert "storegate_agent_rejected_readings_total 0.0" in text
    assert agent.metrics_port is None
    with pytest.raises(OSError, match="refused"):
        await asyncio.to_thread(scrape, port)


async def test_simulated_devices_feed_events_to_the_hub(
    tmp_path: Path, mqtt_settings: MqttSettings, fake_hub_factory: HubFactory
) -> None:
    devices = [
        {"device_id": "chiller-1", "driver": "simulated-temperature", "zone": "chiller-1", "interval_s": 0.02},
        {"device_id": "freezer-1", "driver": "simulated-temperature", "interval_s": 0.02, "base_celsius": -20},
    ]
    agent = EdgeAgent(config=make_config(tmp_path, mqtt_settings, devices=devices))
    with fake_hub_factory(auto_ack=True) as hub:
        async with running(agent):
            await until(
                lambda: {e.device_id for e in hub.received()} == {"chiller-1", "freezer-1"}, "events of both devices"
            )
    for event in hub.received():
        reading = event.typed_payload()
        assert isinstance(reading, wire.EnvironmentReading)
        assert (reading.quantity, reading.unit) == (wire.Quantity.TEMPERATURE, "Cel")


class FlakyDriver:
    """Fails to open ``failures`` times, then reports readings from a simulated sensor."""

    opened = 0

    def __init__(self, inner: SimulatedTemperatureSensor, failures: int) -> None:
        self._inner = inner
        self._failures = failures

    async def __aenter__(self) -> Self:
        FlakyDriver.opened += 1
        if FlakyDriver.opened <= self._failures:
            raise DeviceUnavailableError("no such device /dev/ttyUSB7")
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    def readings(self) -> AsyncIterator[Reading]:
        return self._inner.readings()

    async def execute(self, command: wire.Command) -> wire.CommandResult:
        return await self._inner.execute(command)

    def health(self) -> DriverHealth:
        return DriverHealth(state=DriverState.DOWN)


async def test_failing_driver_is_restarted_without_disturbing_other_devices(
    tmp_path: Path, unreachable_mqtt: MqttSettings
) -> None:
    devices = [
        {"device_id": "flaky", "driver": "simulated-temperature", "interval_s": 0.02},
        {"device_id": "steady", "driver": "simulated-temperature", "interval_s": 0.02},
    ]
    FlakyDriver.opened = 0

    def factory(device: DeviceConfig) -> FlakyDriver | SimulatedTemperatureSensor:
        assert isinstance(device, SimulatedSensorConfig)
        sensor = SimulatedTemperatureSensor(config=device)
        return FlakyDriver(sensor, failures=3) if device.device_id == "flaky" else sensor

    agent = EdgeAgent(
        config=make_config(tmp_path, unreachable_mqtt, devices=devices),
        driver_factory=factory,
        device_backoff=Backoff(initial_s=0.01, max_s=0.05),
    )
    async with running(agent):
        await until(lambda: agent.stats.devices_up == (("flaky", True), ("steady", True)), "both devices up")
        assert FlakyDriver.opened == 4
        await until(lambda: agent.stats.depth >= 10, "readings in the outbox")
        problems = agent.health().problems
    assert problems[0].startswith(f"broker {unreachable_mqtt.address} unreachable for"), problems


async def test_stop_drains_queued_readings_into_the_outbox(tmp_path: Path, unreachable_mqtt: MqttSettings) -> None:
    config = make_config(tmp_path, unreachable_mqtt, outbox={"commit_max_events": 50, "queue_size": 1000})
    agent = EdgeAgent(config=config)
    async with running(agent):
        for n in range(600):
            await agent.record(temperature(n))
    with pytest.raises(AgentStoppedError):
        await agent.record(temperature(0))
    async with Outbox(path=config.outbox.path) as outbox:
        assert outbox.depth() == 600
        assert [event.seq for event in await outbox.read_after(0, 1000)] == list(range(1, 601))


async def test_record_waits_while_the_queue_is_full(tmp_path: Path, unreachable_mqtt: MqttSettings) -> None:
    agent = EdgeAgent(config=make_config(tmp_path, unreachable_mqtt, outbox={"queue_size": 2}))
    await agent.record(temperature(0))
    await agent.record(temperature(1))
    blocked = asyncio.create_task(agent.record(temperature(2)))
    done, _ = await asyncio.wait({blocked}, timeout=0.2)
    assert not done, "a full queue must make the producer wait"
    async with running(agent):
        await asyncio.wait_for(blocked, timeout=10)
        await agent.flush()
        assert agent.stats.depth == 3


@pytest.mark.parametrize(
    ("reading", "why"),
    [
        (Reading(device_id="x", kind="NotDotted", ts=temperature(0).ts), "kind"),
        (Reading(device_id="bad id!", kind="door.contact", ts=temperature(0).ts), "device_id"),
        (
            Reading(
                device_id="x",
                kind="environment.reading",
                ts=temperature(0).ts,
                payload={"quantity": "temperature", "value": 3.0, "unit": "ppm"},
            ),
            "does not match",
        ),
        (Reading(device_id="x", kind="door.contact", ts=temperature(0).ts, payload={"v": math.nan}), "finite"),
        (Reading(device_id="x", kind="door.contact", ts=temperature(0).ts.replace(tzinfo=None)), "timezone"),
        (Reading(device_id="x", kind="door.contact", ts=temperature(0).ts, payload={"blob": "x" * 70_000}), "limit"),
    ],
)
async def test_invalid_readings_are_rejected_and_counted(
    tmp_path: Path, unreachable_mqtt: MqttSettings, reading: Reading, why: str
) -> None:
    agent = EdgeAgent(config=make_config(tmp_path, unreachable_mqtt))
    with pytest.raises(InvalidReadingError, match=why):
        await agent.record(reading)
    assert agent.stats.rejected == 1
