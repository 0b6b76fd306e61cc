"""What a running hub holds between startup and shutdown, kept on ``app.state.runtime``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.commands.sender import CommandPublisher
from hub.db.writegate import WriteGate
from hub.ingest.consumer import Ingestor
from hub.ingest.operations import HubOperations
from hub.metrics import HubMetrics
from hub.settings import HubSettings
from storegate.mqtt import MqttLink


@dataclass(frozen=True, slots=True)
class HubRuntime:
    """The long-lived objects of one hub app, created in its lifespan."""

    settings: HubSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    metrics: HubMetrics
    link: MqttLink
    ingestor: Ingestor
    started_at: datetime
    # Turns at SQLite's write lock for the consumer, the API's changes and the senders (a no-op on PostgreSQL).
    write_gate: WriteGate
    operations: HubOperations | None = None
    commands: CommandPublisher | None = None
