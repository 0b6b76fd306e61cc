"""Storing one unit of work: a list of classified messages written in the caller's transaction, and their Acks.

:func:`store_messages` never commits and never touches MQTT: the consumer (:mod:`hub.ingest.consumer`)
commits the unit and only then publishes the Acks it computed, so nothing is acknowledged that is not stored.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol

from sqlalchemy import false, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.commands.status import record_result
from hub.db.models import Store
from hub.fleet.registry import GatewayKey, admit
from hub.ingest.classify import (
    CHANNEL_OF,
    BatchMessage,
    Classified,
    Cleared,
    HealthMessage,
    ResultMessage,
    StatusMessage,
    message_of,
    sender_of,
)
from hub.ingest.clock import EventClockSettings
from hub.ingest.eventlog import DEFAULT_CLOCK, ClockSuspects, LossRecord, store_batches
from hub.ingest.operations import HubOperations, OperationsOutcome, Prepared
from hub.ingest.ordering import StreamKey, in_order, read_marks
from hub.ingest.presence import Transition, apply_health, apply_status
from hub.ingest.rejections import Rejection, SetAside, record_rejections
from storegate import wire

# Shared mode: how long after its receipt a batch above a gap of its stream may wait for the gap (hold_gapped).
ORDER_WAIT_S: Final = 2.0


@dataclass(slots=True)
class UnitResult:
    """What one committed unit of work did, for metrics, logs and Acks."""

    acks: list[wire.Ack] = field(default_factory=list)
    stored: int = 0
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    # Events of admitted batches set aside (refused_events) rather than stored.
    set_aside: list[SetAside] = field(default_factory=list)
    losses: list[LossRecord] = field(default_factory=list)
    healths: list[wire.GatewayHealth] = field(default_factory=list)
    command_results: int = 0
    operations: list[OperationsOutcome] = field(default_factory=list)
    # Events stored with a device time the hub does not believe, per gateway and unit.
    clock_suspects: list[ClockSuspects] = field(default_factory=list)
    # Shared mode: events stored above a gap of their stream, applied when it is filled (hub.ingest.ordering).
    held_for_order: int = 0
    # Shared mode: items of stores another worker held locked, neither stored nor acknowledged: the next unit's.
    deferred: list[Classified] = field(default_factory=list)

    def extend(self, other: UnitResult) -> None:
        """Add another unit's results to this one."""
        self.acks += other.acks
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.rejections += other.rejections
        self.transitions += other.transitions
        self.set_aside += other.set_aside
        self.losses += other.losses
        self.healths += other.healths
        self.command_results += other.command_results
        self.operations += other.operations
        self.clock_suspects += other.clock_suspects
        self.held_for_order += other.held_for_order
        self.deferred += other.deferred


class StoreLocker(Protocol):
    """Shared mode (N workers): the advisory locks of a unit's stores, in its transaction (hub.ingest.shared)."""

    async def __call__(self, session: AsyncSession, store_ids: Iterable[str]) -> None:
        """Wait for and take the locks of all these stores."""
        ...

    async def take(self, session: AsyncSession, store_ids: Collection[str]) -> set[str]:
        """Take the free ones; the stores locked (all of them, waited for, if none was free)."""
        ...


async def store_messages(
    session: AsyncSession,
    items: Sequence[Classified],
    *,
    now: datetime,
    rejected_keep: int,
    operations: HubOperations | None = None,
    accept_unknown_gateways: bool = False,
    clock: EventClockSettings = DEFAULT_CLOCK,
    store_locks: StoreLocker | None = None,
    defer_busy: bool = False,
) -> UnitResult:
    """Store every item in the caller's transaction and compute one Ack per (batch, stream).

    First the senders are admitted: everything from a gateway that is not enrolled (or was revoked) is
    refused as a rejection, and nothing of it is stored. Each Ack carries the stream's contiguous mark
    and gaps after the whole unit. A batch whose events were all rejected as conflicts or set aside is
    still acknowledged: the agent would otherwise resend it forever, and those events are kept (in
    rejected_messages and refused_events).

    ``store_locks`` (N workers on a shared subscription) locks the unit's stores before anything of theirs is
    written, and the events are then applied in each stream's seq order (:mod:`hub.ingest.ordering`). With
    ``defer_busy`` the items of stores another worker holds are left out, in ``deferred``, for the next unit.
    """
    result = UnitResult()
    items, result.rejections = await _admitted(session, items, accept_unknown=accept_unknown_gateways, now=now)
    marks_before = None
    stores: set[str] = set()
    if store_locks is not None:
        # As late as the unit allows: admission needs no lock; the marks and everything written below do.
        stores = {sender[0] for item in items if (sender := sender_of(item)) is not None}
        if defer_busy:
            locked = await store_locks.take(session, stores)
            if locked != stores:
                items, result.deferred = _split_by_store(items, locked)
                stores = locked
        else:
            await store_locks(session, stores)
        if any(isinstance(item, BatchMessage) for item in items):
            marks_before = await read_marks(session, stores)
            if defer_busy:
                items, gapped = hold_gapped(items, marks_before)
                result.deferred += gapped
    batch_items = [item for item in items if isinstance(item, BatchMessage)]
    batches = [(item.batch, item.received_at) for item in batch_items]
    prepared = await operations.prepare(session, now=now) if operations is not None and batches else None
    if operations is None:
        marks_before = None  # nothing is applied: no order to keep
    events = await store_batches(
        session,
        batches,
        now=now,
        meanwhile=prepared.place if prepared else None,
        set_aside=[item.set_aside for item in batch_items],
        clock=clock,
    )
    result.set_aside += [event for item in batch_items for event in item.set_aside]
    result.rejections += events.rejections
    result.losses += events.losses
    result.clock_suspects += events.clock_suspects.values()
    for outcome in events.batches:
        result.stored += outcome.stored
        result.duplicates += outcome.duplicates
        for stream, counts in outcome.streams.items():
            mark = events.marks[(outcome.store_id, outcome.gateway_id, stream)]
            result.acks.append(
                wire.Ack(
                    store_id=outcome.store_id,
                    gateway_id=outcome.gateway_id,
                    stream=stream,
                    through_seq=mark.through,
                    stored=counts.stored,
                    duplicates=counts.duplicates,
                    ts=now,
                    gaps=[wire.SeqRange(first=first, last=last) for first, last in mark.gaps],
                )
            )
    rejections: list[Rejection] = []
    for item in items:
        match item:
            case StatusMessage(status=status, retained=retained, received_at=received_at):
                transition = await apply_status(session, status, received_at=received_at, retained=retained, now=now)
                if transition is not None:
                    result.transitions.append(transition)
            case HealthMessage(health=health, retained=retained, received_at=received_at):
                await apply_health(session, health, received_at=received_at, retained=retained, now=now)
                result.healths.append(health)
            case ResultMessage(result=command_result, received_at=received_at):
                if await record_result(session, command_result, now=now):
                    result.command_results += 1
                else:
                    topic = wire.topic(command_result.store_id, command_result.gateway_id, wire.Channel.COMMAND_RESULTS)
                    rejections.append(
                        Rejection(
                            topic,
                            "unknown_command",
                            f"no command {command_result.command_id} was sent to "
                            f"{command_result.store_id}/{command_result.gateway_id}",
                            wire.encode(command_result),
                            received_at,
                        )
                    )
            case Rejection():
                rejections.append(item)
            case BatchMessage() | Cleared():
                pass
    await record_rejections(session, rejections + result.rejections, keep=rejected_keep)
    if operations is not None:
        to_apply = events.stored_events
        if marks_before is not None:
            order = await in_order(session, to_apply, marks_before, events.marks)
            to_apply, result.held_for_order = order.events, order.held
            if order.released and prepared is not None:  # events not placed during the insert: placed afresh
                prepared = Prepared(prepared.catalog)
        result.operations.append(
            await operations.apply(session, to_apply, result.transitions, now=now, prepared=prepared)
        )
    return result


def hold_gapped(
    items: Sequence[Classified], marks: Mapping[StreamKey, tuple[int, int]], *, wall: datetime | None = None
) -> tuple[list[Classified], list[Classified]]:
    """Shared mode: the items to store now, and the batches to hold for the next unit because they start above
    a gap of their stream that another worker is probably storing now (the broker deals a gateway's batches
    round-robin). Stored now, they would be applied only once the gap is filled, and the event log would walk
    their stream above its mark at every unit until then; held for a unit or two, they arrive in order.

    A batch is held at most ``ORDER_WAIT`` after the hub received it: a gap no worker fills (a lost message,
    which the gateway resends later) must not hold the stream back.
    """
    wall = wall or wire.utc_now()
    expected: dict[StreamKey, int] = {}  # stream -> the next seq in order, this unit's batches counted
    now_items: list[Classified] = []
    held: list[Classified] = []
    batches = sorted(
        (item for item in items if isinstance(item, BatchMessage)),
        key=lambda item: min((e.seq for e in item.batch.events), default=0),
    )
    gapped: set[int] = set()
    for item in batches:
        age = (wall - item.received_at).total_seconds()
        ranges: dict[StreamKey, tuple[int, int]] = {}
        for event in item.batch.events:
            key = (event.store_id, event.gateway_id, str(event.stream))
            low, high = ranges.get(key, (event.seq, event.seq))
            ranges[key] = (min(low, event.seq), max(high, event.seq))
        starts = {key: expected.get(key, marks.get(key, (0, 0))[0] + 1) for key in ranges}
        if 0 <= age < ORDER_WAIT_S and any(low > starts[key] for key, (low, _) in ranges.items()):
            gapped.add(id(item))
            continue
        for key, (_, high) in ranges.items():
            expected[key] = max(starts[key], high + 1)
    for each in items:
        (held if id(each) in gapped else now_items).append(each)
    return now_items, held


def _split_by_store(items: Sequence[Classified], locked: set[str]) -> tuple[list[Classified], list[Classified]]:
    """The items of the stores locked (and those of no store), and the others."""
    kept: list[Classified] = []
    others: list[Classified] = []
    for item in items:
        sender = sender_of(item)
        (kept if sender is None or sender[0] in locked else others).append(item)
    return kept, others


async def _admitted(
    session: AsyncSession, items: Sequence[Classified], *, accept_unknown: bool, now: datetime
) -> tuple[list[Classified], list[Rejection]]:
    """The items of gateways enrolled (and not revoked), and a rejection for each item of any other."""
    senders: set[GatewayKey] = {sender for item in items if (sender := sender_of(item)) is not None}
    refused = await admit(session, senders, accept_unknown=accept_unknown, now=now)
    if not refused:
        return list(items), []
    admitted: list[Classified] = []
    rejections: list[Rejection] = []
    for item in items:
        sender = sender_of(item)
        refusal = refused.get(sender) if sender is not None else None
        message = message_of(item)
        if sender is None or refusal is None or message is None:
            admitted.append(item)
            continue
        topic = wire.topic(*sender, CHANNEL_OF[type(item)])
        received_at = now if isinstance(item, Cleared) else item.received_at
        rejections.append(Rejection(topic, refusal.reason, refusal.detail, wire.encode(message), received_at))
    return admitted, rejections


async def find_unstorable(
    session: AsyncSession,
    item: BatchMessage,
    *,
    now: datetime,
    rejected_keep: int,
    operations: HubOperations | None = None,
    clock: EventClockSettings = DEFAULT_CLOCK,
    store_locks: StoreLocker | None = None,
) -> list[tuple[wire.Event, BaseException]]:
    """The events of a batch the database refuses, each with its error: the batch stored one event at a time.

    Each event is stored (and applied) alone in a savepoint, after the ones before it, as the whole batch
    would be. The caller rolls the transaction back and stores the batch again with these set aside.
    """
    if session.get_bind().dialect.name == "sqlite":
        # pysqlite opens a transaction only before a write: without one, the first savepoint would open it and
        # its release commit what the probe stored. This write (of no row) opens it first.
        await session.execute(update(Store).where(false()).values(event_count=Store.event_count))
    refused: list[tuple[wire.Event, BaseException]] = []
    for event in item.batch.events:
        single = wire.EventBatch.model_construct(
            v=item.batch.v,
            store_id=item.batch.store_id,
            gateway_id=item.batch.gateway_id,
            sent_at=item.batch.sent_at,
            events=[event],
        )
        try:
            async with session.begin_nested():
                await store_messages(
                    session,
                    [BatchMessage(single, item.received_at)],
                    now=now,
                    rejected_keep=rejected_keep,
                    operations=operations,
                    accept_unknown_gateways=True,  # admitted with the unit already
                    clock=clock,
                    store_locks=store_locks,
                )
        except Exception as err:  # drivers raise more than SQLAlchemyError (OverflowError, DataError, ...)
            refused.append((event, err))
    return refused
