"""Trust nothing by default: a gateway is (store, gateway), and the hub accepts nothing from one not enrolled.

The hubs here run as deployed (``accept_unknown_gateways`` off) unless a test says otherwise. Messages go
through the consumer's own path (:meth:`Ingestor.process`: classify, admit, store, acknowledge) on a real
database; the registry is driven through its HTTP API and the ``storegate hub gateways`` commands.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from hub.alerting.models import AlertRow
from hub.db.models import Gateway, GatewayPresence, RejectedMessage, StoredEvent
from hub.fleet.registry import FIRST_CONTACT_ACTOR
from hub.ingest.unit import UnitResult
from hub.settings import HubSettings, load_hub_settings
from launcher.broker import LocalBroker
from launcher.cli import app as cli_app
from launcher.demo import demo_configs
from storegate import wire
from storegate.mqtt import Incoming, MqttSettings
from tests.hub.conftest import RunningHub, batch_of, make_token, reading, running_hub, status


@pytest.fixture
def hub_settings(sqlite_url: str, mqtt_settings: MqttSettings, tmp_path: Path) -> HubSettings:
    """A hub as deployed: unknown gateways are refused."""
    return load_hub_settings(
        None,
        database_url=sqlite_url,
        mqtt=mqtt_settings,
        client_id=f"hub-{uuid.uuid4().hex[:8]}",
        secrets_dir=tmp_path / "hub-secrets",
    )


def incoming(store_id: str, gateway_id: str, channel: wire.Channel, message: wire.WireModel) -> Incoming:
    return Incoming(wire.topic(store_id, gateway_id, channel), wire.encode(message), 1, False)


def tamper(store_id: str, gateway_id: str, seq: int = 1, stream: uuid.UUID | None = None) -> wire.EventBatch:
    event = wire.Event(
        event_id=uuid.uuid4(),
        store_id=store_id,
        gateway_id=gateway_id,
        stream=stream or uuid.uuid4(),
        seq=seq,
        device_id="camera-1",
        kind="camera.tamper",
        ts=wire.utc_now(),
        payload={"reason": "covered"},
    )
    return batch_of([event])


def everything_from(store_id: str, gateway_id: str) -> list[Incoming]:
    """What a gateway sends: a birth, a health report, a forged camera tamper, a command result."""
    health = wire.GatewayHealth(
        store_id=store_id,
        gateway_id=gateway_id,
        ts=wire.utc_now(),
        outbox_depth=1,
        published_total=1,
        acked_total=0,
        resent_total=0,
        reconnects_total=0,
    )
    result = wire.CommandResult(
        command_id=uuid.uuid4(), store_id=store_id, gateway_id=gateway_id, status="done", ts=wire.utc_now()
    )
    return [
        incoming(
            store_id, gateway_id, wire.Channel.STATUS, status(True, "birth", store_id=store_id, gateway_id=gateway_id)
        ),
        incoming(store_id, gateway_id, wire.Channel.HEALTH, health),
        incoming(store_id, gateway_id, wire.Channel.EVENTS, tamper(store_id, gateway_id)),
        incoming(store_id, gateway_id, wire.Channel.COMMAND_RESULTS, result),
    ]


async def count(hub: RunningHub, model: Any, *where: Any) -> int:
    async with hub.runtime.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one())


def rejected(hub: RunningHub, reason: str) -> float | None:
    return hub.runtime.metrics.registry.get_sample_value("storegate_hub_rejected_messages_total", {"reason": reason})


async def process(hub: RunningHub, messages: list[Incoming]) -> UnitResult:
    return await hub.runtime.ingestor.process(messages)


async def admin(hub: RunningHub, name: str) -> httpx.AsyncClient:
    """A client with an admin token called ``name``: the registry records ``token:<name>`` as the actor."""
    return hub.client_with(await make_token(hub.runtime, "admin", name=name))


async def enrol(client: httpx.AsyncClient, store_id: str, gateway_id: str) -> httpx.Response:
    return await client.post(f"/api/v1/stores/{store_id}/gateways", json={"gateway_id": gateway_id})


async def revoke(client: httpx.AsyncClient, store_id: str, gateway_id: str) -> httpx.Response:
    return await client.post(f"/api/v1/stores/{store_id}/gateways/{gateway_id}/revoke")


async def test_nothing_of_a_gateway_never_enrolled_is_stored_no_alert_no_presence(hub: RunningHub) -> None:
    result = await process(hub, everything_from("store-0666", "gw-1"))

    assert result.acks == []
    assert (result.stored, result.transitions, result.healths) == (0, [], [])
    for model in (StoredEvent, Gateway, GatewayPresence, AlertRow):
        assert await count(hub, model) == 0, model.__name__
    assert await count(hub, RejectedMessage, RejectedMessage.reason == "unknown_gateway") == 4
    assert rejected(hub, "unknown_gateway") == 4
    async with hub.runtime.sessions() as session:
        details = (await session.scalars(select(RejectedMessage.detail))).all()
    assert all("storegate hub gateways add store-0666/gw-1" in detail for detail in details)

    # Enrolled, the same messages are taken: the forged tamper of before would have opened a critical alert.
    assert (await enrol(hub.client, "store-0666", "gw-1")).status_code == 201
    result = await process(hub, everything_from("store-0666", "gw-1"))
    assert (result.stored, len(result.acks), len(result.transitions)) == (1, 1, 1)
    assert await count(hub, AlertRow, AlertRow.store_id == "store-0666") == 1


async def test_a_revoked_gateway_is_refused_from_then_on_and_keeps_what_it_sent(hub: RunningHub) -> None:
    stream = uuid.uuid4()
    alice, bob, carol = await admin(hub, "alice"), await admin(hub, "bob"), await admin(hub, "carol")
    enrolled = await enrol(alice, "store-0001", "gw-1")
    assert enrolled.status_code == 201, enrolled.text
    body = enrolled.json()
    assert (body["store_id"], body["gateway_id"], body["enrolment"], body["enrolled_by"]) == (
        "store-0001",
        "gw-1",
        "operator",
        "token:alice",
    )
    assert (body["revoked_at"], body["last_seen_at"], body["connectivity"]) == (None, None, "unknown")

    accepted = await process(
        hub, [incoming("store-0001", "gw-1", wire.Channel.EVENTS, batch_of([reading(stream=stream, seq=1)]))]
    )
    assert [a.through_seq for a in accepted.acks] == [1]
    stores = (await hub.client.get("/api/v1/stores")).json()["items"]
    assert [(s["store_id"], s["gateway_count"]) for s in stores] == [("store-0001", 1)]

    revoked = await revoke(bob, "store-0001", "gw-1")
    assert revoked.status_code == 200, revoked.text
    assert (revoked.json()["revoked_by"], revoked.json()["revoked_at"] is not None) == ("token:bob", True)

    refused = await process(
        hub,
        [
            incoming("store-0001", "gw-1", wire.Channel.EVENTS, batch_of([reading(stream=stream, seq=2)])),
            incoming("store-0001", "gw-1", wire.Channel.STATUS, status(False, "lost")),
        ],
    )
    assert (refused.acks, refused.transitions, refused.stored) == ([], [], 0)
    assert rejected(hub, "revoked_gateway") == 2
    assert await count(hub, StoredEvent) == 1  # what it sent before stays
    assert await count(hub, GatewayPresence) == 0
    stores = (await hub.client.get("/api/v1/stores")).json()["items"]
    assert [(s["store_id"], s["gateway_count"]) for s in stores] == [("store-0001", 0)]

    # Only an operator lets it back in.
    again = await enrol(carol, "store-0001", "gw-1")
    assert again.status_code == 201, again.text
    assert (again.json()["revoked_at"], again.json()["enrolled_by"]) == (None, "token:carol")
    back = await process(
        hub, [incoming("store-0001", "gw-1", wire.Channel.EVENTS, batch_of([reading(stream=stream, seq=2)]))]
    )
    assert [a.through_seq for a in back.acks] == [2]


async def test_the_registry_api_says_what_is_wrong(hub: RunningHub) -> None:
    alice, bob = await admin(hub, "alice"), await admin(hub, "bob")
    assert (await enrol(alice, "store-0001", "gw-1")).status_code == 201
    twice = await enrol(alice, "store-0001", "gw-1")
    assert (twice.status_code, "enrolled already" in twice.json()["detail"]) == (409, True)
    bad_id = await enrol(alice, "store-0001", "GW/1#")
    assert bad_id.status_code == 422
    bad_store = await enrol(alice, "Store 1", "gw-1")
    assert bad_store.status_code == 422
    claims_another = await alice.post("/api/v1/stores/store-0001/gateways", json={"gateway_id": "gw-2", "by": "eve"})
    assert claims_another.status_code == 422  # the actor is the principal, never the request's word
    unknown = await revoke(bob, "store-0002", "gw-1")
    assert unknown.status_code == 404
    assert (await revoke(bob, "store-0001", "gw-1")).status_code == 200
    twice_revoked = await revoke(bob, "store-0001", "gw-1")
    assert twice_revoked.status_code == 409
    assert (await hub.client.get("/api/v1/stores/store-0002/gateways/gw-1")).status_code == 404
    one = (await hub.client.get("/api/v1/stores/store-0001/gateways/gw-1")).json()
    assert (one["enrolled_by"], one["revoked_by"]) == ("token:alice", "token:bob")


async def test_a_revoked_gateway_stays_refused_while_unknown_gateways_are_accepted(
    hub_settings: HubSettings,
) -> None:
    settings = hub_settings.model_copy(update={"accept_unknown_gateways": True})
    async with running_hub(settings) as hub:
        first = await process(hub, [incoming("store-0001", "gw-1", wire.Channel.EVENTS, tamper("store-0001", "gw-1"))])
        assert first.stored == 1
        gateway = (await hub.client.get("/api/v1/stores/store-0001/gateways/gw-1")).json()
        assert (gateway["enrolment"], gateway["enrolled_by"]) == ("first_contact", FIRST_CONTACT_ACTOR)

        assert (await revoke(hub.client, "store-0001", "gw-1")).status_code == 200
        later = await process(hub, [incoming("store-0001", "gw-1", wire.Channel.EVENTS, tamper("store-0001", "gw-1"))])
        assert (later.stored, later.acks) == (0, [])
        assert rejected(hub, "revoked_gateway") == 1


async def test_gw_1_in_300_stores_is_300_gateways_each_with_its_own_health(hub_settings: HubSettings) -> None:
    """The documented example: every store's gateway is gw-1. Each is its own gateway, counted by its store."""
    stores = [f"store-{n:04d}" for n in range(300)]
    messages: list[Incoming] = []
    for n, store_id in enumerate(stores):
        health = wire.GatewayHealth(
            store_id=store_id,
            gateway_id="gw-1",
            ts=wire.utc_now(),
            outbox_depth=n,  # each store's own figure: health must not hop between stores
            published_total=n,
            acked_total=0,
            resent_total=0,
            reconnects_total=0,
        )
        messages += [
            incoming(store_id, "gw-1", wire.Channel.STATUS, status(True, "birth", store_id=store_id)),
            incoming(store_id, "gw-1", wire.Channel.HEALTH, health),
            incoming(
                store_id,
                "gw-1",
                wire.Channel.EVENTS,
                batch_of([reading(store_id=store_id, stream=uuid.uuid4(), seq=1)]),
            ),
        ]
    settings = hub_settings.model_copy(update={"accept_unknown_gateways": True})
    async with running_hub(settings) as hub:
        result = await process(hub, messages)
        assert (result.stored, len(result.acks), len(result.transitions)) == (300, 300, 300)

        gateways = (await hub.client.get("/api/v1/gateways")).json()["items"]
        assert [(g["store_id"], g["gateway_id"]) for g in gateways] == [(s, "gw-1") for s in stores]
        assert [g["last_health"]["outbox_depth"] for g in gateways] == list(range(300))
        assert all(g["connectivity"] == "online" and g["through_seq"] == 1 for g in gateways)
        by_id = (await hub.client.get("/api/v1/gateways", params={"gateway_id": "gw-1"})).json()["items"]
        assert len(by_id) == 300
        listed = (await hub.client.get("/api/v1/stores")).json()["items"]
        assert [(s["store_id"], s["gateway_count"], s["online_gateway_count"]) for s in listed] == [
            (s, 1, 1) for s in stores
        ]
        one = (await hub.client.get("/api/v1/stores/store-0123/gateways/gw-1")).json()
        assert (one["store_id"], one["last_health"]["outbox_depth"]) == ("store-0123", 123)
        backlog = hub.runtime.metrics.registry.get_sample_value(
            "storegate_hub_gateway_backlog_events", {"store": "store-0123", "gateway": "gw-1"}
        )
        assert backlog == 123


def test_the_cli_adds_lists_and_revokes_gateways(sqlite_url: str) -> None:
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        outcome = runner.invoke(cli_app, ["hub", "--database-url", sqlite_url, "gateways", *args])
        return outcome.exit_code, outcome.output

    code, out = run("add", "store-0042/gw-1", "--by", "alice")
    assert (code, "store-0042/gw-1  enrolled" in out, "by alice (operator)" in out) == (0, True, True)
    assert run("add", "store-0043/gw-1")[0] == 0  # the same id in another store: another gateway
    code, out = run("add", "store-0042/gw-1")
    assert (code, "enrolled already" in out) == (1, True)
    code, out = run("add", "store-0042")
    assert (code, "STORE/GATEWAY" in out) == (1, True)
    code, out = run("revoke", "store-0042/gw-1", "--by", "bob")
    assert (code, "revoked" in out, "by bob" in out) == (0, True, True)
    code, out = run("revoke", "store-0099/gw-1")
    assert (code, "has no gateway" in out) == (1, True)
    code, out = run("list")
    lines = [line for line in out.splitlines() if line.startswith("store-")]
    assert [line.split()[0] for line in lines] == ["store-0042/gw-1", "store-0043/gw-1"]
    assert ("revoked" in lines[0], "revoked" in lines[1]) == (True, False)


def test_unknown_gateways_are_refused_unless_the_demo_says_otherwise(tmp_path: Path, mosquitto: LocalBroker) -> None:
    assert load_hub_settings(None).accept_unknown_gateways is False
    hub_config, _ = demo_configs(tmp_path, mosquitto, 8000)
    assert load_hub_settings(hub_config).accept_unknown_gateways is True


async def test_the_overview_counts_no_revoked_gateway(hub: RunningHub) -> None:
    assert (await enrol(hub.client, "store-0001", "gw-1")).status_code == 201
    assert (await enrol(hub.client, "store-0001", "gw-2")).status_code == 201
    assert (await revoke(hub.client, "store-0001", "gw-1")).status_code == 200

    page = (await hub.client.get("/")).text

    row = page.split('data-store-id="store-0001"', 1)[1].split("</tr>", 1)[0]
    assert "0 / 1</td>" in row  # gw-2 only, enrolled and never heard from: not online
