"""Gaps in Acks, loss records and stream marks, and a large batch read back field by field, on SQLite and
PostgreSQL (no MQTT here)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.api.listings import EventFilter, list_events
from hub.db.engine import session_factory
from hub.db.models import DataLossRecord, GatewayStream, Store, StoredEvent
from hub.ingest import eventlog
from hub.ingest.classify import BatchMessage, Classified
from hub.ingest.unit import UnitResult, store_messages
from storegate import wire
from tests.hub.conftest import BASE_TS, batch_of, reading


async def store(engine: AsyncEngine, items: Sequence[Classified]) -> UnitResult:
    async with session_factory(engine)() as session, session.begin():
        return await store_messages(
            session, items, now=wire.utc_now(), rejected_keep=10_000, accept_unknown_gateways=True
        )


def batch(events: list[wire.Event]) -> BatchMessage:
    return BatchMessage(batch_of(events), wire.utc_now())


def loss_event(
    *, stream: uuid.UUID, seq: int, ranges: list[tuple[int, int]], reason: str = "evicted", **extra: Any
) -> wire.Event:
    loss = wire.DataLoss(
        ranges=[wire.SeqRange(first=first, last=last) for first, last in ranges],
        count=sum(last - first + 1 for first, last in ranges),
        reason=reason,
        **extra,
    )
    return wire.Event(
        event_id=uuid.uuid4(),
        store_id="store-0001",
        gateway_id="gw-1",
        stream=stream,
        seq=seq,
        device_id="gw-1",
        kind="outbox.loss",
        ts=BASE_TS + timedelta(seconds=seq),
        payload=loss.model_dump(mode="json"),
    )


def marks(result: UnitResult) -> list[tuple[int, list[tuple[int, int]]]]:
    return [(a.through_seq, [(g.first, g.last) for g in a.gaps]) for a in result.acks]


async def loss_rows(engine: AsyncEngine) -> list[tuple[int, int, int, str]]:
    async with session_factory(engine)() as session:
        rows = await session.scalars(select(DataLossRecord).order_by(DataLossRecord.first_seq))
        return [(r.first_seq, r.last_seq, r.count, r.reason) for r in rows]


async def mark_of(engine: AsyncEngine, stream: uuid.UUID) -> tuple[int, int]:
    async with session_factory(engine)() as session:
        row = await session.get(GatewayStream, ("store-0001", "gw-1", str(stream)))
        assert row is not None
        return row.through_seq, row.max_seq


# --------------------------------------------------------------------------- gaps


async def test_acks_list_what_is_missing_below_the_highest_seq_held(engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    e = {seq: reading(stream=stream, seq=seq) for seq in range(1, 13)}

    first = await store(engine, [batch([e[1], e[2], e[3]])])
    later = await store(engine, [batch([e[7], e[8]])])  # 4..6 lost on the way
    out_of_order = await store(engine, [batch([e[11], e[12]])])  # 9, 10 not here yet
    refill = await store(engine, [batch([e[4], e[5], e[6]])])  # the agent resent the first gap
    rest = await store(engine, [batch([e[9], e[10]])])

    assert marks(first) == [(3, [])]
    assert marks(later) == [(3, [(4, 6)])]
    assert marks(out_of_order) == [(3, [(4, 6), (9, 10)])]
    assert marks(refill) == [(8, [(9, 10)])]
    assert marks(rest) == [(12, [])]
    assert await mark_of(engine, stream) == (12, 12)


async def test_gaps_are_at_most_100_lowest_first(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny chunk makes the walk above the mark read the stored seqs in many rounds.
    monkeypatch.setattr(eventlog, "CONTIGUITY_CHUNK", 7)
    stream = uuid.uuid4()
    evens = [reading(stream=stream, seq=seq) for seq in range(2, 302, 2)]  # 150 gaps: 1, 3, 5, ...

    fresh = await store(engine, [batch(evens)])
    walked = await store(engine, [batch([reading(stream=stream, seq=1)])])

    expected = [(seq, seq) for seq in range(1, 201, 2)]
    assert marks(fresh) == [(0, expected)]
    assert marks(walked) == [(2, [*expected[1:], (201, 201)])]


async def test_the_same_batch_twice_in_one_unit_is_stored_once(engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    events = [reading(stream=stream, seq=seq) for seq in (1, 2, 3)]
    result = await store(engine, [batch(events), batch(events)])
    assert [(a.through_seq, a.stored, a.duplicates) for a in result.acks] == [(3, 3, 0), (3, 0, 3)]


# --------------------------------------------------------------------------- losses


async def test_a_loss_record_moves_the_mark_past_what_is_gone(engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    await store(engine, [batch([reading(stream=stream, seq=seq) for seq in (1, 2)])])
    held_above = await store(engine, [batch([reading(stream=stream, seq=seq) for seq in (8, 9)])])
    assert marks(held_above) == [(2, [(3, 7)])]

    loss = loss_event(stream=stream, seq=10, ranges=[(3, 7)], reason="not_held", detail="deleted on an old ack")
    result = await store(engine, [batch([loss])])

    assert marks(result) == [(10, [])]
    assert [(r.reason, r.recorded, r.count) for r in result.losses] == [("not_held", [(3, 7)], 5)]
    assert await loss_rows(engine) == [(3, 7, 5, "not_held")]
    assert await mark_of(engine, stream) == (10, 10)
    async with session_factory(engine)() as session:
        row = (await session.scalars(select(DataLossRecord))).one()
        store_row = await session.get(Store, "store-0001")
    assert (row.store_id, row.gateway_id, row.stream, row.event_id) == (
        "store-0001",
        "gw-1",
        str(stream),
        str(loss.event_id),
    )
    assert (row.detail, row.by_kind, row.reported_at) == ("deleted on an old ack", {}, loss.ts)
    assert store_row is not None
    assert store_row.event_count == 5  # the loss event is an event like any other


async def test_a_loss_event_received_twice_is_recorded_once(engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    loss = loss_event(stream=stream, seq=1201, ranges=[(1, 1200)], by_kind={"environment.reading": 1200})

    first = await store(engine, [batch([loss])])
    again = await store(engine, [batch([loss])])

    assert marks(first) == marks(again) == [(1201, [])]
    assert [r.count for r in first.losses] == [1200]
    assert again.losses == []  # a duplicate event: nothing new to record
    assert await loss_rows(engine) == [(1, 1200, 1200, "evicted")]


async def test_overlapping_reports_and_held_seqs_are_not_counted_twice(engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    await store(engine, [batch([reading(stream=stream, seq=5)])])  # delivered before it was evicted
    first = loss_event(stream=stream, seq=20, ranges=[(1, 10)])
    overlapping = loss_event(stream=stream, seq=21, ranges=[(8, 12), (15, 15)])
    repeated = loss_event(stream=stream, seq=22, ranges=[(1, 4)])

    result = await store(engine, [batch([first, overlapping]), batch([repeated])])

    assert [(r.recorded, r.count) for r in result.losses] == [
        ([(1, 4), (6, 10)], 9),
        ([(11, 12), (15, 15)], 3),
        ([], 0),
    ]
    assert await loss_rows(engine) == [
        (1, 4, 4, "evicted"),
        (6, 10, 5, "evicted"),
        (11, 12, 2, "evicted"),
        (15, 15, 1, "evicted"),
    ]
    assert marks(result) == [(12, [(13, 14), (16, 19)]), (12, [(13, 14), (16, 19)])]


async def test_a_loss_report_cannot_account_for_seqs_at_or_after_itself(engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    await store(engine, [batch([reading(stream=stream, seq=seq) for seq in range(1, 5)])])
    wrong = loss_event(stream=stream, seq=10, ranges=[(5, 20)])

    result = await store(engine, [batch([wrong])])

    assert [(r.recorded, r.ignored) for r in result.losses] == [([(5, 9)], [(10, 20)])]
    assert marks(result) == [(10, [])]  # not 20: the gateway may still hold 11..20
    assert await loss_rows(engine) == [(5, 9, 5, "evicted")]


# --------------------------------------------------------------------------- every field intact


async def test_a_large_batch_is_stored_with_every_field_intact(engine: AsyncEngine) -> None:
    stream = uuid.uuid4()
    kinds = ["environment.reading", "sale.completed", "door.contact", "scan.item"]
    events: list[wire.Event] = []
    for seq in range(1, wire.MAX_BATCH_EVENTS + 1):
        kind = kinds[seq % len(kinds)]
        payload: dict[str, Any] = (
            {"quantity": "temperature", "value": seq / 7, "unit": "Cel", "zone": "chiller-1"}
            if kind == "environment.reading"
            else {
                "receipt": f"R-{seq:08d}",
                "note": 'Grüße, 東京 \u0000 "quoted" \\ back',
                "lines": [{"sku": "4006381333931", "qty": seq, "price": 1.49}, {"sku": None, "ok": True}],
                "big": 2**53 + seq,
                "neg": -0.5,
                "empty": {},
            }
        )
        events.append(
            wire.Event(
                event_id=uuid.uuid4(),
                store_id="store-0001",
                gateway_id="gw-1",
                stream=stream,
                seq=seq,
                device_id=f"dev-{seq % 13}",
                kind=kind,
                ts=BASE_TS + timedelta(microseconds=seq * 1_234_567),
                payload=payload,
            )
        )
    received_at = wire.utc_now()

    result = await store(engine, [BatchMessage(batch_of(events), received_at)])

    assert [(a.through_seq, a.stored, a.duplicates, a.gaps) for a in result.acks] == [(1000, 1000, 0, [])]
    async with session_factory(engine)() as session:
        rows = {r.event_id: r for r in await session.scalars(select(StoredEvent))}
        since = BASE_TS + timedelta(microseconds=500 * 1_234_567)
        page = await list_events(session, EventFilter(since=since, device_id="dev-3", time="device"), limit=1000)
        if engine.dialect.name == "sqlite":  # the text SQLAlchemy itself writes, so comparisons keep working
            raw = (await session.execute(text("SELECT device_ts FROM events WHERE seq = 7"))).scalar_one()
            processor = sqlite.DATETIME().bind_processor(engine.dialect)  # type: ignore[no-untyped-call]
            assert processor is not None
            assert raw == processor(events[6].ts.replace(tzinfo=None))
    assert len(rows) == 1000
    for event in events:
        row = rows[str(event.event_id)]
        assert (row.store_id, row.gateway_id, row.stream, row.seq) == ("store-0001", "gw-1", str(stream), event.seq)
        assert (row.device_id, row.kind, row.device_ts, row.payload) == (
            event.device_id,
            event.kind,
            event.ts,
            event.payload,
        )
        assert row.received_at == received_at
    expected = [e for e in events if e.ts >= since and e.device_id == "dev-3"]
    assert sorted(r.seq for r in page.items) == [e.seq for e in expected]


async def test_device_times_at_the_edges_of_the_wire_are_stored_as_sent(engine: AsyncEngine) -> None:
    # PostgreSQL receives the unit's rows as JSON text (hub.ingest.eventlog): every time must survive the trip.
    stream = uuid.uuid4()
    edges = [
        datetime(1, 1, 1, tzinfo=UTC),  # the earliest time the wire takes
        datetime(1970, 1, 1, 0, 0, 42, 1, tzinfo=UTC),  # a Pi before NTP answered
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),  # the latest
    ]
    events = [reading(stream=stream, seq=seq, ts=ts) for seq, ts in enumerate(edges, start=1)]
    await store(engine, [batch(events)])
    async with session_factory(engine)() as session:
        stored = {seq: ts for seq, ts in await session.execute(select(StoredEvent.seq, StoredEvent.device_ts))}
    assert stored == {event.seq: event.ts for event in events}
