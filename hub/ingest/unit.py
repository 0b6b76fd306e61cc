"""Storing one unit of work: a list of classified messages written in the caller's transaction, and their Acks.

:func:`store_messages` never commits and never touches MQTT: the consumer (:mod:`hub.ingest.consumer`)
commits the unit and only then publishes the Acks it computed, so nothing is acknowledged that is not stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from hub.commands.status import record_result
from hub.ingest.classify import BatchMessage, Classified, Cleared, HealthMessage, ResultMessage, StatusMessage
from hub.ingest.eventlog import LossRecord, store_batches
from hub.ingest.operations import HubOperations, OperationsOutcome
from hub.ingest.presence import Transition, apply_health, apply_status
from hub.ingest.rejections import Rejection, record_rejections
from storegate import wire


@dataclass(slots=True)
class UnitResult:
    """What one committed unit of work did, for metrics, logs and Acks."""

    acks: list[wire.Ack] = field(default_factory=list)
    stored: int = 0
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    moves: list[tuple[str, str, str]] = field(default_factory=list)
    losses: list[LossRecord] = field(default_factory=list)
    healths: list[wire.GatewayHealth] = field(default_factory=list)
    command_results: int = 0
    operations: list[OperationsOutcome] = field(default_factory=list)

    def extend(self, other: UnitResult) -> None:
        """Add another unit's results to this one."""
        self.acks += other.acks
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.rejections += other.rejections
        self.transitions += other.transitions
        self.moves += other.moves
        self.losses += other.losses
        self.healths += other.healths
        self.command_results += other.command_results
        self.operations += other.operations


async def store_messages(
    session: AsyncSession,
    items: Sequence[Classified],
    *,
    now: datetime,
    rejected_keep: int,
    operations: HubOperations | None = None,
) -> UnitResult:
    """Store every item in the caller's transaction and compute one Ack per (batch, stream).

    Each Ack carries the stream's contiguous mark and gaps after the whole unit. A batch whose
    events were all rejected as conflicts is still acknowledged: the agent would otherwise
    resend it forever, and the rejected events are kept in rejected_messages.
    """
    result = UnitResult()
    batches = [(item.batch, item.received_at) for item in items if isinstance(item, BatchMessage)]
    prepared = await operations.prepare(session, now=now) if operations is not None and batches else None
    events = await store_batches(session, batches, now=now, meanwhile=prepared.place if prepared else None)
    result.rejections += events.rejections
    result.losses += events.losses
    for outcome in events.batches:
        result.stored += outcome.stored
        result.duplicates += outcome.duplicates
        if outcome.moved_from is not None:
            result.moves.append((outcome.gateway_id, outcome.moved_from, outcome.store_id))
        for stream, counts in outcome.streams.items():
            mark = events.marks[(outcome.gateway_id, stream)]
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
                            f"no command {command_result.command_id} was sent to {command_result.gateway_id}",
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
        result.operations.append(
            await operations.apply(session, events.stored_events, result.transitions, now=now, prepared=prepared)
        )
    return result
