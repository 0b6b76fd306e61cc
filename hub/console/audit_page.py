"""``/audit``: the audit log for admins, newest first, filtered and paged.

The same entries as ``GET /api/v1/audit`` (admins only, chain-wide; both read by
:func:`hub.auth.audit.read_entries`), as a page: filter by actor (exactly), action and target (each by its
beginning: ``POST /api/v1/alerts`` or ``alert:``), store, and time (``since`` inclusive, ``until`` exclusive; a time
without a zone is UTC, as the page shows them). Pages go back by id (keyset: a page costs the same however deep),
:data:`PAGE_SIZE` entries at a time.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from hub.api.deps import SessionDep
from hub.api.params import invalid
from hub.auth.audit import AuditFilter, read_entries
from hub.console.templating import ReaderDep, page
from hub.db.bounds import INT64_MAX
from storegate.wire import SEGMENT_PATTERN

router = APIRouter(tags=["dashboard"])

PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 200
# A change's before and after are shown up to this many characters each (the API has them whole).
MAX_CHANGE_CHARS: Final = 300
MAX_TIME_CHARS: Final = 40


def parse_time(parameter: str, text: str | None) -> datetime | None:
    """An ISO 8601 time of a filter (a form's ``2025-01-31T12:00`` is UTC); empty is none; a 422 otherwise."""
    if text is None or not text.strip():
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise invalid(parameter, f"{parameter} is not a time: give one as 2025-01-31T12:00 (UTC)", text) from None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise invalid(parameter, f"{parameter} is outside the years 1 to 9999 in UTC", text) from None


def change_text(change: dict[str, Any] | None) -> str | None:
    """A change's before or after as compact JSON, cut at :data:`MAX_CHANGE_CHARS`."""
    if change is None:
        return None
    text = json.dumps(change, ensure_ascii=False, separators=(", ", ": "), sort_keys=True, default=str)
    return text if len(text) <= MAX_CHANGE_CHARS else text[:MAX_CHANGE_CHARS] + "…"


@router.get(
    "/audit",
    response_class=HTMLResponse,
    summary="The audit log",
    description="Who did what, when, from where, with what outcome; newest first; admins only.",
    include_in_schema=False,
)
async def audit_page(
    request: Request,
    session: SessionDep,
    reader: ReaderDep,
    actor: Annotated[str | None, Query(max_length=128, description="exactly this actor")] = None,
    action: Annotated[str | None, Query(max_length=160, description="actions starting with this")] = None,
    target: Annotated[str | None, Query(max_length=300, description="targets starting with this")] = None,
    store_id: Annotated[str | None, Query(max_length=63, pattern=f"^$|{SEGMENT_PATTERN}")] = None,
    since: Annotated[str | None, Query(max_length=MAX_TIME_CHARS, description="at or after (UTC)")] = None,
    until: Annotated[str | None, Query(max_length=MAX_TIME_CHARS, description="before (UTC)")] = None,
    before: Annotated[int | None, Query(ge=1, le=INT64_MAX, description="the next page's mark")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
) -> HTMLResponse:
    """A page of the audit log."""
    wanted = AuditFilter(
        actor=actor or None,
        action=action or None,
        target=target or None,
        store_id=store_id or None,
        since=parse_time("since", since),
        until=parse_time("until", until),
    )
    entries = await read_entries(session, wanted, limit=limit, before_id=before)
    chosen = {
        "actor": actor or "",
        "action": action or "",
        "target": target or "",
        "store_id": store_id or "",
        "since": since or "",
        "until": until or "",
    }
    filters = {key: value for key, value in chosen.items() if value}
    if limit != PAGE_SIZE:
        filters["limit"] = str(limit)
    older = f"/audit?{urlencode({**filters, 'before': entries[-1].id})}" if len(entries) == limit else None
    newest = f"/audit?{urlencode(filters)}" if before is not None else None
    return page(
        "audit.html",
        reader,
        request,
        entries=entries,
        chosen=chosen,
        older=older,
        newest=newest,
        change_text=change_text,
    )
