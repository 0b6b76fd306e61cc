"""Writing what gateways send into the database: idempotent events, stream marks, presence and health.

Every function here runs inside the caller's transaction and never commits; the
consumer (:mod:`hub.ingest`) commits and only then acknowledges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from sqlalchemy import case, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import (
    PAYLOAD_EXCERPT_BYTES,
    TOPIC_LENGTH,
    Gateway,
    GatewayPresence,
    GatewayStream,
    RejectedMessage,
    Store,
    StoredEvent,
)
from storegate import wire

# Stored sequence numbers read per query while walking a stream's contiguous run.
CONTIGUITY_CHUNK: Final = 5000
DETAIL_MAX_CHARS: Final = 2000

InsertFactory = Callable[[Any], sqlite.Insert | postgresql.Insert]
_INSERT_OF_DIALECT: Final[dict[str, InsertFactory]] = {
    "sqlite": sqlite.insert,
    "postgresql": postgresql.insert,
}


class UnsupportedDatabaseError(RuntimeError):
    """A database for which the hub has no upsert statement."""


def _insert(session: AsyncSession) -> InsertFactory:
    dialect = session.get_bind().dialect.name
    try:
        return _INSERT_OF_DIALECT[dialect]
    except KeyError:
        raise UnsupportedDatabaseError(f"the hub supports SQLite and PostgreSQL, not {dialect}") from None


def _later(column: Any, value: datetime) -> Any:
    """SQL for the later of a nullable timestamp column and ``value`` (portable GREATEST)."""
    return case((column.is_(None), value), (column < value, value), else_=column)


# --------------------------------------------------------------------------- rejections


def payload_excerpt(payload: bytes) -> str:
    """The first 2 KB of a payload as text that any database accepts (no NUL characters)."""
    text = payload[:PAYLOAD_EXCERPT_BYTES].decode("utf-8", errors="backslashreplace")
    return text.replace("\x00", "\\x00")


def clean_text(value: str, limit: int) -> str:
    """``value`` without NUL characters, cut to ``limit`` characters."""
    value = value.replace("\x00", "\\x00")
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message, or one event of a batch, that the hub refuses to store."""

    topic: str
    reason: str
    detail: str
    payload: bytes
    received_at: datetime


async def record_rejections(session: AsyncSession, rejections: Sequence[Rejection], *, keep: int) -> None:
    """Insert rejected_messages rows and prune all but the newest ``keep``."""
    if not rejections:
        return
    await session.execute(
        insert(RejectedMessage),
        [
            {
                "received_at": r.received_at,
                "topic": clean_text(r.topic, TOPIC_LENGTH),
                "reason": r.reason,
                "detail": clean_text(r.detail, DETAIL_MAX_CHARS),
                "payload_excerpt": payload_excerpt(r.payload),
                "payload_bytes": len(r.payload),
            }
            for r in rejections
        ],
    )
    newest = (await session.execute(select(func.max(RejectedMessage.id)))).scalar_one_or_none()
    if newest is not None and newest > keep:
        await session.execute(delete(RejectedMessage).where(RejectedMessage.id <= newest - keep))


# --------------------------------------------------------------------------- stores and gateways


async def ensure_store(session: AsyncSession, store_id: str, *, now: datetime) -> None:
    """Create the store's row if it does not exist yet."""
    stmt = _insert(session)(Store).values(store_id=store_id, first_seen=now, event_count=0)
    await session.execute(stmt.on_conflict_do_nothing(index_elements=[Store.store_id]))


@dataclass(frozen=True, slots=True)
class GatewaySeen:
    """What touching a gateway found: whether it is new, and the store it belonged to before."""

    created: bool
    moved_from: str | None


async def touch_gateway(
    session: AsyncSession, *, store_id: str, gateway_id: str, seen_at: datetime, now: datetime
) -> GatewaySeen:
    """Create the gateway (and its store) or move its last_seen_at forward; follow a move to another store."""
    await ensure_store(session, store_id, now=now)
    known = (
        await session.execute(select(Gateway.store_id).where(Gateway.gateway_id == gateway_id))
    ).scalar_one_or_none()
    if known is None:
        await session.execute(
            _insert(session)(Gateway)
            .values(
                gateway_id=gateway_id, store_id=store_id, online=None, first_seen=now, last_seen_at=seen_at, devices=[]
            )
            .on_conflict_do_nothing(index_elements=[Gateway.gateway_id])
        )
        return GatewaySeen(created=True, moved_from=None)
    values: dict[str, Any] = {"last_seen_at": _later(Gateway.last_seen_at, seen_at)}
    if known != store_id:
        values["store_id"] = store_id
    await session.execute(update(Gateway).where(Gateway.gateway_id == gateway_id).values(**values))
    return GatewaySeen(created=False, moved_from=known if known != store_id else None)


def seen_time(reported: datetime, received_at: datetime, *, retained: bool) -> datetime:
    """When the gateway was last heard of, given a message: a retained one is old news, not a sign of life."""
    return min(reported, received_at) if retained else received_at


# --------------------------------------------------------------------------- events


@dataclass(slots=True)
class StreamCounts:
    """Events of one stream in one batch: newly stored and already held."""

    stream: UUID
    stored: int = 0
    duplicates: int = 0


@dataclass(slots=True)
class BatchOutcome:
    """What storing one batch did."""

    store_id: str
    gateway_id: str
    streams: dict[UUID, StreamCounts] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    moved_from: str | None = None

    @property
    def stored(self) -> int:
        """Events of the batch stored now."""
        return sum(c.stored for c in self.streams.values())

    @property
    def duplicates(self) -> int:
        """Events of the batch that were already stored."""
        return sum(c.duplicates for c in self.streams.values())


def seq_runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged (low, high) ranges covering ``seqs``: a batch is usually one run.

    The stored events of a batch's positions are looked up by index range scans;
    PostgreSQL plans a thousand-value IN list far worse.
    """
    runs: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def _event_row(event: wire.Event, received_at: datetime) -> dict[str, Any]:
    return {
        "event_id": str(event.event_id),
        "store_id": event.store_id,
        "gateway_id": event.gateway_id,
        "stream": str(event.stream),
        "seq": event.seq,
        "device_id": event.device_id,
        "kind": event.kind,
        "device_ts": event.ts,
        "received_at": received_at,
        "payload": event.payload,
    }


def _conflict(event: wire.Event, *, topic: str, reason: str, detail: str, received_at: datetime) -> Rejection:
    return Rejection(topic, reason, detail, event.model_dump_json().encode(), received_at)


async def store_batch(
    session: AsyncSession, batch: wire.EventBatch, *, received_at: datetime, now: datetime
) -> BatchOutcome:
    """Store a batch's events exactly once, creating its store and gateway as needed.

    An event already stored under the same event_id and (gateway, stream, seq) is a
    duplicate. An event whose (gateway, stream, seq) is stored under another event_id,
    or whose event_id is stored at another position, breaks the protocol: it is
    returned as a rejection and the rest of the batch is stored.
    """
    topic = wire.topic(batch.store_id, batch.gateway_id, wire.Channel.EVENTS)
    seen = await touch_gateway(
        session, store_id=batch.store_id, gateway_id=batch.gateway_id, seen_at=received_at, now=now
    )
    outcome = BatchOutcome(batch.store_id, batch.gateway_id, moved_from=seen.moved_from)
    for event in batch.events:
        outcome.streams.setdefault(event.stream, StreamCounts(event.stream))

    # What is stored already at the batch's positions, and under the batch's event ids.
    by_position: dict[tuple[str, int], str] = {}
    for stream in outcome.streams:
        seqs = {e.seq for e in batch.events if e.stream == stream}
        rows = await session.execute(
            select(StoredEvent.seq, StoredEvent.event_id).where(
                StoredEvent.gateway_id == batch.gateway_id,
                StoredEvent.stream == str(stream),
                or_(*(StoredEvent.seq.between(low, high) for low, high in seq_runs(seqs))),
            )
        )
        by_position.update({(str(stream), seq): event_id for seq, event_id in rows if seq in seqs})
    unplaced = [str(e.event_id) for e in batch.events if (str(e.stream), e.seq) not in by_position]
    by_id: dict[str, tuple[str, str, int]] = {}
    if unplaced:
        placed = await session.execute(
            select(StoredEvent.event_id, StoredEvent.gateway_id, StoredEvent.stream, StoredEvent.seq).where(
                StoredEvent.event_id.in_(unplaced)
            )
        )
        by_id = {event_id: (gateway_id, stream, seq) for event_id, gateway_id, stream, seq in placed}

    to_insert: dict[str, wire.Event] = {}
    for event in batch.events:
        event_id, position = str(event.event_id), (str(event.stream), event.seq)
        counts = outcome.streams[event.stream]
        holder = by_position.get(position)
        if holder == event_id:
            counts.duplicates += 1
        elif holder is not None:
            outcome.rejections.append(
                _conflict(
                    event,
                    topic=topic,
                    reason="seq_conflict",
                    detail=f"seq {event.seq} of stream {event.stream} is already stored as event {holder}, "
                    f"not {event_id}",
                    received_at=received_at,
                )
            )
        elif event_id in by_id:
            held_gateway, held_stream, held_seq = by_id[event_id]
            outcome.rejections.append(
                _conflict(
                    event,
                    topic=topic,
                    reason="event_id_conflict",
                    detail=f"event {event_id} is already stored as {held_gateway} stream {held_stream} seq {held_seq}, "
                    f"not {event.gateway_id} stream {event.stream} seq {event.seq}",
                    received_at=received_at,
                )
            )
        else:
            # Claim the position and id, so a second copy later in the same batch is judged against it.
            by_position[position] = event_id
            by_id[event_id] = (event.gateway_id, str(event.stream), event.seq)
            to_insert[event_id] = event

    inserted: set[str] = set()
    if to_insert:
        stmt = _insert(session)(StoredEvent).on_conflict_do_nothing().returning(StoredEvent.event_id)
        result = await session.execute(stmt, [_event_row(e, received_at) for e in to_insert.values()])
        inserted = set(result.scalars().all())
    for event_id, event in to_insert.items():
        counts = outcome.streams[event.stream]
        # Not inserted although checked above: another hub process stored it at the same moment.
        if event_id in inserted:
            counts.stored += 1
        else:
            counts.duplicates += 1

    if inserted:
        await session.execute(
            update(Store)
            .where(Store.store_id == batch.store_id)
            .values(event_count=Store.event_count + len(inserted), last_event_at=_later(Store.last_event_at, now))
        )
    return outcome


async def advance_through_seq(session: AsyncSession, *, gateway_id: str, stream: str, now: datetime) -> int:
    """Move the stream's mark up over every consecutively stored seq and return it (0: nothing from 1 on)."""
    mark = (
        await session.execute(
            select(GatewayStream.through_seq).where(
                GatewayStream.gateway_id == gateway_id, GatewayStream.stream == stream
            )
        )
    ).scalar_one_or_none()
    expected = (mark or 0) + 1
    while True:
        seqs = (
            await session.scalars(
                select(StoredEvent.seq)
                .where(StoredEvent.gateway_id == gateway_id, StoredEvent.stream == stream, StoredEvent.seq >= expected)
                .order_by(StoredEvent.seq)
                .limit(CONTIGUITY_CHUNK)
            )
        ).all()
        for seq in seqs:
            if seq != expected:
                break
            expected += 1
        else:
            if len(seqs) == CONTIGUITY_CHUNK:
                continue
        break
    through = expected - 1
    if mark is None or through > mark:
        stmt = _insert(session)(GatewayStream).values(
            gateway_id=gateway_id, stream=stream, through_seq=through, updated_at=now
        )
        # Monotonic even if another hub process moved the mark meanwhile.
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[GatewayStream.gateway_id, GatewayStream.stream],
                set_={"through_seq": stmt.excluded.through_seq, "updated_at": stmt.excluded.updated_at},
                where=GatewayStream.through_seq < stmt.excluded.through_seq,
            )
        )
    return through


# --------------------------------------------------------------------------- presence and health


@dataclass(frozen=True, slots=True)
class Transition:
    """A gateway went online or offline."""

    store_id: str
    gateway_id: str
    online: bool
    reason: str


async def apply_status(
    session: AsyncSession, status: wire.GatewayStatus, *, received_at: datetime, retained: bool, now: datetime
) -> Transition | None:
    """Record a birth or last-will message; a change of online state is appended to gateway_presence."""
    seen_at = seen_time(status.ts, received_at, retained=retained)
    await touch_gateway(session, store_id=status.store_id, gateway_id=status.gateway_id, seen_at=seen_at, now=now)
    was_online = (
        await session.execute(select(Gateway.online).where(Gateway.gateway_id == status.gateway_id))
    ).scalar_one_or_none()
    values: dict[str, Any] = {}
    if status.agent_version is not None:
        values["agent_version"] = status.agent_version
    if status.config_hash is not None:
        values["config_hash"] = status.config_hash
    if status.reason == "birth":
        values["devices"] = list(status.devices)
    transition: Transition | None = None
    if was_online is not status.online:
        values |= {"online": status.online, "last_status_reason": status.reason, "status_changed_at": seen_at}
        await session.execute(
            insert(GatewayPresence).values(
                gateway_id=status.gateway_id,
                store_id=status.store_id,
                online=status.online,
                reason=status.reason,
                reported_at=status.ts,
                recorded_at=now,
            )
        )
        transition = Transition(status.store_id, status.gateway_id, status.online, status.reason)
    if values:
        await session.execute(update(Gateway).where(Gateway.gateway_id == status.gateway_id).values(**values))
    return transition


async def apply_health(
    session: AsyncSession, health: wire.GatewayHealth, *, received_at: datetime, retained: bool, now: datetime
) -> None:
    """Keep the gateway's latest health report."""
    seen_at = seen_time(health.ts, received_at, retained=retained)
    await touch_gateway(session, store_id=health.store_id, gateway_id=health.gateway_id, seen_at=seen_at, now=now)
    await session.execute(
        update(Gateway)
        .where(Gateway.gateway_id == health.gateway_id)
        .values(last_health=health.model_dump(mode="json"), last_health_at=seen_at)
    )
