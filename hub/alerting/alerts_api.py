"""``/api/v1/alerts``: alerts with their history; people acknowledge and resolve them here.

Who acts is the request's principal (the signed-in operator or the API token), never a name in the
body; every transition is kept in the alert's append-only history with that name and time, and in the
audit log with the alert's state before and after. An alert of a store outside the principal's scope
answers 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import Field
from sqlalchemy import and_, or_, select

from hub.alerting import alerts_db
from hub.alerting.models import AlertHistoryRow, AlertRow
from hub.api.deps import NowDep, RuntimeDep, SessionDep
from hub.api.params import IsoDatetime, aware, invalid
from hub.api.schemas import ApiModel, Problem
from hub.auth.audit import note_change
from hub.auth.guard import PrincipalDep
from hub.domain.access import AccessDenied, Principal
from hub.domain.alerts import AlertTransitionError
from hub.runtime import HubRuntime

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

MAX_LIMIT: Final = 500
StatusFilter = Literal["open", "acknowledged", "resolved", "active"]


class HistoryOut(ApiModel):
    """One transition of an alert."""

    at: datetime
    action: str
    actor: str
    status: str
    note: str | None
    level: int | None


class AlertOut(ApiModel):
    """An alert, its current state and (on the single-alert endpoint) its history."""

    alert_id: str
    store_id: str
    rule_id: str
    rule_kind: str
    category: str
    subject: str = Field(description="what it is about, e.g. zone:freezer-1 or slot:shelf-1/3")
    severity: str
    status: str
    message: str
    opened_at: datetime
    last_seen_at: datetime
    count: int = Field(description="signals folded into it (repeats of the same condition)")
    evidence: list[str] = Field(description="ids of the events that show it")
    snapshot_ref: str | None
    escalation_level: int
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    resolution_note: str | None
    history: list[HistoryOut] | None = None


class AlertPageOut(ApiModel):
    """A page of alerts, newest first."""

    items: list[AlertOut]
    next_cursor: str | None


class AcknowledgeIn(ApiModel):
    """Someone is on it."""

    note: str | None = Field(default=None, max_length=2000)


class ResolveIn(ApiModel):
    """Resolved by hand: what was done."""

    note: str = Field(min_length=1, max_length=2000, description="what was found or done")


def alert_out(row: AlertRow, history: list[AlertHistoryRow] | None = None) -> AlertOut:
    """The API form of an alert."""
    return AlertOut(
        alert_id=row.alert_id,
        store_id=row.store_id,
        rule_id=row.rule_id,
        rule_kind=row.rule_kind,
        category=row.category,
        subject=f"{row.subject_kind}:{row.subject_id}",
        severity=row.severity,
        status=row.status,
        message=row.message,
        opened_at=row.opened_at,
        last_seen_at=row.last_seen_at,
        count=row.count,
        evidence=list(row.evidence),
        snapshot_ref=row.snapshot_ref,
        escalation_level=row.escalation_level,
        acknowledged_by=row.acknowledged_by,
        acknowledged_at=row.acknowledged_at,
        resolved_by=row.resolved_by,
        resolved_at=row.resolved_at,
        resolution_note=row.resolution_note,
        history=(
            [
                HistoryOut(at=h.at, action=h.action, actor=h.actor, status=h.status, note=h.note, level=h.level)
                for h in history
            ]
            if history is not None
            else None
        ),
    )


def _serialised(runtime: HubRuntime) -> AbstractAsyncContextManager[None]:
    """Transitions by people take turns with the consumer's units in this process (fewer conflicts)."""
    return runtime.operations.unit() if runtime.operations is not None else nullcontext()


def _cursor(row: AlertRow) -> str:
    return f"{row.opened_at.isoformat()}|{row.alert_id}"


def _parse_cursor(value: str) -> tuple[datetime, str]:
    try:
        opened, alert_id = value.split("|", 1)
        at = datetime.fromisoformat(opened)
    except ValueError:
        raise invalid("cursor", "not a cursor this API handed out", value) from None
    if at.tzinfo is None:
        raise invalid("cursor", "not a cursor this API handed out", value)
    return at, alert_id


@router.get("", response_model=AlertPageOut, summary="List alerts, newest first")
async def get_alerts(
    session: SessionDep,
    store_id: Annotated[str | None, Query(max_length=63)] = None,
    status: Annotated[StatusFilter | None, Query(description="active: open or acknowledged")] = None,
    severity: Annotated[Literal["info", "warning", "critical"] | None, Query()] = None,
    category: Annotated[Literal["security", "environment", "operations"] | None, Query()] = None,
    rule_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[IsoDatetime | None, Query(description="opened at or after, with time zone")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AlertPageOut:
    """Alerts matching every given filter."""
    query = select(AlertRow)
    if store_id is not None:
        query = query.where(AlertRow.store_id == store_id)
    if status == "active":
        query = query.where(AlertRow.active_key.is_not(None))
    elif status is not None:
        query = query.where(AlertRow.status == status)
    if severity is not None:
        query = query.where(AlertRow.severity == severity)
    if category is not None:
        query = query.where(AlertRow.category == category)
    if rule_id is not None:
        query = query.where(AlertRow.rule_id == rule_id)
    since = aware("since", since)
    if since is not None:
        query = query.where(AlertRow.opened_at >= since)
    if cursor is not None:
        at, alert_id = _parse_cursor(cursor)
        query = query.where(or_(AlertRow.opened_at < at, and_(AlertRow.opened_at == at, AlertRow.alert_id < alert_id)))
    rows = list(
        (await session.execute(query.order_by(AlertRow.opened_at.desc(), AlertRow.alert_id.desc()).limit(limit + 1)))
        .scalars()
        .all()
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return AlertPageOut(items=[alert_out(r) for r in rows], next_cursor=_cursor(rows[-1]) if more and rows else None)


def _state(row: AlertOut) -> dict[str, object]:
    """What the audit log keeps of an alert before and after a transition."""
    return {
        "status": row.status,
        "acknowledged_by": row.acknowledged_by,
        "resolved_by": row.resolved_by,
        "resolution_note": row.resolution_note,
    }


async def _one(session: SessionDep, alert_id: str, who: Principal) -> AlertOut:
    row = await session.get(AlertRow, alert_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no alert {alert_id}")
    try:
        who.require_store(row.store_id)
    except AccessDenied as denied:
        raise HTTPException(status_code=denied.status, detail=denied.reason) from None
    history = (
        await session.execute(
            select(AlertHistoryRow).where(AlertHistoryRow.alert_id == alert_id).order_by(AlertHistoryRow.id)
        )
    ).scalars()
    return alert_out(row, list(history))


@router.get(
    "/{alert_id}",
    response_model=AlertOut,
    summary="One alert with its history",
    responses={404: {"model": Problem, "description": "no such alert"}},
)
async def get_alert(session: SessionDep, who: PrincipalDep, alert_id: str) -> AlertOut:
    """The alert and every transition it went through."""
    return await _one(session, alert_id, who)


_TRANSITION_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": Problem, "description": "no such alert"},
    409: {"model": Problem, "description": "the alert is not in a state that allows it, e.g. already resolved"},
}


async def _transition(
    request: Request,
    session: SessionDep,
    runtime: HubRuntime,
    who: Principal,
    alert_id: str,
    change: Callable[[], Awaitable[object]],
) -> AlertOut:
    """Run a person's transition in its own transaction; 404 for an unknown alert, 403 outside the principal's
    stores, 409 for a refused transition."""
    before = await _one(session, alert_id, who)
    await session.rollback()  # the transition opens its own transaction below
    try:
        async with _serialised(runtime), session.begin():
            await change()
    except alerts_db.AlertNotFoundError as err:
        raise HTTPException(status_code=404, detail=str(err)) from None
    except (AlertTransitionError, alerts_db.AlertChangedError) as err:
        raise HTTPException(status_code=409, detail=str(err)) from None
    if runtime.operations is not None:
        runtime.operations.wake_senders()  # the transition's notification goes out now
    after = await _one(session, alert_id, who)
    note_change(
        request, target=f"alert:{alert_id}", store_id=after.store_id, before=_state(before), after=_state(after)
    )
    return after


@router.post(
    "/{alert_id}/acknowledge", response_model=AlertOut, summary="Acknowledge an alert", responses=_TRANSITION_ERRORS
)
async def post_acknowledge(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    now: NowDep,
    who: PrincipalDep,
    alert_id: str,
    body: AcknowledgeIn,
) -> AlertOut:
    """Stops its escalation; 409 if it is already acknowledged or resolved."""
    return await _transition(
        request,
        session,
        runtime,
        who,
        alert_id,
        lambda: alerts_db.acknowledge(session, alert_id, by=who.actor, at=now, note=body.note),
    )


@router.post(
    "/{alert_id}/resolve", response_model=AlertOut, summary="Resolve an alert by hand", responses=_TRANSITION_ERRORS
)
async def post_resolve(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    now: NowDep,
    who: PrincipalDep,
    alert_id: str,
    body: ResolveIn,
) -> AlertOut:
    """Resolve with a note; 409 if it is already resolved."""
    return await _transition(
        request,
        session,
        runtime,
        who,
        alert_id,
        lambda: alerts_db.resolve(session, alert_id, by=who.actor, at=now, note=body.note),
    )
