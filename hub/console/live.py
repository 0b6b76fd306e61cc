"""``GET /console/live``: the overview and the alert list kept live with server-sent events.

One poller per hub process (:class:`LiveFeed`), not one per reader, reads the database every ``interval_s``: the
alert transitions written since it last looked (``alert_history`` ids only grow) and, while an overview is open,
the state of every store (hub.console.overview's grouped queries). It works the same on SQLite and PostgreSQL and
across several hub processes, since every process reads what any of them committed. It runs only while someone
listens and stops when the last reader leaves or the hub stops.

Each reader (:class:`LiveClient`) gets only what its page shows and its scope reaches, rendered in its language:
htmx out-of-band swaps of one row or of the counts, a new alert at the top of the list (``data-alarm`` when it is
critical, for the reader's optional sound). What it was last sent is kept per reader, and nothing is sent again
that did not change. Everything is bounded: readers per process (503 beyond), messages waiting per reader (a reader
that does not keep up is dropped, and its browser reconnects), transitions read per pass; a comment every
``heartbeat_s`` keeps proxies from closing a quiet stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Final, Literal

import structlog
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.alerting.models import AlertHistoryRow
from hub.api.deps import RuntimeDep
from hub.auth.guard import PrincipalDep
from hub.console import alerts as alert_pages
from hub.console import overview, templating
from hub.console.templating import Reader, render
from hub.errors import HubError
from storegate import wire

log = structlog.get_logger(__name__)

router = APIRouter(tags=["dashboard"])

INTERVAL_S: Final = 0.5
HEARTBEAT_S: Final = 15.0
MAX_CLIENTS: Final = 500
# Messages waiting for one reader; past this it is not keeping up and is dropped (its browser reconnects).
QUEUE_SIZE: Final = 256
# Transitions read per pass: a burst larger than this is read over the next passes.
MAX_TRANSITIONS: Final = 1_000
# On PostgreSQL a transition with a lower id may commit after one with a higher id was read: each pass reads this
# many ids back again; what a reader was already sent is not sent twice.
LOOKBACK_IDS: Final = 200
# A browser told to reconnect this soon after a dropped stream.
RETRY_MS: Final = 2_000
# A stream ends after this long and the browser reconnects: its credentials are checked again, so a session signed
# out, expired or revoked, or an operator disabled, stops receiving within this time.
MAX_STREAM_S: Final = 300.0

View = Literal["overview", "alerts"]


class LiveFullError(HubError, RuntimeError):
    """The process serves as many live readers as it may, or is stopping."""


@dataclass(eq=False)
class LiveClient:
    """One open stream: what its page shows, what it was last sent, and its queue of messages."""

    view: View
    reader: Reader
    # The newest transition the page already showed (alerts); transitions after it are news.
    since: int = 0
    store_filters: overview.StoreFilters = field(default_factory=overview.StoreFilters)
    page_number: int = 1
    # The overview's rows the page holds (as the poller knew the stores when the reader came, then as sent).
    on_page: set[str] = field(default_factory=set)
    alert_filters: alert_pages.AlertFilters = field(default_factory=alert_pages.AlertFilters)
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    # Per row id (and "#counts"): what it was last sent; "gone" for a row it was told to remove.
    sent: dict[str, object] = field(default_factory=dict)
    seen_history: int = 0
    # The transitions of the last LOOKBACK_IDS already handled for this reader.
    handled: set[int] = field(default_factory=set)
    dropped: bool = False

    def offer(self, message: str) -> None:
        """Queue a message, or drop the reader when it does not keep up."""
        if self.dropped:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.close()
            self.dropped = True
            log.warning("live_reader_dropped", reader=self.reader.who.name, view=self.view, queued=QUEUE_SIZE)

    def close(self) -> None:
        """End the stream: whatever waits is dropped and the stream sees its end."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


def event(html: str) -> str:
    """One server-sent event named ``update`` carrying ``html`` (each line a ``data:`` line)."""
    lines = "".join(f"data: {line}\n" for line in html.strip().splitlines())
    return f"event: update\n{lines}\n"


class LiveFeed:
    """The process's poller and its readers (see the module docstring)."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        grace_s: float,
        clock: Callable[[], datetime] = wire.utc_now,
        interval_s: float = INTERVAL_S,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.sessions = sessions
        self.grace_s = grace_s
        self.clock = clock
        self.interval_s = interval_s
        self.max_clients = max_clients
        self.clients: set[LiveClient] = set()
        self.passes = 0
        self._task: asyncio.Task[None] | None = None
        self._cursor: int | None = None
        self._states: dict[str, overview.StoreState] | None = None
        self._closed = False
        # The overview's pages read the stores' states from here, and the poller refreshes it.
        self.shared_states = overview.SharedStates(sessions=sessions)
        # And the hub's own problems the overview names above its counts.
        self.hub_problems = overview.SharedProblems()

    @property
    def running(self) -> bool:
        """Whether the poller runs (it does while someone listens)."""
        return self._task is not None and not self._task.done()

    def join(self, client: LiveClient) -> None:
        """Add a reader and start the poller if it is the first; LiveFullError when the process has enough."""
        if self._closed:
            raise LiveFullError("the hub is stopping")
        if len(self.clients) >= self.max_clients:
            raise LiveFullError(f"this hub process already serves {self.max_clients} live pages")
        client.seen_history = client.since
        if client.view == "overview" and self._states is not None:
            self._baseline(client, self._states)
        self.clients.add(client)
        if not self.running:
            self._task = asyncio.create_task(self._run(), name="console live poller")

    def leave(self, client: LiveClient) -> None:
        """Remove a reader; the poller stops by itself when none is left."""
        self.clients.discard(client)

    async def close(self) -> None:
        """End every stream and stop the poller (at shutdown)."""
        self._closed = True
        await self.shared_states.close()
        for client in list(self.clients):
            client.close()
        self.clients.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        try:
            while self.clients:
                try:
                    await self.poll()
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # a database hiccup: readers keep their streams, the next pass retries
                    log.warning("live_poll_failed", error=str(err))
                await asyncio.sleep(self.interval_s)
        finally:
            # Nobody listens: the next reader starts afresh (store states read again before anything is sent).
            self._states = None
            self._cursor = None

    async def poll(self) -> None:
        """One pass: read what changed, send each reader what it shows and has not been sent."""
        self.passes += 1
        clients = list(self.clients)
        async with self.sessions() as session:
            if any(c.view == "alerts" for c in clients):
                await self._alerts(session, [c for c in clients if c.view == "alerts"])
            overviews = [c for c in clients if c.view == "overview"]
            if overviews:
                await self._overview(session, overviews)

    # ------------------------------------------------------------------ alerts

    async def _alerts(self, session: AsyncSession, clients: list[LiveClient]) -> None:
        if self._cursor is None:
            self._cursor = await alert_pages.newest_history_id(session)
        low = max(0, min([self._cursor, *(c.seen_history for c in clients)]) - LOOKBACK_IDS)
        rows = (
            await session.execute(
                select(AlertHistoryRow.id, AlertHistoryRow.alert_id, AlertHistoryRow.action)
                .where(AlertHistoryRow.id > low)
                .order_by(AlertHistoryRow.id)
                .limit(MAX_TRANSITIONS)
            )
        ).all()
        if not rows:
            return
        newest = rows[-1][0]
        opened = {alert_id: history_id for history_id, alert_id, action in rows if action == "opened"}
        views = {v.alert_id: v for v in await alert_pages.alerts_by_id(session, {r[1] for r in rows})}
        rendered: dict[tuple[object, ...], str] = {}
        for client in clients:
            changed: dict[str, int] = {}
            for history_id, alert_id, _ in rows:
                # Each transition once, and none the page already showed; a late commit below the newest is read
                # again by the lookback and handled then.
                if history_id > client.since and history_id not in client.handled:
                    changed[alert_id] = history_id
                    client.handled.add(history_id)
            for alert_id in sorted(changed, key=changed.__getitem__):
                view = views.get(alert_id)
                if view is not None:
                    self._send_alert(client, view, opened.get(alert_id), rendered)
            client.seen_history = max(client.seen_history, newest)
            client.handled = {i for i in client.handled if i > client.seen_history - LOOKBACK_IDS}
        self._cursor = max(self._cursor, newest)

    @staticmethod
    def _send_alert(
        client: LiveClient,
        view: alert_pages.AlertView,
        opened_id: int | None,
        rendered: dict[tuple[object, ...], str],
    ) -> None:
        reader = client.reader
        if not reader.who.reaches(view.row.store_id):
            return
        alert_id = view.alert_id
        last = client.sent.get(alert_id)
        if not alert_pages.passes(view.row, client.alert_filters):
            # Off the page's filter now: remove the row, once, if the page may show it.
            if (last is not None and last != "gone") or (last is None and (opened_id or 0) <= client.since):
                client.sent[alert_id] = "gone"
                client.offer(event(f'<tr id="alert-{alert_id}" hx-swap-oob="delete"></tr>'))
            return
        fingerprint = view.fingerprint
        if last == fingerprint:
            return
        new = (last is None or last == "gone") and opened_id is not None and opened_id > client.since
        key = (alert_id, fingerprint, reader.locale, reader.may_operate, new)
        if key not in rendered:
            row = render("_alert_row.html", reader, {"alert": view, "oob": not new, "alarm": new})
            rendered[key] = f'<tbody hx-swap-oob="afterbegin:#alerts tbody">{row}</tbody>' if new else row
        client.sent[alert_id] = fingerprint
        client.offer(event(rendered[key]))

    # ------------------------------------------------------------------ the overview

    @staticmethod
    def _visible(client: LiveClient, states: Iterable[overview.StoreState]) -> list[overview.StoreState]:
        return [s for s in states if client.reader.who.reaches(s.store_id)]

    def _baseline(self, client: LiveClient, states: dict[str, overview.StoreState]) -> None:
        """What the reader's page shows, as far as the poller knows: only changes from it are sent."""
        visible = self._visible(client, states.values())
        client.sent["#counts"] = overview.counts_of(visible)
        for state in visible:
            client.sent[state.store_id] = state
        client.on_page = {s.store_id for s in overview.page_of(visible, client.store_filters, client.page_number).rows}

    async def _overview(self, session: AsyncSession, clients: list[LiveClient]) -> None:
        now = self.clock()
        states = await overview.store_states(session, store_ids=None, now=now, grace_s=self.grace_s)
        self.shared_states.put(states)
        previous, self._states = self._states, states
        if previous is None:
            for client in clients:
                self._baseline(client, states)
            return
        changed = [s for store_id, s in states.items() if previous.get(store_id) != s]
        rendered: dict[tuple[object, ...], str] = {}
        for client in clients:
            if "#counts" not in client.sent:
                self._baseline(client, previous)
            reader = client.reader
            for state in changed:
                if not reader.who.reaches(state.store_id) or client.sent.get(state.store_id) == state:
                    continue
                client.sent[state.store_id] = state
                on_page = state.store_id in client.on_page
                # A store that comes to need attention is put at the top of a page that did not hold it; any other
                # change replaces the row where it is (the order is the page's until it is loaded again).
                if not on_page and not (state.needs_attention and overview.matches(state, client.store_filters)):
                    continue
                key = (state, reader.locale, now.replace(second=0, microsecond=0), on_page)
                if key not in rendered:
                    row = render("_overview_row.html", reader, {"store": state, "now": now, "oob": on_page})
                    rendered[key] = row if on_page else f'<tbody hx-swap-oob="afterbegin:#stores tbody">{row}</tbody>'
                client.on_page.add(state.store_id)
                client.offer(event(rendered[key]))
            counts = overview.counts_of(self._visible(client, states.values()))
            if client.sent.get("#counts") != counts:
                client.sent["#counts"] = counts
                client.offer(event(render("_overview_counts.html", reader, {"counts": counts, "oob": True})))


# --------------------------------------------------------------------------- the route

MAX_FILTER_CHARS: Final = 100


def _client(
    view: View,
    reader: Reader,
    *,
    since: int,
    q: str,
    region: str,
    state: str,
    severity: str,
    rule: str,
    store_id: str,
    page_number: int,
) -> LiveClient:
    """The reader's stream for its page's filters; 422 for a filter the page does not offer, 403 outside scope."""
    if view == "overview":
        if state not in overview.STATE_FILTERS:
            raise HTTPException(status_code=422, detail=f"state: the overview has no filter {state!r}")
        filters = overview.StoreFilters(q=q.strip(), region=region, state=state)
        return LiveClient(view=view, reader=reader, store_filters=filters, page_number=page_number)
    if state not in alert_pages.STATE_CHOICES:
        raise HTTPException(status_code=422, detail=f"state: alerts are never {state!r}")
    if severity not in alert_pages.SEVERITY_CHOICES:
        raise HTTPException(status_code=422, detail=f"severity: no alert is {severity!r}")
    if store_id and not reader.who.reaches(store_id):
        raise HTTPException(status_code=403, detail=f"store {store_id!r} is outside your access")
    alert_filters = alert_pages.AlertFilters(
        severity=severity,
        state=state,
        rule=rule.strip(),
        store_id=store_id.strip(),
    )
    return LiveClient(view=view, reader=reader, since=since, alert_filters=alert_filters)


@router.get(
    "/console/live",
    summary="The console's live updates",
    description="Server-sent events for the overview (view=overview) or the alert list (view=alerts) with the "
    "page's filters: htmx fragments of what changed, for the reader's stores only.",
    response_class=StreamingResponse,
    responses={503: {"description": "this hub process serves as many live pages as it may, or is stopping"}},
    # A stream for the console's own pages, not an API for clients: it never ends, so a client reading it whole
    # (an OpenAPI property test, a generated client) would wait forever.
    include_in_schema=False,
)
async def get_live(
    request: Request,
    runtime: RuntimeDep,
    who: PrincipalDep,
    view: Annotated[View, Query()],
    since: Annotated[int, Query(ge=0, description="the newest alert transition the page showed")] = 0,
    q: Annotated[str, Query(max_length=MAX_FILTER_CHARS)] = "",
    region: Annotated[str, Query(max_length=MAX_FILTER_CHARS)] = "",
    state: Annotated[str, Query(max_length=MAX_FILTER_CHARS)] = "",
    severity: Annotated[str, Query(max_length=MAX_FILTER_CHARS)] = "",
    rule: Annotated[str, Query(max_length=64)] = "",
    store_id: Annotated[str, Query(max_length=63)] = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=10_000, description="the overview's page")] = 1,
) -> StreamingResponse:
    """The stream; it ends when the reader leaves, is dropped, or the hub stops."""
    feed: LiveFeed | None = getattr(request.app.state, "live", None)
    if feed is None:
        raise HTTPException(status_code=503, detail="this hub process serves no live pages")
    # Its own short session: a stream lasts hours, and must not hold a database connection for them.
    async with runtime.sessions() as session:
        reader = await templating.reader(request, session, who)
        newest = await alert_pages.newest_history_id(session) if view == "alerts" else 0
    # No page's mark (or one from the future): news from now on. An old one: at most a pass's worth of catching up.
    since = newest if not 0 < since <= newest else max(since, newest - MAX_TRANSITIONS)
    client = _client(
        view,
        reader,
        since=since,
        q=q,
        region=region,
        state=state,
        severity=severity,
        rule=rule,
        store_id=store_id,
        page_number=page_number,
    )
    try:
        feed.join(client)
    except LiveFullError as err:
        raise HTTPException(status_code=503, detail=str(err), headers={"Retry-After": "30"}) from None
    return StreamingResponse(
        _stream(feed, client),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


async def _stream(feed: LiveFeed, client: LiveClient) -> AsyncIterator[str]:
    ends = time.monotonic() + MAX_STREAM_S
    try:
        yield f"retry: {RETRY_MS}\n: live\n\n"
        while (left := ends - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(client.queue.get(), timeout=min(HEARTBEAT_S, left))
            except TimeoutError:
                yield ": heartbeat\n\n"
                continue
            if message is None:
                return
            yield message
    finally:
        feed.leave(client)
