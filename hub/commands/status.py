"""The status of each command in the database, and of the restock task that printed it.

``pending`` when queued, then ``sent`` or ``expired`` (:mod:`hub.commands.sender`), then the status of the
gateway's :class:`~storegate.wire.CommandResult`, which the consumer records with :func:`record_result`
in its unit of work. Each change is one UPDATE per table for a whole list of commands.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db.models import OutgoingCommand
from hub.inventory.models import RestockTask
from storegate import wire

log = structlog.get_logger(__name__)

# These UPDATEs change rows by criteria: the ORM need not look for them among the session's objects.
_NO_SYNC: Final = {"synchronize_session": False}


async def mark_sent(session: AsyncSession, command_ids: Sequence[str], *, at: datetime) -> None:
    """Mark pending commands sent, and the print status of their restock tasks."""
    await session.execute(
        update(OutgoingCommand)
        .where(OutgoingCommand.command_id.in_(command_ids), OutgoingCommand.status == "pending")
        .values(status="sent", sent_at=at),
        execution_options=_NO_SYNC,
    )
    await session.execute(
        update(RestockTask)
        .where(RestockTask.command_id.in_(command_ids), RestockTask.print_status == "pending")
        .values(print_status="sent"),
        execution_options=_NO_SYNC,
    )


async def set_command_status(
    session: AsyncSession, command_ids: Sequence[str], status: str, *, detail: str, at: datetime
) -> None:
    """Set the status of commands, and the print status of the restock tasks that sent them, in one go."""
    await session.execute(
        update(OutgoingCommand)
        .where(OutgoingCommand.command_id.in_(command_ids))
        .values(status=status, result_detail=detail, result_at=at),
        execution_options=_NO_SYNC,
    )
    await session.execute(
        update(RestockTask)
        .where(RestockTask.command_id.in_(command_ids))
        .values(print_status=_print_status(status), print_detail=detail),
        execution_options=_NO_SYNC,
    )


def _print_status(status: str) -> str:
    return {"done": "printed"}.get(status, status)


async def record_result(session: AsyncSession, result: wire.CommandResult, *, now: datetime) -> bool:
    """Record a gateway's result for a command it was sent; False when no such command went to that gateway."""
    command_id = str(result.command_id)
    known = (
        await session.execute(
            select(OutgoingCommand.command_id).where(
                OutgoingCommand.command_id == command_id,
                OutgoingCommand.store_id == result.store_id,
                OutgoingCommand.gateway_id == result.gateway_id,
            )
        )
    ).scalar_one_or_none()
    if known is None:
        return False
    await set_command_status(session, [command_id], result.status, detail=result.detail, at=result.ts)
    log.info(
        "command_result",
        command_id=command_id,
        status=result.status,
        store_id=result.store_id,
        gateway_id=result.gateway_id,
    )
    return True
