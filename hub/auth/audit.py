"""The audit log: what handlers add to a request's entry, the entries themselves, and reading them back.

Every write through the API gets one entry from :class:`hub.auth.guard.AuditMiddleware` (who, what,
when, from where, the outcome); a handler adds the before and after of the objects it changed with
:func:`note_change`. Sign-ins, refused tokens and token use are entries of their own (:func:`add_event`).
Rows are only ever inserted: no code updates or deletes them, and the database's triggers refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from hub.auth.models import ACTION_LENGTH, ACTOR_LENGTH, CLIENT_LENGTH, AuditEntry

# Kept on the request's state (scope["state"]), where the middleware finds it after the handler.
_NOTE_KEY: Final = "audit_note"
_EVENTS_KEY: Final = "audit_events"
_SKIP_KEY: Final = "audit_skip_generic"


@dataclass(slots=True)
class AuditNote:
    """What a handler adds to its request's entry: the object, its store, before and after."""

    target: str | None = None
    store_id: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """An entry of its own: a sign-in, a refused token, a token's use, a CLI action."""

    action: str
    actor: str
    actor_kind: str
    outcome: str
    target: str | None = None
    store_id: str | None = None
    client: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    detail: str | None = None


@dataclass(slots=True)
class _Events:
    items: list[AuditEvent] = field(default_factory=list)


def note_change(
    request: Request,
    *,
    target: str | None = None,
    store_id: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    detail: str | None = None,
) -> None:
    """Add the object a handler changed to its request's audit entry (later calls fill in what is given)."""
    note: AuditNote = getattr(request.state, _NOTE_KEY, None) or AuditNote()
    note.target = target if target is not None else note.target
    note.store_id = store_id if store_id is not None else note.store_id
    note.before = before if before is not None else note.before
    note.after = after if after is not None else note.after
    note.detail = detail if detail is not None else note.detail
    setattr(request.state, _NOTE_KEY, note)


def add_event(request: Request, event: AuditEvent, *, instead_of_generic: bool = False) -> None:
    """Record ``event`` when the request ends; ``instead_of_generic``: no generic entry for this request."""
    events: _Events = getattr(request.state, _EVENTS_KEY, None) or _Events()
    events.items.append(event)
    setattr(request.state, _EVENTS_KEY, events)
    if instead_of_generic:
        setattr(request.state, _SKIP_KEY, True)


def note_of(state: dict[str, Any]) -> AuditNote | None:
    """The handler's note on a finished request's state."""
    note: AuditNote | None = state.get(_NOTE_KEY)
    return note


def events_of(state: dict[str, Any]) -> list[AuditEvent]:
    """The explicit events of a finished request."""
    events: _Events | None = state.get(_EVENTS_KEY)
    return list(events.items) if events is not None else []


def skips_generic(state: dict[str, Any]) -> bool:
    """Whether the request's own events replace its generic entry."""
    return bool(state.get(_SKIP_KEY))


def _cut(value: str | None, length: int) -> str | None:
    return value if value is None or len(value) <= length else value[: length - 1] + "…"


def entry(event: AuditEvent, *, at: datetime) -> AuditEntry:
    """The row of ``event``."""
    return AuditEntry(
        at=at,
        actor=_cut(event.actor, ACTOR_LENGTH) or "anonymous",
        actor_kind=event.actor_kind,
        action=_cut(event.action, ACTION_LENGTH) or "unknown",
        target=event.target,
        store_id=event.store_id,
        outcome=event.outcome,
        client=_cut(event.client, CLIENT_LENGTH),
        before=event.before,
        after=event.after,
        detail=event.detail,
    )


async def append(session: AsyncSession, events: list[AuditEvent], *, at: datetime) -> None:
    """Insert the entries (the caller commits)."""
    session.add_all([entry(event, at=at) for event in events])


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditFilter:
    """What to read back: every given filter applies."""

    actor: str | None = None
    action: str | None = None
    target: str | None = None  # targets starting with this: "alert:" every alert, "operator:mei" one operator
    store_id: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def read_entries(
    session: AsyncSession, wanted: AuditFilter, *, limit: int, before_id: int | None
) -> list[AuditEntry]:
    """Entries newest first, ``limit`` of them, with ids below ``before_id`` when given."""
    query = select(AuditEntry)
    if wanted.actor is not None:
        query = query.where(AuditEntry.actor == wanted.actor)
    if wanted.action is not None:
        # "login" matches login.succeeded and login.failed; "POST" every POST.
        query = query.where(AuditEntry.action.startswith(wanted.action, autoescape=True))
    if wanted.target is not None:
        query = query.where(AuditEntry.target.startswith(wanted.target, autoescape=True))
    if wanted.store_id is not None:
        query = query.where(AuditEntry.store_id == wanted.store_id)
    if wanted.outcome is not None:
        query = query.where(AuditEntry.outcome == wanted.outcome)
    if wanted.since is not None:
        query = query.where(AuditEntry.at >= wanted.since)
    if wanted.until is not None:
        query = query.where(AuditEntry.at < wanted.until)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    rows = await session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit))
    return list(rows.all())
