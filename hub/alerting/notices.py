"""The alert notice: one alert transition as told to the outside world, and its MQTT alert topic.

:func:`alert_notice` builds the notice of a transition; :mod:`hub.alerting.notifications` records it in
the ``notifications`` table (the outbox) in the alert's transaction. :class:`NoticePublisher` reads that
outbox and publishes each notice, in id order, at QoS 1 on ``storegate/alerts/{store_id}/{severity}``,
marking it published only once the broker has acknowledged it: at least once, never zero times while
the hub runs; receivers dedupe by ``notification_id``. :func:`notice_bytes` are the exact bytes sent on
MQTT and to webhooks (:mod:`hub.alerting.webhooks`), which sign them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final, Literal, Protocol, get_args

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import false, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.alerting.models import AlertRow, NotificationRow
from hub.alerting.notification_settings import NotificationSettings
from hub.db import writegate
from hub.db.engine import json_text, session_factory
from hub.db.writegate import NO_TURNS, WriteGate
from hub.domain.alerts import AlertStatus, Severity
from storegate import wire

log = structlog.get_logger(__name__)

NotificationEvent = Literal["alert.opened", "alert.acknowledged", "alert.escalated", "alert.resolved"]
NOTIFICATION_EVENTS: Final[tuple[NotificationEvent, ...]] = get_args(NotificationEvent)

ALERT_TOPIC_ROOT: Final = "storegate/alerts"
# Same rule as the wire contract's store ids: a topic segment without wildcards or slashes.
_TOPIC_SEGMENT: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# paho's wait_for_publish blocks a thread; waiting in slices keeps stop() prompt.
_PUBACK_WAIT_SLICE_S: Final = 0.25


class NoticeSubject(BaseModel):
    """What the alert is about within the store, e.g. kind ``zone``, id ``chiller-1``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    id: str


class AlertNotice(BaseModel):
    """One alert transition as told to the outside world: the MQTT payload and the webhook body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = Field(default=1, description="version of this message; fields are only ever added")
    event: NotificationEvent
    notification_id: int = Field(description="unique and increasing per hub database: receivers dedupe by it")
    alert_id: str
    store_id: str
    rule_id: str
    rule_kind: str
    category: str = Field(description="security, environment or operations")
    subject: NoticeSubject
    severity: Severity
    status: AlertStatus = Field(description="the alert's status after this transition")
    message: str
    opened_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    resolution_note: str | None
    escalation_level: int = Field(description="0 until the first escalation")
    count: int = Field(description="signals folded into the alert so far")
    evidence: list[str] = Field(description="ids of the events behind the alert")
    snapshot_ref: str | None
    actor: str | None = Field(default=None, description="who made the transition, when a person did")
    note: str | None = Field(default=None, description="the note given with the transition, if any")
    occurred_at: datetime = Field(description="when the transition happened, UTC")


def alert_notice(
    alert: AlertRow,
    event: NotificationEvent,
    *,
    notification_id: int,
    occurred_at: datetime,
    level: int | None = None,
    actor: str | None = None,
    note: str | None = None,
) -> AlertNotice:
    """The notice of ``alert`` (already in its new state) for one transition."""
    return AlertNotice(
        event=event,
        notification_id=notification_id,
        alert_id=alert.alert_id,
        store_id=alert.store_id,
        rule_id=alert.rule_id,
        rule_kind=alert.rule_kind,
        category=alert.category,
        subject=NoticeSubject(kind=alert.subject_kind, id=alert.subject_id),
        severity=Severity(alert.severity),
        status=AlertStatus(alert.status),
        message=alert.message,
        opened_at=alert.opened_at,
        acknowledged_by=alert.acknowledged_by,
        acknowledged_at=alert.acknowledged_at,
        resolved_by=alert.resolved_by,
        resolved_at=alert.resolved_at,
        resolution_note=alert.resolution_note,
        escalation_level=level if level is not None else alert.escalation_level,
        count=alert.count,
        evidence=list(alert.evidence),
        snapshot_ref=alert.snapshot_ref,
        actor=actor,
        note=note,
        occurred_at=occurred_at,
    )


def alert_topic(store_id: str, severity: str) -> str:
    """``storegate/alerts/{store_id}/{severity}``; ValueError when a part is not a valid topic segment."""
    for name, segment in (("store id", store_id), ("severity", severity)):
        if not _TOPIC_SEGMENT.fullmatch(segment):
            raise ValueError(f"{name} {segment!r} cannot be an MQTT topic segment")
    return f"{ALERT_TOPIC_ROOT}/{store_id}/{severity}"


def notice_bytes(body: dict[str, Any]) -> bytes:
    """The exact bytes sent on MQTT and to webhooks (and signed) for a stored notice."""
    return json_text(body).encode()


# --------------------------------------------------------------------------- publishing the outbox on MQTT


class NoticeMetrics:
    """The notice publisher's Prometheus metrics, named ``storegate_hub_*`` like the rest of the hub's."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter(
            "storegate_hub_notifications_published",
            "alert notices the broker acknowledged on storegate/alerts/...",
            registry=registry,
        )
        self.unpublishable = Counter(
            "storegate_hub_notifications_unpublishable",
            "alert notices that can never be published (no valid topic); logged as errors",
            registry=registry,
        )
        self.unpublished = Gauge(
            "storegate_hub_notifications_unpublished",
            "alert notices waiting for the broker",
            registry=registry,
        )


class AlertLink(Protocol):
    """What the notice publisher needs of an MQTT connection (:class:`storegate.mqtt.MqttLink` has it)."""

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Any:
        """Queue a message; returns paho's MQTTMessageInfo."""
        ...


class NoticePublisher:
    """Publishes the recorded notices on MQTT, one pass per call (the dispatcher runs the passes)."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        link: AlertLink,
        registry: CollectorRegistry,
        settings: NotificationSettings,
        clock: Callable[[], datetime] = wire.utc_now,
        write_gate: WriteGate = NO_TURNS,
    ) -> None:
        self.settings = settings
        self.metrics = NoticeMetrics(registry)
        self._sessions = session_factory(engine)
        self._gate = write_gate
        self._link = link
        self._clock = clock

    async def publish_pending(self) -> int:
        """Publish unpublished notices in id order while the broker is connected; return how many it took.

        A notice is marked published only after the broker's PUBACK: marking on publish() would lose a
        notice that paho holds in memory if the hub stopped before sending it. Waiting is bounded by
        ``publish_timeout_s``; a notice not acknowledged in time stays unpublished, with everything after
        it, and is published again on the next pass (order kept; a duplicate is possible).
        """
        total = 0
        while self._link.connected:
            async with self._sessions() as session:
                rows = (
                    await session.execute(
                        select(NotificationRow.id, NotificationRow.store_id, NotificationRow.body)
                        .where(NotificationRow.mqtt_published == false())
                        .order_by(NotificationRow.id)
                        .limit(self.settings.batch_size)
                    )
                ).all()
            if not rows:
                break
            published, unpublishable, complete = await self._publish_batch(rows)
            if published or unpublishable:
                async with self._gate.turn(writegate.NOTIFICATIONS), self._sessions() as session, session.begin():
                    if published:
                        await session.execute(
                            update(NotificationRow)
                            .where(NotificationRow.id.in_(published))
                            .values(mqtt_published=True, mqtt_published_at=self._clock())
                        )
                    if unpublishable:  # published with no time: given up on, see the error log
                        await session.execute(
                            update(NotificationRow)
                            .where(NotificationRow.id.in_(unpublishable))
                            .values(mqtt_published=True, mqtt_published_at=None)
                        )
            self.metrics.published.inc(len(published))
            total += len(published)
            if not complete or len(rows) < self.settings.batch_size:
                break
        await self._count_unpublished()
        return total

    async def _publish_batch(self, rows: Sequence[Any]) -> tuple[list[int], list[int], bool]:
        """Publish ``rows``; the ids acknowledged (a prefix, in order), those impossible to publish, and
        whether the whole batch went through."""
        sent: list[tuple[int, Any]] = []
        unpublishable: list[int] = []
        complete = True
        for notification_id, store_id, body in rows:
            try:
                topic = alert_topic(store_id, str(body.get("severity", "")))
            except ValueError as err:
                log.error("notification_unpublishable", notification_id=notification_id, error=str(err))
                self.metrics.unpublishable.inc()
                unpublishable.append(notification_id)
                continue
            try:
                info = self._link.publish(topic, notice_bytes(body), qos=1, retain=False)
            except (ValueError, RuntimeError, OSError) as err:
                log.warning("notification_publish_refused", notification_id=notification_id, error=str(err))
                complete = False
                break
            if getattr(info, "rc", 0) != 0:  # the connection dropped since the check: try again later
                complete = False
                break
            sent.append((notification_id, info))
        deadline = asyncio.get_running_loop().time() + self.settings.publish_timeout_s
        acknowledged: list[int] = []
        for notification_id, info in sent:
            if not await self._acknowledged(info, deadline):
                log.info("notification_puback_missing", notification_id=notification_id)
                complete = False
                break
            acknowledged.append(notification_id)
        return acknowledged, unpublishable, complete

    async def _acknowledged(self, info: Any, deadline: float) -> bool:
        """Wait for the PUBACK of ``info`` until ``deadline`` (loop time), in a thread, in short slices."""
        loop = asyncio.get_running_loop()
        while not info.is_published():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.to_thread(info.wait_for_publish, min(remaining, _PUBACK_WAIT_SLICE_S))
            except (RuntimeError, ValueError):  # paho gave up on it
                return False
        return True

    async def _count_unpublished(self) -> None:
        async with self._sessions() as session:
            count = (
                await session.execute(
                    select(func.count()).select_from(NotificationRow).where(NotificationRow.mqtt_published == false())
                )
            ).scalar_one()
        self.metrics.unpublished.set(count)

    async def next_wait(self) -> float:
        """Seconds until the next pass when nothing wakes the loop: the poll interval."""
        return self.settings.poll_interval_s
