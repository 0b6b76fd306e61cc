"""Group commit: with a linger the consumer waits a bounded time for more messages before starting a unit.

The link is the consumer's own seam fed by the test (:class:`ListLink`), so the test decides what arrives when;
the database is real (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from hub.ingest.classify import Classified
from hub.ingest.consumer import Ingestor
from hub.ingest.unit import UnitResult
from hub.metrics import HubMetrics
from storegate import wire
from tests.hub.conftest import batch_of, reading, until
from tests.hub.ingest.test_consumer_pipeline import ListLink, _acked_streams, _stored


class CountedUnits(Ingestor):
    """An ingestor that records how many messages each of its units carried."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.unit_sizes: list[int] = []

    async def _handle(self, items: list[Classified]) -> UnitResult:
        self.unit_sizes.append(len(items))
        return await super()._handle(items)


def _batch(gateway_id: str) -> wire.EventBatch:
    return batch_of([reading(gateway_id=gateway_id, stream=uuid.uuid4(), seq=1)])


async def test_messages_arriving_within_the_linger_go_in_one_unit_which_starts_at_the_message_count(
    engine: AsyncEngine,
) -> None:
    link = ListLink()
    # A linger far longer than the test may take: only the message count can end it in time.
    ingestor = CountedUnits(
        link=link, engine=engine, metrics=HubMetrics(), accept_unknown_gateways=True, linger_s=60, linger_messages=3
    )
    batches = [_batch(f"gw-{n}") for n in range(3)]
    ingestor.start()
    try:
        link.put(batches[0])
        await until(link.waiting.empty, what="the first message taken")
        link.put(batches[1])
        await until(link.waiting.empty, what="the second message taken")
        assert ingestor.unit_sizes == []  # lingering: nothing stored nor acknowledged yet
        assert link.published == []
        link.put(batches[2])
        await until(lambda: len(link.published) == 3, timeout=10, what="three Acks")
        assert ingestor.unit_sizes == [3]
        assert _acked_streams(link.published) == [batch.events[0].stream for batch in batches]
        assert await _stored(engine) == 3
    finally:
        await ingestor.stop()


async def test_the_linger_is_bounded_in_time_and_the_message_after_it_is_not_lost(engine: AsyncEngine) -> None:
    link = ListLink()
    linger_s = 0.3
    ingestor = CountedUnits(
        link=link,
        engine=engine,
        metrics=HubMetrics(),
        accept_unknown_gateways=True,
        linger_s=linger_s,
        linger_messages=10,
    )
    first, second = _batch("gw-1"), _batch("gw-2")
    ingestor.start()
    try:
        started = time.monotonic()
        link.put(first)
        await until(lambda: len(link.published) == 1, timeout=10, what="the Ack of the lone message")
        waited = time.monotonic() - started
        assert ingestor.unit_sizes == [1]  # not more than linger_messages: the time bound ended the linger
        assert waited >= linger_s  # it did wait for company
        # The wait for the next message the linger left open takes the next one, in its own unit.
        link.put(second)
        await until(lambda: len(link.published) == 2, timeout=10, what="the Ack of the message after the linger")
        assert ingestor.unit_sizes == [1, 1]
        assert _acked_streams(link.published) == [first.events[0].stream, second.events[0].stream]
        assert await _stored(engine) == 2
    finally:
        await ingestor.stop()


async def test_stopping_during_a_linger_stores_and_acknowledges_what_is_in_hand_without_waiting_it_out(
    engine: AsyncEngine,
) -> None:
    link = ListLink()
    ingestor = CountedUnits(
        link=link, engine=engine, metrics=HubMetrics(), accept_unknown_gateways=True, linger_s=60, linger_messages=10
    )
    batch = _batch("gw-1")
    ingestor.start()
    link.put(batch)
    await until(link.waiting.empty, what="the message taken")
    await asyncio.wait_for(ingestor.stop(timeout=30), timeout=10)  # far less than the 60 s linger

    assert not ingestor.running
    assert ingestor.failure is None
    assert ingestor.unit_sizes == [1]
    assert _acked_streams(link.published) == [batch.events[0].stream]
    assert await _stored(engine) == 1
