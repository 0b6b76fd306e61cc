"""A config pushed through the hub's API reaches the agent, which applies it, refuses it, or rolls it back by itself.

The real hub (SQLite, its consumer and command sender) and the agent's runner in one process, on a real
Mosquitto. A simulated-sequence device numbers its readings 1..N throughout; whatever the pushes do to the
agent, every number reaches the hub's database exactly once.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select

from device_drivers.simulated.sequence import reading_number
from edge_agent.runner import serve
from hub.db.models import StoredEvent
from hub.settings import load_hub_settings
from launcher.broker import free_port
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.hub.conftest import RunningHub, running_hub

STORE: Final = "store-0001"
GATEWAY: Final = "gw-1"
CONFIG: Final = f"/api/v1/stores/{STORE}/gateways/{GATEWAY}/config"
READINGS: Final = 240  # at 30 a second: the device is still counting while the three pushes happen


def agent_toml(mqtt: MqttSettings, *, port: int | None = None, health_s: int = 1, outbox: str = "") -> str:
    return (
        f'store_id = "{STORE}"\ngateway_id = "{GATEWAY}"\n\n'
        f'[mqtt]\nhost = "{mqtt.host}"\nport = {port or mqtt.port}\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n\n'
        f'[outbox]\npath = "outbox.sqlite"\nmax_batch = 20\n{outbox}\n'
        f"[health]\ninterval_s = {health_s}\n\n[hotplug]\nenabled = false\n\n"
        f'[[devices]]\ndevice_id = "door-1"\ndriver = "simulated-sequence"\ncount = {READINGS}\nrate_per_s = 30\n'
    )


async def numbers_at_hub(hub: RunningHub) -> list[int]:
    async with hub.runtime.sessions() as session:
        rows = (await session.execute(select(StoredEvent.kind, StoredEvent.payload))).all()
    return sorted(reading_number(kind, payload) for kind, payload in rows)


async def outcome(hub: RunningHub, version: int, *, timeout: float) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        shown = (await hub.client.get(CONFIG)).json()
        row: dict[str, Any] = next(v for v in shown["history"] if v["version"] == version)
        return row if row["status"] not in ("pending", "accepted") else None

    row = await eventually(ended, timeout=timeout, what=f"the outcome of version {version}")
    assert row is not None
    return row


async def test_pushes_applied_refused_and_rolled_back_with_every_event_at_the_hub_once(
    tmp_path: Path, mqtt_settings: MqttSettings
) -> None:
    settings = load_hub_settings(
        None,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}",
        mqtt=mqtt_settings,
        client_id=f"hub-{uuid.uuid4().hex[:8]}",
        secrets_dir=tmp_path / "hub-secrets",
    )
    home = tmp_path / "gateway"
    home.mkdir()
    config = home / "agent.toml"
    config.write_text(agent_toml(mqtt_settings))
    stop = asyncio.Event()
    async with running_hub(settings) as hub:
        assert await hub.runtime.link.wait_connected(5.0)
        enrolled = await hub.client.post(f"/api/v1/stores/{STORE}/gateways", json={"gateway_id": GATEWAY})
        assert enrolled.status_code == 201, enrolled.text
        agent = asyncio.create_task(serve(config, stop))
        try:
            await eventually(lambda: _some(hub), what="the first events at the hub")

            # 1. A good change: applied once the new agent is connected, acknowledged and has its device.
            applied_text = agent_toml(mqtt_settings, health_s=2)
            pushed = await hub.client.put(CONFIG, json={"toml": applied_text, "probation_s": 10})
            assert pushed.status_code == 202, pushed.text
            applied = await outcome(hub, 1, timeout=20)
            assert (applied["status"], applied["detail"]) == ("applied", "applied version 1")
            assert config.read_text() == applied_text
            assert (home / "agent.toml.previous").read_text() == agent_toml(mqtt_settings)

            # 2. A typo: refused by the gateway with the key named, nothing changed, no restart.
            typo = agent_toml(mqtt_settings, outbox="max_batchh = 5")
            assert (await hub.client.put(CONFIG, json={"toml": typo})).status_code == 202
            rejected = await outcome(hub, 2, timeout=10)
            assert rejected["status"] == "rejected"
            assert rejected["detail"].startswith("version 2 refused, nothing changed: outbox.max_batchh")
            assert config.read_text() == applied_text

            # 3. A wrong broker port: the agent cannot reach the hub, and goes back by itself within the probation.
            broken = agent_toml(mqtt_settings, port=free_port(), health_s=2)
            assert (await hub.client.put(CONFIG, json={"toml": broken, "probation_s": 2})).status_code == 202
            rolled_back = await outcome(hub, 3, timeout=15)
            assert rolled_back["status"] == "rolled_back"
            assert rolled_back["detail"].startswith("rolled back: after 2 s of probation of version 3: the broker at")
            assert "was not reached" in rolled_back["detail"]
            assert config.read_text() == applied_text

            shown = (await hub.client.get(CONFIG)).json()
            assert shown["current"]["version"] == 1
            assert [v["status"] for v in shown["history"]] == ["rolled_back", "rejected", "applied"]

            # Numbered before, during and after the three pushes: each one at the hub, once.
            async def all_numbers() -> bool:
                return len(await numbers_at_hub(hub)) >= READINGS

            await eventually(all_numbers, timeout=20, what=f"{READINGS} readings at the hub")
            assert await numbers_at_hub(hub) == list(range(1, READINGS + 1))
        finally:
            stop.set()
            await asyncio.wait_for(agent, timeout=20)
    assert not (home / "config-apply.json").exists()


async def _some(hub: RunningHub) -> bool:
    return len(await numbers_at_hub(hub)) > 10
