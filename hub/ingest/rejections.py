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

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import PAYLOAD_EXCERPT_BYTES, TOPIC_LENGTH, RejectedMessage

DETAIL_MAX_CHARS: Final = 2000


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
