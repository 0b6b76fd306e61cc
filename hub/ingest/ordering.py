"""Shared mode: each stream's events applied in seq order, although the broker spreads a gateway over workers.

With one hub process a gateway's batches arrive in the order it sent them. With N workers on a shared
subscription the broker deals them round-robin, so worker B may store seqs 101-200 of a stream before worker
A has stored 1-100. Storing out of order is harmless (each stream's mark walks its gaps), but inventory and
rules must see a stream in order: a reading of 10:01 applied after one of 10:02 is refused by the excursion
rule, a sale before its pick is not matched.

So, under the stores' locks, a unit applies only its events at or below their stream's new mark; those above
a gap are stored and held (``storegate_hub_events_held_for_order_total``). The unit that fills the gap (or the
loss report that closes it) moves the mark over them and applies them then, read back from ``events``, in seq
order with its own. Each event is applied once: by the unit that stored it, or by the one that moved the mark
over it, never both, since both happen under the same lock and the mark only moves up.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import GatewayStream, StoredEvent
from hub.ingest.eventlog import StreamMark
from storegate import wire

StreamKey = tuple[str, str, str]  # (store, gateway, stream as text)


@dataclass(slots=True)
class InOrder:
    """What a unit applies now: its events below their marks, and those it released; how many it held."""

    events: list[wire.Event] = field(default_factory=list)
    held: int = 0
    released: int = 0


async def read_marks(session: AsyncSession, store_ids: Collection[str]) -> dict[StreamKey, tuple[int, int]]:
    """(through_seq, max_seq) of every stream of these stores, before the unit stores anything."""
    g = GatewayStream
    rows = await session.execute(
        select(g.store_id, g.gateway_id, g.stream, g.through_seq, g.max_seq).where(g.store_id.in_(sorted(store_ids)))
    )
    return {(store, gateway, stream): (through, top) for store, gateway, stream, through, top in rows}


def _key(event: wire.Event) -> StreamKey:
    return (event.store_id, event.gateway_id, str(event.stream))


async def in_order(
    session: AsyncSession,
    stored: Sequence[wire.Event],
    before: Mapping[StreamKey, tuple[int, int]],
    after: Mapping[tuple[str, str, UUID], StreamMark],
) -> InOrder:
    """The events to apply now, in (stream, seq) order: ``stored`` up to their streams' marks, and the events
    stored earlier above a mark this unit moved over them."""
    through = {(store, gateway, str(stream)): mark.through for (store, gateway, stream), mark in after.items()}
    result = InOrder()
    for event in stored:
        if event.seq <= through.get(_key(event), event.seq):
            result.events.append(event)
        else:
            result.held += 1
    # Streams that had seqs held above their mark, which moved over some of them now.
    ranges = [
        (key, old_through, min(new_through, old_top))
        for key, new_through in through.items()
        if (old := before.get(key)) is not None
        and (old_through := old[0]) < (old_top := old[1])
        and new_through > old_through
    ]
    if ranges:
        mine = {str(event.event_id) for event in stored}
        released = [event for event in await _read_events(session, ranges) if str(event.event_id) not in mine]
        result.released = len(released)
        result.events += released
    result.events.sort(key=lambda event: (_key(event), event.seq))
    return result


async def _read_events(session: AsyncSession, ranges: Sequence[tuple[StreamKey, int, int]]) -> list[wire.Event]:
    """The stored events of each (stream, after seq, through seq), as the gateway sent them."""
    e = StoredEvent
    query = select(e.event_id, e.store_id, e.gateway_id, e.stream, e.seq, e.device_id, e.kind, e.device_ts, e.payload)
    query = query.where(
        or_(
            *(
                and_(e.store_id == store, e.gateway_id == gateway, e.stream == stream, e.seq > low, e.seq <= high)
                for (store, gateway, stream), low, high in ranges
            )
        )
    )
    return [
        # Built without validation: they were validated when they were stored.
        wire.Event.model_construct(
            event_id=UUID(event_id),
            store_id=store_id,
            gateway_id=gateway_id,
            stream=UUID(stream),
            seq=seq,
            device_id=device_id,
            kind=kind,
            ts=ts,
            payload=payload,
        )
        for event_id, store_id, gateway_id, stream, seq, device_id, kind, ts, payload in await session.execute(query)
    ]
