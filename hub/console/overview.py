"""``/``: the overview of the reader's stores, the ones that need attention first.

A store needs attention when a gateway is offline or silent, an alert is open, events were lost in the last day, or
a gateway's outbox is backing up. Its state is gathered in four grouped queries for all the reader's stores at once
(:func:`store_states`), never one query per store: with 1,000 stores the page stays one round of the database. The
order, the filters and the counts are pure functions of those states (:func:`attention_key`, :func:`matches`,
:func:`counts_of`), which the live stream (hub.console.live) shares, so a row sent live reads as the page does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import and_, case, func, select, union
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.alerting.models import AlertRow
from hub.api.checks import check_database, check_mqtt
from hub.api.deps import NowDep, RuntimeDep, SessionDep
from hub.catalog.models import StoreProfile
from hub.console.templating import ReaderDep, page
from hub.db.models import DataLossRecord, Gateway, Store
from hub.runtime import HubRuntime

log = structlog.get_logger(__name__)

router = APIRouter(tags=["dashboard"])

# Stores come this many to a page, those that need attention first: in a bad hour hundreds of stores need it, and a
# page of them all is neither readable nor cheap to render (the counts at the top still cover every store).
PAGE_SIZE: Final = 100
# How old the states shared by the readers of one process may be (the live stream corrects the page within a second).
SHARED_STATES_MAX_AGE_S: Final = 1.0
# How much older they may be served while they are read again in the background.
SHARED_STATES_STALE_FOR_S: Final = 10.0
# Events the hub learned were lost this recently (whenever the gateway lost them) make a store need attention;
# older losses stay on the store's page. Losses are rare: their table is small enough to read without an index.
LOSS_WINDOW: Final = timedelta(hours=24)
# A gateway's outbox this deep, or its oldest unacknowledged event this old, is a backlog worth looking at.
BACKLOG_EVENTS: Final = 1_000
BACKLOG_AGE_S: Final = 300.0
MAX_QUERY_CHARS: Final = 100
DEFAULT_TIME_ZONE: Final = "UTC"
SEVERITIES: Final = ("critical", "warning", "info")
# Alert states that count as open on the overview (acknowledged is someone on it, but not over).
ACTIVE_STATES: Final = ("open", "acknowledged")

StateFilter = Literal["", "attention", "offline", "alerts", "ok"]
STATE_FILTERS: Final[tuple[StateFilter, ...]] = ("", "attention", "offline", "alerts", "ok")


@dataclass(frozen=True, slots=True)
class StoreState:
    """What the overview shows of one store (its local time aside, which the page adds when it renders)."""

    store_id: str
    name: str | None
    region: str | None
    time_zone: str
    gateways: int = 0
    online: int = 0
    offline: int = 0
    silent: int = 0
    critical: int = 0
    warning: int = 0
    info: int = 0
    lost: int = 0
    backlog: int = 0
    backlog_age_s: float = 0.0

    # Why the store needs attention, worst first (empty: it does not); worked out once, when the state is made.
    reasons: tuple[str, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        found = (
            ("offline", self.offline > 0),
            ("critical", self.critical > 0),
            ("silent", self.silent > 0),
            ("warning", self.warning > 0),
            ("lost", self.lost > 0),
            ("backlog", self.backlog >= BACKLOG_EVENTS or self.backlog_age_s >= BACKLOG_AGE_S),
        )
        object.__setattr__(self, "reasons", tuple(reason for reason, present in found if present))

    @property
    def needs_attention(self) -> bool:
        return bool(self.reasons)

    @property
    def open_alerts(self) -> int:
        return self.critical + self.warning + self.info


def attention_key(state: StoreState) -> tuple[int, int, int, int, int, int, int, str]:
    """The overview's order: stores that need attention first, the worst first (offline, critical alerts, silent
    gateways, warnings, losses, backlog), then by id."""
    return (
        0 if state.needs_attention else 1,
        -state.offline,
        -state.critical,
        -state.silent,
        -state.warning,
        -state.lost,
        -state.backlog,
        state.store_id,
    )


@dataclass(frozen=True, slots=True)
class StoreFilters:
    """The overview's search and filters, as the form sends them."""

    q: str = ""
    region: str = ""
    state: StateFilter = ""

    @property
    def query_string(self) -> str:
        """The filters as a query string (for the live stream's URL and the next page's link)."""
        return urlencode({k: v for k, v in (("q", self.q), ("region", self.region), ("state", self.state)) if v})


def matches(state: StoreState, filters: StoreFilters) -> bool:
    """Whether a store passes the search (id or name, any case) and the region and state filters."""
    needle = filters.q.strip().casefold()
    if needle and needle not in state.store_id.casefold() and needle not in (state.name or "").casefold():
        return False
    if filters.region and state.region != filters.region:
        return False
    return {
        "": True,
        "attention": state.needs_attention,
        "offline": state.offline > 0 or state.silent > 0,
        "alerts": state.open_alerts > 0,
        "ok": not state.needs_attention,
    }[filters.state]


@dataclass(frozen=True, slots=True)
class Counts:
    """The numbers at the top of the overview, over every store the reader reaches (not only the filtered)."""

    stores: int
    attention: int
    offline: int
    critical: int
    warning: int


def counts_of(states: Iterable[StoreState]) -> Counts:
    """Stores, stores needing attention, stores with a gateway offline, open critical and warning alerts."""
    stores = attention = offline = critical = warning = 0
    for state in states:
        stores += 1
        attention += 1 if state.reasons else 0
        offline += 1 if state.offline else 0
        critical += state.critical
        warning += state.warning
    return Counts(stores=stores, attention=attention, offline=offline, critical=critical, warning=warning)


def _scoped(column: object, store_ids: Collection[str] | None) -> object:
    return True if store_ids is None else column.in_(sorted(store_ids))  # type: ignore[attr-defined]


async def store_states(
    session: AsyncSession, *, store_ids: Collection[str] | None, now: datetime, grace_s: float
) -> dict[str, StoreState]:
    """Every store of ``store_ids`` (None: all) the hub knows (by a gateway or a profile), by id."""
    ids = union(select(Store.store_id.label("store_id")), select(StoreProfile.store_id.label("store_id"))).subquery()
    stores = await session.execute(
        select(ids.c.store_id, StoreProfile.name, StoreProfile.region, StoreProfile.timezone)
        .outerjoin(StoreProfile, StoreProfile.store_id == ids.c.store_id)
        .where(_scoped(ids.c.store_id, store_ids))  # type: ignore[arg-type]
    )
    cutoff = now - timedelta(seconds=grace_s)
    seen = Gateway.online.is_(True)
    gateways = await session.execute(
        select(
            Gateway.store_id,
            func.count(),
            func.sum(case((and_(seen, Gateway.last_seen_at >= cutoff), 1), else_=0)),
            func.sum(case((Gateway.online.is_(False), 1), else_=0)),
            func.sum(case((and_(seen, Gateway.last_seen_at < cutoff), 1), else_=0)),
            func.max(Gateway.last_health["outbox_depth"].as_integer()),
            func.max(Gateway.last_health["oldest_unacked_age_s"].as_float()),
        )
        .where(Gateway.revoked_at.is_(None), _scoped(Gateway.store_id, store_ids))  # type: ignore[arg-type]
        .group_by(Gateway.store_id)
    )
    alerts = await session.execute(
        select(AlertRow.store_id, AlertRow.severity, func.count())
        .where(AlertRow.status.in_(ACTIVE_STATES), _scoped(AlertRow.store_id, store_ids))  # type: ignore[arg-type]
        .group_by(AlertRow.store_id, AlertRow.severity)
    )
    losses = await session.execute(
        select(DataLossRecord.store_id, func.sum(DataLossRecord.count))
        .where(DataLossRecord.recorded_at >= now - LOSS_WINDOW, _scoped(DataLossRecord.store_id, store_ids))  # type: ignore[arg-type]
        .group_by(DataLossRecord.store_id)
    )
    fields: dict[str, dict[str, object]] = {
        store_id: {"name": name, "region": region, "time_zone": time_zone or DEFAULT_TIME_ZONE}
        for store_id, name, region, time_zone in stores
    }
    for store_id, total, online, offline, silent, depth, age in gateways:
        if store_id in fields:
            fields[store_id].update(
                gateways=int(total),
                online=int(online or 0),
                offline=int(offline or 0),
                silent=int(silent or 0),
                backlog=int(depth or 0),
                backlog_age_s=float(age or 0.0),
            )
    for store_id, severity, count in alerts:
        if store_id in fields and severity in SEVERITIES:
            fields[store_id][severity] = int(count)
    for store_id, lost in losses:
        if store_id in fields:
            fields[store_id]["lost"] = int(lost or 0)
    return {store_id: StoreState(store_id=store_id, **values) for store_id, values in fields.items()}  # type: ignore[arg-type]


class SharedStates:
    """Every store's state, read at most once per ``max_age_s`` for all the readers of one hub process.

    Fifty people opening the overview at once cost one round of the four queries, not fifty; each reader's page is
    then the states its scope reaches. The live poller (hub.console.live) refreshes it as it reads, so a page and
    the stream it opens start from the same states.

    When the states are older than ``max_age_s`` but younger than ``max_age_s + stale_for_s``, a reader gets them at
    once and one refresh runs in the background (with ``sessions``): when every page waited for the reading once a
    second, 50 people opening the overview every 2 s waited 58 ms at the median and 4.3 s at the 95th percentile
    (bench/console_load.py, 1,000 stores, 100,000 alerts). Older than that, or on the first reading, readers wait
    for it together.
    """

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        max_age_s: float = SHARED_STATES_MAX_AGE_S,
        stale_for_s: float = SHARED_STATES_STALE_FOR_S,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.sessions = sessions
        self.max_age_s = max_age_s
        self.stale_for_s = stale_for_s
        self.monotonic = monotonic
        self._states: dict[str, StoreState] | None = None
        self._read_at = 0.0
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None

    def put(self, states: dict[str, StoreState]) -> None:
        """States just read (by the poller)."""
        self._states, self._read_at = states, self.monotonic()

    def _fresh(self) -> dict[str, StoreState] | None:
        if self._states is not None and self.monotonic() - self._read_at < self.max_age_s:
            return self._states
        return None

    def _usable_while_refreshed(self) -> dict[str, StoreState] | None:
        if self.sessions is None or self._states is None:
            return None
        if self.monotonic() - self._read_at >= self.max_age_s + self.stale_for_s:
            return None
        return self._states

    async def get(self, session: AsyncSession, *, now: datetime, grace_s: float) -> dict[str, StoreState]:
        """Every store's state, no older than ``max_age_s`` (or, while it is read again, ``stale_for_s`` more);
        readers arriving together share one reading."""
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        stale = self._usable_while_refreshed()
        if stale is not None:
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.create_task(self._read_again(now=now, grace_s=grace_s))
            return stale
        async with self._lock:
            fresh = self._fresh()
            if fresh is None:
                fresh = await store_states(session, store_ids=None, now=now, grace_s=grace_s)
                self.put(fresh)
            return fresh

    async def _read_again(self, *, now: datetime, grace_s: float) -> None:
        assert self.sessions is not None
        try:
            async with self._lock, self.sessions() as session:
                if self._fresh() is None:
                    self.put(await store_states(session, store_ids=None, now=now, grace_s=grace_s))
        except Exception as err:  # the next reader tries again; past stale_for_s, readers wait and see the error
            log.warning("overview_states_unread", error=str(err)[:200])

    async def close(self) -> None:
        """Stop a reading in the background (at shutdown)."""
        task, self._refresh = self._refresh, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class SharedProblems:
    """The hub's own problems (its database, its MQTT session) as the overview names them, checked at most once per
    ``max_age_s`` for all the readers of one hub process.

    The database check opens a connection of its own beside the one the page's session holds: fifty pages at once
    each waiting for a second connection emptied the pool, the pages waited seconds for it (8.5 overviews a second,
    p50 6 s, in bench/console_load.py) and the check could end saying the database was unreachable.
    """

    def __init__(self, *, max_age_s: float = SHARED_STATES_MAX_AGE_S, monotonic: Callable[[], float] = time.monotonic):
        self.max_age_s = max_age_s
        self.monotonic = monotonic
        self._problems: list[str] | None = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self) -> list[str] | None:
        if self._problems is not None and self.monotonic() - self._checked_at < self.max_age_s:
            return self._problems
        return None

    async def get(self, runtime: HubRuntime) -> list[str]:
        """The problems, in words; one check at a time, shared by the readers arriving while it runs."""
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        async with self._lock:
            fresh = self._fresh()
            if fresh is None:
                fresh = await hub_problems(runtime)
                self._problems, self._checked_at = fresh, self.monotonic()
            return fresh


async def hub_problems(runtime: HubRuntime) -> list[str]:
    """The hub's own problems now, as /healthz names them."""
    database, mqtt = await asyncio.gather(
        check_database(runtime.engine, runtime.settings.database_url, runtime.write_gate), check_mqtt(runtime.mqtt)
    )
    return [c.problem for c in (database, mqtt) if c.problem is not None]


def ordered(states: Iterable[StoreState], filters: StoreFilters) -> list[StoreState]:
    """The stores that pass the filters, in attention order."""
    return sorted((s for s in states if matches(s, filters)), key=attention_key)


@dataclass(frozen=True, slots=True)
class OverviewPage:
    """The rows of one page of the overview, in attention order."""

    rows: list[StoreState]
    shown_total: int
    more: bool


def page_of(states: Iterable[StoreState], filters: StoreFilters, page_number: int) -> OverviewPage:
    """The stores of page ``page_number`` (from 1) that pass the filters, in attention order: the worst on page 1."""
    shown = ordered(states, filters)
    start = (page_number - 1) * PAGE_SIZE
    return OverviewPage(
        rows=shown[start : start + PAGE_SIZE], shown_total=len(shown), more=start + PAGE_SIZE < len(shown)
    )


def regions_of(states: Iterable[StoreState]) -> list[str]:
    """The regions of the stores, for the filter's menu."""
    return sorted({s.region for s in states if s.region})


@router.get(
    "/",
    response_class=HTMLResponse,
    summary="Overview",
    description="The reader's stores, those that need attention first (offline or silent gateways, open alerts by "
    "severity, events lost, a backlog), with search and filters; live over /console/live.",
)
async def get_overview(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    now: NowDep,
    reader: ReaderDep,
    q: Annotated[str, Query(max_length=MAX_QUERY_CHARS, description="part of a store's id or name")] = "",
    region: Annotated[str, Query(max_length=MAX_QUERY_CHARS)] = "",
    state: Annotated[StateFilter, Query(description="attention, offline, alerts or ok")] = "",
    page_number: Annotated[int, Query(alias="page", ge=1, le=10_000, description="page of stores, worst first")] = 1,
) -> HTMLResponse:
    """The page: ``PAGE_SIZE`` stores at a time, those that need attention first."""
    live = getattr(request.app.state, "live", None)
    shared_problems: SharedProblems | None = getattr(live, "hub_problems", None)
    problems = await (shared_problems.get(runtime) if shared_problems is not None else hub_problems(runtime))
    grace_s = runtime.settings.gateway_offline_grace_s
    shared: SharedStates | None = getattr(live, "shared_states", None)
    if shared is None:
        states = await store_states(session, store_ids=reader.who.store_ids, now=now, grace_s=grace_s)
    else:
        every = await shared.get(session, now=now, grace_s=grace_s)
        states = {k: v for k, v in every.items() if reader.who.reaches(k)}
    filters = StoreFilters(q=q.strip(), region=region, state=state)
    listed = page_of(states.values(), filters, page_number)
    return page(
        "overview.html",
        reader,
        request,
        now=now,
        problems=problems,
        counts=counts_of(states.values()),
        regions=regions_of(states.values()),
        filters=filters,
        state_filters=STATE_FILTERS,
        stores=listed.rows,
        # Formatted once per time zone, not once per store.
        local_times={zone: reader.formats.time(now, zone) for zone in {s.time_zone for s in listed.rows}},
        shown_total=listed.shown_total,
        page_number=page_number,
        more=listed.more,
        oob=False,
    )
