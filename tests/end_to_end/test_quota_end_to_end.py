"""A full outbox with the broker down, end to end with the real hub.

The outbox quota is tiny and the broker is down, so the agent must evict. It evicts
telemetry first and keeps every security and sales event; when the broker comes back,
the hub receives what was kept plus loss records naming exactly what was evicted, shows
the loss, and its contiguous mark reaches the agent's last seq (nothing stays stuck).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from pydantic import JsonValue
from sqlalchemy import func, select

from device_drivers.base import Reading
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig
from hub.app import serve
from hub.db.engine import create_engine
from hub.db.models import GatewayStream, StoredEvent
from hub.settings import HubSettings
from launcher.broker import LocalBroker, free_port
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.hub.conftest import token_in_database

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
READINGS = 400  # 300 of fridge telemetry, 50 door events, 50 sales
QUOTA = 200


def reading(n: int) -> Reading:
    """Reading n of an interleaved stream: mostly fridge telemetry, every 8th a door event, every 8th a sale."""
    ts = T0 + timedelta(seconds=n)
    if n % 8 == 0:
        return Reading(device_id="door-1", kind="security.door", ts=ts, payload={"n": n, "open": True})
    if n % 8 == 4:
        return Reading(device_id="till-1", kind="sale.item", ts=ts, payload={"n": n, "gtin": "05012345678900"})
    payload: dict[str, JsonValue] = {
        "quantity": "temperature",
        "value": 3.0 + n / 1000,
        "unit": "Cel",
        "zone": "fridge-1",
    }
    return Reading(device_id="fridge-1", kind="environment.reading", ts=ts, payload=payload)


async def test_full_outbox_evicts_telemetry_first_and_the_hub_records_the_loss(
    tmp_path: Path, mosquitto: LocalBroker, mqtt_settings: MqttSettings
) -> None:
    readings = [reading(n) for n in range(1, READINGS + 1)]
    kinds = {kind: sum(1 for r in readings if r.kind == kind) for kind in {r.kind for r in readings}}
    assert kinds == {"environment.reading": 300, "security.door": 50, "sale.item": 50}

    mosquitto.stop()  # the store's uplink is down
    config = AgentConfig.model_validate(
        {
            "store_id": "store-0009",
            "gateway_id": "gw-1",
            "mqtt": mqtt_settings.model_dump(),
            "outbox": {"path": tmp_path / "outbox.sqlite3", "max_events": QUOTA, "ack_timeout_s": 2.0},
        }
    )
    agent = EdgeAgent(config=config)
    agent_stop, hub_stop = asyncio.Event(), asyncio.Event()
    agent_task = asyncio.create_task(agent.run(agent_stop))
    hub_task: asyncio.Task[None] | None = None
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'hub.sqlite3'}"
    engine = create_engine(database_url)
    try:
        for r in readings:
            await agent.record(r)
        await agent.flush()
        evicted = agent.stats.evicted
        assert evicted >= len(readings) - QUOTA, "the quota must have forced evictions"
        assert agent.stats.depth <= QUOTA
        assert not agent_task.done(), "the agent keeps running with a full outbox"

        mosquitto.restart()
        http_port = free_port()
        hub_task = asyncio.create_task(
            serve(
                HubSettings(
                    database_url=database_url, mqtt=mqtt_settings, http_port=http_port, accept_unknown_gateways=True
                ),
                stop=hub_stop,
            )
        )

        async def caught_up() -> bool:
            if agent.stats.depth != 0:
                return False
            async with engine.connect() as conn:
                marks = (await conn.execute(select(GatewayStream.through_seq))).scalars().all()
                top = (await conn.execute(select(func.max(StoredEvent.seq)))).scalar()
            return bool(marks) and marks == [top]

        await eventually(caught_up, timeout=30, what="the hub to hold everything kept plus the loss records")

        async with engine.connect() as conn:
            rows = (await conn.execute(select(StoredEvent.kind, StoredEvent.payload))).all()
        stored = {kind: sum(1 for k, _ in rows if k == kind) for kind in kinds}
        # Security and sales are the last to go: all of them arrived.
        assert stored["security.door"] == kinds["security.door"]
        assert stored["sale.item"] == kinds["sale.item"]
        # Telemetry that did not arrive is exactly what the loss records name.
        losses = [payload for kind, payload in rows if kind == "outbox.loss"]
        assert losses, "the hub must have received loss records"
        lost_telemetry = sum(loss["by_kind"].get("environment.reading", 0) for loss in losses)
        assert {loss["reason"] for loss in losses} == {"evicted"}
        assert lost_telemetry == kinds["environment.reading"] - stored["environment.reading"] == evicted

        reader = {"Authorization": f"Bearer {await token_in_database(database_url, 'viewer')}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", headers=reader) as http:
            api = (await http.get("/api/v1/data-losses", params={"store_id": "store-0009"})).json()
            assert sum(item["count"] for item in api["items"]) == evicted
            gateways = (await http.get("/api/v1/gateways")).json()["items"]
            assert [g["events_lost"] for g in gateways] == [evicted]
            metrics = (await http.get("/metrics")).text
            assert f'storegate_hub_events_lost_total{{reason="evicted"}} {float(evicted)}' in metrics
            overview = (await http.get("/")).text  # the store needs attention for its lost events
            assert "Events lost" in overview
            store_page = (await http.get("/stores/store-0009")).text
            assert "Events lost for good" in store_page
            assert f">{evicted:,}<" in store_page
    finally:
        agent_stop.set()
        hub_stop.set()
        await asyncio.gather(agent_task, *(t for t in (hub_task,) if t is not None), return_exceptions=True)
        await engine.dispose()
