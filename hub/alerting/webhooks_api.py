"""``/api/v1/webhooks``: register, list and disable the webhooks that receive alert notifications.

A webhook's secret is returned once, in the answer to its creation, and never again: not in lists,
not in delivery histories, not in logs, not in the audit log. It is stored encrypted
(:mod:`hub.alerting.secret_box`). Disabling keeps the webhook and its deliveries as history. A URL must
not reach the hub's own network (:mod:`hub.alerting.egress`). Who created one is the request's principal.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Final
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import structlog
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.alerting.egress import url_problem
from hub.alerting.egress_policy import EgressPolicy
from hub.alerting.models import URL_LENGTH, NotificationRow, Webhook, WebhookDelivery
from hub.alerting.notices import NotificationEvent
from hub.alerting.secret_box import SecretBox, SecretKeyError
from hub.alerting.webhooks import DeliveryStatus, invalidate_webhook_cache
from hub.api.deps import NowDep, SessionDep, SettingsDep
from hub.api.schemas import ApiModel, ValidationProblem
from hub.auth.audit import note_change
from hub.auth.guard import PrincipalDep
from hub.db.bounds import INT64_MAX
from hub.runtime import HubRuntime
from storegate import wire

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1/webhooks", tags=["notifications"])

SECRET_MIN_LENGTH: Final = 16
SECRET_MAX_LENGTH: Final = 256
# 32 random bytes, URL-safe base64: 43 characters.
GENERATED_SECRET_BYTES: Final = 32
MAX_DELIVERIES_PAGE: Final = 1000


def _http_url(url: str) -> str:
    """An absolute http(s) URL with a host, as given."""
    if url != url.strip() or any(c.isspace() for c in url):
        raise ValueError("a URL cannot contain spaces")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError for a port out of range or not a number
    except ValueError as err:
        raise ValueError(f"not a valid URL: {err}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not host:
        raise ValueError("must name a host, e.g. https://alarms.example.com/storegate")
    return url


class WebhookIn(BaseModel):
    """A webhook to create; leave ``secret`` out to have the hub generate one."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(max_length=URL_LENGTH), AfterValidator(_http_url)] = Field(
        description="where to POST the notices: http:// or https://"
    )
    # Checked in the handler, not here: a validation error would echo the value it refused.
    secret: str | None = Field(
        default=None,
        description=f"HMAC key, {SECRET_MIN_LENGTH} to {SECRET_MAX_LENGTH} characters; generated when absent",
    )
    store_ids: list[wire.StoreId] | None = Field(
        default=None, min_length=1, description="only alerts of these stores; null or absent: every store"
    )
    events: list[NotificationEvent] | None = Field(
        default=None, min_length=1, description="only these events; null or absent: every event"
    )


class WebhookOut(ApiModel):
    """A webhook, without its secret."""

    webhook_id: UUID
    url: str
    store_ids: list[str] | None = Field(description="only alerts of these stores; null: every store")
    events: list[str] | None = Field(description="only these events; null: every event")
    enabled: bool = Field(description="false once deleted: nothing more is sent to it")
    created_at: datetime
    created_by: str


class WebhookCreatedOut(WebhookOut):
    """A webhook just created, with its secret: the only time the API shows it."""

    secret: str = Field(description="the HMAC-SHA256 key of X-Storegate-Signature; keep it, it is not shown again")


class WebhookList(ApiModel):
    """Every webhook, enabled or not, oldest first."""

    items: list[WebhookOut]


class DeliveryOut(ApiModel):
    """One notice to one webhook: where it stands."""

    notification_id: int
    event: str
    alert_id: str
    status: DeliveryStatus = Field(
        description="pending (waiting for its next attempt), delivered, failed (gave up), cancelled (webhook disabled)"
    )
    attempts: int
    next_attempt_at: datetime | None = Field(description="when it is tried next; null unless pending")
    last_status_code: int | None = Field(description="HTTP status of the last attempt; null if there was no answer")
    last_error: str | None = Field(
        description="why the last attempt failed: the HTTP status or the connection's error, never the answer's body"
    )
    last_attempt_at: datetime | None = Field(description="when the last attempt started; null before the first")
    last_duration_ms: int | None = Field(description="how long the last attempt took, in milliseconds")
    delivered_at: datetime | None
    created_at: datetime = Field(description="when the alert transition was recorded")


class DeliveryPage(ApiModel):
    """Deliveries of one webhook, newest first."""

    items: list[DeliveryOut]
    next_before: int | None = Field(description="pass as ?before= for the next page; null on the last page")


def _webhook_out(webhook: Webhook) -> WebhookOut:
    return WebhookOut(
        webhook_id=UUID(webhook.webhook_id),
        url=webhook.url,
        store_ids=webhook.store_ids,
        events=webhook.events,
        enabled=webhook.enabled,
        created_at=webhook.created_at,
        created_by=webhook.created_by,
    )


def _secret_problem(secret: str) -> str | None:
    if len(secret) < SECRET_MIN_LENGTH:
        return f"must have at least {SECRET_MIN_LENGTH} characters"
    if len(secret) > SECRET_MAX_LENGTH:
        return f"must have at most {SECRET_MAX_LENGTH} characters"
    if secret != secret.strip():
        return "must not start or end with spaces"
    return None


def _refused(field_name: str, problem: str) -> JSONResponse:
    # FastAPI's own 422 would include the refused input (a secret, a URL's password); this one names the field.
    detail = [{"loc": ["body", field_name], "msg": problem, "type": "value_error"}]
    return JSONResponse(status_code=422, content={"detail": detail, "message": f"{field_name}: {problem}"})


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreatedOut,
    responses={
        422: {
            "model": ValidationProblem,
            "description": "a bad URL, secret, store id or event; `message` names the field. A URL with a user "
            "name or password, or whose host is or resolves to a loopback, private, link-local, multicast or "
            "reserved address that notifications.webhook_allowed_networks does not list, is refused",
        }
    },
)
async def create_webhook(
    request: Request,
    webhook_in: WebhookIn,
    session: SessionDep,
    now: NowDep,
    settings: SettingsDep,
    who: PrincipalDep,
) -> WebhookCreatedOut | JSONResponse:
    """Register a webhook; the answer holds its secret, which is never shown again."""
    if webhook_in.secret is not None and (problem := _secret_problem(webhook_in.secret)) is not None:
        return _refused("secret", problem)
    policy = EgressPolicy.from_entries(settings.notifications.webhook_allowed_networks)
    if (problem := await url_problem(webhook_in.url, policy)) is not None:
        log.warning("webhook_url_refused", problem=problem)
        runtime: HubRuntime | None = getattr(request.app.state, "runtime", None)
        if runtime is not None:  # None in tests that mount the router without the hub's lifespan
            runtime.metrics.webhook_urls_refused.inc()
        return _refused("url", problem)
    secret = webhook_in.secret if webhook_in.secret is not None else secrets.token_urlsafe(GENERATED_SECRET_BYTES)
    try:
        sealed = SecretBox.open(settings.secrets_dir).seal(secret)
    except SecretKeyError as err:
        log.error("webhook_key_unusable", problem=str(err))
        raise HTTPException(status_code=503, detail=f"the hub cannot encrypt webhook secrets: {err}") from None
    webhook = Webhook(
        webhook_id=str(uuid4()),
        url=webhook_in.url,
        secret_sealed=sealed,
        store_ids=None if webhook_in.store_ids is None else sorted(set(webhook_in.store_ids)),
        events=None if webhook_in.events is None else sorted(set(webhook_in.events)),
        enabled=True,
        created_at=now,
        created_by=who.actor,
    )
    session.add(webhook)
    await session.commit()
    invalidate_webhook_cache()
    out = _webhook_out(webhook)
    note_change(request, target=f"webhook:{webhook.webhook_id}", after=out.model_dump(mode="json"))
    return WebhookCreatedOut(**out.model_dump(), secret=secret)


@router.get("", response_model=WebhookList)
async def list_webhooks(session: SessionDep) -> WebhookList:
    """Every webhook, enabled or disabled, oldest first; secrets are never listed."""
    webhooks = (await session.scalars(select(Webhook).order_by(Webhook.created_at, Webhook.webhook_id))).all()
    return WebhookList(items=[_webhook_out(w) for w in webhooks])


WebhookIdPath = Annotated[UUID, Path(description="the webhook's id")]


async def _existing(session: AsyncSession, webhook_id: UUID) -> Webhook:
    webhook = await session.get(Webhook, str(webhook_id))
    if webhook is None:
        raise HTTPException(status_code=404, detail=f"no webhook {webhook_id}")
    return webhook


@router.delete("/{webhook_id}", status_code=204, responses={404: {"description": "no such webhook"}})
async def delete_webhook(request: Request, webhook_id: WebhookIdPath, session: SessionDep) -> None:
    """Disable a webhook: nothing more is sent to it; its pending deliveries are cancelled, all kept as history."""
    webhook = await _existing(session, webhook_id)
    before = _webhook_out(webhook).model_dump(mode="json")
    webhook.enabled = False
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook.webhook_id, WebhookDelivery.status == "pending")
        .values(status="cancelled", last_error="the webhook was disabled")
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    invalidate_webhook_cache()
    note_change(
        request, target=f"webhook:{webhook_id}", before=before, after=_webhook_out(webhook).model_dump(mode="json")
    )


@router.get(
    "/{webhook_id}/deliveries", response_model=DeliveryPage, responses={404: {"description": "no such webhook"}}
)
async def list_deliveries(
    webhook_id: WebhookIdPath,
    session: SessionDep,
    status: Annotated[DeliveryStatus | None, Query(description="only deliveries in this status")] = None,
    before: Annotated[
        int | None, Query(ge=1, le=INT64_MAX, description="only notifications with a smaller id (paging)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_DELIVERIES_PAGE)] = 100,
) -> DeliveryPage:
    """The webhook's deliveries, newest first: status, attempts, the last error."""
    webhook = await _existing(session, webhook_id)
    query = (
        select(WebhookDelivery, NotificationRow.event, NotificationRow.alert_id, NotificationRow.created_at)
        .join(NotificationRow, NotificationRow.id == WebhookDelivery.notification_id)
        .where(WebhookDelivery.webhook_id == webhook.webhook_id)
        .order_by(WebhookDelivery.notification_id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if before is not None:
        query = query.where(WebhookDelivery.notification_id < before)
    rows = (await session.execute(query)).all()
    items = [
        DeliveryOut(
            notification_id=delivery.notification_id,
            event=event,
            alert_id=alert_id,
            status=delivery.status,
            attempts=delivery.attempts,
            next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            last_attempt_at=delivery.last_attempt_at,
            last_duration_ms=delivery.last_duration_ms,
            delivered_at=delivery.delivered_at,
            created_at=created_at,
        )
        for delivery, event, alert_id, created_at in rows
    ]
    next_before = items[-1].notification_id if len(items) == limit else None
    return DeliveryPage(items=items, next_before=next_before)
