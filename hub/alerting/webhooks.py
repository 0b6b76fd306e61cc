"""Signed webhooks: each alert notice POSTed to the webhooks that want it, with retries and backoff.

Recording a notice (:mod:`hub.alerting.notifications`) queues one ``webhook_deliveries`` row per enabled
webhook whose filters match (:func:`queue_deliveries`), in the alert's transaction. :class:`WebhookSender`
attempts the deliveries due, a pass at a time, retrying with backoff until a 2xx or the last attempt:
at least once; receivers dedupe by the ``X-Storegate-Delivery`` header.

Webhook signature (see docs/notifications.md)::

    X-Storegate-Timestamp: <unix seconds>
    X-Storegate-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>

:func:`verify_signature` checks it for receivers written in Python.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal, get_args

import httpx
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import func, insert, select, true, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from hub.alerting.egress import GuardedBackend, GuardedTransport, Resolver
from hub.alerting.egress_policy import EgressPolicy
from hub.alerting.models import NotificationRow, Webhook, WebhookDelivery
from hub.alerting.notices import notice_bytes
from hub.alerting.notification_settings import NotificationSettings
from hub.alerting.secret_box import SecretBox, SecretKeyError, SecretUnreadable
from hub.db import writegate
from hub.db.engine import session_factory
from hub.db.writegate import NO_TURNS, WriteGate
from storegate import wire

log = structlog.get_logger(__name__)

DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled"]
DeliveryOutcome = Literal["delivered", "retry", "failed", "cancelled"]
DELIVERY_OUTCOMES: Final[tuple[DeliveryOutcome, ...]] = get_args(DeliveryOutcome)

SIGNATURE_PREFIX: Final = "sha256="
# Webhook list cache: edits made through this process's API clear it at once; another hub process
# sees them within this many seconds.
WEBHOOK_CACHE_TTL_S: Final = 5.0
# A claimed delivery is retried this long after its attempt's timeout if no outcome was recorded
# (the hub stopped mid-request), so a crash neither loses it nor sends it twice at once.
CLAIM_MARGIN_S: Final = 30.0


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


# Libraries whose INFO and DEBUG lines carry what must not be logged: httpx and httpcore print each request's
# full URL (whose query may hold a receiver's token), aiosqlite every statement with its parameters (a webhook's
# URL as it is stored). The hub logs its own lines, by id.
LEAKY_LOGGERS: Final = ("httpx", "httpcore", "aiosqlite")


def quiet_leaky_library_logs() -> None:
    """Raise the loggers of :data:`LEAKY_LOGGERS` to WARNING; their warnings and errors still pass."""
    for name in LEAKY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


# --------------------------------------------------------------------------- queueing (alert transaction)


@dataclass(frozen=True, slots=True)
class _WebhookTarget:
    """What queueing a delivery needs of a webhook: its id and filters (never its secret)."""

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


# Module-level because record_notification's signature (called by the alert code), and so queue_deliveries',
# has no place for it; it holds no connection and costs nothing until the first call.
_webhook_targets = _WebhookTargetCache(ttl_s=WEBHOOK_CACHE_TTL_S)


def invalidate_webhook_cache() -> None:
    """Make the next :func:`queue_deliveries` read the webhooks again (call after changing them)."""
    _webhook_targets.invalidate()


async def queue_deliveries(
    session: AsyncSession, *, notification_id: int, store_id: str, event: str, now: datetime
) -> None:
    """One pending delivery of a recorded notice per enabled webhook whose store and event filters match."""
    targets = [t for t in await _webhook_targets.targets(session) if t.wants(store_id, event)]
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


# --------------------------------------------------------------------------- the sender


class WebhookMetrics:
    """The webhook sender's Prometheus metrics, named ``storegate_hub_*`` like the rest of the hub's."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "storegate_hub_webhook_deliveries",
            "webhook attempts by outcome: delivered, retry (failed, tried again later), failed (gave up), "
            "cancelled (webhook disabled)",
            ["outcome"],
            registry=registry,
        )
        for outcome in DELIVERY_OUTCOMES:  # every series from the start, so rate() sees the first failure
            self.deliveries.labels(outcome=outcome)
        self.targets_refused = Counter(
            "storegate_hub_webhook_targets_refused",
            "webhook connections refused because the host is or resolves to an address that is not public "
            "(loopback, private, link-local, ...) and not allow-listed",
            registry=registry,
        )
        self.pending = Gauge(
            "storegate_hub_webhook_deliveries_pending",
            "webhook deliveries waiting for their next attempt",
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class _DueDelivery:
    """A delivery to attempt, with what the request needs."""

    notification_id: int
    webhook_id: str
    attempts: int  # attempts made before this one
    event: str
    body: dict[str, Any] = field(repr=False)
    url: str = field(repr=False)
    # Sealed (hub.alerting.secret_box), or plain text from before migration 0007 until the hub seals it;
    # never in a repr, so never in a log line by accident.
    secret_sealed: str | None = field(repr=False)
    legacy_secret: str = field(repr=False)
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class _AttemptResult:
    """How one webhook request ended."""

    ok: bool
    status_code: int | None
    error: str | None
    started_at: datetime
    duration_ms: int


def _one_line(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


def describe_failure(err: BaseException) -> str:
    """One line naming the error; a database error without its SQL and parameters."""
    cause = err.orig if isinstance(err, DBAPIError) and err.orig is not None else err
    lines = str(cause).strip().splitlines()
    text = _one_line(lines[0], 300) if lines else ""
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


class WebhookSender:
    """Attempts the webhook deliveries that are due, one pass per call (the dispatcher runs the passes)."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        registry: CollectorRegistry,
        settings: NotificationSettings,
        clock: Callable[[], datetime] = wire.utc_now,
        secret_box: SecretBox,
        write_gate: WriteGate = NO_TURNS,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = WebhookMetrics(registry)
        self._secret_box = secret_box
        self._policy = EgressPolicy.from_entries(settings.webhook_allowed_networks)
        self._resolver = resolver  # None: the system's; tests play DNS with their own
        self._ssl_context = ssl_context  # None: the system's trusted CAs
        quiet_leaky_library_logs()
        self._sessions = session_factory(engine)
        self._gate = write_gate
        self._clock = clock
        self._http: httpx.AsyncClient | None = None
        self._next_due: datetime | None = None  # of the earliest pending delivery, as of the last pass

    async def close(self) -> None:
        """Close the HTTP client (a later pass opens a new one)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            backend = GuardedBackend(policy=self._policy, resolver=self._resolver, on_refused=self._refused)
            # No redirects: the signature is for the registered URL, a 3xx is a misconfiguration, and a
            # redirect could point anywhere. No proxy from the environment: it would connect unchecked.
            self._http = httpx.AsyncClient(
                transport=GuardedTransport(backend=backend, ssl_context=self._ssl_context),
                timeout=self.settings.timeout_s,
                follow_redirects=False,
                trust_env=False,
            )
        return self._http

    def _refused(self, host: str, problem: str) -> None:
        self.metrics.targets_refused.inc()
        log.warning("webhook_target_refused", host=host, problem=problem)

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
                        Webhook.secret_sealed,
                        Webhook.legacy_secret,
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
                secret_sealed=sealed,
                legacy_secret=legacy,
                enabled=enabled,
            )
            for notification_id, webhook_id, attempts, event, body, url, sealed, legacy, enabled in rows
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

    def _secret_of(self, delivery: _DueDelivery) -> str:
        if delivery.secret_sealed is not None:
            return self._secret_box.unseal(delivery.secret_sealed)
        if delivery.legacy_secret:
            return delivery.legacy_secret
        raise SecretUnreadable("the webhook has no secret")

    async def _attempt(self, delivery: _DueDelivery) -> _AttemptResult:
        """POST the notice, signed; never raises. Times the exchange; keeps the status, never the body."""
        started_at = self._clock()
        started = time.monotonic()

        def ended(*, ok: bool, status_code: int | None, error: str | None) -> _AttemptResult:
            duration_ms = round((time.monotonic() - started) * 1000)
            return _AttemptResult(
                ok=ok, status_code=status_code, error=error, started_at=started_at, duration_ms=duration_ms
            )

        try:
            secret = self._secret_of(delivery)
        except (SecretUnreadable, SecretKeyError) as err:
            return ended(ok=False, status_code=None, error=f"not sent: {err}")
        body = notice_bytes(delivery.body)
        timestamp = int(started_at.timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "storegate-hub",
            "X-Storegate-Event": delivery.event,
            "X-Storegate-Delivery": f"{delivery.notification_id}-{delivery.webhook_id}",
            "X-Storegate-Timestamp": str(timestamp),
            "X-Storegate-Signature": sign(secret, timestamp, body),
        }
        try:
            # httpx's timeout is per read; this bounds the whole exchange, a trickling receiver included.
            async with asyncio.timeout(self.settings.timeout_s):
                async with self._client().stream("POST", delivery.url, content=body, headers=headers) as response:
                    # Only the status is kept: the body is the receiver's, may be anything (an internal page,
                    # a token), and the delivery history is readable by every API user.
                    status_code = response.status_code
                    if 200 <= status_code < 300:
                        return ended(ok=True, status_code=status_code, error=None)
                    return ended(ok=False, status_code=status_code, error=f"HTTP {status_code}")
        except TimeoutError:
            return ended(ok=False, status_code=None, error=f"no answer within {self.settings.timeout_s:g} s")
        except Exception as err:  # connection refused, TLS, DNS, a refused address: all retried alike
            return ended(ok=False, status_code=None, error=describe_failure(err))

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
        values["last_attempt_at"] = result.started_at
        values["last_duration_ms"] = result.duration_ms
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
                error=describe_failure(err),
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

    async def next_wait(self) -> float:
        """Seconds until the next pending delivery is due, at most ``poll_interval_s``."""
        if self._next_due is None:
            return self.settings.poll_interval_s
        wait = (self._next_due - self._clock()).total_seconds()
        return min(max(wait, 0.0), self.settings.poll_interval_s)
