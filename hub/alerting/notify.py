"""Outbound alert notifications: an outbox table, the MQTT alert topic, and signed webhooks with retries.

Two halves, joined only by the database:

* :func:`record_notification` runs inside the alert code's transaction. It writes the notice
  (:class:`AlertNotice`) to ``notifications`` and one ``webhook_deliveries`` row per enabled webhook
  whose filters match, so a notice exists exactly when its transition was committed.
* :class:`NotificationDispatcher` is a background task that reads that outbox: it publishes each
  notice, in id order, at QoS 1 on ``storegate/alerts/{store_id}/{severity}`` and POSTs it to the
  webhooks, retrying with backoff until a 2xx or the last attempt.

Both deliveries are at least once: a notice may arrive twice (a lost PUBACK, a receiver that
answered after our timeout), never zero times while the hub runs; receivers dedupe by
``notification_id`` (MQTT) or the ``X-Storegate-Delivery`` header (webhooks).

Webhook signature (see docs/notifications.md)::

    X-Storegate-Timestamp: <unix seconds>
    X-Storegate-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>

:func:`verify_signature` checks it for receivers written in Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal, Protocol, get_args

import httpx
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import false, func, insert, select, true, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from hub.alerting.models import AlertRow, NotificationRow, Webhook, WebhookDelivery
from hub.db import writegate
from hub.db.engine import json_text, session_factory
from hub.db.writegate import NO_TURNS, WriteGate
from hub.domain.alerts import AlertStatus, Severity
from storegate import wire

log = structlog.get_logger(__name__)

NotificationEvent = Literal["alert.opened", "alert.acknowledged", "alert.escalated", "alert.resolved"]
NOTIFICATION_EVENTS: Final[tuple[NotificationEvent, ...]] = get_args(NotificationEvent)

DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled"]
DeliveryOutcome = Literal["delivered", "retry", "failed", "cancelled"]
DELIVERY_OUTCOMES: Final[tuple[DeliveryOutcome, ...]] = get_args(DeliveryOutcome)

ALERT_TOPIC_ROOT: Final = "storegate/alerts"
# Same rule as the wire contract's store ids: a topic segment without wildcards or slashes.
_TOPIC_SEGMENT: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

SIGNATURE_PREFIX: Final = "sha256="
# Webhook list cache: edits made through this process's API clear it at once; another hub process
# sees them within this many seconds.
WEBHOOK_CACHE_TTL_S: Final = 5.0
# A claimed delivery is retried this long after its attempt's timeout if no outcome was recorded
# (the hub stopped mid-request), so a crash neither loses it nor sends it twice at once.
CLAIM_MARGIN_S: Final = 30.0
# Bytes of a refused response's body kept in last_error, to say why without storing a whole page.
ERROR_EXCERPT_BYTES: Final = 200
# paho's wait_for_publish blocks a thread; waiting in slices keeps stop() prompt.
_PUBACK_WAIT_SLICE_S: Final = 0.25


# --------------------------------------------------------------------------- the notice


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


# --------------------------------------------------------------------------- signatures


def _signed_bytes(timestamp: int | str, body: bytes) -> bytes:
    return str(timestamp).encode() + b"." + body


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Storegate-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``{timestamp}.{body}``."""
    digest = hmac.new(secret.encode(), _signed_bytes(timestamp, body), hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(
    secret: str,
    timestamp: int | str,
    body: bytes | str,
    header: str | None,
    *,
    max_age_s: float | None = None,
    now: float | None = None,
) -> bool:
    """Whether ``header`` (X-Storegate-Signature) signs ``timestamp`` and ``body`` with ``secret``.

    Compares in constant time. With ``max_age_s``, also refuses a timestamp further than that from
    ``now`` (Unix seconds, default the current time), so a captured request cannot be replayed later.
    """
    if header is None or not header.startswith(SIGNATURE_PREFIX):
        return False
    raw = body.encode() if isinstance(body, str) else body
    expected = sign(secret, timestamp, raw)
    if not hmac.compare_digest(expected.encode(), header.strip().encode()):
        return False
    if max_age_s is None:
        return True
    try:
        sent = int(str(timestamp))
    except ValueError:
        return False
    return abs((time.time() if now is None else now) - sent) <= max_age_s


# --------------------------------------------------------------------------- recording (alert transaction)


@dataclass(frozen=True, slots=True)
class _WebhookTarget:
    """What recording needs of a webhook: its id and filters (never its secret)."""

    webhook_id: str
    store_ids: frozenset[str] | None
    events: frozenset[str] | None

    def wants(self, store_id: str, event: str) -> bool:
        return (self.store_ids is None or store_id in self.store_ids) and (self.events is None or event in self.events)


class _WebhookTargetCache:
    """Enabled webhooks per database engine, reloaded after a TTL or an :meth:`invalidate`.

    Recording runs on the ingest path for every alert transition; webhooks change rarely. Keyed by
    engine (weakly), so each database has its own list and the entry dies with its engine.
    """

    def __init__(self, *, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._entries: weakref.WeakKeyDictionary[Engine, tuple[float, tuple[_WebhookTarget, ...]]] = (
            weakref.WeakKeyDictionary()
        )
        self._generation = 0

    def invalidate(self) -> None:
        """Forget every cached list (a webhook was created or disabled)."""
        self._generation += 1
        self._entries.clear()

    async def targets(self, session: AsyncSession) -> tuple[_WebhookTarget, ...]:
        """The enabled webhooks of the session's database."""
        engine = session.get_bind().engine
        cached = self._entries.get(engine)
        if cached is not None and time.monotonic() - cached[0] < self._ttl_s:
            return cached[1]
        generation = self._generation
        loaded_at = time.monotonic()
        rows = await session.execute(
            select(Webhook.webhook_id, Webhook.store_ids, Webhook.events).where(Webhook.enabled == true())
        )
        targets = tuple(
            _WebhookTarget(
                webhook_id=webhook_id,
                store_ids=None if store_ids is None else frozenset(store_ids),
                events=None if events is None else frozenset(events),
            )
            for webhook_id, store_ids, events in rows
        )
        # A list read while a webhook was being changed may be stale: use it, but do not keep it.
        if generation == self._generation:
            self._entries[engine] = (loaded_at, targets)
        return targets


# Module-level because record_notification's signature (called by the alert code) has no place for
# it; it holds no connection and costs nothing until the first call.
_webhook_targets = _WebhookTargetCache(ttl_s=WEBHOOK_CACHE_TTL_S)


def invalidate_webhook_cache() -> None:
    """Make the next :func:`record_notification` read the webhooks again (call after changing them)."""
    _webhook_targets.invalidate()


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
    targets = [t for t in await _webhook_targets.targets(session) if t.wants(alert.store_id, event)]
    if targets:
        await session.execute(
            insert(WebhookDelivery),
            [
                {
                    "notification_id": notification_id,
                    "webhook_id": target.webhook_id,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                }
                for target in targets
            ],
        )


# --------------------------------------------------------------------------- the dispatcher


class NotificationSettings(BaseModel):
    """How the dispatcher delivers: webhook retries and timeouts, MQTT acknowledgement wait, polling."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retry_delays_s: tuple[float, ...] = Field(
        default=(5.0, 30.0, 120.0, 600.0, 3600.0),
        min_length=1,
        description="wait after the 1st, 2nd, ... failed attempt; the last one repeats if attempts remain",
    )
    max_attempts: int = Field(default=6, ge=1, le=100, description="attempts per delivery before it is failed")
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="per webhook request, connect to last byte")
    publish_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="how long to wait for the broker's PUBACK before trying again"
    )
    poll_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="look for work this often when not woken by notify()"
    )
    batch_size: int = Field(default=100, ge=1, le=10_000, description="rows read per pass")
    max_concurrent_requests: int = Field(default=8, ge=1, le=256, description="webhook requests in flight")

    @field_validator("retry_delays_s")
    @classmethod
    def _positive(cls, delays: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay <= 0 for delay in delays):
            raise ValueError("every retry delay must be more than 0 seconds")
        return delays

    def retry_delay(self, attempts: int) -> timedelta:
        """The wait after ``attempts`` failed attempts (1 is the first)."""
        return timedelta(seconds=self.retry_delays_s[min(attempts, len(self.retry_delays_s)) - 1])


class NotificationMetrics:
    """The dispatcher's Prometheus metrics, named ``storegate_hub_*`` like the rest of the hub's."""

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
        self.deliveries = Counter(
            "storegate_hub_webhook_deliveries",
            "webhook attempts by outcome: delivered, retry (failed, tried again later), failed (gave up), "
            "cancelled (webhook disabled)",
            ["outcome"],
            registry=registry,
        )
        for outcome in DELIVERY_OUTCOMES:  # every series from the start, so rate() sees the first failure
            self.deliveries.labels(outcome=outcome)
        self.pending = Gauge(
            "storegate_hub_webhook_deliveries_pending",
            "webhook deliveries waiting for their next attempt",
            registry=registry,
        )


class AlertLink(Protocol):
    """What the dispatcher needs of an MQTT connection (:class:`storegate.mqtt.MqttLink` has it)."""

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Any:
        """Queue a message; returns paho's MQTTMessageInfo."""
        ...


@dataclass(frozen=True, slots=True)
class _DueDelivery:
    """A delivery to attempt, with what the request needs."""

    notification_id: int
    webhook_id: str
    attempts: int  # attempts made before this one
    event: str
    body: dict[str, Any] = field(repr=False)
    url: str = field(repr=False)
    secret: str = field(repr=False)  # never in a repr, so never in a log line by accident
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class _AttemptResult:
    """How one webhook request ended."""

    ok: bool
    status_code: int | None
    error: str | None


def _one_line(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


def _describe(err: BaseException) -> str:
    """One line naming the error; a database error without its SQL and parameters."""
    cause = err.orig if isinstance(err, DBAPIError) and err.orig is not None else err
    lines = str(cause).strip().splitlines()
    text = _one_line(lines[0], 300) if lines else ""
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


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
        write_gate: WriteGate = NO_TURNS,
    ) -> None:
        self.settings = settings if settings is not None else NotificationSettings()
        self.metrics = NotificationMetrics(registry)
        self._sessions = session_factory(engine)
        self._gate = write_gate
        self._link = link
        self._clock = clock
        self._http: httpx.AsyncClient | None = None
        self._mqtt_wake = asyncio.Event()
        self._webhook_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._failing: set[str] = set()
        self._next_due: datetime | None = None  # of the earliest pending delivery, as of the last pass

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the two background loops."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._loop("mqtt", self.publish_pending, self._mqtt_wake, self._mqtt_wait)),
            asyncio.create_task(self._loop("webhooks", self.deliver_due, self._webhook_wake, self._webhook_wait)),
        ]

    def notify(self) -> None:
        """New notices were committed: look now rather than at the next poll."""
        self._mqtt_wake.set()
        self._webhook_wake.set()

    async def stop(self) -> None:
        """Stop the loops and close the HTTP client. A request cut short is retried after its claim expires."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _loop(
        self,
        name: str,
        one_pass: Callable[[], Awaitable[int]],
        wake: asyncio.Event,
        next_wait: Callable[[], Awaitable[float]],
    ) -> None:
        while True:
            wake.clear()  # before the pass: a notify() during it makes another pass
            try:
                await one_pass()
                delay = await next_wait()
            except Exception as err:  # a database outage: keep going, say so once
                if name not in self._failing:
                    self._failing.add(name)
                    log.warning("notification_pass_failed", loop=name, error=_describe(err))
                delay = self.settings.poll_interval_s
            else:
                if name in self._failing:
                    self._failing.discard(name)
                    log.info("notification_pass_recovered", loop=name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(delay, 0.01)):
                    await wake.wait()

    # ------------------------------------------------------------------ MQTT

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

    async def _mqtt_wait(self) -> float:
        return self.settings.poll_interval_s

    # ------------------------------------------------------------------ webhooks

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # No redirects: the signature is for the registered URL, and a 3xx is a misconfiguration.
            self._http = httpx.AsyncClient(timeout=self.settings.timeout_s, follow_redirects=False)
        return self._http

    async def deliver_due(self) -> int:
        """Attempt every delivery due now (up to ``batch_size``); return how many were attempted."""
        now = self._clock()
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(
                        WebhookDelivery.notification_id,
                        WebhookDelivery.webhook_id,
                        WebhookDelivery.attempts,
                        NotificationRow.event,
                        NotificationRow.body,
                        Webhook.url,
                        Webhook.secret,
                        Webhook.enabled,
                    )
                    .join(NotificationRow, NotificationRow.id == WebhookDelivery.notification_id)
                    .join(Webhook, Webhook.webhook_id == WebhookDelivery.webhook_id)
                    .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
                    .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.notification_id)
                    .limit(self.settings.batch_size)
                )
            ).all()
        due = [
            _DueDelivery(
                notification_id=notification_id,
                webhook_id=webhook_id,
                attempts=attempts,
                event=event,
                body=body,
                url=url,
                secret=secret,
                enabled=enabled,
            )
            for notification_id, webhook_id, attempts, event, body, url, secret, enabled in rows
        ]
        claimed = await self._claim(due, now=now)
        if claimed:
            limit = asyncio.Semaphore(self.settings.max_concurrent_requests)

            async def deliver(delivery: _DueDelivery) -> None:
                async with limit:
                    result = await self._attempt(delivery)
                await self._record(delivery, result)

            await asyncio.gather(*(deliver(d) for d in claimed))
        await self._count_pending()
        return len(claimed)

    async def _claim(self, due: list[_DueDelivery], *, now: datetime) -> list[_DueDelivery]:
        """Take the deliveries for this attempt: count it and push the next try past its timeout.

        The update only matches a row nobody else took since it was read, so two hub processes never
        send the same attempt. Deliveries of disabled webhooks are cancelled instead.
        """
        if not due:
            return []
        claim_until = now + timedelta(seconds=self.settings.timeout_s + CLAIM_MARGIN_S)
        claimed: list[_DueDelivery] = []
        outcomes: list[DeliveryOutcome] = []
        async with self._gate.turn(writegate.NOTIFICATIONS), self._sessions() as session, session.begin():
            for delivery in due:
                key = (
                    WebhookDelivery.notification_id == delivery.notification_id,
                    WebhookDelivery.webhook_id == delivery.webhook_id,
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.attempts == delivery.attempts,
                )
                if not delivery.enabled:
                    values: dict[str, Any] = {"status": "cancelled", "last_error": "the webhook was disabled"}
                    outcome: DeliveryOutcome | None = "cancelled"
                elif delivery.attempts >= self.settings.max_attempts:  # the hub stopped during the last one
                    values = {"status": "failed", "last_error": "no outcome recorded for the last attempt"}
                    outcome = "failed"
                else:
                    values = {"attempts": delivery.attempts + 1, "next_attempt_at": claim_until}
                    outcome = None
                result = await session.execute(
                    update(WebhookDelivery).where(*key).values(**values).execution_options(synchronize_session=False)
                )
                if getattr(result, "rowcount", 0) != 1:  # someone else took or changed it
                    continue
                if outcome is None:
                    claimed.append(delivery)
                else:
                    outcomes.append(outcome)
        for outcome in outcomes:
            self.metrics.deliveries.labels(outcome=outcome).inc()
        return claimed

    async def _attempt(self, delivery: _DueDelivery) -> _AttemptResult:
        """POST the notice, signed; never raises."""
        body = notice_bytes(delivery.body)
        timestamp = int(self._clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "storegate-hub",
            "X-Storegate-Event": delivery.event,
            "X-Storegate-Delivery": f"{delivery.notification_id}-{delivery.webhook_id}",
            "X-Storegate-Timestamp": str(timestamp),
            "X-Storegate-Signature": sign(delivery.secret, timestamp, body),
        }
        try:
            # httpx's timeout is per read; this bounds the whole exchange, a trickling receiver included.
            async with asyncio.timeout(self.settings.timeout_s):
                async with self._client().stream("POST", delivery.url, content=body, headers=headers) as response:
                    if 200 <= response.status_code < 300:
                        return _AttemptResult(ok=True, status_code=response.status_code, error=None)
                    excerpt = await _excerpt(response)
                    error = f"HTTP {response.status_code}" + (f": {excerpt}" if excerpt else "")
                    return _AttemptResult(ok=False, status_code=response.status_code, error=error)
        except TimeoutError:
            return _AttemptResult(ok=False, status_code=None, error=f"no answer within {self.settings.timeout_s:g} s")
        except Exception as err:  # connection refused, TLS, DNS, a broken response: all retried alike
            return _AttemptResult(ok=False, status_code=None, error=_describe(err))

    async def _record(self, delivery: _DueDelivery, result: _AttemptResult) -> None:
        """Store how the attempt ended: delivered, pending again with its next time, or failed."""
        attempts = delivery.attempts + 1
        finished = self._clock()
        conditions = [
            WebhookDelivery.notification_id == delivery.notification_id,
            WebhookDelivery.webhook_id == delivery.webhook_id,
        ]
        outcome: DeliveryOutcome
        if result.ok:
            outcome = "delivered"
            values: dict[str, Any] = {"status": "delivered", "delivered_at": finished, "last_error": None}
        else:
            # Not over a row cancelled meanwhile (webhook disabled): that stays cancelled.
            conditions.append(WebhookDelivery.status == "pending")
            values = {"last_error": result.error}
            if attempts >= self.settings.max_attempts:
                outcome = "failed"
                values["status"] = "failed"
            else:
                outcome = "retry"
                values["next_attempt_at"] = finished + self.settings.retry_delay(attempts)
        values["last_status_code"] = result.status_code
        try:
            async with self._gate.turn(writegate.NOTIFICATIONS), self._sessions() as session, session.begin():
                await session.execute(
                    update(WebhookDelivery)
                    .where(*conditions)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
        except Exception as err:  # the claim expires and the delivery is tried again
            log.warning(
                "webhook_outcome_not_recorded",
                webhook_id=delivery.webhook_id,
                notification_id=delivery.notification_id,
                error=_describe(err),
            )
            return
        self.metrics.deliveries.labels(outcome=outcome).inc()
        fields = {
            "webhook_id": delivery.webhook_id,
            "notification_id": delivery.notification_id,
            "attempts": attempts,
            "status_code": result.status_code,
        }
        if outcome == "failed":
            log.warning("webhook_delivery_failed", error=result.error, **fields)
        elif outcome == "retry":
            log.info("webhook_delivery_retry", error=result.error, next_attempt_at=values["next_attempt_at"], **fields)

    async def _count_pending(self) -> None:
        """Set the pending gauge and remember when the next delivery is due."""
        async with self._sessions() as session:
            count, earliest = (
                await session.execute(
                    select(func.count(), func.min(WebhookDelivery.next_attempt_at)).where(
                        WebhookDelivery.status == "pending"
                    )
                )
            ).one()
        self.metrics.pending.set(count)
        self._next_due = earliest

    async def _webhook_wait(self) -> float:
        """Seconds until the next pending delivery is due, at most ``poll_interval_s``."""
        if self._next_due is None:
            return self.settings.poll_interval_s
        wait = (self._next_due - self._clock()).total_seconds()
        return min(max(wait, 0.0), self.settings.poll_interval_s)


async def _excerpt(response: httpx.Response) -> str:
    """The start of a response body, on one line, without reading all of a large one."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data.extend(chunk)
        if len(data) >= ERROR_EXCERPT_BYTES:
            break
    return _one_line(bytes(data[:ERROR_EXCERPT_BYTES]).decode(errors="replace"), ERROR_EXCERPT_BYTES)
