"""Messages the hub refuses to store, kept for people to look at: the newest rows of ``rejected_messages``.

A rejected message is counted and logged by the consumer; here its topic, reason and first 2 KB are
written in the unit's transaction, and all but the newest ``keep`` rows are pruned so a bad sender
cannot fill the disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import PAYLOAD_EXCERPT_BYTES, TOPIC_LENGTH, RejectedMessage
from storegate import wire

# The highest seq that is a position: the database keeps seqs as 64-bit integers.
MAX_SEQ: Final = 2**63 - 1

DETAIL_MAX_CHARS: Final = 2000


def payload_excerpt(payload: bytes, *, limit: int = PAYLOAD_EXCERPT_BYTES) -> str:
    """The first ``limit`` bytes (2 KB) of a payload as text that any database accepts (no NUL characters)."""
    text = payload[:limit].decode("utf-8", errors="backslashreplace")
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


@dataclass(frozen=True, slots=True)
class SetAside:
    """An event of an enrolled gateway's batch that the hub will not store, and why; the rest of the batch is stored.

    ``stream`` and ``seq`` are the event's position where it could be read (a seq from 1 to 2**63 - 1):
    the position then counts as accounted for, like a recorded loss, so the stream's Ack moves past it.
    With a stream but no seq, the batch is still acknowledged with the stream's mark.
    """

    store_id: str
    gateway_id: str
    stream: UUID | None
    seq: int | None
    event_id: str | None
    kind: str | None
    reason: str
    detail: str
    event_json: bytes
    received_at: datetime

    @classmethod
    def of_event(cls, event: wire.Event, *, reason: str, detail: str, received_at: datetime) -> SetAside:
        """A valid event the hub cannot store (the database refused it)."""
        return cls(
            store_id=event.store_id,
            gateway_id=event.gateway_id,
            stream=event.stream,
            # A seq beyond a 64-bit integer is no position the hub can keep (nor one an agent hands out).
            seq=event.seq if event.seq <= MAX_SEQ else None,
            event_id=str(event.event_id),
            kind=event.kind,
            reason=reason,
            detail=detail,
            event_json=wire.encode(event),
            received_at=received_at,
        )


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
