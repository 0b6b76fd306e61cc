"""``/api/v1/report-schedules``: admins create, list, pause, resume and delete report schedules; their deliveries.

A schedule's webhook secret is returned once, in the answer to its creation, and never again; it is stored sealed
(:mod:`hub.alerting.secret_box`). A webhook URL must not reach the hub's own network (:mod:`hub.alerting.egress`,
the same rule and allow-list as the alert webhooks). E-mail needs ``[reports.smtp]``. Every change is audited with
the schedule before and after.
"""

from __future__ import annotations

import secrets
from datetime import date, datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID, uuid4

import structlog
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.alerting.egress import url_problem
from hub.alerting.egress_policy import EgressPolicy
from hub.alerting.secret_box import SecretBox, SecretKeyError
from hub.alerting.webhooks_api import _http_url
from hub.api.deps import NowDep, SessionDep, SettingsDep
from hub.api.schemas import ApiModel, ValidationProblem
from hub.auth.audit import note_change
from hub.auth.guard import PrincipalDep
from hub.db.bounds import INT64_MAX
from hub.reports.schedules.addresses import address_problem
from hub.reports.schedules.kinds import KINDS
from hub.reports.schedules.models import NAME_LENGTH, URL_LENGTH, ReportDelivery, ReportSchedule
from hub.reports.schedules.runner import when_of
from hub.reports.schedules.timing import When, parse_local_time, zone_of
from hub.runtime import HubRuntime
from storegate import wire

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1/report-schedules", tags=["reports"])

MAX_STORES: Final = 500
MAX_RECIPIENTS: Final = 20
SECRET_MIN_LENGTH: Final = 16
SECRET_MAX_LENGTH: Final = 256
GENERATED_SECRET_BYTES: Final = 32
MAX_DELIVERIES_PAGE: Final = 1000

StoreScope = Literal["all", "region", "stores"]
Cadence = Literal["daily", "weekly"]
DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled"]


def _zone(name: str) -> str:
    zone_of(name)  # ValueError in words
    return name


def _local_time(text: str) -> str:
    parse_local_time(text)
    return text


def _plain_name(name: str) -> str:
    # The name is the e-mail's subject: a line break there would start another header.
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError("a name cannot contain line breaks, tabs or other control characters")
    if name != name.strip():
        raise ValueError("a name cannot start or end with spaces")
    return name


def _address(address: str) -> str:
    problem = address_problem(address)
    if problem is not None:
        raise ValueError(problem)
    return address


class ScheduleIn(BaseModel):
    """A report schedule to create: what, for which stores, when, and where to send it."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=NAME_LENGTH), AfterValidator(_plain_name)] = Field(
        description="for people: the e-mail's subject"
    )
    kind: str = Field(min_length=1, max_length=64, description="the report: see GET /api/v1/report-schedules/kinds")
    format: str = Field(min_length=1, max_length=16, description="its file format, one the kind offers")
    stores: StoreScope = Field(description="all (every store), region (the stores of `region`), stores (a list)")
    region: wire.StoreId | None = Field(default=None, description="with stores = region")
    store_ids: list[wire.StoreId] | None = Field(
        default=None, min_length=1, max_length=MAX_STORES, description=f"with stores = stores, 1 to {MAX_STORES}"
    )
    cadence: Cadence = Field(description="daily (reports yesterday) or weekly (reports last week, Monday-Sunday)")
    weekday: int | None = Field(default=None, ge=0, le=6, description="weekly: 0 Monday .. 6 Sunday")
    at: Annotated[str, Field(max_length=5), AfterValidator(_local_time)] = Field(
        description="the local time it fires, HH:MM"
    )
    timezone: Annotated[str, Field(max_length=64), AfterValidator(_zone)] = Field(
        description="the IANA zone of `at`, and of the period's dates (yesterday, last week)"
    )
    webhook_url: Annotated[str, Field(max_length=URL_LENGTH), AfterValidator(_http_url)] | None = Field(
        default=None, description="POST the report here, signed (docs/reports.md)"
    )
    # Checked in the handler, not here: a validation error would echo the value it refused.
    webhook_secret: str | None = Field(
        default=None,
        description=f"HMAC key, {SECRET_MIN_LENGTH} to {SECRET_MAX_LENGTH} characters; generated when absent",
    )
    email_to: list[Annotated[str, AfterValidator(_address)]] | None = Field(
        default=None, min_length=1, max_length=MAX_RECIPIENTS, description="send the report to these addresses"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ScheduleIn:
        if self.stores == "region" and self.region is None:
            raise ValueError("stores = region needs a region")
        if self.stores == "stores" and not self.store_ids:
            raise ValueError("stores = stores needs store_ids")
        if self.stores != "region" and self.region is not None:
            raise ValueError("region goes with stores = region only")
        if self.stores != "stores" and self.store_ids is not None:
            raise ValueError("store_ids go with stores = stores only")
        if self.cadence == "weekly" and self.weekday is None:
            raise ValueError("a weekly schedule needs a weekday, 0 (Monday) to 6 (Sunday)")
        if self.cadence == "daily" and self.weekday is not None:
            raise ValueError("a daily schedule takes no weekday")
        if self.webhook_url is None and self.email_to is None:
            raise ValueError("say where to send the report: webhook_url, email_to or both")
        if self.webhook_url is None and self.webhook_secret is not None:
            raise ValueError("webhook_secret goes with webhook_url")
        formats = KINDS.get(self.kind)
        if formats is None:
            raise ValueError(f"no report kind {self.kind!r}; there are {', '.join(sorted(KINDS))}")
        if self.format not in formats:
            raise ValueError(f"the report {self.kind!r} comes as {', '.join(sorted(formats))}, not {self.format!r}")
        return self


class ScheduleOut(ApiModel):
    """A report schedule, without its webhook secret."""

    schedule_id: UUID
    name: str
    kind: str
    format: str
    stores: StoreScope
    region: str | None
    store_ids: list[str] | None
    cadence: Cadence
    weekday: int | None
    at: str
    timezone: str
    webhook_url: str | None
    email_to: list[str] | None
    enabled: bool = Field(description="false while paused: nothing is planned or sent")
    next_run_at: datetime = Field(description="when it fires next (UTC)")
    created_at: datetime
    created_by: str
    updated_at: datetime


class ScheduleCreatedOut(ScheduleOut):
    """A schedule just created, with its webhook secret: the only time the API shows it."""

    webhook_secret: str | None = Field(description="the HMAC-SHA256 key of X-Storegate-Signature; not shown again")


class ScheduleList(ApiModel):
    """Every schedule, oldest first."""

    items: list[ScheduleOut]


class KindOut(ApiModel):
    """A report kind a schedule may name, and its formats."""

    kind: str
    formats: list[str]


class KindList(ApiModel):
    """The report kinds of this hub."""

    items: list[KindOut]


class DeliveryOut(ApiModel):
    """One run of a schedule to one channel: where it stands."""

    delivery_id: int
    channel: str = Field(description="webhook or email")
    period_start: date = Field(description="first local date reported")
    period_end: date = Field(description="last local date reported (inclusive)")
    status: DeliveryStatus = Field(
        description="pending (waiting for its next attempt), delivered, failed (gave up), cancelled (paused)"
    )
    attempts: int
    next_attempt_at: datetime | None = Field(description="when it is tried next; null unless pending")
    last_error: str | None = Field(description="why the last attempt failed, in words; never a receiver's answer")
    last_attempt_at: datetime | None
    filename: str | None
    bytes: int | None = Field(description="the size of the report sent (or refused as too large)")
    scheduled_for: datetime = Field(description="when the run was due")
    created_at: datetime
    delivered_at: datetime | None


class DeliveryPage(ApiModel):
    """Deliveries of one schedule, newest first."""

    items: list[DeliveryOut]
    next_before: int | None = Field(description="pass as ?before= for the next page; null on the last page")


def _out(schedule: ReportSchedule) -> ScheduleOut:
    return ScheduleOut(
        schedule_id=UUID(schedule.schedule_id),
        name=schedule.name,
        kind=schedule.kind,
        format=schedule.format,
        stores=schedule.store_scope,
        region=schedule.region,
        store_ids=schedule.store_ids,
        cadence=schedule.cadence,
        weekday=schedule.weekday,
        at=schedule.local_time,
        timezone=schedule.timezone,
        webhook_url=schedule.webhook_url,
        email_to=schedule.email_to,
        enabled=schedule.enabled,
        next_run_at=schedule.next_run_at,
        created_at=schedule.created_at,
        created_by=schedule.created_by,
        updated_at=schedule.updated_at,
    )


def _refused(field_name: str, problem: str) -> JSONResponse:
    # FastAPI's own 422 would include the refused input (a secret, a URL's password); this one names the field.
    detail = [{"loc": ["body", field_name], "msg": problem, "type": "value_error"}]
    return JSONResponse(status_code=422, content={"detail": detail, "message": f"{field_name}: {problem}"})


def _secret_problem(secret: str) -> str | None:
    if len(secret) < SECRET_MIN_LENGTH:
        return f"must have at least {SECRET_MIN_LENGTH} characters"
    if len(secret) > SECRET_MAX_LENGTH:
        return f"must have at most {SECRET_MAX_LENGTH} characters"
    if secret != secret.strip():
        return "must not start or end with spaces"
    return None


def _when(schedule_in: ScheduleIn) -> When:
    return When(
        cadence=schedule_in.cadence,
        at=parse_local_time(schedule_in.at),
        zone=zone_of(schedule_in.timezone),
        weekday=schedule_in.weekday,
    )


def _wake_runner(request: Request) -> None:
    runtime: HubRuntime | None = getattr(request.app.state, "runtime", None)
    runner = getattr(runtime, "report_schedules", None)
    if runner is not None:
        runner.notify()


_REFUSALS: Final = (
    "a bad kind, format, store scope, time, zone, URL, secret or address; `message` names the field. A URL with a "
    "user name or password, or whose host is or resolves to a loopback, private, link-local, multicast or reserved "
    "address that notifications.webhook_allowed_networks does not list, is refused; so is e-mail without "
    "[reports.smtp]"
)


@router.post(
    "",
    status_code=201,
    response_model=ScheduleCreatedOut,
    responses={422: {"model": ValidationProblem, "description": _REFUSALS}},
)
async def create_schedule(
    request: Request,
    schedule_in: ScheduleIn,
    session: SessionDep,
    now: NowDep,
    settings: SettingsDep,
    who: PrincipalDep,
) -> ScheduleCreatedOut | JSONResponse:
    """Create a schedule; the answer holds its webhook secret, which is never shown again."""
    if schedule_in.webhook_secret is not None and (problem := _secret_problem(schedule_in.webhook_secret)):
        return _refused("webhook_secret", problem)
    if schedule_in.email_to is not None and settings.reports.smtp is None:
        return _refused("email_to", "this hub has no SMTP server ([reports.smtp]); it cannot send e-mail")
    sealed: str | None = None
    secret: str | None = None
    if schedule_in.webhook_url is not None:
        policy = EgressPolicy.from_entries(settings.notifications.webhook_allowed_networks)
        if (problem := await url_problem(schedule_in.webhook_url, policy)) is not None:
            log.warning("report_webhook_url_refused", problem=problem)
            return _refused("webhook_url", problem)
        secret = schedule_in.webhook_secret or secrets.token_urlsafe(GENERATED_SECRET_BYTES)
        try:
            sealed = SecretBox.open(settings.secrets_dir).seal(secret)
        except SecretKeyError as err:
            log.error("webhook_key_unusable", problem=str(err))
            raise HTTPException(status_code=503, detail=f"the hub cannot encrypt webhook secrets: {err}") from None
    schedule = ReportSchedule(
        schedule_id=str(uuid4()),
        name=schedule_in.name,
        kind=schedule_in.kind,
        format=schedule_in.format,
        store_scope=schedule_in.stores,
        region=schedule_in.region,
        store_ids=None if schedule_in.store_ids is None else sorted(set(schedule_in.store_ids)),
        cadence=schedule_in.cadence,
        weekday=schedule_in.weekday,
        local_time=schedule_in.at,
        timezone=schedule_in.timezone,
        webhook_url=schedule_in.webhook_url,
        webhook_secret_sealed=sealed,
        email_to=None if schedule_in.email_to is None else list(dict.fromkeys(schedule_in.email_to)),
        enabled=True,
        next_run_at=_when(schedule_in).next_after(now),
        created_at=now,
        created_by=who.actor,
        updated_at=now,
    )
    session.add(schedule)
    await session.commit()
    out = _out(schedule)
    note_change(request, target=f"report-schedule:{schedule.schedule_id}", after=out.model_dump(mode="json"))
    _wake_runner(request)
    return ScheduleCreatedOut(**out.model_dump(), webhook_secret=secret)


@router.get("", response_model=ScheduleList)
async def list_schedules(session: SessionDep) -> ScheduleList:
    """Every schedule, enabled or paused, oldest first; secrets are never listed."""
    rows = (
        await session.scalars(select(ReportSchedule).order_by(ReportSchedule.created_at, ReportSchedule.schedule_id))
    ).all()
    return ScheduleList(items=[_out(s) for s in rows])


@router.get("/kinds", response_model=KindList)
async def list_kinds() -> KindList:
    """The report kinds a schedule may name, with their formats."""
    return KindList(items=[KindOut(kind=k, formats=sorted(f)) for k, f in sorted(KINDS.items())])


ScheduleIdPath = Annotated[UUID, Path(description="the schedule's id")]
_NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {404: {"description": "no such schedule"}}


async def _existing(session: AsyncSession, schedule_id: UUID) -> ReportSchedule:
    schedule = await session.get(ReportSchedule, str(schedule_id))
    if schedule is None:
        raise HTTPException(status_code=404, detail=f"no report schedule {schedule_id}")
    return schedule


@router.get("/{schedule_id}", response_model=ScheduleOut, responses=_NOT_FOUND)
async def get_schedule(schedule_id: ScheduleIdPath, session: SessionDep) -> ScheduleOut:
    """One schedule."""
    return _out(await _existing(session, schedule_id))


@router.post("/{schedule_id}/pause", response_model=ScheduleOut, responses=_NOT_FOUND)
async def pause_schedule(
    request: Request, schedule_id: ScheduleIdPath, session: SessionDep, now: NowDep
) -> ScheduleOut:
    """Pause: nothing more is planned, and its pending deliveries are cancelled (kept as history)."""
    schedule = await _existing(session, schedule_id)
    before = _out(schedule).model_dump(mode="json")
    schedule.enabled = False
    schedule.updated_at = now
    cancelled = (
        await session.scalars(
            select(ReportDelivery.channel).where(
                ReportDelivery.schedule_id == schedule.schedule_id, ReportDelivery.status == "pending"
            )
        )
    ).all()
    await session.execute(
        update(ReportDelivery)
        .where(ReportDelivery.schedule_id == schedule.schedule_id, ReportDelivery.status == "pending")
        .values(status="cancelled", last_error="the schedule was paused")
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    runtime: HubRuntime | None = getattr(request.app.state, "runtime", None)
    for channel in cancelled:
        if runtime is not None:
            runtime.metrics.report_deliveries.labels(channel=channel, outcome="cancelled").inc()
    out = _out(schedule)
    note_change(request, target=f"report-schedule:{schedule_id}", before=before, after=out.model_dump(mode="json"))
    return out


@router.post("/{schedule_id}/resume", response_model=ScheduleOut, responses=_NOT_FOUND)
async def resume_schedule(
    request: Request, schedule_id: ScheduleIdPath, session: SessionDep, now: NowDep
) -> ScheduleOut:
    """Resume a paused schedule: it fires next at its first time after now (the paused runs are not caught up)."""
    schedule = await _existing(session, schedule_id)
    before = _out(schedule).model_dump(mode="json")
    if not schedule.enabled:
        schedule.enabled = True
        schedule.next_run_at = when_of(schedule).next_after(now)
        schedule.updated_at = now
        await session.commit()
    out = _out(schedule)
    note_change(request, target=f"report-schedule:{schedule_id}", before=before, after=out.model_dump(mode="json"))
    _wake_runner(request)
    return out


@router.delete("/{schedule_id}", status_code=204, responses=_NOT_FOUND)
async def delete_schedule(request: Request, schedule_id: ScheduleIdPath, session: SessionDep) -> None:
    """Delete a schedule and its delivery history (the audit log keeps what it was)."""
    schedule = await _existing(session, schedule_id)
    before = _out(schedule).model_dump(mode="json")
    await session.execute(delete(ReportDelivery).where(ReportDelivery.schedule_id == schedule.schedule_id))
    await session.delete(schedule)
    await session.commit()
    note_change(request, target=f"report-schedule:{schedule_id}", before=before)


@router.get("/{schedule_id}/deliveries", response_model=DeliveryPage, responses=_NOT_FOUND)
async def list_deliveries(
    schedule_id: ScheduleIdPath,
    session: SessionDep,
    status: Annotated[DeliveryStatus | None, Query(description="only deliveries in this status")] = None,
    before: Annotated[int | None, Query(ge=1, le=INT64_MAX, description="only smaller delivery ids (paging)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_DELIVERIES_PAGE)] = 100,
) -> DeliveryPage:
    """The schedule's deliveries, newest first: period, channel, status, attempts, the last error, the size."""
    schedule = await _existing(session, schedule_id)
    query = (
        select(ReportDelivery)
        .where(ReportDelivery.schedule_id == schedule.schedule_id)
        .order_by(ReportDelivery.id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(ReportDelivery.status == status)
    if before is not None:
        query = query.where(ReportDelivery.id < before)
    rows = (await session.scalars(query)).all()
    items = [
        DeliveryOut(
            delivery_id=d.id,
            channel=d.channel,
            period_start=d.period_start,
            period_end=d.period_end,
            status=d.status,
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
            last_error=d.last_error,
            last_attempt_at=d.last_attempt_at,
            filename=d.filename,
            bytes=d.bytes,
            scheduled_for=d.scheduled_for,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
        )
        for d in rows
    ]
    next_before = items[-1].delivery_id if len(items) == limit else None
    return DeliveryPage(items=items, next_before=next_before)
