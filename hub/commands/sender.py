"""Sending queued commands to gateways: pending ``commands`` rows published over MQTT and marked sent.

:class:`CommandPublisher` publishes pending rows on the gateway's ``commands`` topic at QoS 1 and marks
them ``sent``; a command past its expiry is marked ``expired`` instead (:mod:`hub.commands` says how a
command is queued, the statuses are written by :mod:`hub.commands.status`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, Protocol
from uuid import UUID

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.commands.status import EXPIRED_UNSENT, mark_sent, set_command_status
from hub.db import writegate
from hub.db.engine import session_factory
from hub.db.models import OutgoingCommand
from hub.db.writegate import NO_TURNS, WriteGate
from storegate import wire
from storegate.mqtt import QUEUED_RCS
from storegate.tasks import BackgroundTask, wait_for_event

log = structlog.get_logger(__name__)

POLL_S: Final = 1.0
BATCH: Final = 200


class Publisher(Protocol):
    """What the publisher needs of an MQTT link."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Any:
        """Queue a message."""
        ...


def to_wire(row: OutgoingCommand) -> wire.Command:
    """The MQTT message of a stored command."""
    return wire.Command(
        command_id=UUID(row.command_id),
        store_id=row.store_id,
        gateway_id=row.gateway_id,
        device_id=row.device_id,
        name=row.name,
        args=row.args,
        issued_at=row.issued_at,
        expires_at=row.expires_at,
    )


async def publish_pending(session: AsyncSession, link: Publisher, *, now: datetime) -> int:
    """Publish up to BATCH pending commands, oldest first, and mark them sent (or expired).

    The marks are written after the batch, in one statement per table: the write lock (SQLite has one
    for the whole database) is then held for two statements, not two per command, beside the consumer.
    """
    rows = (
        (
            await session.execute(
                select(OutgoingCommand)
                .where(OutgoingCommand.status == "pending")
                .order_by(OutgoingCommand.issued_at, OutgoingCommand.command_id)
                .limit(BATCH)
            )
        )
        .scalars()
        .all()
    )
    sent: list[str] = []
    expired: list[str] = []
    for row in rows:
        if row.expires_at is not None and row.expires_at <= now:
            expired.append(row.command_id)
            continue
        topic = wire.topic(row.store_id, row.gateway_id, wire.Channel.COMMANDS)
        info = link.publish(topic, wire.encode(to_wire(row)), qos=1)
        if getattr(info, "rc", 0) not in QUEUED_RCS:
            log.warning("command_publish_refused", command_id=row.command_id, rc=getattr(info, "rc", None))
            break  # try again on the next round, in order
        sent.append(row.command_id)
    if expired:
        await set_command_status(session, expired, "expired", detail=EXPIRED_UNSENT, at=now)
    if sent:
        await mark_sent(session, sent, at=now)
    return len(sent)


class CommandPublisher:
    """Publishes pending commands: woken by :meth:`notify` after a commit that queued some, else every second."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        link: Publisher,
        clock: Callable[[], datetime] = wire.utc_now,
        write_gate: WriteGate = NO_TURNS,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self._sessions: async_sessionmaker[AsyncSession] = session_factory(engine)
        self._gate = write_gate
        # N workers: only the leader publishes (hub.ingest.shared.Leadership); one hub process always does.
        self._active = active
        self._link = link
        self._clock = clock
        self._wake = asyncio.Event()
        self._sender = BackgroundTask(self._run, name="storegate-hub-commands")
        self.published = 0

    def notify(self) -> None:
        """Commands were queued: publish them now."""
        self._wake.set()

    def start(self) -> None:
        """Start publishing on the running loop."""
        self._sender.start()

    async def stop(self) -> None:
        """Stop publishing (pending commands stay pending for the next start)."""
        await self._sender.stop()

    async def _run(self) -> None:
        while True:
            await wait_for_event(self._wake, POLL_S)
            self._wake.clear()
            if not self._active():
                continue
            try:
                async with self._gate.turn(writegate.COMMANDS), self._sessions() as session, session.begin():
                    self.published += await publish_pending(session, self._link, now=self._clock())
            except Exception as err:  # the database may be away; the next round tries again
                log.warning("command_publish_failed", error=type(err).__name__, detail=str(err)[:200])
