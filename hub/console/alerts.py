"""``/alerts``: the alerts of the reader's stores, live; acknowledging and resolving them in one action.

The list is filtered by severity, store, rule and state, newest first. Ops and admins acknowledge or resolve a row
with a note (htmx posts here and swaps the row); the transitions are hub.alerting.alerts_db's, run exactly as the
API runs them (hub.alerting.alerts_api): in their own transaction, in turn with the consumer, audited with the
alert's state before and after, 409 in words when someone acted first. ``/alerts/<alert_id>`` shows one alert with
its history: who did what, when, with which note. Times are the store's wall clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Annotated, Final, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.alerting import alerts_api, alerts_db
from hub.alerting.models import AlertHistoryRow, AlertRow, ChainRule
from hub.api.deps import NowDep, RuntimeDep, SessionDep
from hub.auth.audit import note_change
from hub.catalog.models import StoreProfile
from hub.console.templating import Reader, ReaderDep, fragment, page
from hub.domain.access import AccessDenied, Principal
from hub.domain.alerts import AlertTransitionError
from hub.runtime import HubRuntime

router = APIRouter(tags=["dashboard"])

# The newest this many alerts that pass the filters; older ones through the API or a narrower filter.
LIST_LIMIT: Final = 100
MAX_NOTE_CHARS: Final = 2000
DEFAULT_TIME_ZONE: Final = "UTC"

Severity = Literal["", "critical", "warning", "info"]
AlertState = Literal["", "active", "open", "acknowledged", "resolved"]
SEVERITY_CHOICES: Final[tuple[Severity, ...]] = ("", "critical", "warning", "info")
STATE_CHOICES: Final[tuple[AlertState, ...]] = ("", "active", "open", "acknowledged", "resolved")


@dataclass(frozen=True, slots=True)
class AlertFilters:
    """The alert list's filters, as the form sends them."""

    severity: Severity = ""
    state: AlertState = ""
    rule: str = ""
    store_id: str = ""

    @property
    def query_string(self) -> str:
        """The filters as a query string (for the live stream's URL)."""
        pairs = (("severity", self.severity), ("state", self.state), ("rule", self.rule), ("store_id", self.store_id))
        return urlencode({k: v for k, v in pairs if v})


def passes(row: AlertRow, filters: AlertFilters) -> bool:
    """Whether an alert passes the filters (the same test the list's query makes, for the live stream)."""
    if filters.severity and row.severity != filters.severity:
        return False
    if filters.rule and row.rule_id != filters.rule:
        return False
    if filters.store_id and row.store_id != filters.store_id:
        return False
    if filters.state == "active":
        return row.status in ("open", "acknowledged")
    return not filters.state or row.status == filters.state


@dataclass(frozen=True, slots=True)
class AlertView:
    """An alert as a row shows it: with its store's name and time zone."""

    row: AlertRow
    store_name: str | None
    time_zone: str

    @property
    def alert_id(self) -> str:
        return self.row.alert_id

    @property
    def fingerprint(self) -> tuple[object, ...]:
        """What the row shows that can change; the live stream sends a row again only when this does."""
        r = self.row
        return (r.status, r.severity, r.count, r.escalation_level, r.acknowledged_by, r.resolved_by, r.message)


def _with_store(query: Select[AlertRow]) -> Select[tuple[AlertRow, str | None, str | None]]:
    return query.add_columns(StoreProfile.name, StoreProfile.timezone).outerjoin(
        StoreProfile, StoreProfile.store_id == AlertRow.store_id
    )


def _views(rows: object) -> list[AlertView]:
    return [
        AlertView(row=row, store_name=name, time_zone=time_zone or DEFAULT_TIME_ZONE)
        for row, name, time_zone in rows  # type: ignore[attr-defined]
    ]


async def list_alerts(
    session: AsyncSession, filters: AlertFilters, *, store_ids: Collection[str] | None, limit: int = LIST_LIMIT
) -> list[AlertView]:
    """The newest alerts that pass the filters, of ``store_ids`` (None: every store)."""
    query = select(AlertRow)
    if filters.severity:
        query = query.where(AlertRow.severity == filters.severity)
    if filters.rule:
        query = query.where(AlertRow.rule_id == filters.rule)
    if filters.store_id:
        query = query.where(AlertRow.store_id == filters.store_id)
    if filters.state == "active":
        query = query.where(AlertRow.status.in_(("open", "acknowledged")))
    elif filters.state:
        query = query.where(AlertRow.status == filters.state)
    if store_ids is not None:
        query = query.where(AlertRow.store_id.in_(sorted(store_ids)))
    query = query.order_by(AlertRow.opened_at.desc(), AlertRow.alert_id.desc()).limit(limit)
    return _views(await session.execute(_with_store(query)))


async def alerts_by_id(session: AsyncSession, alert_ids: Collection[str]) -> list[AlertView]:
    """The alerts of ``alert_ids`` with their stores (for the live stream)."""
    if not alert_ids:
        return []
    query = select(AlertRow).where(AlertRow.alert_id.in_(sorted(alert_ids)))
    return _views(await session.execute(_with_store(query)))


async def newest_history_id(session: AsyncSession) -> int:
    """The id of the newest transition of any alert (0 when none): where a page's live stream picks up."""
    return int(await session.scalar(select(func.coalesce(func.max(AlertHistoryRow.id), 0))) or 0)


def _refuse(who: Principal, store_id: str) -> None:
    try:
        who.require_store(store_id)
    except AccessDenied as denied:
        raise HTTPException(status_code=denied.status, detail=denied.reason) from None


@router.get(
    "/alerts",
    response_class=HTMLResponse,
    summary="Alerts",
    description="The alerts of the reader's stores, newest first, filtered by severity, state, rule and store; "
    "live over /console/live; ops and admins acknowledge and resolve them here.",
)
async def get_alerts_page(
    request: Request,
    session: SessionDep,
    now: NowDep,
    reader: ReaderDep,
    severity: Annotated[Severity, Query()] = "",
    state: Annotated[AlertState, Query(description="active: open or acknowledged")] = "",
    rule: Annotated[str, Query(max_length=64)] = "",
    store_id: Annotated[str, Query(max_length=63)] = "",
) -> HTMLResponse:
    """The page; a store outside the reader's scope is a 403."""
    filters = AlertFilters(severity=severity, state=state, rule=rule.strip(), store_id=store_id.strip())
    if filters.store_id:
        _refuse(reader.who, filters.store_id)
    since = await newest_history_id(session)
    alerts = await list_alerts(session, filters, store_ids=reader.who.store_ids)
    rules = list(await session.scalars(select(ChainRule.rule_id).order_by(ChainRule.rule_id)))
    return page(
        "alerts.html",
        reader,
        request,
        now=now,
        alerts=alerts,
        filters=filters,
        rules=rules,
        severities=SEVERITY_CHOICES,
        states=STATE_CHOICES,
        since=since,
        limit=LIST_LIMIT,
    )


@router.get(
    "/alerts/{alert_id}",
    response_class=HTMLResponse,
    summary="One alert",
    description="An alert with its history: who opened, acknowledged, escalated and resolved it, when, and notes.",
    responses={404: {"description": "no such alert"}},
)
async def get_alert_page(
    request: Request, session: SessionDep, now: NowDep, reader: ReaderDep, alert_id: str
) -> HTMLResponse:
    """The alert's page; 404 for an unknown alert, 403 for one of a store outside the reader's scope."""
    found = await alerts_by_id(session, [alert_id])
    if not found:
        raise HTTPException(status_code=404, detail=f"no alert {alert_id}")
    view = found[0]
    _refuse(reader.who, view.row.store_id)
    history = list(
        await session.scalars(
            select(AlertHistoryRow).where(AlertHistoryRow.alert_id == alert_id).order_by(AlertHistoryRow.id)
        )
    )
    return page("alert.html", reader, request, now=now, alert=view, history=history)


def row_fragment(reader: Reader, view: AlertView, *, error: str | None = None) -> HTMLResponse:
    """One alert's row, as the list shows it (after an action)."""
    return fragment("_alert_row.html", reader, alert=view, error=error, oob=False, alarm=False)


async def _act(
    request: Request,
    session: AsyncSession,
    reader: Reader,
    runtime: HubRuntime,
    alert_id: str,
    change: Callable[[], Awaitable[object]],
) -> HTMLResponse:
    """Run a transition as alerts_api does; the row again, or 404/403/409 in words."""
    before = await alerts_api._one(session, alert_id, reader.who)  # 404, 403
    await session.rollback()  # the transition opens its own transaction below
    try:
        async with alerts_api._serialised(runtime), session.begin():
            await change()
    except alerts_db.AlertNotFoundError as err:
        raise HTTPException(status_code=404, detail=str(err)) from None
    except (AlertTransitionError, alerts_db.AlertChangedError) as err:
        raise HTTPException(status_code=409, detail=f"{err}: someone may have acted first; reload to see") from None
    if runtime.operations is not None:
        runtime.operations.wake_senders()
    after = await alerts_api._one(session, alert_id, reader.who)
    note_change(
        request,
        target=f"alert:{alert_id}",
        store_id=after.store_id,
        before=alerts_api._state(before),
        after=alerts_api._state(after),
    )
    [view] = await alerts_by_id(session, [alert_id])
    return row_fragment(reader, view)


Note = Annotated[str, Form(max_length=MAX_NOTE_CHARS)]


@router.post(
    "/alerts/{alert_id}/acknowledge",
    response_class=HTMLResponse,
    summary="Acknowledge an alert (console)",
    description="Acknowledges with an optional note and answers the alert's row for the list.",
    responses={404: {"description": "no such alert"}, 409: {"description": "already acknowledged or resolved"}},
)
async def post_acknowledge(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    now: NowDep,
    reader: ReaderDep,
    alert_id: str,
    note: Note = "",
) -> HTMLResponse:
    """Stops its escalation; 409 if it is already acknowledged or resolved."""
    text = note.strip() or None
    return await _act(
        request,
        session,
        reader,
        runtime,
        alert_id,
        lambda: alerts_db.acknowledge(session, alert_id, by=reader.who.actor, at=now, note=text),
    )


@router.post(
    "/alerts/{alert_id}/resolve",
    response_class=HTMLResponse,
    summary="Resolve an alert (console)",
    description="Resolves with a note (what was found or done) and answers the alert's row for the list.",
    responses={404: {"description": "no such alert"}, 409: {"description": "already resolved"}},
)
async def post_resolve(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    now: NowDep,
    reader: ReaderDep,
    alert_id: str,
    note: Note = "",
) -> HTMLResponse:
    """Resolve with a note (422 without one, as a validation error names it); 409 if it is already resolved."""
    text = note.strip()
    if not text:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "note"),
                    "msg": "say what was found or done in the note to resolve an alert",
                    "input": note,
                }
            ]
        )
    return await _act(
        request,
        session,
        reader,
        runtime,
        alert_id,
        lambda: alerts_db.resolve(session, alert_id, by=reader.who.actor, at=now, note=text),
    )
