"""Footfall through the whole hub: a gateway publishes counts and checkout scans over a real Mosquitto, the
consumer stores and applies them, and the report answers over HTTP through the hub's gate, scoped like the
other period reports. A batch with impossible counts loses none of its good events."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from hub.db.models import RefusedEvent
from hub.footfall.models import FootfallCount
from hub.footfall.settings import FootfallSettings
from hub.settings import HubSettings, load_hub_settings
from storegate import wire
from storegate.mqtt import MqttSettings
from tests.conftest import eventually
from tests.hub.conftest import PlainGateway, RunningHub
from tests.hub.footfall.conftest import footfall, sale_scan

STORE = "store-0001"
EVENTS = wire.topic(STORE, "gw-1", wire.Channel.EVENTS)
ACKS = wire.topic(STORE, "gw-1", wire.Channel.ACK)


@pytest.fixture
def hub_settings(sqlite_url: str, mqtt_settings: MqttSettings, tmp_path: Path) -> HubSettings:
    """A hub whose basket gap is 30 s, so the setting is what the report applies."""
    return load_hub_settings(
        None,
        database_url=sqlite_url,
        mqtt=mqtt_settings,
        client_id=f"hub-{uuid.uuid4().hex[:8]}",
        secrets_dir=tmp_path / "hub-secrets",
        accept_unknown_gateways=True,
        footfall=FootfallSettings(basket_gap_s=30),
    )


def event(stream: uuid.UUID, seq: int, kind: str, device_id: str, payload: dict[str, Any], at: Any) -> dict[str, Any]:
    """An event as the gateway's JSON carries it (built by hand, so a bad payload can be sent too)."""
    return {
        "event_id": str(uuid.uuid4()),
        "store_id": STORE,
        "gateway_id": "gw-1",
        "stream": str(stream),
        "seq": seq,
        "device_id": device_id,
        "kind": kind,
        "ts": at.isoformat(),
        "payload": payload,
    }


async def test_counts_and_scans_over_mqtt_reach_the_scoped_report(
    hub: RunningHub, gateway_client: PlainGateway
) -> None:
    # A minute two hours ago (the store has no profile: its day is UTC's).
    minute = (wire.utc_now() - timedelta(hours=2)).replace(second=0, microsecond=0)
    day = minute.date().isoformat()
    stream = uuid.uuid4()
    events = [
        event(
            stream,
            1,
            "camera.footfall",
            "entrance-cam",
            footfall("entrance", minute, 6, 2),
            minute + timedelta(seconds=60),
        ),
        # Refused by the wire contract: a negative count. Set aside, counted; the rest of the batch goes on.
        event(stream, 2, "camera.footfall", "entrance-cam", footfall("entrance", minute, -4, 0), minute),
        event(
            stream, 3, "camera.footfall", "side-cam", footfall("entrance", minute, 3, 3), minute + timedelta(seconds=60)
        ),
        # Two customers at one till, 45 s apart: two transactions with the hub's 30 s gap (one with 60 s).
        event(stream, 4, "scan.sale", "till-1", sale_scan("ABC-1"), minute + timedelta(seconds=5)),
        event(stream, 5, "scan.sale", "till-1", sale_scan("ABC-2"), minute + timedelta(seconds=50)),
    ]
    batch = {"v": 1, "store_id": STORE, "gateway_id": "gw-1", "sent_at": wire.utc_now().isoformat(), "events": events}
    gateway_client.subscribe(ACKS)
    gateway_client.publish(EVENTS, json.dumps(batch).encode())

    async def acked() -> bool:
        return any(wire.decode(wire.Ack, p).through_seq == 5 for p in gateway_client.received.on(ACKS))

    await eventually(acked, timeout=10, what="the batch acknowledged through seq 5")
    async with hub.runtime.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(RefusedEvent)) == 1
        assert await session.scalar(select(func.sum(FootfallCount.entered))) == 9

    params = {"from": day, "to": day}
    async with await hub.client_as("viewer", store_ids=[STORE]) as scoped:
        # A principal limited to some stores must name one, and only one of its own.
        assert (await scoped.get("/api/v1/reports/footfall", params=params)).status_code == 403
        other = await scoped.get("/api/v1/reports/footfall", params=params | {"store_id": "store-0002"})
        assert other.status_code == 403
        response = await scoped.get("/api/v1/reports/footfall", params=params | {"store_id": STORE})
        assert response.status_code == 200, response.text
    body = response.json()
    assert body["basket_gap_s"] == 30.0
    (item,) = body["items"]
    assert (item["local_hour"], item["visitors"], item["exits"], item["cameras"]) == (minute.hour, 9, 5, 2)
    assert (item["transactions"], item["conversion_rate"]) == (2, 0.2222)
    async with hub.anonymous() as nobody:
        assert (await nobody.get("/api/v1/reports/footfall", params=params)).status_code == 401
