"""The consumer over a real Mosquitto: a plain paho client plays the gateway."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from hub.db.engine import ping
from hub.db.models import Gateway, GatewayPresence, RefusedEvent, RejectedMessage, StoredEvent
from hub.ingest import consumer as ingest_module
from hub.ingest.classify import classify
from hub.ingest.consumer import subscriptions
from hub.ingest.rejections import Rejection
from hub.ingest.unit import UnitResult, store_messages
from hub.settings import HubSettings, load_hub_settings
from storegate import wire
from storegate.mqtt import Incoming, MqttSettings
from tests.conftest import eventually
from tests.hub.conftest import (
    PlainGateway,
    RunningHub,
    batch_of,
    reading,
    refuse_device_in_events,
    running_hub,
    status,
    until,
)

EVENTS = wire.topic("store-0001", "gw-1", wire.Channel.EVENTS)
ACKS = wire.topic("store-0001", "gw-1", wire.Channel.ACK)
STATUS = wire.topic("store-0001", "gw-1", wire.Channel.STATUS)


async def acks_on(client: PlainGateway, count: int) -> list[wire.Ack]:
    async def probe() -> list[wire.Ack]:
        payloads = client.received.on(ACKS)
        return [wire.decode(wire.Ack, p) for p in payloads] if len(payloads) >= count else []

    return await eventually(probe, timeout=5, what=f"{count} Ack(s) on {ACKS}")


def rejected(hub: RunningHub, reason: str) -> float:
    value = hub.runtime.metrics.registry.get_sample_value("storegate_hub_rejected_messages_total", {"reason": reason})
    return value or 0.0


async def stored_event_ids(hub: RunningHub) -> set[str]:
    async with hub.runtime.sessions() as session:
        return set((await session.scalars(select(StoredEvent.event_id))).all())


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("storegate/v1/STORE/gw-1/events", b"{}", "bad_topic"),
        ("storegate/v1/store-0001/gw-1/ack", b"{}", "unexpected_channel"),
        (EVENTS, b"not json", "malformed_json"),
        (EVENTS, b'{"v": 1}', "invalid"),
        (EVENTS, b"", "malformed_json"),
        (EVENTS, b" " * (wire.MAX_MESSAGE_BYTES + 1), "too_large"),
    ],
)
def test_classify_rejects_with_a_reason(topic: str, payload: bytes, reason: str) -> None:
    result = classify(Incoming(topic, payload, 1, False), received_at=wire.utc_now())
    assert isinstance(result, Rejection)
    assert result.reason == reason
    assert result.topic == topic


def test_classify_rejects_a_batch_on_another_gateways_topic() -> None:
    other = batch_of([reading(gateway_id="gw-2", stream=uuid.uuid4(), seq=1)])
    result = classify(Incoming(EVENTS, wire.encode(other), 1, False), received_at=wire.utc_now())
    assert isinstance(result, Rejection)
    assert result.reason == "topic_mismatch"
    assert "store-0001/gw-2" in result.detail


def test_shared_subscriptions_when_a_group_is_set() -> None:
    assert subscriptions(None)[0] == ("storegate/v1/+/+/events", 1)
    assert [t for t, _ in subscriptions("hubs")] == [
        "$share/hubs/storegate/v1/+/+/events",
        "$share/hubs/storegate/v1/+/+/status",
        "$share/hubs/storegate/v1/+/+/health",
        "$share/hubs/storegate/v1/+/+/command_results",
    ]


# --------------------------------------------------------------------------- over MQTT


@pytest.fixture
def hub_settings(database_url: str, mqtt_settings: MqttSettings) -> HubSettings:
    """This module's hubs run on SQLite and on PostgreSQL."""
    return load_hub_settings(
        None,
        database_url=database_url,
        mqtt=mqtt_settings,
        client_id=f"hub-{uuid.uuid4().hex[:8]}",
        accept_unknown_gateways=True,
    )


async def test_batch_is_stored_then_acknowledged(hub: RunningHub, gateway_client: PlainGateway) -> None:
    gateway_client.subscribe(ACKS)
    stream = uuid.uuid4()
    events = [reading(stream=stream, seq=seq) for seq in (1, 2, 3)]

    gateway_client.publish(EVENTS, wire.encode(batch_of(events)))

    (ack,) = await acks_on(gateway_client, 1)
    assert (ack.stream, ack.through_seq, ack.stored, ack.duplicates) == (stream, 3, 3, 0)
    assert await stored_event_ids(hub) == {str(e.event_id) for e in events}

    gateway_client.publish(EVENTS, wire.encode(batch_of(events)))  # resent: the agent missed the Ack
    acks = await acks_on(gateway_client, 2)
    assert (acks[1].through_seq, acks[1].stored, acks[1].duplicates) == (3, 0, 3)
    registry = hub.runtime.metrics.registry
    assert registry.get_sample_value("storegate_hub_events_stored_total") == 3
    assert registry.get_sample_value("storegate_hub_events_duplicate_total") == 3
    assert registry.get_sample_value("storegate_hub_acks_sent_total") == 2


async def test_garbage_is_counted_and_a_good_batch_after_it_is_still_acknowledged(
    hub: RunningHub, gateway_client: PlainGateway
) -> None:
    gateway_client.subscribe(ACKS)
    wrong_gateway = batch_of([reading(gateway_id="gw-2", stream=uuid.uuid4(), seq=1)])
    gateway_client.publish(EVENTS, b"\x00\x01 not json at all")
    gateway_client.publish(EVENTS, json.dumps({"v": 1, "store_id": "store-0001"}).encode())
    gateway_client.publish(EVENTS, wire.encode(wrong_gateway))
    gateway_client.publish("storegate/v1/Bad_Store/gw-1/events", b"{}")
    good = batch_of([reading(stream=uuid.uuid4(), seq=1)])

    gateway_client.publish(EVENTS, wire.encode(good))

    (ack,) = await acks_on(gateway_client, 1)
    assert (ack.through_seq, ack.stored) == (1, 1)
    assert await stored_event_ids(hub) == {str(good.events[0].event_id)}
    assert {r: rejected(hub, r) for r in ("malformed_json", "invalid", "topic_mismatch", "bad_topic")} == {
        "malformed_json": 1,
        "invalid": 1,
        "topic_mismatch": 1,
        "bad_topic": 1,
    }
    async with hub.runtime.sessions() as session:
        rows = (await session.scalars(select(RejectedMessage).order_by(RejectedMessage.id))).all()
    assert [r.reason for r in rows] == ["malformed_json", "invalid", "topic_mismatch", "bad_topic"]
    assert rows[0].payload_excerpt == "\\x00\x01 not json at all"  # NUL escaped, PostgreSQL refuses it in text
    assert rows[3].topic == "storegate/v1/Bad_Store/gw-1/events"
    assert hub.runtime.ingestor.running


async def test_birth_and_last_will_are_recorded(hub: RunningHub, mqtt_settings: MqttSettings) -> None:
    lost = wire.encode(status(False, "lost"))
    gateway = PlainGateway(mqtt_settings, client_id="gw-1-test", will=(STATUS, lost))
    try:
        await until(gateway.client.is_connected, what="the gateway's paho client connected")
        gateway.publish(STATUS, wire.encode(status(True, "birth", agent_version="0.1.0")), retain=True)
        await eventually(lambda: online_of(hub, "gw-1", True), timeout=5, what="gw-1 online")

        gateway.vanish()

        await eventually(lambda: online_of(hub, "gw-1", False), timeout=10, what="gw-1 offline by its last will")
    finally:
        gateway.close()
    async with hub.runtime.sessions() as session:
        presence = (await session.scalars(select(GatewayPresence).order_by(GatewayPresence.id))).all()
        row = await session.get(Gateway, ("store-0001", "gw-1"))
    assert [(p.online, p.reason) for p in presence] == [(True, "birth"), (False, "lost")]
    assert row is not None
    assert (row.last_status_reason, row.agent_version) == ("lost", "0.1.0")


async def online_of(hub: RunningHub, gateway_id: str, expected: bool) -> bool:
    async with hub.runtime.sessions() as session:
        row = await session.get(Gateway, ("store-0001", gateway_id))
        return row is not None and row.online is expected


async def test_events_published_while_the_hub_is_down_are_stored_when_it_returns(
    hub_settings: HubSettings, gateway_client: PlainGateway
) -> None:
    gateway_client.subscribe(ACKS)
    stream = uuid.uuid4()
    async with running_hub(hub_settings) as first:
        assert await first.runtime.link.wait_connected(5)
    # The broker keeps the hub's persistent session and queues QoS 1 messages for it.
    waiting = batch_of([reading(stream=stream, seq=1), reading(stream=stream, seq=2)])
    gateway_client.publish(EVENTS, wire.encode(waiting))
    async with running_hub(hub_settings):
        (ack,) = await acks_on(gateway_client, 1)
    assert (ack.through_seq, ack.stored) == (2, 2)


async def test_database_outage_holds_the_batch_until_it_can_be_stored(
    hub: RunningHub, gateway_client: PlainGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = True
    real_store = store_messages

    async def failing_store(*args: object, **kwargs: object) -> UnitResult:
        if down:
            raise OperationalError("INSERT ...", {}, ConnectionRefusedError("connection refused"))
        return await real_store(*args, **kwargs)  # type: ignore[arg-type]

    async def failing_ping(engine: object) -> None:
        if down:
            raise ConnectionRefusedError("connection refused")
        await ping(engine)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest_module, "store_messages", failing_store)
    monkeypatch.setattr(ingest_module, "ping", failing_ping)
    gateway_client.subscribe(ACKS)
    events = batch_of([reading(stream=uuid.uuid4(), seq=1)])

    gateway_client.publish(EVENTS, wire.encode(events))

    ingestor = hub.runtime.ingestor
    await until(lambda: not ingestor.database_ok, what="the consumer to notice the outage")
    assert gateway_client.received.on(ACKS) == []  # nothing acknowledged that is not stored
    assert hub.runtime.metrics.registry.get_sample_value("storegate_hub_database_up") == 0
    down = False
    (ack,) = await acks_on(gateway_client, 1)
    assert (ack.through_seq, ack.stored) == (1, 1)
    assert ingestor.database_ok


def _shelf_stock(stream: uuid.UUID) -> wire.Event:
    payload = {"slot": 1, "count": 7, "weight_g": 700.0}
    event = reading(stream=stream, seq=1, device_id="shelf-1")
    return event.model_copy(update={"kind": wire.EventKind.SHELF_STOCK, "payload": payload})


@pytest.mark.parametrize(
    ("make", "number", "where"),
    [
        # The findings: each made its whole batch fail with storage_error.
        (lambda stream: reading(stream=stream, seq=7), b'"seq":7', "seq"),
        (_shelf_stock, b'"count":7', "count"),
    ],
    ids=["seq 2^63", "shelf count 3e9"],
)
async def test_a_number_past_its_column_is_invalid_at_the_door_and_the_others_stored(
    hub: RunningHub,
    gateway_client: PlainGateway,
    make: Callable[[uuid.UUID], wire.Event],
    number: bytes,
    where: str,
) -> None:
    gateway_client.subscribe(ACKS)
    good = batch_of([reading(stream=uuid.uuid4(), seq=1)])
    field, _ = number.split(b":")
    too_large = {"seq": 2**63, "count": 3 * 10**9}[where]
    poison = wire.encode(batch_of([make(uuid.uuid4())])).replace(number, field + b":" + str(too_large).encode())
    assert str(too_large).encode() in poison

    result = await hub.runtime.ingestor.process(
        [Incoming(EVENTS, poison, 1, False), Incoming(EVENTS, wire.encode(good), 1, False)]
    )

    # Refused at the door as invalid (never a storage_error), set aside on its own; the good batch is stored.
    assert any((a.stream, a.through_seq, a.stored) == (good.events[0].stream, 1, 1) for a in result.acks)
    assert (rejected(hub, "invalid"), rejected(hub, "storage_error")) == (0, 0)
    async with hub.runtime.sessions() as session:
        (row,) = (await session.scalars(select(RefusedEvent))).all()
    assert row.reason == "invalid_event"
    assert where in row.detail
    assert await stored_event_ids(hub) == {str(good.events[0].event_id)}
    assert hub.runtime.ingestor.running


async def test_an_event_the_database_refuses_is_set_aside_and_the_others_stored(
    hub: RunningHub, gateway_client: PlainGateway
) -> None:
    gateway_client.subscribe(ACKS)
    good = batch_of([reading(stream=uuid.uuid4(), seq=1)])
    # Valid on the wire, refused by the database: a trigger stands in for whatever a database may refuse (the wire
    # now bounds every number by its column, so a value can no longer do it).
    poison_stream = uuid.uuid4()
    poison = batch_of([reading(stream=poison_stream, seq=1, device_id="poison", ts=wire.utc_now())])
    await refuse_device_in_events(hub, "poison")

    result = await hub.runtime.ingestor.process(
        [Incoming(EVENTS, wire.encode(poison), 1, False), Incoming(EVENTS, wire.encode(good), 1, False)]
    )

    # The poison's Ack moves past it: set aside, its seq counts as accounted for, so its stream does not stall.
    assert sorted((a.stream == good.events[0].stream, a.through_seq, a.stored) for a in result.acks) == [
        (False, 1, 0),
        (True, 1, 1),
    ]
    await acks_on(gateway_client, 2)
    registry = hub.runtime.metrics.registry
    assert registry.get_sample_value("storegate_hub_refused_events_total", {"reason": "storage_error"}) == 1
    assert rejected(hub, "storage_error") == 0
    async with hub.runtime.sessions() as session:
        refused = (await session.scalars(select(RefusedEvent))).all()
        count = (await session.execute(select(func.count()).select_from(StoredEvent))).scalar_one()
    assert [(r.reason, r.stream, r.seq, r.event_id) for r in refused] == [
        ("storage_error", str(poison_stream), 1, str(poison.events[0].event_id))
    ]
    assert "the database refused it" in refused[0].detail
    assert count == 1


async def test_a_lost_batch_is_asked_for_in_the_ack_and_a_loss_report_closes_the_gap(
    hub: RunningHub, gateway_client: PlainGateway
) -> None:
    gateway_client.subscribe(ACKS)
    stream = uuid.uuid4()
    e = {seq: reading(stream=stream, seq=seq) for seq in range(1, 8)}
    gateway_client.publish(EVENTS, wire.encode(batch_of([e[1], e[2], e[3]])))
    # One at a time: batches that arrive together are acknowledged together, after their unit's commit.
    assert [(a.through_seq, a.gaps) for a in await acks_on(gateway_client, 1)] == [(3, [])]
    # 4..5 never reach the hub
    gateway_client.publish(EVENTS, wire.encode(batch_of([e[6], e[7]])))

    acks = await acks_on(gateway_client, 2)
    assert [(a.through_seq, [(g.first, g.last) for g in a.gaps]) for a in acks] == [(3, []), (3, [(4, 5)])]

    # The gateway had deleted them already: it reports them as lost instead of resending.
    gone = wire.DataLoss(ranges=[wire.SeqRange(first=4, last=5)], count=2, reason="not_held")
    report = wire.Event(
        event_id=uuid.uuid4(),
        store_id="store-0001",
        gateway_id="gw-1",
        stream=stream,
        seq=8,
        device_id="gw-1",
        kind="outbox.loss",
        ts=wire.utc_now(),
        payload=gone.model_dump(mode="json"),
    )
    gateway_client.publish(EVENTS, wire.encode(batch_of([report])))

    acks = await acks_on(gateway_client, 3)
    assert (acks[2].through_seq, acks[2].gaps) == (8, [])
    lost = hub.runtime.metrics.registry.get_sample_value("storegate_hub_events_lost_total", {"reason": "not_held"})
    assert lost == 2


async def test_a_restarted_hub_does_not_record_the_retained_status_as_a_transition(
    hub_settings: HubSettings, gateway_client: PlainGateway
) -> None:
    gateway_client.publish(STATUS, wire.encode(status(True, "birth", agent_version="0.1.0")), retain=True)
    async with running_hub(hub_settings) as first:
        await eventually(lambda: online_of(first, "gw-1", True), timeout=5, what="gw-1 online")

    async with running_hub(hub_settings) as second:
        # The broker hands the retained birth over again when the hub subscribes anew.
        registry = second.runtime.metrics.registry

        def status_messages() -> float:
            return registry.get_sample_value("storegate_hub_messages_received_total", {"channel": "status"}) or 0

        await until(lambda: status_messages() >= 1, what="the retained status at the restarted hub")
        await until(lambda: second.runtime.ingestor.units_committed >= 1, what="the retained status stored")
        async with second.runtime.sessions() as session:
            presence = (await session.scalars(select(GatewayPresence))).all()
    assert [(p.online, p.reason) for p in presence] == [(True, "birth")]
    assert registry.get_sample_value("storegate_hub_gateway_status_transitions_total", {"state": "online"}) is None
