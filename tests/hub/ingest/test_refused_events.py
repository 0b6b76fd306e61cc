"""One bad event never stalls its gateway's stream: it is set aside, the rest of its batch is stored and acknowledged.

Two paths: an event that fails the wire contract inside an otherwise valid batch (validated event by event), and an
event the database refuses (found by storing the batch event by event in savepoints). Either way the event is kept
in refused_events (``/api/v1/refused-events``) and counted, its seq counts as accounted for so the Ack moves past it
(the agent then deletes it from its outbox), and the next batch of the stream is stored as usual.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from hub.db.models import RefusedEvent, StoredEvent
from hub.ingest import consumer as consumer_module
from hub.settings import HubSettings, load_hub_settings
from storegate import wire
from storegate.mqtt import Incoming, MqttSettings
from tests.hub.conftest import BASE_TS, RunningHub, batch_of, reading, refuse_device_in_events, running_hub

EVENTS = wire.topic("store-0001", "gw-1", wire.Channel.EVENTS)


def hub_settings_for(database_url: str, mqtt_settings: MqttSettings, tmp_path: Path) -> HubSettings:
    return load_hub_settings(
        None,
        database_url=database_url,
        mqtt=mqtt_settings,
        client_id=f"hub-{uuid.uuid4().hex[:8]}",
        secrets_dir=tmp_path / "hub-secrets",
        accept_unknown_gateways=True,
    )


@pytest.fixture
async def any_db_hub(database_url: str, mqtt_settings: MqttSettings, tmp_path: Path) -> AsyncIterator[RunningHub]:
    """A running hub on SQLite and, in a second run of the test, on PostgreSQL."""
    async with running_hub(hub_settings_for(database_url, mqtt_settings, tmp_path)) as running:
        yield running


@pytest.fixture
async def postgres_hub(postgres_url: str, mqtt_settings: MqttSettings, tmp_path: Path) -> AsyncIterator[RunningHub]:
    """A running hub on PostgreSQL."""
    async with running_hub(hub_settings_for(postgres_url, mqtt_settings, tmp_path)) as running:
        yield running


def shelf_stock(stream: uuid.UUID, seq: int, *, count: int = 7) -> wire.Event:
    return wire.Event(
        event_id=uuid.uuid4(),
        store_id="store-0001",
        gateway_id="gw-1",
        stream=stream,
        seq=seq,
        device_id="shelf-1",
        kind="shelf.stock",
        ts=BASE_TS,
        payload={"slot": seq, "count": count, "weight_g": 812.0},  # a slot each: each level is written
    )


def raw_batch(events: list[wire.Event], **changes: dict[str, Any]) -> bytes:
    """The batch as JSON, with event ``n`` (by position, as a string key) changed as the attacker likes."""
    document = json.loads(wire.encode(batch_of(events)))
    for position, change in changes.items():
        document["events"][int(position.removeprefix("e"))].update(change)
    return json.dumps(document, allow_nan=True).encode()


async def process(hub: RunningHub, *payloads: bytes) -> list[wire.Ack]:
    result = await hub.runtime.ingestor.process([Incoming(EVENTS, payload, 1, False) for payload in payloads])
    return result.acks


async def stored_seqs(hub: RunningHub) -> list[int]:
    async with hub.runtime.sessions() as session:
        return sorted((await session.scalars(select(StoredEvent.seq))).all())


def refused_total(hub: RunningHub, reason: str) -> float | None:
    return hub.runtime.metrics.registry.get_sample_value("storegate_hub_refused_events_total", {"reason": reason})


async def test_an_invalid_event_is_set_aside_and_the_rest_of_its_batch_stored_and_acknowledged(
    any_db_hub: RunningHub,
) -> None:
    hub = any_db_hub
    stream = uuid.uuid4()
    events = [reading(stream=stream, seq=seq) for seq in (1, 2, 3)]
    # A negative count of a shelf pick fails the wire contract: once the whole batch was 'invalid' and never acked.
    bad = raw_batch(events, e1={"kind": "shelf.pick", "payload": {"slot": 1, "delta": -1, "count": -5, "weight_g": 1}})

    (ack,) = await process(hub, bad)

    assert (ack.stream, ack.through_seq, ack.stored, ack.gaps) == (stream, 3, 2, [])
    assert await stored_seqs(hub) == [1, 3]
    assert refused_total(hub, "invalid_event") == 1
    page = (await hub.client.get("/api/v1/refused-events", params={"store_id": "store-0001"})).json()
    (item,) = page["items"]
    assert (item["gateway_id"], item["stream"], item["seq"], item["event_id"], item["reason"]) == (
        "gw-1",
        str(stream),
        2,
        str(events[1].event_id),
        "invalid_event",
    )
    assert "count" in item["detail"]
    assert json.loads(item["event_json"])["payload"]["count"] == -5

    # The agent missed the Ack and sends the batch again: nothing is stored or set aside twice.
    (again,) = await process(hub, bad)
    assert (again.through_seq, again.stored, again.duplicates) == (3, 0, 2)
    async with hub.runtime.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(RefusedEvent))).scalar_one() == 1

    # The stream goes on: the next batch is stored as usual.
    (after,) = await process(hub, wire.encode(batch_of([reading(stream=stream, seq=seq) for seq in (4, 5)])))
    assert (after.through_seq, after.stored, after.gaps) == (5, 2, [])
    assert await stored_seqs(hub) == [1, 3, 4, 5]


async def test_events_naming_another_gateway_or_carrying_nan_or_no_position_are_set_aside(
    any_db_hub: RunningHub,
) -> None:
    hub = any_db_hub
    stream = uuid.uuid4()
    events = [reading(stream=stream, seq=seq) for seq in (1, 2, 3, 4)]
    nan = {"payload": {"quantity": "temperature", "value": float("nan"), "unit": "Cel"}}
    hostile = raw_batch(events, e0={"gateway_id": "gw-2"}, e1=nan, e3={"seq": "four", "stream": 12})

    (ack,) = await process(hub, hostile)

    # Seqs 1 and 2 are set aside at their positions, 3 is stored; the fourth names no seq: 4 stays missing.
    assert (ack.through_seq, ack.stored) == (3, 1)
    assert await stored_seqs(hub) == [3]
    async with hub.runtime.sessions() as session:
        rows = (await session.scalars(select(RefusedEvent).order_by(RefusedEvent.id))).all()
    assert [(r.reason, r.seq, r.gateway_id) for r in rows] == [
        ("not_of_sender", 1, "gw-1"),
        ("invalid_event", 2, "gw-1"),
        ("invalid_event", None, "gw-1"),
    ]
    assert "gw-2" in rows[0].detail
    assert "NaN" in rows[1].detail
    assert (refused_total(hub, "not_of_sender"), refused_total(hub, "invalid_event")) == (1, 2)


async def test_the_findings_numbers_are_set_aside_at_the_door_and_the_ack_moves_past_them(
    any_db_hub: RunningHub,
) -> None:
    hub = any_db_hub
    stream = uuid.uuid4()
    # The finding: a shelf count of 3x10^9 made the whole batch a storage_error, resent forever. The wire
    # bounds it by its column now, so it is invalid at the door, and only that event is set aside.
    events = [shelf_stock(stream, 1), shelf_stock(stream, 2), shelf_stock(stream, 3)]
    bad = raw_batch(events, e1={"payload": {"slot": 2, "count": 3_000_000_000, "weight_g": 812.0}})

    (ack,) = await process(hub, bad)

    assert (ack.through_seq, ack.stored, ack.gaps) == (3, 2, [])
    assert await stored_seqs(hub) == [1, 3]
    assert (refused_total(hub, "invalid_event"), refused_total(hub, "storage_error")) == (1, 0)
    (item,) = (await hub.client.get("/api/v1/refused-events", params={"gateway_id": "gw-1"})).json()["items"]
    assert (item["seq"], item["reason"], item["kind"]) == (2, "invalid_event", "shelf.stock")
    assert "count" in item["detail"]

    (after,) = await process(hub, wire.encode(batch_of([shelf_stock(stream, 4)])))
    assert (after.through_seq, after.stored) == (4, 1)


async def test_refused_events_are_listed_newest_first_by_page_and_filtered(any_db_hub: RunningHub) -> None:
    hub = any_db_hub
    for store_id in ("store-0001", "store-0002"):
        stream = uuid.uuid4()
        events = [reading(store_id=store_id, stream=stream, seq=seq) for seq in (1, 2, 3)]
        payload = raw_batch(events, e0={"device_id": "not a device id!"}, e2={"ts": "yesterday"})
        topic = wire.topic(store_id, "gw-1", wire.Channel.EVENTS)
        await hub.runtime.ingestor.process([Incoming(topic, payload, 1, False)])

    first = (await hub.client.get("/api/v1/refused-events", params={"limit": 3})).json()
    rest = (await hub.client.get("/api/v1/refused-events", params={"limit": 3, "cursor": first["next_cursor"]})).json()
    ids = [item["id"] for item in first["items"] + rest["items"]]
    assert ids == sorted(ids, reverse=True)
    assert len(ids) == 4
    assert rest["next_cursor"] is None
    only = (await hub.client.get("/api/v1/refused-events", params={"store_id": "store-0002"})).json()["items"]
    assert sorted(item["seq"] for item in only) == [1, 3]
    bad_cursor = await hub.client.get("/api/v1/refused-events", params={"cursor": "nope"})
    assert bad_cursor.status_code == 422


async def test_inside_a_batch_an_event_the_database_refuses_is_set_aside_on_both(any_db_hub: RunningHub) -> None:
    hub = any_db_hub
    stream = uuid.uuid4()
    # Valid on the wire, refused by the database: a trigger stands in for whatever a database may refuse (the wire
    # bounds every number by its column, so a value can no longer do it).
    await refuse_device_in_events(hub, "poison")
    poison = reading(stream=stream, seq=2, ts=BASE_TS, device_id="poison")
    events = [reading(stream=stream, seq=1), poison, reading(stream=stream, seq=3)]

    (ack,) = await process(hub, wire.encode(batch_of(events)))

    assert (ack.through_seq, ack.stored, ack.gaps) == (3, 2, [])  # the ack moves past it
    assert await stored_seqs(hub) == [1, 3]
    async with hub.runtime.sessions() as session:
        (row,) = (await session.scalars(select(RefusedEvent))).all()
    assert (row.reason, row.stream, row.seq, row.event_id) == ("storage_error", str(stream), 2, str(poison.event_id))
    assert refused_total(hub, "storage_error") == 1


async def test_when_finding_the_bad_events_fails_the_batch_is_set_aside_rather_than_stalled(
    any_db_hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = any_db_hub

    async def broken(*args: object, **kwargs: object) -> list[object]:
        raise RuntimeError("a bug in the search")

    monkeypatch.setattr(consumer_module, "find_unstorable", broken)
    await refuse_device_in_events(hub, "poison")
    stream = uuid.uuid4()
    events = [reading(stream=stream, seq=1), reading(stream=stream, seq=2, ts=BASE_TS, device_id="poison")]

    (ack,) = await process(hub, wire.encode(batch_of(events)))

    assert (ack.through_seq, ack.stored) == (2, 0)  # seq 1 set aside too: the stream moves on
    assert await stored_seqs(hub) == []
    assert refused_total(hub, "storage_error") == 2
