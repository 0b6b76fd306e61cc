"""Storing a unit of event batches takes as many SQL statements for 30 gateways as for 2, with the same rows."""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.db.engine import session_factory
from hub.db.models import Gateway, GatewayStream, Store
from hub.fleet.registry import admit
from hub.ingest.eventlog import EventsOutcome, store_batches
from storegate import wire
from tests.hub.conftest import batch_of, reading

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Sent:
    """One batch of a test unit: seqs of a gateway's stream under a store, received at a time."""

    store_id: str
    gateway_id: str
    stream: uuid.UUID
    seqs: range
    received_at: datetime

    def message(self) -> tuple[wire.EventBatch, datetime]:
        events = [
            reading(store_id=self.store_id, gateway_id=self.gateway_id, stream=self.stream, seq=seq)
            for seq in self.seqs
        ]
        return batch_of(events), self.received_at


@contextlib.contextmanager
def statements_sent(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements sent to the database meanwhile (an executemany counts once)."""
    sent: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        sent.append(" ".join(statement.split()[:3]))

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)


async def store_unit(engine: AsyncEngine, unit: Sequence[Sent], *, now: datetime) -> EventsOutcome:
    """The unit's gateways admitted (enrolled on first contact), then its batches stored, as store_messages does."""
    async with session_factory(engine)() as session, session.begin():
        await admit(session, {(s.store_id, s.gateway_id) for s in unit}, accept_unknown=True, now=now)
        return await store_batches(session, [sent.message() for sent in unit], now=now)


async def gateways(engine: AsyncEngine) -> dict[tuple[str, str], datetime | None]:
    async with session_factory(engine)() as session:
        rows = await session.execute(select(Gateway.store_id, Gateway.gateway_id, Gateway.last_seen_at))
        return {(store_id, gateway_id): seen for store_id, gateway_id, seen in rows}


async def stores(engine: AsyncEngine) -> dict[str, tuple[int, datetime | None]]:
    async with session_factory(engine)() as session:
        rows = await session.execute(select(Store.store_id, Store.event_count, Store.last_event_at))
        return {store_id: (count, last) for store_id, count, last in rows}


async def marks(engine: AsyncEngine) -> dict[tuple[str, str, str], tuple[int, int]]:
    async with session_factory(engine)() as session:
        g = GatewayStream
        rows = await session.execute(select(g.store_id, g.gateway_id, g.stream, g.through_seq, g.max_seq))
        return {(store_id, gateway_id, stream): (through, top) for store_id, gateway_id, stream, through, top in rows}


def store_of(n: int) -> str:
    return f"store-{n % 4 + 1:04d}"


async def test_a_unit_of_30_gateways_takes_as_many_statements_as_one_of_2(engine: AsyncEngine) -> None:
    streams: dict[str, uuid.UUID] = {}

    def sent(store_id: str, gateway_id: str, seqs: range, received_at: datetime) -> Sent:
        return Sent(store_id, gateway_id, streams.setdefault(gateway_id, uuid.uuid4()), seqs, received_at)

    known = [f"gw-known-{n:02d}" for n in range(15)]
    first = [sent(store_of(n), gateway_id, range(1, 4), T0) for n, gateway_id in enumerate(known)]
    # Two gateways: one known, one new.
    small = [
        sent(store_of(0), known[0], range(4, 6), T0 + timedelta(minutes=5)),
        sent("store-0001", "gw-new-small", range(1, 3), T0 + timedelta(minutes=5)),
    ]
    # 30 gateways of 5 stores (one of them new): 14 known, one heard of with an older receive time than
    # before, and 16 new, one of which has a known gateway's id in another store (another gateway).
    moved, late = known[2], known[1]
    large = [
        sent(
            "store-0009" if gateway_id == moved else store_of(n),
            gateway_id,
            range(4, 7),
            T0 - timedelta(hours=1) if gateway_id == late else T0 + timedelta(minutes=15),
        )
        for n, gateway_id in enumerate(known)
        if n > 0
    ] + [
        sent("store-0009" if n % 5 == 0 else store_of(n), f"gw-new-{n:02d}", range(1, 4), T0 + timedelta(minutes=16))
        for n in range(16)
    ]
    assert len({s.gateway_id for s in large}) == 30

    await store_unit(engine, first, now=T0)
    with statements_sent(engine) as small_statements:
        await store_unit(engine, small, now=T0 + timedelta(minutes=10))
    with statements_sent(engine) as large_statements:
        outcome = await store_unit(engine, large, now=T0 + timedelta(minutes=20))

    assert len(large_statements) == len(small_statements), (small_statements, large_statements)
    assert Counter(large_statements) == Counter(small_statements)
    assert len(outcome.batches) == 30

    # What storing one batch at a time would leave: stores counted, last_seen_at only forward, per (store, gateway).
    expected_gateways: dict[tuple[str, str], datetime | None] = {}
    expected_stores: dict[str, tuple[int, datetime | None]] = {}
    for unit, now in ((first, T0), (small, T0 + timedelta(minutes=10)), (large, T0 + timedelta(minutes=20))):
        for s in unit:
            key = (s.store_id, s.gateway_id)
            expected_gateways[key] = max(s.received_at, expected_gateways.get(key) or s.received_at)
            count = expected_stores.get(s.store_id, (0, None))[0]
            expected_stores[s.store_id] = (count + len(s.seqs), now)
    assert await gateways(engine) == expected_gateways
    assert (await gateways(engine))[(store_of(1), late)] == T0
    assert (await gateways(engine))[(store_of(2), moved)] == T0  # its namesake of store-0009 is another gateway
    assert (await gateways(engine))[("store-0009", moved)] == T0 + timedelta(minutes=15)
    assert await stores(engine) == expected_stores
    tops: dict[tuple[str, str], int] = {}
    for s in [*first, *small, *large]:
        tops[(s.store_id, s.gateway_id)] = s.seqs[-1]
    # store-0009's namesake starts at seq 4 of the stream: a gateway of its own, missing 1-3.
    assert await marks(engine) == {
        (store_id, gateway_id, str(streams[gateway_id])): (
            0 if store_id == "store-0009" and gateway_id == moved else top,
            top,
        )
        for (store_id, gateway_id), top in tops.items()
    }


async def test_one_gateway_id_in_several_stores_of_a_unit_is_as_many_gateways(engine: AsyncEngine) -> None:
    stream, other = uuid.uuid4(), uuid.uuid4()
    await store_unit(engine, [Sent("store-0001", "gw-1", stream, range(1, 2), T0)], now=T0)

    outcome = await store_unit(
        engine,
        [
            Sent("store-0002", "gw-1", stream, range(1, 3), T0),
            Sent("store-0002", "gw-1", stream, range(3, 4), T0),
            Sent("store-0003", "gw-2", other, range(1, 2), T0),
            Sent("store-0001", "gw-1", stream, range(2, 5), T0),
            Sent("store-0004", "gw-2", other, range(1, 3), T0),
        ],
        now=T0,
    )

    assert outcome.rejections == []  # the same stream and seqs under two stores do not collide
    assert [(b.store_id, b.gateway_id, b.stored) for b in outcome.batches] == [
        ("store-0002", "gw-1", 2),
        ("store-0002", "gw-1", 1),
        ("store-0003", "gw-2", 1),
        ("store-0001", "gw-1", 3),
        ("store-0004", "gw-2", 2),
    ]
    assert set(await gateways(engine)) == {
        ("store-0001", "gw-1"),
        ("store-0002", "gw-1"),
        ("store-0003", "gw-2"),
        ("store-0004", "gw-2"),
    }
    assert await marks(engine) == {
        ("store-0001", "gw-1", str(stream)): (4, 4),
        ("store-0002", "gw-1", str(stream)): (3, 3),
        ("store-0003", "gw-2", str(other)): (1, 1),
        ("store-0004", "gw-2", str(other)): (2, 2),
    }
