"""Storing batches, computing Acks, presence and health, on SQLite and PostgreSQL (no MQTT here)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.db.engine import session_factory
from hub.db.models import Gateway, GatewayPresence, GatewayStream, RejectedMessage, Store, StoredEvent
from hub.ingest.classify import BatchMessage, Classified, HealthMessage, StatusMessage
from hub.ingest.rejections import Rejection
from hub.ingest.seqs import runs as seq_runs
from hub.ingest.unit import UnitResult, store_messages
from storegate import wire
from tests.hub.conftest import batch_of, reading, status


async def store(engine: AsyncEngine, items: Sequence[Classified], *, keep: int = 10_000) -> UnitResult:
    async with session_factory(engine)() as session, session.begin():
        return await store_messages(
            session, items, now=wire.utc_now(), rejected_keep=keep, accept_unknown_gateways=True
        )


def batch(events: list[wire.Event]) -> BatchMessage:
    return BatchMessage(batch_of(events), wire.utc_now())


async def count(engine: AsyncEngine, model: type) -> int:
    async with session_factory(engine)() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_same_batch_twice_is_stored_once(engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    events = [reading(stream=stream, seq=seq) for seq in (1, 2, 3)]

    first = await store(engine, [batch(events)])
    again = await store(engine, [batch(events)])

    assert [(a.through_seq, a.stored, a.duplicates) for a in first.acks] == [(3, 3, 0)]
    assert [(a.through_seq, a.stored, a.duplicates) for a in again.acks] == [(3, 0, 3)]
    assert (first.stored, again.duplicates) == (3, 3)
    assert await count(engine, StoredEvent) == 3
    ack = first.acks[0]
    assert (ack.store_id, ack.gateway_id, ack.stream) == ("store-0001", "gw-1", stream)
    async with session_factory(engine)() as session:
        store_row = await session.get(Store, "store-0001")
        assert store_row is not None
        assert store_row.event_count == 3


def test_seq_runs_merge_consecutive_seqs() -> None:
    assert seq_runs([]) == []
    assert seq_runs([3, 1, 2, 2]) == [(1, 3)]
    assert seq_runs([9, 1, 2, 5]) == [(1, 2), (5, 5), (9, 9)]


async def test_sparse_batch_resent_is_all_duplicates(engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    events = [reading(stream=stream, seq=seq) for seq in (2, 5, 6, 40)]
    await store(engine, [batch([reading(stream=stream, seq=3)])])  # a stored neighbour inside the range
    await store(engine, [batch(events)])
    again = await store(engine, [batch(events)])
    assert [(a.through_seq, a.stored, a.duplicates) for a in again.acks] == [(0, 0, 4)]
    assert again.rejections == []


async def test_duplicates_inside_one_batch_count_once(engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    event = reading(stream=stream, seq=1)
    result = await store(engine, [batch([event, event])])
    assert [(a.through_seq, a.stored, a.duplicates) for a in result.acks] == [(1, 1, 1)]


async def test_through_seq_is_contiguous_across_out_of_order_batches(engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    events = {seq: reading(stream=stream, seq=seq) for seq in range(1, 10)}

    late = await store(engine, [batch([events[4], events[5], events[6]])])
    assert [(a.through_seq, a.stored) for a in late.acks] == [(0, 3)]  # 1..3 missing: nothing acknowledged
    tail = await store(engine, [batch([events[8], events[9]])])
    assert [a.through_seq for a in tail.acks] == [0]
    head = await store(engine, [batch([events[1], events[2], events[3]])])
    assert [a.through_seq for a in head.acks] == [6]  # 1..6 contiguous, 7 still missing
    gap = await store(engine, [batch([events[7]])])
    assert [a.through_seq for a in gap.acks] == [9]

    async with session_factory(engine)() as session:
        mark = await session.get(GatewayStream, ("store-0001", "gw-1", str(stream)))
        assert mark is not None
        assert mark.through_seq == 9


async def test_batches_in_one_unit_all_get_the_units_mark(engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    e = [reading(stream=stream, seq=seq) for seq in (1, 2, 3, 4)]
    result = await store(engine, [batch(e[2:]), batch(e[:2])])
    assert [(a.through_seq, a.stored) for a in result.acks] == [(4, 2), (4, 2)]


async def test_streams_are_acknowledged_separately(engine: AsyncEngine) -> None:
    old, new = uuid.uuid4(), uuid.uuid4()
    result = await store(engine, [batch([reading(stream=old, seq=7), reading(stream=new, seq=1)])])
    assert {(a.stream, a.through_seq, a.stored) for a in result.acks} == {(old, 0, 1), (new, 1, 1)}


async def test_seq_taken_by_another_event_is_rejected_and_the_rest_stored(engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    await store(engine, [batch([reading(stream=stream, seq=1), reading(stream=stream, seq=2)])])
    impostor = reading(stream=stream, seq=2, value=9.9)

    result = await store(engine, [batch([impostor, reading(stream=stream, seq=3)])])

    assert [(a.through_seq, a.stored, a.duplicates) for a in result.acks] == [(3, 1, 0)]
    assert [r.reason for r in result.rejections] == ["seq_conflict"]
    assert str(impostor.event_id) in result.rejections[0].detail
    async with session_factory(engine)() as session:
        rows = (await session.scalars(select(RejectedMessage))).all()
        stored_ids = set((await session.scalars(select(StoredEvent.event_id))).all())
    assert [(r.reason, r.topic) for r in rows] == [("seq_conflict", "storegate/v1/store-0001/gw-1/events")]
    assert str(impostor.event_id) in rows[0].payload_excerpt  # the refused event is kept for people
    assert str(impostor.event_id) not in stored_ids
    assert len(stored_ids) == 3


async def test_event_id_reused_at_another_position_is_rejected(engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    first = reading(stream=stream, seq=1)
    await store(engine, [batch([first])])
    reused = reading(stream=stream, seq=2, event_id=first.event_id)

    result = await store(engine, [batch([reused])])

    assert [r.reason for r in result.rejections] == ["event_id_conflict"]
    assert [(a.through_seq, a.stored, a.duplicates) for a in result.acks] == [(1, 0, 0)]
    assert await count(engine, StoredEvent) == 1


async def test_status_transitions_are_recorded_once(engine: AsyncEngine) -> None:
    now = wire.utc_now()
    birth = status(True, "birth", agent_version="1.2.0", config_hash="abc", devices=["fridge-1", "scale-1"])
    lost = status(False, "lost")

    first = await store(engine, [StatusMessage(birth, False, now)])
    replay = await store(engine, [StatusMessage(birth, True, now)])  # retained birth again on resubscribe
    gone = await store(engine, [StatusMessage(lost, False, now)])
    again = await store(engine, [StatusMessage(lost, False, now)])

    assert [(t.online, t.reason) for t in first.transitions] == [(True, "birth")]
    assert replay.transitions == []
    assert [(t.online, t.reason) for t in gone.transitions] == [(False, "lost")]
    assert again.transitions == []
    async with session_factory(engine)() as session:
        presence = (await session.scalars(select(GatewayPresence).order_by(GatewayPresence.id))).all()
        gateway = await session.get(Gateway, ("store-0001", "gw-1"))
    assert [(p.online, p.reason) for p in presence] == [(True, "birth"), (False, "lost")]
    assert gateway is not None
    assert (gateway.online, gateway.last_status_reason) == (False, "lost")
    assert (gateway.agent_version, gateway.config_hash, gateway.devices) == ("1.2.0", "abc", ["fridge-1", "scale-1"])


async def test_a_devices_status_updates_the_devices_without_a_presence_change(engine: AsyncEngine) -> None:
    now = wire.utc_now()
    await store(engine, [StatusMessage(status(True, "birth", devices=["fridge-1"]), False, now)])
    plugged = await store(engine, [StatusMessage(status(True, "devices", devices=["fridge-1", "scale-1"]), False, now)])
    async with session_factory(engine)() as session:
        gateway = await session.get(Gateway, ("store-0001", "gw-1"))
    assert plugged.transitions == []
    assert gateway is not None
    assert (gateway.devices, gateway.last_status_reason) == (["fridge-1", "scale-1"], "birth")
    assert await count(engine, GatewayPresence) == 1


async def test_retained_messages_do_not_count_as_signs_of_life(engine: AsyncEngine) -> None:
    now = wire.utc_now()
    old = wire.GatewayStatus(
        store_id="store-0001", gateway_id="gw-1", online=True, reason="birth", ts=now - timedelta(hours=2)
    )
    await store(engine, [StatusMessage(old, True, now)])
    async with session_factory(engine)() as session:
        gateway = await session.get(Gateway, ("store-0001", "gw-1"))
    assert gateway is not None
    assert gateway.last_seen_at == old.ts


async def test_health_is_kept_on_the_gateway(engine: AsyncEngine) -> None:
    health = wire.GatewayHealth(
        store_id="store-0001",
        gateway_id="gw-1",
        ts=wire.utc_now(),
        outbox_depth=12,
        published_total=100,
        acked_total=88,
        resent_total=1,
        reconnects_total=0,
        problems=["printer-1 unreachable"],
    )
    await store(engine, [HealthMessage(health, False, wire.utc_now())])
    async with session_factory(engine)() as session:
        gateway = await session.get(Gateway, ("store-0001", "gw-1"))
    assert gateway is not None
    assert gateway.last_health is not None
    assert gateway.last_health["outbox_depth"] == 12
    assert gateway.last_health["problems"] == ["printer-1 unreachable"]
    assert gateway.online is None  # no status message yet


async def test_the_same_gateway_id_in_another_store_is_another_gateway(engine: AsyncEngine) -> None:
    """gw-1 of store-0002 sending the same stream and seqs neither moves nor collides with gw-1 of store-0001."""
    stream = uuid.uuid4()
    first = await store(engine, [batch([reading(stream=stream, seq=1), reading(stream=stream, seq=2)])])
    other = await store(engine, [batch([reading(stream=stream, seq=1, store_id="store-0002")])])

    assert (first.stored, other.stored, other.rejections) == (2, 1, [])
    assert [(a.store_id, a.gateway_id, a.through_seq) for a in first.acks + other.acks] == [
        ("store-0001", "gw-1", 2),
        ("store-0002", "gw-1", 1),
    ]
    async with session_factory(engine)() as session:
        gateways = (
            await session.execute(select(Gateway.store_id, Gateway.gateway_id).order_by(Gateway.store_id))
        ).all()
        marks = (await session.execute(select(GatewayStream.store_id, GatewayStream.through_seq))).all()
    assert [tuple(g) for g in gateways] == [("store-0001", "gw-1"), ("store-0002", "gw-1")]
    assert sorted(tuple(m) for m in marks) == [("store-0001", 2), ("store-0002", 1)]


async def test_rejected_messages_are_pruned_to_the_newest(engine: AsyncEngine) -> None:
    def junk(n: int) -> Rejection:
        return Rejection("bad/topic", "bad_topic", f"junk {n}", b"\x00\xff" * 2000, wire.utc_now())

    for start in range(0, 250, 50):
        await store(engine, [junk(n) for n in range(start, start + 50)], keep=100)
    async with session_factory(engine)() as session:
        rows = (await session.scalars(select(RejectedMessage).order_by(RejectedMessage.id))).all()
    assert len(rows) == 100
    assert rows[-1].detail == "junk 249"
    assert rows[0].payload_bytes == 4000
    assert "\x00" not in rows[0].payload_excerpt  # PostgreSQL text cannot hold NUL
    assert rows[0].payload_excerpt.startswith("\\x00\\xff")
