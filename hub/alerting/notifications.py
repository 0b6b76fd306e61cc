"""Outbound alert notifications: recorded with the alert's transition, sent in the background.

Two halves, joined only by the database:

* :func:`record_notification` runs inside the alert code's transaction. It writes the notice
  (:class:`~hub.alerting.notices.AlertNotice`) to ``notifications`` and one ``webhook_deliveries`` row
  per enabled webhook whose filters match, so a notice exists exactly when its transition was committed.
* :class:`NotificationDispatcher` reads that outbox in the background: it publishes each notice on the
  MQTT alert topic (:class:`~hub.alerting.notices.NoticePublisher`) and POSTs it, signed, to the webhooks
  (:class:`~hub.alerting.webhooks.WebhookSender`), each in a loop of its own.

Both deliveries are at least once: a notice may arrive twice (a lost PUBACK, a receiver that
answered after our timeout), never zero times while the hub runs; receivers dedupe by
``notification_id`` (MQTT) or the ``X-Storegate-Delivery`` header (webhooks).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial

import structlog
from prometheus_client import CollectorRegistry
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from hub.alerting.egress import Resolver
from hub.alerting.models import AlertRow, NotificationRow
from hub.alerting.notices import AlertLink, NoticePublisher, NotificationEvent, alert_notice
from hub.alerting.notification_settings import NotificationSettings
from hub.alerting.secret_box import SecretBox
from hub.alerting.webhooks import WebhookSender, describe_failure, queue_deliveries
from hub.db.writegate import NO_TURNS, WriteGate
from storegate import wire
from storegate.tasks import BackgroundTask, wait_for_event

log = structlog.get_logger(__name__)


async def record_notification(
    session: AsyncSession,
    alert: AlertRow,
    event: NotificationEvent,
    *,
    now: datetime,
    level: int | None = None,
    actor: str | None = None,
    note: str | None = None,
) -> None:
    """Queue the notice of one alert transition, in the caller's transaction (never commits).

    ``alert`` must already hold its new state. Writes the notice and one pending delivery per
    enabled webhook whose store and event filters match; call the dispatcher's ``notify()`` after
    the commit so it goes out at once.
    """
    # The notice carries its own id, which exists only once the row does: insert, then fill the body.
    notification_id: int = (
        await session.execute(
            insert(NotificationRow)
            .values(
                event=event,
                alert_id=alert.alert_id,
                store_id=alert.store_id,
                body={},
                created_at=now,
                mqtt_published=False,
            )
            .returning(NotificationRow.id)
        )
    ).scalar_one()
    notice = alert_notice(
        alert, event, notification_id=notification_id, occurred_at=now, level=level, actor=actor, note=note
    )
    await session.execute(
        update(NotificationRow)
        .where(NotificationRow.id == notification_id)
        .values(body=notice.model_dump(mode="json"))
        .execution_options(synchronize_session=False)
    )
    await queue_deliveries(session, notification_id=notification_id, store_id=alert.store_id, event=event, now=now)


class NotificationDispatcher:
    """Publishes recorded notices on MQTT and delivers them to webhooks, in the background.

    ``start()`` runs two loops (MQTT and webhooks, so a dead broker never delays a webhook nor a slow
    receiver a publish); each wakes on :meth:`notify` and otherwise every ``poll_interval_s``.
    :meth:`publish_pending` and :meth:`deliver_due` are one pass each, callable directly.
    """

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        link: AlertLink,
        registry: CollectorRegistry,
        settings: NotificationSettings | None = None,
        clock: Callable[[], datetime] = wire.utc_now,
        secret_box: SecretBox,
        write_gate: WriteGate = NO_TURNS,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings if settings is not None else NotificationSettings()
        # N workers: only the leader sends (hub.ingest.shared.Leadership); one hub process always does.
        self._active = active
        self.notices = NoticePublisher(
            engine=engine, link=link, registry=registry, settings=self.settings, clock=clock, write_gate=write_gate
        )
        self.webhooks = WebhookSender(
            engine=engine,
            registry=registry,
            settings=self.settings,
            clock=clock,
            write_gate=write_gate,
            secret_box=secret_box,
            resolver=resolver,
            ssl_context=ssl_context,
        )
        self._mqtt_wake = asyncio.Event()
        self._webhook_wake = asyncio.Event()
        self._loops = (
            BackgroundTask(
                partial(self._loop, "mqtt", self.publish_pending, self._mqtt_wake, self.notices.next_wait),
                name="storegate-hub-notices",
            ),
            BackgroundTask(
                partial(self._loop, "webhooks", self.deliver_due, self._webhook_wake, self.webhooks.next_wait),
                name="storegate-hub-webhooks",
            ),
        )
        self._failing: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the two background loops; a no-op while they run."""
        if any(loop.running for loop in self._loops):
            return
        for loop in self._loops:
            loop.start()

    def notify(self) -> None:
        """New notices were committed: look now rather than at the next poll."""
        self._mqtt_wake.set()
        self._webhook_wake.set()

    async def stop(self) -> None:
        """Stop the loops and close the HTTP client. A request cut short is retried after its claim expires."""
        await asyncio.gather(*(loop.stop() for loop in self._loops))
        await self.webhooks.close()

    async def publish_pending(self) -> int:
        """One pass of the MQTT loop (:meth:`~hub.alerting.notices.NoticePublisher.publish_pending`)."""
        return await self.notices.publish_pending()

    async def deliver_due(self) -> int:
        """One pass of the webhook loop (:meth:`~hub.alerting.webhooks.WebhookSender.deliver_due`)."""
        return await self.webhooks.deliver_due()

    async def _loop(
        self,
        name: str,
        one_pass: Callable[[], Awaitable[int]],
        wake: asyncio.Event,
        next_wait: Callable[[], Awaitable[float]],
    ) -> None:
        while True:
            wake.clear()  # before the pass: a notify() during it makes another pass
            if not self._active():
                await wait_for_event(wake, self.settings.poll_interval_s)
                continue
            try:
                await one_pass()
                delay = await next_wait()
            except Exception as err:  # a database outage: keep going, say so once
                if name not in self._failing:
                    self._failing.add(name)
                    log.warning("notification_pass_failed", loop=name, error=describe_failure(err))
                delay = self.settings.poll_interval_s
            else:
                if name in self._failing:
                    self._failing.discard(name)
                    log.info("notification_pass_recovered", loop=name)
            await wait_for_event(wake, max(delay, 0.01))
