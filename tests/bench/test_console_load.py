"""bench/console_load.py's seeding, small, on a real PostgreSQL: what it writes by COPY is what the hub itself reads
through its API (stores, gateways, alerts with their history, readings), so the figures are of real data. The
timed runs are the bench's (minutes), not the suite's."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hub.settings import load_hub_settings
from storegate.mqtt import MqttSettings
from tests.bench.modules import bench_module
from tests.hub.conftest import (  # noqa: F401  (fixtures: a migrated PostgreSQL database, no settings leaking in)
    _no_hub_env,
    postgres_copies,
    postgres_dropper,
    postgres_template,
    postgres_url,
    running_hub,
)


@pytest.fixture(scope="module")
def console_load() -> Iterator[ModuleType]:
    with bench_module("console_load") as module:
        yield module


def test_options_are_bounded(console_load: ModuleType) -> None:
    defaults = console_load.parse([])
    assert (defaults.stores, defaults.alerts, defaults.clients, defaults.days) == (1000, 100_000, 50, 7)
    with pytest.raises(SystemExit):
        console_load.parse(["--stores", "0"])


async def test_the_seed_is_what_the_hub_reads(
    console_load: ModuleType,
    postgres_url: str,  # noqa: F811
    mqtt_settings: MqttSettings,
    tmp_path: Path,
) -> None:
    args = console_load.parse(["--stores", "12", "--alerts", "300", "--days", "1", "--reading-minutes", "60"])
    seeded = await console_load.seed(postgres_url, args, random.Random(7))
    assert (seeded.stores, seeded.gateways, seeded.offline_gateways) == (12, 12, 8)
    assert seeded.alerts == 300
    assert sum(seeded.alerts_by_state.values()) == 300
    assert seeded.readings == 12 * 24 * 2  # a chiller and a freezer, hourly, for a day

    settings = load_hub_settings(
        None,
        database_url=postgres_url,
        mqtt=mqtt_settings,
        client_id=f"hub-{uuid.uuid4().hex[:8]}",
        secrets_dir=tmp_path / "hub-secrets",
    )
    async with running_hub(settings) as hub:
        stores = (await hub.client.get("/api/v1/stores")).json()
        listed: list[dict[str, Any]] = stores["items"] if isinstance(stores, dict) else stores
        assert len(listed) == 12
        assert sum(s["online_gateway_count"] for s in listed) == 12 - 8
        assert all(s["event_count"] == 48 for s in listed)

        active = (await hub.client.get("/api/v1/alerts", params={"status": "active", "limit": 500})).json()
        expected = seeded.alerts_by_state.get("open", 0) + seeded.alerts_by_state.get("acknowledged", 0)
        assert len(active["items"]) == expected
        resolved = (await hub.client.get("/api/v1/alerts", params={"status": "resolved", "limit": 1})).json()
        one = (await hub.client.get(f"/api/v1/alerts/{resolved['items'][0]['alert_id']}")).json()
        assert [h["action"] for h in one["history"]] == ["opened", "acknowledged", "resolved"]
        assert one["resolved_by"] == one["acknowledged_by"]

        readings = (
            await hub.client.get("/api/v1/events", params={"store_id": "store-0001", "kind": "environment.reading"})
        ).json()
        assert len(readings["items"]) == 48
        assert {e["payload"]["zone"] for e in readings["items"]} == {"chiller-1", "freezer-1"}
        assert {e["payload"]["unit"] for e in readings["items"]} == {"Cel"}
