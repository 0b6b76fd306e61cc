"""Writing gateways' events: idempotent inserts, data loss records, and each stream's mark and gaps.

One call stores every batch of a unit of work inside the caller's transaction:

1. the unit's gateways (all enrolled: the unit admitted them) are touched once each, in one statement;
2. the marks of the unit's streams are read in one query; a batch above a stream's
   ``max_seq`` cannot hold a stored position, so fresh events are not looked up at all;
3. the new events go to the database in one statement per unit (``executemany`` on SQLite,
   the rows as one JSON array on PostgreSQL), with values prepared here rather than by
   SQLAlchemy's per-value type processing: this path runs for every event;
4. the stores' event counts move by what was stored, in one statement per unit;
5. ``outbox.loss`` events that were stored now become ``data_losses`` rows, and events set aside
   (invalid, or refused by the database) ``refused_events`` rows;
6. each stream's mark moves over what is stored, recorded lost or set aside. While nothing is held
   above the mark (``max_seq == through_seq``), the new mark and the gaps follow from the
   unit's own seqs in memory; otherwise the stored seqs above the mark are walked. The marks
   that moved are written in one statement per unit.

Bookkeeping statements are ``executemany`` with bound parameters, so their number does not grow
with the gateways, stores or streams of a unit.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import pydantic_core
from sqlalchemy import BigInteger, bindparam, case, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from hub.db.bulk import chunks, select_by_keys, sqlite_time
from hub.db.dialect import dialect_insert, later, of_dialect
from hub.db.engine import json_text
from hub.db.models import (
    REFUSED_EVENT_BYTES,
    DataLossRecord,
    GatewayStream,
    RefusedEvent,
    Store,
    StoredEvent,
    UtcDateTime,
)
from hub.db.overlap import while_awaiting
from hub.ingest.clock import BatchClock, ClockIssue, EventClockSettings
from hub.ingest.presence import GatewayTouch, touch_gateways
from hub.ingest.rejections import Rejection, SetAside, clean_text, payload_excerpt
from hub.ingest.seqs import MAX_GAPS, Range, advance, gaps, merge, runs, size, subtract
from storegate import wire
from storegate.wire import EventKind

# Stored seqs read per query while walking a stream above its mark.
CONTIGUITY_CHUNK: Final = 5000
# How far past the first gap the walk looks for more gaps; the Ack lists the lowest ones found.
GAP_SCAN_SEQS: Final = 20_000
# The wire contract's limit of DataLoss.detail.
LOSS_DETAIL_CHARS: Final = 500
# The words kept of why an event was set aside (a validation error can be long).
REFUSED_DETAIL_CHARS: Final = 2000
# Ranges or ids per query of the rare look-ups (conflicts, losses), well below every driver's limit.
LOOKUP_CHUNK: Final = 500
DEFAULT_CLOCK: Final = EventClockSettings()

GatewayKey = tuple[str, str]  # (store_id, gateway_id): a gateway
StreamKey = tuple[str, str, str]  # (store_id, gateway_id, stream as text)
Position = tuple[str, str, str, int]  # (store_id, gateway_id, stream, seq)

# The one statement per unit that writes events, per database. Values are in the order of EVENT_COLUMNS.
EVENT_COLUMNS: Final = (
    "event_id",
    "store_id",
    "gateway_id",
    "stream",
    "seq",
    "device_id",
    "kind",
    "device_ts",
    "received_at",
    "payload",
    "clock_issue",
)
_SQLITE_INSERT: Final = (
    "INSERT INTO events (event_id, store_id, gateway_id, stream, seq, device_id, kind, device_ts, received_at, payload,"
    " clock_issue) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
# PostgreSQL takes the unit's rows as one JSON array of arrays, which the server takes apart: asyncpg would check
# every element of eleven column arrays in Python (one or two ABC isinstance calls each: a few microseconds an
# event of the hub's CPU). json_array_elements keeps the rows' order. Each value is read as text and cast to its
# column's type; the payload too, which the row carries as its JSON text in a string: a payload's own \u0000 then
# stays an escape in the json column (read as a JSON value, ``->``, PostgreSQL would have to turn it into text).
_POSTGRES_INSERT: Final = (
    "WITH inserted AS ("
    "INSERT INTO events (event_id, store_id, gateway_id, stream, seq, device_id, kind, device_ts, received_at, payload,"
    " clock_issue)"
    " SELECT r->>0, r->>1, r->>2, r->>3, (r->>4)::bigint, r->>5, r->>6, (r->>7)::timestamptz, (r->>8)::timestamptz,"
    " (r->>9)::json, r->>10 FROM json_array_elements($1::json) AS r"
    " ON CONFLICT DO NOTHING RETURNING event_id"
    ") SELECT count(*), array_agg(event_id) FROM inserted"
)


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class StreamCounts:
    """Events of one stream in one batch: newly stored and already held."""

    stream: UUID
    stored: int = 0
    duplicates: int = 0
    # Set aside (refused_events) rather than stored.
    refused: int = 0


@dataclass(slots=True)
class BatchOutcome:
    """What storing one batch did."""

    store_id: str
    gateway_id: str
    streams: dict[UUID, StreamCounts] = field(default_factory=dict)

    @property
    def stored(self) -> int:
        """Events of the batch stored now."""
        return sum(c.stored for c in self.streams.values())

    @property
    def duplicates(self) -> int:
        """Events of the batch that were already stored."""
        return sum(c.duplicates for c in self.streams.values())


@dataclass(frozen=True, slots=True)
class StreamMark:
    """A stream after the unit: accounted for through ``through``; ``gaps`` missing above it, lowest first."""

    through: int
    gaps: list[Range]


@dataclass(frozen=True, slots=True)
class LossRecord:
    """What one newly stored ``outbox.loss`` event added to ``data_losses``."""

    store_id: str
    gateway_id: str
    stream: str
    event_id: str
    reason: str
    detail: str
    reported: list[Range]
    recorded: list[Range] = field(default_factory=list)
    # Reported seqs at or above the loss event's own seq: a gateway's error, not taken into account.
    ignored: list[Range] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Events newly recorded as lost (the report less what was held or recorded before)."""
        return size(self.recorded)


@dataclass(slots=True)
class ClockSuspects:
    """Events of one gateway stored by a unit whose device time the hub does not believe (hub.ingest.clock)."""

    store_id: str
    gateway_id: str
    by_issue: dict[ClockIssue, int] = field(default_factory=lambda: defaultdict(int))
    # The last one flagged, for the log line: its device time, and its batch's sent_at and receipt.
    device_ts: datetime | None = None
    sent_at: datetime | None = None
    received_at: datetime | None = None

    @property
    def count(self) -> int:
        """Events flagged."""
        return sum(self.by_issue.values())


@dataclass(slots=True)
class EventsOutcome:
    """What storing the batches of one unit did."""

    batches: list[BatchOutcome] = field(default_factory=list)
    marks: dict[tuple[str, str, UUID], StreamMark] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    losses: list[LossRecord] = field(default_factory=list)
    # Events stored for the first time by this unit (not duplicates): what inventory and rules apply. One whose
    # device time cannot be true (ClockIssue.impossible) carries its receipt as ts here; the row keeps the device's.
    stored_events: list[wire.Event] = field(default_factory=list)
    # Per gateway, the newly stored events flagged for their device time; gateways without any are absent.
    clock_suspects: dict[GatewayKey, ClockSuspects] = field(default_factory=dict)


# --------------------------------------------------------------------------- values per database


def _postgres_time(value: datetime) -> datetime:
    return value  # serialised with the unit's rows (_insert_postgres)


async def _insert_sqlite(connection: AsyncConnection, rows: list[tuple[Any, ...]]) -> set[str] | None:
    result = await connection.exec_driver_sql(_SQLITE_INSERT, rows)
    # The write lock is held from here to the commit, so a short count means conflicts: they are looked up.
    return None if result.rowcount == len(rows) else await _present_at_own_position(connection, rows)


async def _insert_postgres(connection: AsyncConnection, rows: list[tuple[Any, ...]]) -> set[str] | None:
    # Times become ISO 8601 with their offset and microseconds.
    rows_json = pydantic_core.to_json(rows, inf_nan_mode="constants").decode()
    # One row back, not one per event: the count, and the ids for the rare unit where some were skipped.
    row: Sequence[Any] = (await connection.exec_driver_sql(_POSTGRES_INSERT, (rows_json,))).one()
    count, inserted = row
    return None if count == len(rows) else set(inserted or ())


@dataclass(frozen=True, slots=True)
class _Writer:
    time: Callable[[datetime], Any]
    insert: Callable[[AsyncConnection, list[tuple[Any, ...]]], Any]


_WRITER_OF_DIALECT: Final[dict[str, _Writer]] = {
    "sqlite": _Writer(time=sqlite_time, insert=_insert_sqlite),
    "postgresql": _Writer(time=_postgres_time, insert=_insert_postgres),
}


async def _present_at_own_position(connection: AsyncConnection, rows: list[tuple[Any, ...]]) -> set[str]:
    """Event ids of ``rows`` stored at the row's own position."""
    wanted = {row[0]: (row[1], row[2], row[3], row[4]) for row in rows}
    present: set[str] = set()
    for ids in chunks(list(wanted), LOOKUP_CHUNK):
        found = await connection.execute(
            select(
                StoredEvent.event_id, StoredEvent.store_id, StoredEvent.gateway_id, StoredEvent.stream, StoredEvent.seq
            ).where(StoredEvent.event_id.in_(ids))
        )
        present.update(event_id for event_id, *position in found if wanted[event_id] == tuple(position))
    return present


# --------------------------------------------------------------------------- look-ups


def _in_ranges(column: Any, ranges: Sequence[Range]) -> Any:
    # Index range scans: PostgreSQL plans a long IN list of seqs far worse.
    return or_(*(column.between(first, last) for first, last in ranges))


async def _read_marks(session: AsyncSession, keys: Iterable[StreamKey]) -> dict[StreamKey, tuple[int, int]]:
    """(through_seq, max_seq) of the streams that have a row."""
    g = GatewayStream
    marks: dict[StreamKey, tuple[int, int]] = {}
    dialect = session.get_bind().dialect.name
    columns = (g.store_id, g.gateway_id, g.stream, g.through_seq, g.max_seq)
    for query in select_by_keys(dialect, columns, (g.store_id, g.gateway_id, g.stream), sorted(keys)):
        marks.update(
            {
                (store_id, gateway_id, stream): (through, top)
                for store_id, gateway_id, stream, through, top in await session.execute(query)
            }
        )
    return marks


def _of_stream(model: Any, key: StreamKey) -> list[Any]:
    """The conditions selecting one stream's rows of ``model`` (events, losses, refused events)."""
    return [model.store_id == key[0], model.gateway_id == key[1], model.stream == key[2]]


async def _held_positions(session: AsyncSession, key: StreamKey, seqs: Iterable[int]) -> dict[int, str]:
    """seq -> event_id of the stored events at ``seqs`` of one stream."""
    wanted = set(seqs)
    held: dict[int, str] = {}
    for ranges in chunks(runs(wanted), LOOKUP_CHUNK):
        rows = await session.execute(
            select(StoredEvent.seq, StoredEvent.event_id).where(
                *_of_stream(StoredEvent, key), _in_ranges(StoredEvent.seq, ranges)
            )
        )
        held.update({seq: event_id for seq, event_id in rows if seq in wanted})
    return held


async def _held_within(session: AsyncSession, key: StreamKey, ranges: Sequence[Range]) -> list[Range]:
    """The stored seqs of one stream within ``ranges``, as ranges."""
    seqs: list[int] = []
    for chunk in chunks(ranges, LOOKUP_CHUNK):
        seqs += (
            await session.scalars(
                select(StoredEvent.seq).where(*_of_stream(StoredEvent, key), _in_ranges(StoredEvent.seq, chunk))
            )
        ).all()
    return runs(seqs)


async def _losses_of(session: AsyncSession, key: StreamKey, *, above: int, up_to: int | None = None) -> list[Range]:
    """Recorded loss ranges of one stream ending above ``above`` (and starting at or below ``up_to``)."""
    conditions = [*_of_stream(DataLossRecord, key), DataLossRecord.last_seq > above]
    if up_to is not None:
        conditions.append(DataLossRecord.first_seq <= up_to)
    rows = await session.execute(select(DataLossRecord.first_seq, DataLossRecord.last_seq).where(*conditions))
    return merge((first, last) for first, last in rows)


async def _refused_of(session: AsyncSession, key: StreamKey, *, above: int) -> list[Range]:
    """Seqs of one stream above ``above`` whose events were set aside (refused_events), as ranges."""
    seqs = await session.scalars(
        select(RefusedEvent.seq).where(*_of_stream(RefusedEvent, key), RefusedEvent.seq > above)
    )
    return runs(seq for seq in seqs if seq is not None)


# --------------------------------------------------------------------------- storing a unit's batches


def _conflict(event: wire.Event, *, reason: str, detail: str, received_at: datetime) -> Rejection:
    topic = wire.topic(event.store_id, event.gateway_id, wire.Channel.EVENTS)
    return Rejection(topic, reason, detail, event.model_dump_json().encode(), received_at)


def _seq_conflict(event: wire.Event, holder: str, received_at: datetime) -> Rejection:
    return _conflict(
        event,
        reason="seq_conflict",
        detail=f"seq {event.seq} of stream {event.stream} is already stored as event {holder}, not {event.event_id}",
        received_at=received_at,
    )


def _event_id_conflict(event: wire.Event, held: Position, received_at: datetime) -> Rejection:
    return _conflict(
        event,
        reason="event_id_conflict",
        detail=f"event {event.event_id} is already stored as {held[0]}/{held[1]} stream {held[2]} seq {held[3]}, "
        f"not {event.store_id}/{event.gateway_id} stream {event.stream} seq {event.seq}",
        received_at=received_at,
    )


@dataclass(slots=True)
class _Group:
    """Events of one batch and stream sent to the insert, and where their outcome is counted."""

    store_id: str
    events: list[wire.Event]
    counts: StreamCounts
    received_at: datetime
    sent_at: datetime
    # The events whose device time is not believed: (index in events, issue).
    flagged: list[tuple[int, ClockIssue]]
    # The events as inventory and rules take them: ``events``, but an impossible device time is the receipt.
    applied: list[wire.Event]
    # The events' ids as text, in the order of ``events``.
    ids: list[str]


@dataclass(slots=True)
class _Unit:
    """The judging of a unit's events against what is stored and what came earlier in the unit."""

    as_time: Callable[[datetime], Any]
    clock: EventClockSettings
    # seq -> event_id per stream: stored positions looked up, and positions claimed in this unit.
    claims: dict[StreamKey, dict[int, str]] = field(default_factory=lambda: defaultdict(dict))
    # event_id -> the stream where it is stored or claimed.
    claimed_ids: dict[str, StreamKey] = field(default_factory=dict)
    # Seqs of each stream held once the unit is stored, for the marks.
    held_seqs: dict[StreamKey, list[int]] = field(default_factory=lambda: defaultdict(list))
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    groups: list[_Group] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    def add(
        self,
        batch: wire.EventBatch,
        key: StreamKey,
        events: list[wire.Event],
        counts: StreamCounts,
        received_at: datetime,
    ) -> None:
        """Judge one batch's events of one stream; queue the new ones for the insert."""
        ids = [str(event.event_id) for event in events]
        seqs = [event.seq for event in events]
        claims = self.claims[key]
        count = len(events)
        if (
            claims.keys().isdisjoint(seqs)
            and self.claimed_ids.keys().isdisjoint(ids)
            and len(set(seqs)) == count
            and len(set(ids)) == count
        ):
            # The usual case, without a per-event branch: nothing of the group is stored or repeated.
            claims.update(zip(seqs, ids, strict=True))
            self.claimed_ids.update(dict.fromkeys(ids, key))
            self.held_seqs[key] += seqs
            self._add_group(batch, key, events, ids, counts, received_at)
            return
        fresh: list[wire.Event] = []
        fresh_ids: list[str] = []
        for event, event_id in zip(events, ids, strict=True):
            holder = claims.get(event.seq)
            if holder is None:
                elsewhere = self.claimed_ids.get(event_id)
                if elsewhere is not None:
                    self.rejections.append(_event_id_conflict(event, self.position_of(event_id), received_at))
                    continue
                claims[event.seq] = event_id
                self.claimed_ids[event_id] = key
                fresh.append(event)
                fresh_ids.append(event_id)
            elif holder == event_id:
                counts.duplicates += 1
            else:
                self.rejections.append(_seq_conflict(event, holder, received_at))
            self.held_seqs[key].append(event.seq)
        if fresh:
            self._add_group(batch, key, fresh, fresh_ids, counts, received_at)

    def _add_group(
        self,
        batch: wire.EventBatch,
        key: StreamKey,
        events: list[wire.Event],
        ids: list[str],
        counts: StreamCounts,
        received_at: datetime,
    ) -> None:
        """Queue new events for the insert, each with its clock judged against the batch's receipt.

        The row keeps the device time as sent. What the hub makes of an event whose device time cannot be true
        (inventory, rules, a loss report) goes by its receipt instead: a 2046 stock report would otherwise
        hold its slot's level forever, and a 1970 reading would be refused as older than the zone's.
        """
        judge = BatchClock.of(self.clock, sent_at=batch.sent_at, received_at=received_at)
        issues = [judge.issue_of(event.ts) for event in events]
        flagged = [(index, issue) for index, issue in enumerate(issues) if issue is not None]
        applied = events
        if any(issue.impossible for _, issue in flagged):
            applied = list(events)
            for index, issue in flagged:
                if issue.impossible:
                    applied[index] = events[index].model_copy(update={"ts": received_at})
        self.groups.append(_Group(batch.store_id, events, counts, received_at, batch.sent_at, flagged, applied, ids))
        as_time = self.as_time
        received = as_time(received_at)
        store_id, gateway_id, stream = key
        self.rows += [
            (
                event_id,
                store_id,
                gateway_id,
                stream,
                event.seq,
                event.device_id,
                event.kind,
                as_time(event.ts),
                received,
                json_text(event.payload),
                None if issue is None else issue.value,
            )
            for event, event_id, issue in zip(events, ids, issues, strict=True)
        ]

    def position_of(self, event_id: str) -> Position:
        """Where a stored or claimed event id is (rare: for the words of a conflict)."""
        key = self.claimed_ids[event_id]
        seq = next(seq for seq, held in self.claims[key].items() if held == event_id)
        return (*key, seq)


async def store_batches(
    session: AsyncSession,
    items: Sequence[tuple[wire.EventBatch, datetime]],
    *,
    now: datetime,
    meanwhile: Callable[[list[wire.Event], list[str]], None] | None = None,
    set_aside: Sequence[Sequence[SetAside]] | None = None,
    clock: EventClockSettings = DEFAULT_CLOCK,
) -> EventsOutcome:
    """Store the events of ``items`` (batch, received_at) exactly once and compute each stream's mark.

    Every batch's gateway must be enrolled (the unit admits them first). An event already stored under
    the same event_id and (store, gateway, stream, seq) is a duplicate. An event whose position is stored
    under another event_id, or whose event_id is stored at another position, breaks the protocol: it is
    returned as a rejection and the rest is stored.

    ``set_aside`` holds, per item, the events of that batch the hub will not store (invalid, or refused by
    the database): they are kept in ``refused_events`` and their seqs count as accounted for, so the mark
    moves past them and the batch's Ack lets the gateway delete them.

    ``meanwhile`` is called with the events sent to the insert (those not found stored already) and their ids as
    text while the database inserts them (on PostgreSQL that work then costs no wall time). The insert may still
    skip some (another writer got there first): ``stored_events`` says which were stored.

    Each new event's device time is judged against its batch's receipt by ``clock`` (:mod:`hub.ingest.clock`):
    the event is stored either way, with ``clock_issue`` set, and counted in ``clock_suspects``.
    """
    writer = of_dialect(session, _WRITER_OF_DIALECT)
    outcome = EventsOutcome()
    if not items:
        return outcome
    aside: Sequence[Sequence[SetAside]] = set_aside if set_aside is not None else [()] * len(items)

    # The unit's gateways, each touched once with the latest time it was heard from.
    latest: dict[GatewayKey, datetime] = {}
    for batch, received_at in items:
        gateway = (batch.store_id, batch.gateway_id)
        latest[gateway] = max(received_at, latest.get(gateway, received_at))
    await touch_gateways(session, [GatewayTouch(*gateway, seen_at) for gateway, seen_at in latest.items()], now=now)
    outcome.batches += [BatchOutcome(batch.store_id, batch.gateway_id) for batch, _ in items]

    # Each batch's events by stream (a batch is almost always one stream).
    grouped: list[dict[str, list[wire.Event]]] = []
    for batch, _ in items:
        if not batch.events:  # every event of the batch was set aside
            grouped.append({})
        elif all(event.stream.int == batch.events[0].stream.int for event in batch.events):
            grouped.append({str(batch.events[0].stream): batch.events})
        else:
            by_stream: dict[str, list[wire.Event]] = defaultdict(list)
            for event in batch.events:
                by_stream[str(event.stream)].append(event)
            grouped.append(by_stream)
    keys = {
        (batch.store_id, batch.gateway_id, stream)
        for (batch, _), by in zip(items, grouped, strict=True)
        for stream in by
    }
    unit_refused: dict[StreamKey, list[int]] = defaultdict(list)
    for (batch, _), refused, batch_outcome in zip(items, aside, outcome.batches, strict=True):
        for aside_event in refused:
            if aside_event.stream is None:  # no stream to acknowledge
                continue
            key = (batch.store_id, batch.gateway_id, str(aside_event.stream))
            keys.add(key)
            if aside_event.seq is not None:
                unit_refused[key].append(aside_event.seq)
            batch_outcome.streams.setdefault(aside_event.stream, StreamCounts(aside_event.stream)).refused += 1
    marks = await _read_marks(session, keys)

    # What is stored at positions that may be held: those at or below the stream's max_seq.
    unit = _Unit(as_time=writer.time, clock=clock)
    maybe_held: dict[StreamKey, set[int]] = defaultdict(set)
    for (batch, _), streams in zip(items, grouped, strict=True):
        for stream, events in streams.items():
            key = (batch.store_id, batch.gateway_id, stream)
            top = marks.get(key, (0, 0))[1]
            if top:
                maybe_held[key].update(event.seq for event in events if event.seq <= top)
    for key, wanted in maybe_held.items():
        if wanted:
            held = await _held_positions(session, key, wanted)
            unit.claims[key].update(held)
            unit.claimed_ids.update(dict.fromkeys(held.values(), key))

    for (batch, received_at), streams, batch_outcome in zip(items, grouped, outcome.batches, strict=True):
        for stream, events in streams.items():
            counts = batch_outcome.streams.setdefault(events[0].stream, StreamCounts(events[0].stream))
            unit.add(batch, (batch.store_id, batch.gateway_id, stream), events, counts, received_at)
    outcome.rejections += unit.rejections

    inserted: set[str] | None = None
    if unit.rows:
        insert = writer.insert(await session.connection(), unit.rows)
        if meanwhile is None:
            inserted = await insert
        else:
            candidates = [event for group in unit.groups for event in group.applied]
            candidate_ids = [event_id for group in unit.groups for event_id in group.ids]
            inserted, _ = await while_awaiting(insert, lambda: meanwhile(candidates, candidate_ids))
    stored_per_store: dict[str, int] = defaultdict(int)
    new_losses: list[wire.Event] = []
    missing: list[tuple[wire.Event, StreamCounts, datetime]] = []
    for group in unit.groups:
        if inserted is None:
            stored = group.applied
        else:
            stored = [event for event in group.applied if str(event.event_id) in inserted]
            missing += [(e, group.counts, group.received_at) for e in group.events if str(e.event_id) not in inserted]
        if group.flagged:
            _note_clock_issues(outcome.clock_suspects, group, inserted)
        group.counts.stored += len(stored)
        stored_per_store[group.store_id] += len(stored)
        outcome.stored_events += stored
        new_losses += [event for event in stored if event.kind == EventKind.OUTBOX_LOSS]
    for store_id, gateway_id, stream, seq in await _judge_not_inserted(session, missing, outcome.rejections):
        unit.held_seqs[(store_id, gateway_id, stream)].remove(seq)

    await _count_stored(session, stored_per_store, now=now)
    await _record_refused(session, [event for refused in aside for event in refused], now=now)

    unit_losses: dict[StreamKey, list[Range]] = defaultdict(list)
    for event in new_losses:
        record = await _record_loss(session, event, now=now)
        outcome.losses.append(record)
        unit_losses[(record.store_id, record.gateway_id, record.stream)] += record.recorded

    moved_marks: dict[StreamKey, dict[str, Any]] = {}
    for key in keys:
        accounted = [*unit_losses[key], *runs(unit_refused[key])]
        mark, row = await _advance_mark(session, key, marks.get(key), unit.held_seqs[key], accounted, now=now)
        outcome.marks[(key[0], key[1], UUID(key[2]))] = mark
        if row is not None:
            moved_marks[key] = row
    await _write_marks(session, moved_marks)
    return outcome


def _note_clock_issues(suspects: dict[GatewayKey, ClockSuspects], group: _Group, inserted: set[str] | None) -> None:
    """Count the group's flagged events that were stored now (not those another writer stored first).

    A group is one batch's: one gateway, counted once per issue rather than once per event (a gateway whose clock
    is off flags every event it sends).
    """
    flagged = group.flagged
    if inserted is not None:
        flagged = [(index, issue) for index, issue in flagged if group.ids[index] in inserted]
    if not flagged:
        return
    last = group.events[flagged[-1][0]]
    gateway = (last.store_id, last.gateway_id)
    noted = suspects.get(gateway)
    if noted is None:
        noted = suspects[gateway] = ClockSuspects(*gateway)
    for issue, count in Counter(issue for _, issue in flagged).items():
        noted.by_issue[issue] += count
    noted.device_ts, noted.sent_at, noted.received_at = last.ts, group.sent_at, group.received_at


async def _record_refused(session: AsyncSession, refused: Sequence[SetAside], *, now: datetime) -> None:
    """Keep the events set aside in refused_events; one row per position (a resent batch adds none)."""
    if not refused:
        return
    stmt = dialect_insert(session)(RefusedEvent).on_conflict_do_nothing(
        index_elements=[RefusedEvent.store_id, RefusedEvent.gateway_id, RefusedEvent.stream, RefusedEvent.seq]
    )
    await session.execute(
        stmt,
        [
            {
                "store_id": event.store_id,
                "gateway_id": event.gateway_id,
                "stream": None if event.stream is None else str(event.stream),
                "seq": event.seq,
                "event_id": event.event_id,
                "kind": event.kind,
                "reason": event.reason,
                "detail": clean_text(event.detail, REFUSED_DETAIL_CHARS),
                "event_json": payload_excerpt(event.event_json, limit=REFUSED_EVENT_BYTES),
                "received_at": event.received_at,
                "recorded_at": now,
            }
            for event in refused
        ],
    )


async def _count_stored(session: AsyncSession, stored_per_store: dict[str, int], *, now: datetime) -> None:
    """Add each store's newly stored events to its count, in one statement."""
    if not stored_per_store:
        return
    # Core executemany: the ORM would take an UPDATE with a list of parameters as an update by primary key.
    connection = await session.connection()
    await connection.execute(
        update(Store)
        .where(Store.store_id == bindparam("sid"))
        .values(
            event_count=Store.event_count + bindparam("stored", type_=BigInteger()),
            last_event_at=later(Store.last_event_at, bindparam("at", type_=UtcDateTime())),
        ),
        # In key order, so that concurrent writers lock the rows in the same order.
        [{"sid": store_id, "stored": stored_per_store[store_id], "at": now} for store_id in sorted(stored_per_store)],
    )


async def _judge_not_inserted(
    session: AsyncSession, missing: Sequence[tuple[wire.Event, StreamCounts, datetime]], rejections: list[Rejection]
) -> list[Position]:
    """Classify events the insert skipped; return the positions that are not held after all.

    Each was checked before the insert, so another writer got there first: the same event at the
    same position is a duplicate, anything else a conflict.
    """
    if not missing:
        return []
    by_id: dict[str, Position] = {}
    for chunk in chunks([str(event.event_id) for event, _, _ in missing], LOOKUP_CHUNK):
        found = await session.execute(
            select(
                StoredEvent.event_id, StoredEvent.store_id, StoredEvent.gateway_id, StoredEvent.stream, StoredEvent.seq
            ).where(StoredEvent.event_id.in_(chunk))
        )
        by_id.update({event_id: (store, gateway, stream, seq) for event_id, store, gateway, stream, seq in found})
    not_held: list[Position] = []
    for event, counts, received_at in missing:
        position = (event.store_id, event.gateway_id, str(event.stream), event.seq)
        held_at = by_id.get(str(event.event_id))
        if held_at == position:
            counts.duplicates += 1
        elif held_at is not None:
            rejections.append(_event_id_conflict(event, held_at, received_at))
            not_held.append(position)
        else:
            holder = (await _held_positions(session, position[:3], [event.seq])).get(event.seq)
            rejections.append(_seq_conflict(event, holder or "another event", received_at))
            if holder is None:
                not_held.append(position)
    return not_held


# --------------------------------------------------------------------------- data losses


async def _record_loss(session: AsyncSession, event: wire.Event, *, now: datetime) -> LossRecord:
    """Record a newly stored ``outbox.loss`` event's ranges, less seqs held or already recorded lost."""
    loss = wire.DataLoss.model_validate(event.payload)
    key = (event.store_id, event.gateway_id, str(event.stream))
    reported = merge((r.first, r.last) for r in loss.ranges)
    # A gateway reports only events it recorded before the report. Taking more would let the mark pass
    # events the gateway still holds, which it would then delete on the Ack.
    before = [(first, min(last, event.seq - 1)) for first, last in reported if first < event.seq]
    beyond = subtract(reported, before)
    reported = before
    new: list[Range] = []
    if reported:
        held = await _held_within(session, key, reported)
        recorded_before = await _losses_of(session, key, above=reported[0][0] - 1, up_to=reported[-1][1])
        new = subtract(reported, held + recorded_before)
    if new:
        await session.execute(
            insert(DataLossRecord),
            [
                {
                    "store_id": event.store_id,
                    "gateway_id": event.gateway_id,
                    "stream": key[2],
                    "first_seq": first,
                    "last_seq": last,
                    "count": last - first + 1,
                    "reason": loss.reason,
                    "detail": clean_text(loss.detail, LOSS_DETAIL_CHARS),
                    "by_kind": dict(loss.by_kind),
                    "event_id": str(event.event_id),
                    "reported_at": event.ts,
                    "recorded_at": now,
                }
                for first, last in new
            ],
        )
    return LossRecord(
        store_id=event.store_id,
        gateway_id=event.gateway_id,
        stream=key[2],
        event_id=str(event.event_id),
        reason=loss.reason,
        detail=loss.detail,
        reported=reported,
        recorded=new,
        ignored=beyond,
    )


# --------------------------------------------------------------------------- stream marks


async def _advance_mark(
    session: AsyncSession,
    key: StreamKey,
    mark: tuple[int, int] | None,
    unit_seqs: list[int],
    unit_accounted: list[Range],
    *,
    now: datetime,
) -> tuple[StreamMark, dict[str, Any] | None]:
    """Move the stream's mark over what is now stored, recorded lost or set aside; find the gaps above it.

    Also the gateway_streams row to write, if the stream has none or its mark moved.
    """
    through, top = mark if mark is not None else (0, 0)
    accounted = merge([*runs(unit_seqs), *unit_accounted])
    new_top = max(top, accounted[-1][1] if accounted else 0)
    if top <= through:
        # Nothing was held above the mark before this unit: the unit's own seqs tell everything.
        new_through = advance(through, accounted)
        found = gaps(new_through + 1, new_top, accounted)
    else:
        new_through, found = await _walk(session, key, through, new_top)
    row = None
    if mark is None or new_through > through or new_top > top:
        row = {
            "store_id": key[0],
            "gateway_id": key[1],
            "stream": key[2],
            "through_seq": new_through,
            "max_seq": new_top,
            "updated_at": now,
        }
    return StreamMark(new_through, found), row


async def _write_marks(session: AsyncSession, rows: dict[StreamKey, dict[str, Any]]) -> None:
    """Upsert the gateway_streams rows of the unit's moved marks, in one statement.

    One row per stream: a multi-row upsert must not reach a row twice (PostgreSQL refuses it).
    """
    if not rows:
        return
    stmt = dialect_insert(session)(GatewayStream)
    table = GatewayStream.__table__
    # Monotonic even if another hub process moved the mark meanwhile.
    upsert = stmt.on_conflict_do_update(
        index_elements=[GatewayStream.store_id, GatewayStream.gateway_id, GatewayStream.stream],
        set_={
            "through_seq": case(
                (table.c.through_seq < stmt.excluded.through_seq, stmt.excluded.through_seq),
                else_=table.c.through_seq,
            ),
            "max_seq": case((table.c.max_seq < stmt.excluded.max_seq, stmt.excluded.max_seq), else_=table.c.max_seq),
            "updated_at": stmt.excluded.updated_at,
        },
    )
    connection = await session.connection()
    # In key order, so that concurrent writers lock the rows in the same order.
    await connection.execute(upsert, [rows[key] for key in sorted(rows)])


async def _walk(session: AsyncSession, key: StreamKey, through: int, top: int) -> tuple[int, list[Range]]:
    """The mark and gaps of a stream with seqs held above ``through``, from the stored, lost and refused events."""
    losses = merge([*await _losses_of(session, key, above=through), *await _refused_of(session, key, above=through)])
    held: list[Range] = []
    last = through
    while True:
        chunk = (
            await session.scalars(
                select(StoredEvent.seq)
                .where(*_of_stream(StoredEvent, key), StoredEvent.seq > last)
                .order_by(StoredEvent.seq)
                .limit(CONTIGUITY_CHUNK)
            )
        ).all()
        held = merge([*held, *runs(chunk)])
        accounted = merge([*held, *losses])
        new_through = advance(through, accounted)
        if len(chunk) < CONTIGUITY_CHUNK:
            horizon = max(top, accounted[-1][1] if accounted else 0)
            return new_through, gaps(new_through + 1, horizon, accounted)
        last = chunk[-1]
        if new_through < last:  # the mark stops below what was read: it is final
            found = gaps(new_through + 1, last, accounted)
            if len(found) >= MAX_GAPS or last - new_through > GAP_SCAN_SEQS:
                return new_through, found
