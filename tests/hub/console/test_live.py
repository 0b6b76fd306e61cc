"""The console's live stream, read over a real socket (uvicorn on loopback) as a browser's EventSource reads it: a
new alert and a state change arrive, each reader only gets its own stores and its page's filters, nothing is sent
twice, a slow reader is dropped, and the one poller stops when nobody listens."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypeVar

import httpx
import pytest
import uvicorn
from sqlalchemy import update

from hub.console import live, overview
from hub.console.live import LiveClient, LiveFeed
from hub.console.templating import Reader
from hub.db.models import Gateway
from hub.domain.access import Principal, Role
from hub.settings import HubSettings
from storegate import wire
from tests.conftest import eventually
from tests.hub.conftest import RunningHub, make_token, running_hub
from tests.hub.console.test_alerts import Shop, add_stores, any_hub, raise_alert

__all__ = ["any_hub"]

T = TypeVar("T")

# A change reaches a reader within 2 s of its commit (issue 16); a test waits longer only to fail in words.
DEADLINE_S = 10.0


@dataclass
class Served:
    """The hub's app served on a loopback port the OS picked."""

    hub: RunningHub
    base_url: str

    @property
    def feed(self) -> LiveFeed:
        feed: LiveFeed = self.hub.app.state.live
        return feed


@pytest.fixture
async def served(any_hub: RunningHub) -> AsyncIterator[Served]:
    """``any_hub`` (SQLite or PostgreSQL), also answering over HTTP on loopback."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(any_hub.app, lifespan="off", log_config=None, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: _true(server.started), timeout=10, what="uvicorn listening")
        yield Served(any_hub, f"http://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


async def _true(value: T) -> T:
    """``value`` as an awaitable, for :func:`eventually`."""
    return value


@dataclass
class Stream:
    """The events of one open stream, as they arrive."""

    events: list[str] = field(default_factory=list)
    comments: int = 0
    status: int | None = None
    ended: bool = False

    def containing(self, text: str) -> list[str]:
        return [e for e in self.events if text in e]


@contextlib.asynccontextmanager
async def stream(served: Served, token: str, query: str) -> AsyncIterator[Stream]:
    """Read ``/console/live?<query>`` in the background while the block runs."""
    seen = Stream()

    async def read() -> None:
        headers = {"Authorization": f"Bearer {token}", "accept": "text/event-stream"}
        async with (
            httpx.AsyncClient(base_url=served.base_url, timeout=httpx.Timeout(5, read=None)) as client,
            client.stream("GET", f"/console/live?{query}", headers=headers) as response,
        ):
            seen.status = response.status_code
            data: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    seen.comments += 1
                elif line.startswith("data: "):
                    data.append(line[len("data: ") :])
                elif not line and data:
                    seen.events.append("\n".join(data))
                    data = []
        seen.ended = True

    task = asyncio.create_task(read())
    try:
        await eventually(lambda: _true(seen.comments > 0 or seen.ended), timeout=DEADLINE_S, what="the stream open")
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await task


async def passes_after(feed: LiveFeed, count: int) -> None:
    """Wait until the poller made ``count`` more passes (so a message it would send has been sent)."""
    target = feed.passes + count
    await eventually(lambda: _true(feed.passes >= target), timeout=DEADLINE_S, what=f"{count} more passes")


async def test_a_new_alert_arrives_at_the_top_and_a_change_replaces_its_row_once(served: Served) -> None:
    hub = served.hub
    await add_stores(hub, Shop("store-0001", name="Main street", timezone="Asia/Taipei"))
    token = await make_token(hub.runtime, "ops")
    since = 0
    async with stream(served, token, f"view=alerts&since={since}") as seen:
        alert_id = await raise_alert(hub, "store-0001", severity="critical")
        [new] = await eventually(
            lambda: _true(seen.containing(f'id="alert-{alert_id}"')), timeout=DEADLINE_S, what="the new alert"
        )
        assert new.startswith('<tbody hx-swap-oob="afterbegin:#alerts tbody">')
        assert "data-alarm" in new  # critical: the reader's optional sound
        assert 'data-action="acknowledge"' in new
        assert len(new.encode()) < 2048
        # Acknowledged through the API: the row is replaced, not added again.
        async with hub.client_with(token) as client:
            acknowledged = await client.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={"note": "mine"})
            assert acknowledged.status_code == 200
        await eventually(
            lambda: _true(seen.containing('data-state="acknowledged"')), timeout=DEADLINE_S, what="the change"
        )
        [changed] = seen.containing('data-state="acknowledged"')
        assert changed.startswith(f'<tr id="alert-{alert_id}"')
        assert 'hx-swap-oob="outerHTML"' in changed
        assert "data-alarm" not in changed
        # Several passes later (each reads recent transitions again): nothing was sent twice.
        await passes_after(served.feed, 4)
        assert len(seen.containing(f'id="alert-{alert_id}"')) == 2


async def test_each_reader_gets_only_its_stores_and_its_filters(served: Served) -> None:
    hub = served.hub
    await add_stores(hub, Shop("north-1"), Shop("south-1"))
    north_only = await make_token(hub.runtime, "viewer", store_ids=["north-1"])
    everything = await make_token(hub.runtime, "admin")
    async with (
        stream(served, north_only, "view=alerts") as north,
        stream(served, everything, "view=alerts&severity=warning") as warnings,
    ):
        south_critical = await raise_alert(hub, "south-1", severity="critical")
        south_warning = await raise_alert(hub, "south-1", severity="warning", rule_id="chillers")
        north_alert = await raise_alert(hub, "north-1", severity="critical")
        await eventually(lambda: _true(north.events), timeout=DEADLINE_S, what="the north alert")
        await eventually(lambda: _true(warnings.events), timeout=DEADLINE_S, what="the warning")
        await passes_after(served.feed, 2)
        assert [north_alert in e for e in north.events] == [True]
        assert not north.containing(south_critical)
        assert not north.containing(south_warning)
        assert 'data-action="acknowledge"' not in north.events[0]  # a viewer gets no buttons
        assert [south_warning in e for e in warnings.events] == [True]
    # A store outside the reader's scope, or a filter no page offers, is refused before any stream opens.
    async with stream(served, north_only, "view=alerts&store_id=south-1") as refused:
        assert refused.status == 403
    async with stream(served, everything, "view=alerts&state=burning") as invalid:
        assert invalid.status == 422


async def test_a_gateway_going_offline_changes_the_overview_row_and_counts_of_its_readers(served: Served) -> None:
    hub = served.hub
    await add_stores(hub, Shop("north-1", name="North"), Shop("south-1", name="South"))
    south_only = await make_token(hub.runtime, "viewer", store_ids=["south-1"])
    everything = await make_token(hub.runtime, "ops")
    async with (
        stream(served, everything, "view=overview") as chain_wide,
        stream(served, south_only, "view=overview") as south,
        stream(served, everything, "view=overview&state=ok&q=south") as filtered,
    ):
        await passes_after(served.feed, 2)  # the poller knows the stores as they were: nothing to send
        assert chain_wide.events == []
        async with hub.runtime.sessions() as session, session.begin():
            await session.execute(
                update(Gateway)
                .where(Gateway.store_id == "north-1")
                .values(online=False, status_changed_at=wire.utc_now())
            )
        await eventually(lambda: _true(len(chain_wide.events) >= 2), timeout=DEADLINE_S, what="row and counts")
        [row] = chain_wide.containing('data-store-id="north-1"')
        assert row.startswith('<tr id="store-north-1" data-store-id="north-1" class="attention"')
        assert "Gateway offline" in row
        [counts] = chain_wide.containing('<section id="counts"')
        assert 'data-count="offline"><span class="value">1<' in counts
        await passes_after(served.feed, 3)
        assert len(chain_wide.events) == 2  # nothing again while nothing changes
        assert south.events == []  # not its store, and its counts did not change
        # Its page shows only south-1: the counts (of every store it reaches) change, no row is sent.
        assert [e.startswith('<section id="counts"') for e in filtered.events] == [True]


async def test_the_poller_runs_only_while_someone_listens(served: Served) -> None:
    hub = served.hub
    feed = served.feed
    assert not feed.running
    token = await make_token(hub.runtime, "viewer")
    async with stream(served, token, "view=overview"):
        assert feed.running
        assert len(feed.clients) == 1
    await eventually(lambda: _true(not feed.clients), timeout=DEADLINE_S, what="the reader gone")
    await eventually(lambda: _true(not feed.running), timeout=DEADLINE_S, what="the poller stopped")


async def test_readers_past_the_limit_are_refused_in_words(served: Served) -> None:
    token = await make_token(served.hub.runtime, "viewer")
    served.feed.max_clients = 1
    async with stream(served, token, "view=overview") as first, stream(served, token, "view=overview") as second:
        assert first.status == 200
        assert second.status == 503
        assert second.ended


def reader(name: str = "slow") -> Reader:
    return Reader(who=Principal(kind="user", name=name, role=Role.VIEWER, store_ids=None), locale="en")


def test_a_reader_that_does_not_keep_up_is_dropped_not_buffered() -> None:
    client = LiveClient(view="alerts", reader=reader())
    for number in range(live.QUEUE_SIZE):
        client.offer(f"message {number}")
    assert not client.dropped
    client.offer("one too many")
    assert client.dropped
    assert client.queue.qsize() == 1
    assert client.queue.get_nowait() is None  # the stream ends; the browser reconnects
    client.offer("after")
    assert client.queue.empty()


async def test_the_hub_stopping_ends_the_streams_and_the_poller(hub_settings: HubSettings) -> None:
    async with running_hub(hub_settings) as hub:
        feed: LiveFeed = hub.app.state.live
        client = LiveClient(view="overview", reader=reader())
        feed.join(client)
        assert feed.running
    assert not feed.running
    assert client.queue.get_nowait() is None
    assert hub.app.state.live is None


async def test_a_worker_serves_no_live_pages(hub_settings: HubSettings) -> None:
    async with running_hub(hub_settings.model_copy(update={"role": "worker"}), role=None) as worker:
        assert worker.app.state.live is None
        assert (await worker.client.get("/console/live?view=overview")).status_code == 404


async def test_a_store_off_the_page_that_comes_to_need_attention_is_put_at_the_top(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = served.hub
    monkeypatch.setattr(overview, "PAGE_SIZE", 1)
    await add_stores(hub, Shop("a-1"), Shop("b-2"), Shop("c-3"))
    token = await make_token(hub.runtime, "viewer")
    async with stream(served, token, "view=overview") as first_page:
        await passes_after(served.feed, 2)
        async with hub.runtime.sessions() as session, session.begin():
            await session.execute(update(Gateway).where(Gateway.store_id == "c-3").values(online=False))
        await eventually(
            lambda: _true(first_page.containing('data-store-id="c-3"')), timeout=DEADLINE_S, what="the row"
        )
        [row] = first_page.containing('data-store-id="c-3"')
        assert row.startswith('<tbody hx-swap-oob="afterbegin:#stores tbody"><tr id="store-c-3"')
        # Back online: the row now on the page is replaced where it is.
        async with hub.runtime.sessions() as session, session.begin():
            await session.execute(update(Gateway).where(Gateway.store_id == "c-3").values(online=True))
        await eventually(
            lambda: _true(len(first_page.containing('data-store-id="c-3"')) == 2), timeout=DEADLINE_S, what="again"
        )
        assert first_page.containing('data-store-id="c-3"')[1].startswith('<tr id="store-c-3"')
        assert not first_page.containing('data-store-id="b-2"')  # on page 2, and nothing to look at


async def test_a_stream_ends_in_time_so_its_credentials_are_checked_again(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "MAX_STREAM_S", 1.0)
    token = await make_token(served.hub.runtime, "viewer")
    async with stream(served, token, "view=overview") as seen:
        await eventually(lambda: _true(seen.ended), timeout=DEADLINE_S, what="the stream's end")
        assert seen.status == 200
    await eventually(lambda: _true(not served.feed.clients), timeout=DEADLINE_S, what="the reader gone")


async def test_a_stream_without_the_pages_mark_sends_only_what_happens_from_now_on(served: Served) -> None:
    hub = served.hub
    await add_stores(hub, Shop("store-0001"))
    before = await raise_alert(hub, "store-0001", severity="warning", rule_id="chillers")
    token = await make_token(hub.runtime, "ops")
    async with (
        stream(served, token, "view=alerts") as unmarked,
        stream(served, token, "view=alerts&since=999999") as from_the_future,
    ):
        after = await raise_alert(hub, "store-0001")
        await eventually(lambda: _true(unmarked.containing(after)), timeout=DEADLINE_S, what="the new alert")
        await eventually(lambda: _true(from_the_future.containing(after)), timeout=DEADLINE_S, what="the new alert")
        await passes_after(served.feed, 2)
        assert not unmarked.containing(before)
        assert not from_the_future.containing(before)
