"""Hot-plug end to end: ptys that a test-only port lister reports become devices whose events reach the hub.

A simulated Zebra scanner (its real USB ids, a pty for its CDC-ACM port) is plugged in,
scans, takes a command from MQTT, is pulled out and plugged into another port; a device
no profile knows is plugged in too. Real Mosquitto, the real hub, the real agent; only the
port list is the test's, because no USB bus exists here.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from device_drivers.barcode.simulator import SimulatedSerialScanner
from device_drivers.ports import PortInfo
from device_drivers.simulated.pty import PtyPort
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from hub.settings import HubSettings
from storegate import wire
from storegate.mqtt import MqttSettings
from storegate.wire import DeviceIdentity
from tests.conftest import eventually
from tests.hub.conftest import PlainGateway, RunningHub, running_hub

STORE, GATEWAY = "store-0042", "gw-7"
SCANNER_KEY = "usb-05e0:1701-S_N_21122B0012"


class PluggedPorts:
    """The port list the agent scans: what the test has plugged in."""

    def __init__(self) -> None:
        self.ports: list[PortInfo] = []

    def list_ports(self) -> list[PortInfo]:
        return list(self.ports)


def zebra_port(address: str, location: str) -> PortInfo:
    return PortInfo(
        address=address,
        identity=DeviceIdentity(
            vendor_id="05e0",
            product_id="1701",
            serial_number="S/N 21122B0012",
            manufacturer="Zebra Technologies",
            product="Symbol Bar Code Scanner",
            location=location,
        ),
    )


@contextlib.asynccontextmanager
async def plugged_scanner() -> AsyncIterator[SimulatedSerialScanner]:
    async with PtyPort() as port:
        scanner = SimulatedSerialScanner(port=port, terminator="crlf", aim_ids=True)
        task = asyncio.create_task(scanner.run())
        try:
            yield scanner
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def events_at_hub(hub: RunningHub, **params: str) -> list[dict[str, Any]]:
    response = await hub.client.get("/api/v1/events", params={"store_id": STORE, "limit": 1000, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return sorted(items, key=lambda e: e["seq"])


@pytest.fixture
async def hub(tmp_path: Path, mqtt_settings: MqttSettings) -> AsyncIterator[RunningHub]:
    settings = HubSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}",
        mqtt=mqtt_settings,
        client_id="hub-hotplug",
        accept_unknown_gateways=True,
    )
    async with running_hub(settings) as running:
        assert await running.runtime.link.wait_connected(5.0)
        yield running


async def test_plugged_devices_reach_the_hub_keep_their_id_and_take_commands(
    tmp_path: Path, mqtt_settings: MqttSettings, hub: RunningHub
) -> None:
    config = AgentConfig.model_validate(
        {
            "store_id": STORE,
            "gateway_id": GATEWAY,
            "mqtt": mqtt_settings.model_dump(),
            "outbox": {"path": tmp_path / "outbox.sqlite3"},
            "hotplug": {"watch": "poll", "poll_interval_s": 60},  # the test scans when it has plugged something
        }
    )
    ports = PluggedPorts()
    agent = EdgeAgent(config=config, port_lister=ports)
    stop = asyncio.Event()
    agent_task = asyncio.create_task(agent.run(stop))
    operator = PlainGateway(mqtt_settings, client_id="test-operator")
    results_topic = wire.topic(STORE, GATEWAY, wire.Channel.COMMAND_RESULTS)
    operator.subscribe(results_topic)
    try:

        async def kinds_at_hub() -> list[str]:
            return [e["kind"] for e in await events_at_hub(hub, device_id=SCANNER_KEY)]

        # 1. Plugged in: recognised by its USB ids as the Zebra CDC profile; its scans are sales.
        async with plugged_scanner() as scanner:
            ports.ports = [zebra_port(scanner.port.port, "1-1.2:1.0")]
            await agent.devices.scan_now()
            assert agent.devices.device_ids == [SCANNER_KEY]
            await eventually(
                lambda: _has(kinds_at_hub, "device.attached"), timeout=10, what="device.attached at the hub"
            )
            # Plugged in after the birth: the gateway's status says so again, and the hub's view follows.
            await eventually(lambda: devices_at_hub(hub, [SCANNER_KEY]), timeout=10, what="the scanner listed")
            scanner.queue_scan("5449000039231", aim="]E0")
            sales = await eventually(
                lambda: events_at_hub(hub, device_id=SCANNER_KEY, kind="scan.sale"), timeout=10, what="the sale"
            )
            assert sales[0]["payload"]["gtin"] == "05449000039231"
            assert sales[0]["payload"]["symbology"] == "ean13"
            attached = (await events_at_hub(hub, kind="device.attached"))[0]["payload"]
            assert attached["profile"] == "zebra-ds-cdc"
            assert attached["address"] == scanner.port.port
            assert attached["identity"]["serial_number"] == "S/N 21122B0012"

            # 2. A command from the hub side: the scanner moves to receiving.
            command = wire.Command(
                command_id=uuid.uuid4(),
                store_id=STORE,
                gateway_id=GATEWAY,
                device_id=SCANNER_KEY,
                name="set_mode",
                args={"mode": "receiving"},
                issued_at=wire.utc_now(),
            )
            operator.publish(wire.topic(STORE, GATEWAY, wire.Channel.COMMANDS), wire.encode(command))

            async def result() -> wire.CommandResult | None:
                raws = operator.received.on(results_topic)
                return wire.decode(wire.CommandResult, raws[-1]) if raws else None

            answer = await eventually(result, timeout=10, what="the command's result")
            assert answer is not None  # eventually returns only a truthy value
            assert (answer.command_id, answer.status) == (command.command_id, "done")
            scanner.queue_scan("4007817327098", aim="]E0")
            await eventually(
                lambda: events_at_hub(hub, device_id=SCANNER_KEY, kind="scan.receiving"), timeout=10, what="receipt"
            )

            # 3. Pulled out.
            scanner.unplug()
            ports.ports = []
            await agent.devices.scan_now()
            assert agent.devices.device_ids == []
            await eventually(lambda: _has(kinds_at_hub, "device.detached"), timeout=10, what="device.detached")
            await eventually(lambda: devices_at_hub(hub, []), timeout=10, what="the scanner no longer listed")

        # 4. Plugged into another USB socket: a new address, the same device id and history.
        async with plugged_scanner() as scanner:
            ports.ports = [zebra_port(scanner.port.port, "1-1.4:1.0")]
            await agent.devices.scan_now()
            assert agent.devices.device_ids == [SCANNER_KEY]
            await eventually(lambda: devices_at_hub(hub, [SCANNER_KEY]), timeout=10, what="the scanner listed again")
            scanner.queue_scan("9780140013993", aim="]E0")

            async def two_sales() -> list[dict[str, Any]]:
                found = await events_at_hub(hub, device_id=SCANNER_KEY, kind="scan.sale")
                return found if len(found) == 2 else []

            await eventually(two_sales, timeout=10, what="the second sale, from the new port")
            attached_twice = await events_at_hub(hub, device_id=SCANNER_KEY, kind="device.attached")
            assert [a["payload"]["address"] for a in attached_twice][-1] == scanner.port.port

            # 5. A device no profile knows: reported with its identifiers, no driver started.
            stranger = PortInfo(
                address="/dev/ttyUSB9",
                identity=DeviceIdentity(vendor_id="1a86", product_id="7523", product="USB Serial", location="1-1.3"),
            )
            ports.ports = [*ports.ports, stranger]
            await agent.devices.scan_now()
            unknown = await eventually(
                lambda: events_at_hub(hub, kind="device.unknown"), timeout=10, what="device.unknown at the hub"
            )
            assert unknown[0]["device_id"] == "port-1-1.3"
            assert unknown[0]["payload"]["identity"]["vendor_id"] == "1a86"
            assert agent.devices.device_ids == [SCANNER_KEY]
        # The gateway's birth message lists the devices it runs (reconnects publish it again).
        assert SCANNER_KEY in agent._presence.status(online=True, reason="birth").devices
        gateway = (await hub.client.get("/api/v1/gateways", params={"store_id": STORE})).json()["items"][0]
        assert gateway["last_status_reason"] == "birth"  # a change of devices is not a change of presence
    finally:
        operator.close()
        stop.set()
        await asyncio.wait_for(agent_task, 20)


async def _has(probe: Any, kind: str) -> bool:
    return kind in await probe()


async def devices_at_hub(hub: RunningHub, wanted: list[str]) -> bool:
    """Whether the hub's view of the gateway lists ``wanted`` as its devices (from its retained status)."""
    response = await hub.client.get("/api/v1/gateways", params={"store_id": STORE})
    assert response.status_code == 200, response.text
    return [g["devices"] for g in response.json()["items"] if g["gateway_id"] == GATEWAY] == [wanted]
