"""The consumer decodes the messages waiting behind a unit while that unit is being stored.

The link here is the consumer's own seam (:class:`hub.ingest.consumer.MessageLink`) fed from a list, so the test
decides exactly what is waiting when; the database is real (SQLite and PostgreSQL). The MQTT path
itself is covered by the tests that run the hub on Mosquitto.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.db.models import StoredEvent
from hub.ingest.classify import Classified
from hub.ingest.consumer import Ingestor
from hub.ingest.unit import UnitResult
from hub.metrics import HubMetrics
from storegate import wire
from storegate.mqtt import Incoming
from tests.hub.conftest import batch_of, reading, until


class ListLink:
    """Messages put in by the test; what the consumer publishes (its Acks) is kept."""

    def __init__(self) -> None:
        self.waiting: asyncio.Queue[Incoming] = asyncio.Queue()
        self.published: list[tuple[str, bytes]] = []

    def put(self, batch: wire.EventBatch) -> None:
        topic = wire.topic(batch.store_id, batch.gateway_id, wire.Channel.EVENTS)
        self.waiting.put_nowait(Incoming(topic, wire.encode(batch), 1, False))

    async def messages(self) -> AsyncIterator[Incoming]:
        while True:
            yield await self.waiting.get()

    def get_nowait(self) -> Incoming | None:
        try:
            return self.waiting.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.published.append((topic, payload))


class HeldFirstUnit(Ingestor):
    """An ingestor whose first unit waits at ``gate`` before it is stored."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.gate = asyncio.Event()
        self.first_unit_started = asyncio.Event()
        self.unit_sizes: list[int] = []

    async def _handle(self, items: list[Classified]) -> UnitResult:
        self.unit_sizes.append(len(items))
        if len(self.unit_sizes) == 1:
            self.first_unit_started.set()
            await self.gate.wait()
        return await super()._handle(items)


async def _stored(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(StoredEvent))).scalar_one())


def _acked_streams(published: Sequence[tuple[str, bytes]]) -> list[uuid.UUID]:
    return [wire.decode(wire.Ack, payload).stream for _, payload in published]


async def test_messages_waiting_behind_a_unit_are_decoded_during_it_and_stored_next_in_order(
    engine: AsyncEngine,
) -> None:
    link = ListLink()
    streams = [uuid.uuid4() for _ in range(3)]
    first = batch_of([reading(stream=streams[0], seq=seq) for seq in (1, 2, 3)])
    second = batch_of([reading(gateway_id="gw-2", stream=streams[1], seq=1)])
    third = batch_of([reading(gateway_id="gw-3", stream=streams[2], seq=1)])
    for batch in (first, second, third):
        link.put(batch)
    # A budget of 3 events: the first batch is a unit of its own, the other two wait behind it.
    ingestor = HeldFirstUnit(
        link=link, engine=engine, metrics=HubMetrics(), max_events_per_transaction=3, accept_unknown_gateways=True
    )
    ingestor.start()
    try:
        await asyncio.wait_for(ingestor.first_unit_started.wait(), timeout=10)
        # While the first unit is held, the consumer has taken the other two messages off the link...
        await until(link.waiting.empty, what="the waiting messages taken while the first unit is stored")
        # ...without storing or acknowledging anything yet.
        assert await _stored(engine) == 0
        assert link.published == []

        ingestor.gate.set()
        await until(lambda: len(link.published) == 3, timeout=10, what="three Acks")
        assert ingestor.unit_sizes == [1, 2]  # the two decoded ahead went together, as the next unit
        assert _acked_streams(link.published) == streams  # acknowledged in the order they came
        assert await _stored(engine) == 5
        assert ingestor.units_committed == 2
    finally:
        await ingestor.stop()


async def test_stopping_while_messages_are_decoded_ahead_acknowledges_only_what_was_stored(
    engine: AsyncEngine,
) -> None:
    link = ListLink()
    stream = uuid.uuid4()
    first = batch_of([reading(stream=stream, seq=seq) for seq in (1, 2, 3)])
    behind = batch_of([reading(gateway_id="gw-2", stream=uuid.uuid4(), seq=1)])
    link.put(first)
    link.put(behind)
    ingestor = HeldFirstUnit(
        link=link, engine=engine, metrics=HubMetrics(), max_events_per_transaction=3, accept_unknown_gateways=True
    )
    ingestor.start()
    await asyncio.wait_for(ingestor.first_unit_started.wait(), timeout=10)
    await until(link.waiting.empty, what="the message behind taken while the first unit is stored")
    stopping = asyncio.ensure_future(ingestor.stop())
    ingestor.gate.set()
    await asyncio.wait_for(stopping, timeout=10)

    # The unit in progress was finished and acknowledged; the one decoded ahead was neither stored nor
    # acknowledged, so its gateway keeps it and sends it again.
    assert await _stored(engine) == 3
    acks = [wire.decode(wire.Ack, payload) for _, payload in link.published]
    assert [(ack.stream, ack.stored) for ack in acks] == [(stream, 3)]
    assert not ingestor.running
