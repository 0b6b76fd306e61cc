"""The background task that runs report schedules: plans due runs, claims deliveries, renders, sends, retries.

One pass (:meth:`ScheduleRunner.run_once`) does two things:

* **plan**: every enabled schedule whose ``next_run_at`` has come gets one ``report_deliveries`` row per run and
  channel, and its ``next_run_at`` moved past now, in one transaction that only succeeds if ``next_run_at`` is
  still what was read (two hub processes never plan the same run; the unique key (schedule, period, channel)
  backs that up). After downtime the newest ``reports.max_catch_up`` missed runs are planned, older ones skipped.
* **deliver**: each pending delivery that is due is claimed first (its attempt counted and its next try pushed past
  the attempt's time, only if nobody took it since it was read), then rendered and sent; the outcome is recorded:
  delivered, pending again after a backoff, or failed after ``reports.max_attempts``.

A delivered period is never sent again: its row says delivered, and a restart plans nothing that exists. An
attempt cut off by a crash (sent, but its outcome not recorded) is tried again once its claim expires, with the
same ``X-Storegate-Delivery`` and e-mail ``Message-ID`` so the receiver can drop the repeat; that is the one case
a receiver may see a period twice.

With N hub workers (docs/scaling.md) every worker starts the runner and only the leader
(:class:`hub.ingest.shared.Leadership`) runs its passes, like the notification senders; an API process (role
``api``) runs none.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal, cast

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from hub.alerting.egress import Resolver
from hub.alerting.egress_policy import EgressPolicy
from hub.alerting.secret_box import SecretBox, SecretKeyError, SecretUnreadable
from hub.alerting.webhooks import describe_failure
from hub.catalog.models import StoreProfile
from hub.db import writegate
from hub.db.engine import session_factory
from hub.db.writegate import NO_TURNS, WriteGate
from hub.metrics import HubMetrics
from hub.reports.schedules.delivery import DeliveryError, Envelope, WebhookPoster, email_message, send_email
from hub.reports.schedules.kinds import ReportDocument, ReportScope, renderer_of
from hub.reports.schedules.models import ReportDelivery, ReportSchedule
from hub.reports.schedules.timing import Cadence, When, due_runs, parse_local_time, zone_of
from hub.settings import HubSettings
from storegate import wire
from storegate.tasks import BackgroundTask, wait_for_event

log = structlog.get_logger(__name__)

Channel = Literal["webhook", "email"]
Outcome = Literal["delivered", "retry", "failed", "cancelled"]
# A claimed attempt is tried again this long after its send's timeout if no outcome was recorded (the hub stopped
# mid-attempt); rendering a large report counts in it too.
CLAIM_MARGIN_S: Final = 300.0
# Rows read per pass: schedules to plan, deliveries to attempt (sent one at a time: reports are large).
BATCH: Final = 50


def when_of(schedule: ReportSchedule) -> When:
    """The timing of a stored schedule (validated when it was created)."""
    return When(
        cadence=cast(Cadence, schedule.cadence),
        at=parse_local_time(schedule.local_time),
        zone=zone_of(schedule.timezone),
        weekday=schedule.weekday,
    )


def channels_of(schedule: ReportSchedule) -> list[Channel]:
    """Where a schedule sends: its webhook, its e-mail recipients, or both."""
    channels: list[Channel] = []
    if schedule.webhook_url is not None:
        channels.append("webhook")
    if schedule.email_to:
        channels.append("email")
    return channels


@dataclass(frozen=True, slots=True)
class _Due:
    """A delivery to attempt and its schedule, as read."""

    delivery: ReportDelivery
    schedule: ReportSchedule


class ScheduleRunner:
    """Runs the report schedules in the background: ``start()``, ``await stop()``; ``run_once()`` is one pass."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        settings: HubSettings,
        metrics: HubMetrics,
        secret_box: SecretBox,
        clock: Callable[[], datetime] = wire.utc_now,
        write_gate: WriteGate = NO_TURNS,
        active: Callable[[], bool] = lambda: True,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.reports
        self._metrics = metrics
        self._sessions = session_factory(engine)
        self._secret_box = secret_box
        self._clock = clock
        self._gate = write_gate
        self._active = active
        self._poster = WebhookPoster(
            policy=EgressPolicy.from_entries(settings.notifications.webhook_allowed_networks),
            timeout_s=self.config.timeout_s,
            resolver=resolver,
            ssl_context=ssl_context,
            on_refused=self._refused,
        )
        self._wake = asyncio.Event()
        self._task = BackgroundTask(self._loop, name="storegate-hub-report-schedules")
        self._failing_logged = False
        # Schedules whose last failing_after deliveries all failed: their names, for the gauge and the logs.
        self.failing: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the loop; a no-op while it runs."""
        if not self._task.running:
            self._task.start()

    def notify(self) -> None:
        """A schedule changed: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop the loop and close the HTTP client; an attempt cut short is tried again after its claim expires."""
        await self._task.stop()
        await self._poster.close()

    @property
    def running(self) -> bool:
        """Whether the loop is alive."""
        return self._task.running

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            if self._active():  # N workers: only the leader runs schedules
                try:
                    await self.run_once()
                except Exception as err:  # a database outage: keep going, say so once
                    if not self._failing_logged:
                        self._failing_logged = True
                        log.warning("report_schedules_pass_failed", error=describe_failure(err))
                else:
                    if self._failing_logged:
                        self._failing_logged = False
                        log.info("report_schedules_pass_recovered")
            await wait_for_event(self._wake, self.config.poll_interval_s)

    def _refused(self, host: str, problem: str) -> None:
        log.warning("report_webhook_target_refused", host=host, problem=problem)

    # ------------------------------------------------------------------ one pass

    async def run_once(self) -> tuple[int, int]:
        """Plan the runs due now and attempt the deliveries due now; (runs planned, deliveries attempted)."""
        planned = await self.plan_due()
        attempted = await self.deliver_due()
        return planned, attempted

    async def plan_due(self) -> int:
        """One delivery row per due run and channel of every enabled schedule; how many rows were made."""
        now = self._clock()
        async with self._sessions() as session:
            schedules = (
                await session.scalars(
                    select(ReportSchedule)
                    .where(ReportSchedule.enabled.is_(True), ReportSchedule.next_run_at <= now)
                    .order_by(ReportSchedule.next_run_at)
                    .limit(BATCH)
                )
            ).all()
        made = 0
        for schedule in schedules:
            try:
                made += await self._plan(schedule, now)
            except IntegrityError:  # another process planned the same run meanwhile: it is planned
                log.info("report_run_planned_elsewhere", schedule_id=schedule.schedule_id)
        return made

    async def _plan(self, schedule: ReportSchedule, now: datetime) -> int:
        when = when_of(schedule)
        due = due_runs(when, schedule.next_run_at, now, max_catch_up=self.config.max_catch_up)
        made = 0
        async with self._gate.turn(writegate.NOTIFICATIONS), self._sessions() as session, session.begin():
            moved = await session.execute(
                update(ReportSchedule)
                .where(
                    ReportSchedule.schedule_id == schedule.schedule_id,
                    ReportSchedule.next_run_at == schedule.next_run_at,
                    ReportSchedule.enabled.is_(True),
                )
                .values(next_run_at=due.next_run_at)
                .execution_options(synchronize_session=False)
            )
            if getattr(moved, "rowcount", 0) != 1:  # planned by another process, paused or deleted meanwhile
                return 0
            for fire in due.fires:
                first_day, last_day = when.period_of(fire)
                for channel in channels_of(schedule):
                    exists = await session.scalar(
                        select(ReportDelivery.id).where(
                            ReportDelivery.schedule_id == schedule.schedule_id,
                            ReportDelivery.period_start == first_day,
                            ReportDelivery.channel == channel,
                        )
                    )
                    if exists is not None:
                        continue
                    session.add(
                        ReportDelivery(
                            schedule_id=schedule.schedule_id,
                            period_start=first_day,
                            period_end=last_day,
                            channel=channel,
                            status="pending",
                            attempts=0,
                            next_attempt_at=now,
                            scheduled_for=fire,
                            created_at=now,
                        )
                    )
                    made += 1
        if due.skipped:
            self._metrics.report_runs_skipped.inc(due.skipped)
            log.warning(
                "report_runs_skipped",
                schedule_id=schedule.schedule_id,
                skipped=due.skipped,
                why=f"missed while the hub was down; only the newest {self.config.max_catch_up} are sent",
            )
        return made

    async def deliver_due(self) -> int:
        """Claim and attempt every delivery due now (up to a batch); how many were attempted."""
        now = self._clock()
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(ReportDelivery, ReportSchedule)
                    .join(ReportSchedule, ReportSchedule.schedule_id == ReportDelivery.schedule_id)
                    .where(ReportDelivery.status == "pending", ReportDelivery.next_attempt_at <= now)
                    .order_by(ReportDelivery.next_attempt_at, ReportDelivery.id)
                    .limit(BATCH)
                )
            ).all()
            session.expunge_all()
        claimed = await self._claim([_Due(delivery, schedule) for delivery, schedule in rows], now=now)
        for due in claimed:
            await self._attempt(due)
        return len(claimed)

    async def _claim(self, due: list[_Due], *, now: datetime) -> list[_Due]:
        """Take the deliveries for this attempt: count it and push the next try past its time, if nobody took it."""
        if not due:
            return []
        claim_until = now + timedelta(seconds=self.config.timeout_s + CLAIM_MARGIN_S)
        claimed: list[_Due] = []
        ended: list[tuple[_Due, Outcome]] = []
        async with self._gate.turn(writegate.NOTIFICATIONS), self._sessions() as session, session.begin():
            for item in due:
                delivery = item.delivery
                values: dict[str, Any]
                outcome: Outcome | None = None
                if delivery.attempts >= self.config.max_attempts:  # the hub stopped during the last attempt
                    values = {"status": "failed", "last_error": "no outcome recorded for the last attempt"}
                    outcome = "failed"
                else:
                    values = {"attempts": delivery.attempts + 1, "next_attempt_at": claim_until}
                result = await session.execute(
                    update(ReportDelivery)
                    .where(
                        ReportDelivery.id == delivery.id,
                        ReportDelivery.status == "pending",
                        ReportDelivery.attempts == delivery.attempts,
                    )
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if getattr(result, "rowcount", 0) != 1:  # another process took it, or it was cancelled
                    continue
                if outcome is None:
                    claimed.append(item)
                else:
                    ended.append((item, outcome))
        for item, outcome in ended:
            self._metrics.report_deliveries.labels(channel=item.delivery.channel, outcome=outcome).inc()
        return claimed

    async def _render(self, schedule: ReportSchedule, delivery: ReportDelivery) -> ReportDocument:
        renderer = renderer_of(schedule.kind, schedule.format)
        if renderer is None:
            raise DeliveryError(f"this hub has no {schedule.format} renderer of the report kind {schedule.kind!r}")
        async with self._sessions() as session:
            scope = await self._scope(session, schedule, delivery)
            try:
                document = await renderer(session, scope, now=self._clock(), settings=self.settings)
            except Exception as err:
                raise DeliveryError(f"cannot render the report: {describe_failure(err)}") from err
        return document

    async def _scope(self, session: AsyncSession, schedule: ReportSchedule, delivery: ReportDelivery) -> ReportScope:
        if schedule.store_scope == "all":
            store_ids: tuple[str, ...] | None = None
            label = "all"
        elif schedule.store_scope == "region":
            region = schedule.region or ""
            store_ids = tuple(
                (await session.scalars(select(StoreProfile.store_id).where(StoreProfile.region == region))).all()
            )
            label = region
        else:
            store_ids = tuple(schedule.store_ids or ())
            label = store_ids[0] if len(store_ids) == 1 else "stores"
        return ReportScope(
            store_ids=store_ids, first_day=delivery.period_start, last_day=delivery.period_end, label=label
        )

    async def _send(self, schedule: ReportSchedule, delivery: ReportDelivery, document: ReportDocument) -> None:
        envelope = Envelope(
            delivery_id=delivery.id,
            schedule_id=schedule.schedule_id,
            schedule_name=schedule.name,
            kind=schedule.kind,
            output=schedule.format,
            first_day=delivery.period_start.isoformat(),
            last_day=delivery.period_end.isoformat(),
        )
        if delivery.channel == "webhook":
            if schedule.webhook_url is None or schedule.webhook_secret_sealed is None:
                raise DeliveryError("the schedule has no webhook any more")
            try:
                secret = self._secret_box.unseal(schedule.webhook_secret_sealed)
            except (SecretUnreadable, SecretKeyError) as err:
                raise DeliveryError(f"not sent: {err}") from None
            await self._poster.post(schedule.webhook_url, secret, envelope, document)
            return
        smtp = self.config.smtp
        if smtp is None:
            raise DeliveryError("no SMTP server is configured ([reports.smtp]); e-mail cannot be sent")
        recipients = list(schedule.email_to or ())
        if not recipients:
            raise DeliveryError("the schedule has no e-mail recipients any more")
        message = email_message(smtp, recipients, envelope, document, hub_name=self.settings.client_id)
        await send_email(smtp, message, recipients)

    async def _attempt(self, due: _Due) -> None:
        """Render and send one claimed delivery, then record how it ended; never raises but for cancellation."""
        delivery, schedule = due.delivery, due.schedule
        started = self._clock()
        document: ReportDocument | None = None
        error: str | None = None
        try:
            document = await self._render(schedule, delivery)
            if len(document.body) > self.config.max_document_bytes:
                raise DeliveryError(
                    f"the report is {len(document.body)} bytes, more than reports.max_document_bytes "
                    f"({self.config.max_document_bytes}); not sent"
                )
            await self._send(schedule, delivery, document)
        except DeliveryError as err:
            error = str(err)
        except Exception as err:  # a bug or the database: recorded in words, retried like any failure
            error = describe_failure(err)
        await self._record(due, started=started, document=document, error=error)

    async def _record(
        self, due: _Due, *, started: datetime, document: ReportDocument | None, error: str | None
    ) -> None:
        delivery = due.delivery
        attempts = delivery.attempts + 1
        finished = self._clock()
        values: dict[str, Any] = {"last_attempt_at": started}
        if document is not None:
            values["filename"] = document.filename[:255]
            values["bytes"] = len(document.body)
        outcome: Outcome
        if error is None:
            outcome = "delivered"
            values.update(status="delivered", delivered_at=finished, last_error=None)
        else:
            values["last_error"] = error[:1000]
            if attempts >= self.config.max_attempts:
                outcome = "failed"
                values["status"] = "failed"
            else:
                outcome = "retry"
                values["next_attempt_at"] = finished + self.config.retry_delay(attempts)
        try:
            async with self._gate.turn(writegate.NOTIFICATIONS), self._sessions() as session, session.begin():
                await session.execute(
                    update(ReportDelivery)
                    .where(ReportDelivery.id == delivery.id, ReportDelivery.status == "pending")
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
        except Exception as err:  # the claim expires and the delivery is tried again
            log.warning("report_outcome_not_recorded", delivery_id=delivery.id, error=describe_failure(err))
            return
        self._metrics.report_deliveries.labels(channel=delivery.channel, outcome=outcome).inc()
        fields = {
            "schedule_id": due.schedule.schedule_id,
            "delivery_id": delivery.id,
            "channel": delivery.channel,
            "attempts": attempts,
        }
        if outcome == "delivered":
            log.info("report_delivered", bytes=values.get("bytes"), **fields)
        elif outcome == "retry":
            log.info("report_delivery_retry", error=error, next_attempt_at=values["next_attempt_at"], **fields)
        else:
            log.warning("report_delivery_failed", error=error, **fields)
        if outcome in ("delivered", "failed"):
            await self._update_failing(due.schedule)

    async def _update_failing(self, schedule: ReportSchedule) -> None:
        """Whether the schedule's last ``failing_after`` finished deliveries all failed; the gauge follows."""
        async with self._sessions() as session:
            last = (
                await session.scalars(
                    select(ReportDelivery.status)
                    .where(
                        ReportDelivery.schedule_id == schedule.schedule_id,
                        ReportDelivery.status.in_(("delivered", "failed")),
                    )
                    .order_by(ReportDelivery.id.desc())
                    .limit(self.config.failing_after)
                )
            ).all()
        if len(last) == self.config.failing_after and all(status == "failed" for status in last):
            if schedule.schedule_id not in self.failing:
                log.warning("report_schedule_failing", schedule_id=schedule.schedule_id, failed=len(last))
            self.failing[schedule.schedule_id] = schedule.name
        else:
            self.failing.pop(schedule.schedule_id, None)
        self._metrics.report_schedules_failing.set(len(self.failing))
