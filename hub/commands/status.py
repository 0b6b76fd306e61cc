"""The status of each command in the database, and of the restock task that printed it.

``pending`` when queued, then ``sent`` or ``expired`` (:mod:`hub.commands.sender`), then the status of the
gateway's :class:`~storegate.wire.CommandResult`, which the consumer records with :func:`record_result`
in its unit of work. Each change is one UPDATE per table for a whole list of commands.

A status only moves forward (:data:`COMMAND_STEP`, :data:`PRINT_STEP`): ``pending`` → ``sent`` →
``accepted`` (the gateway stored a print job; the task's print status is ``queued``) → a final one
(``done``/``printed``, ``failed``, ``rejected``, ``expired``). Results arrive at least once and in no
promised order (an ``accepted`` published again after a reconnect may come after the ``done``), so an
UPDATE only touches rows whose status is an earlier step; the first final result stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.auth import audit
from hub.db.models import GatewayConfig, OutgoingCommand
from hub.fleet.configs import OPEN_STATUSES, config_status
from hub.inventory.models import RestockTask
from storegate import wire

log = structlog.get_logger(__name__)

# The detail of a command the sender found expired before it could be sent (hub.commands.sender).
EXPIRED_UNSENT: Final = "expired before it could be sent"
# These UPDATEs change rows by criteria: the ORM need not look for them among the session's objects.
_NO_SYNC: Final = {"synchronize_session": False}

# The step of each command status; a row moves only to a later step. Unlisted statuses are final.
COMMAND_STEP: Final[dict[str, int]] = {"pending": 0, "sent": 1, "accepted": 2}
# The same for a restock task's print status (``no_gateway`` never changes: the task has no command).
PRINT_STEP: Final[dict[str, int]] = {"pending": 0, "sent": 1, "queued": 2}
FINAL_STEP: Final = 3
# A command's status as the restock task that printed it shows it.
_PRINT_STATUS_OF: Final[dict[str, str]] = {"accepted": "queued", "done": "printed"}


def _earlier(steps: dict[str, int], status: str) -> list[str]:
    """The statuses a row may leave for ``status``: those of an earlier step."""
    step = steps.get(status, FINAL_STEP)
    return [name for name, earlier in steps.items() if earlier < step]


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
    """Set the status of commands, and the print status of the restock tasks that sent them, in one go.

    Only rows at an earlier step move: a late ``accepted`` never undoes a ``done``, and the first final
    status stays.
    """
    await session.execute(
        update(OutgoingCommand)
        .where(
            OutgoingCommand.command_id.in_(command_ids),
            OutgoingCommand.status.in_(_earlier(COMMAND_STEP, status)),
        )
        .values(status=status, result_detail=detail, result_at=at),
        execution_options=_NO_SYNC,
    )
    await config_results(session, command_ids, status, detail=detail, at=at)
    print_status = print_status_of(status)
    await session.execute(
        update(RestockTask)
        .where(
            RestockTask.command_id.in_(command_ids),
            RestockTask.print_status.in_(_earlier(PRINT_STEP, print_status)),
        )
        .values(print_status=print_status, print_detail=detail),
        execution_options=_NO_SYNC,
    )


async def config_results(
    session: AsyncSession, command_ids: Sequence[str], status: str, *, detail: str, at: datetime
) -> None:
    """Move the pushed configs these commands carry (``config.apply``) to ``status``'s config status, audited.

    Each change is a system entry of the audit log (actor: the gateway, or the hub for a push that expired
    unsent), as an operator's push is an entry of its request.
    """
    new_status = config_status(status, detail)
    allowed = ["pending"] if new_status == "accepted" else list(OPEN_STATUSES)
    rows = (
        (
            await session.execute(
                select(GatewayConfig).where(
                    GatewayConfig.command_id.in_(command_ids), GatewayConfig.status.in_(allowed)
                )
            )
        )
        .scalars()
        .all()
    )
    for row in rows:
        before = row.status
        row.status, row.detail, row.result_at = new_status, detail, at
        gateway = f"{row.store_id}/{row.gateway_id}"
        sent = status != "expired" or detail != EXPIRED_UNSENT
        session.add(
            audit.entry(
                audit.AuditEvent(
                    action=f"config.{new_status}",
                    actor=f"gateway:{gateway}" if sent else "hub",
                    actor_kind="gateway" if sent else "system",
                    outcome=new_status,
                    target=f"gateway-config:{gateway}/v{row.version}",
                    store_id=row.store_id,
                    before={"status": before},
                    after={"status": new_status, "version": row.version, "sha256": row.toml_sha256},
                    detail=detail,
                ),
                at=at,
            )
        )
        log.info("config_result", gateway=gateway, version=row.version, status=new_status, detail=detail[:200])


def print_status_of(status: str) -> str:
    """A restock task's print status for its command's status: ``accepted`` is ``queued``, ``done`` ``printed``."""
    return _PRINT_STATUS_OF.get(status, status)


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
