"""What a running hub holds between startup and shutdown, kept on ``app.state.runtime``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.commands.sender import CommandPublisher
from hub.db.writegate import WriteGate
from hub.ingest.consumer import Ingestor
from hub.ingest.operations import HubOperations
from hub.ingest.shared import Leadership
from hub.metrics import HubMetrics
from hub.settings import HubSettings
from hub.snapshots.gateway_api import SnapshotService
from storegate.mqtt import MqttLink

if TYPE_CHECKING:  # the runner imports the reports, whose routes import hub.api.deps, which imports this
    from hub.releases.runner import RolloutRunner
    from hub.reports.schedules.runner import ScheduleRunner


@dataclass(frozen=True, slots=True)
class HubRuntime:
    """The long-lived objects of one hub app, created in its lifespan."""

    settings: HubSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    metrics: HubMetrics
    # None in an API process (role api): it neither consumes nor publishes (``link`` and ``ingestor`` raise).
    mqtt: MqttLink | None
    consumer: Ingestor | None
    started_at: datetime
    # Turns at SQLite's write lock for the consumer, the API's changes and the senders (a no-op on PostgreSQL).
    write_gate: WriteGate
    operations: HubOperations | None = None
    commands: CommandPublisher | None = None
    # N workers on a shared subscription: whether this one leads (runs the ticker and the senders).
    leadership: Leadership | None = None
    # Camera stills (hub.snapshots): None in a worker process (role worker), which serves no API.
    snapshots: SnapshotService | None = None
    # Report schedules (hub.reports.schedules): None in an API process, or with reports.schedules_enabled off.
    report_schedules: ScheduleRunner | None = None
    # Rollouts of agent releases (hub.releases): None in an API process.
    rollouts: RolloutRunner | None = None

    @property
    def link(self) -> MqttLink:
        """The MQTT connection of a process that consumes (roles all and worker)."""
        if self.mqtt is None:
            raise RuntimeError("an API process (role api) has no MQTT connection")
        return self.mqtt

    @property
    def ingestor(self) -> Ingestor:
        """The consumer of a process that consumes (roles all and worker)."""
        if self.consumer is None:
            raise RuntimeError("an API process (role api) has no consumer")
        return self.consumer
