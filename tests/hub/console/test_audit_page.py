"""The audit page: admins read who did what, newest first, filtered and paged; nobody else reads it (SQLite and
PostgreSQL)."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from hub.alerting.models import AlertRow
from hub.auth.models import AuditEntry
from hub.console import audit_page
from tests.hub.conftest import RunningHub
from tests.hub.console.conftest import add_operator, browser
from tests.hub.console.test_store_page import NOW, hub, hub_settings, insert_rows, seed_stores

__all__ = ["hub", "hub_settings"]  # this module's hubs are the store page's: both databases, a fixed clock

ROW = re.compile(r'<tr data-id="(\d+)" data-action="([^"]*)" data-actor="([^"]*)" data-target="([^"]*)">')


def rows(html: str) -> list[tuple[int, str, str, str]]:
    """The rows of table#audit: (id, action, actor, target), in the page's order."""
    return [(int(i), action, actor, target) for i, action, actor, target in ROW.findall(html)]


def entry(
    n: int, *, actor: str = "alice", action: str = "POST /api/v1/transfers", **fields: object
) -> dict[str, object]:
    return {
        "at": NOW - timedelta(hours=10 - n),
        "actor": actor,
        "actor_kind": "user",
        "action": action,
        "target": f"transfer:{n}",
        "store_id": None,
        "outcome": "201",
        "client": "10.0.0.7",
        "before": None,
        "after": None,
        "detail": None,
        **fields,
    }


async def test_an_acknowledged_alert_is_found_in_the_audit_log(hub: RunningHub) -> None:
    await seed_stores(hub)
    await add_operator(hub, "mei", "ops")
    await add_operator(hub, "root", "admin")
    async with hub.runtime.sessions() as session:
        alert_id = await session.scalar(select(AlertRow.alert_id).where(AlertRow.store_id == "taipei-1"))
    async with browser(hub, "mei") as mei:
        acknowledged = await mei.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={"note": "on my way"})
        assert acknowledged.status_code == 200, acknowledged.text
        assert (await mei.get("/audit")).status_code == 403  # ops do not read the log
    async with browser(hub, "root") as root:
        page = await root.get("/audit", params={"target": "alert:"})
        assert page.status_code == 200
    found = rows(page.text)
    assert [(action, actor, target) for _, action, actor, target in found] == [
        ("POST /api/v1/alerts/{alert_id}/acknowledge", "mei", f"alert:{alert_id}")  # the route, the object
    ]
    assert "taipei-1" in page.text  # the entry's store, linked to its page
    assert "&#34;status&#34;: &#34;acknowledged&#34;" in page.text  # after, as escaped JSON
    assert 'id="audit"' in page.text


async def test_filters_and_pages_go_back_newest_first(hub: RunningHub) -> None:
    await insert_rows(
        hub,
        AuditEntry,
        [
            *(entry(n) for n in range(1, 6)),
            entry(6, actor="bob", action="login.failed", outcome="refused"),
            entry(7, actor="bob", action="POST /api/v1/stores/berlin-1/stock/adjustments", store_id="berlin-1"),
            entry(8, actor="alice_x", action="POST /api/v1/transfers"),  # "_" is no wildcard
        ],
    )
    everything = rows((await hub.client.get("/audit")).text)
    assert [i for i, *_ in everything] == sorted((i for i, *_ in everything), reverse=True)
    ours = [r for r in everything if r[2] in ("alice", "bob", "alice_x")]
    assert [r[3] for r in ours] == [f"transfer:{n}" for n in range(8, 0, -1)]

    assert {r[2] for r in rows((await hub.client.get("/audit?actor=bob")).text)} == {"bob"}
    assert [r[1] for r in rows((await hub.client.get("/audit?action=login")).text)] == ["login.failed"]
    assert [r[3] for r in rows((await hub.client.get("/audit?store_id=berlin-1")).text)] == ["transfer:7"]
    assert [r[3] for r in rows((await hub.client.get("/audit?target=transfer:1")).text)] == ["transfer:1"]
    assert [r[3] for r in rows((await hub.client.get("/audit?target=transfer%")).text)] == []  # % is literal
    # A form's times (no zone) are UTC; since is inclusive, until exclusive.
    since = (NOW - timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M")
    until = (NOW - timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M")
    window = rows((await hub.client.get("/audit", params={"since": since, "until": until, "actor": "alice"})).text)
    assert [r[3] for r in window] == ["transfer:4", "transfer:3", "transfer:2"]

    first = await hub.client.get("/audit", params={"actor": "alice", "limit": 2})
    assert [r[3] for r in rows(first.text)] == ["transfer:5", "transfer:4"]
    older = re.search(r'<a class="button" href="([^"]+)" rel="next">', first.text)
    assert older is not None
    second = await hub.client.get(older.group(1).replace("&amp;", "&"))
    assert [r[3] for r in rows(second.text)] == ["transfer:3", "transfer:2"]
    assert 'href="/audit?actor=alice&amp;limit=2"' in second.text  # back to the newest, filters kept


async def test_only_chain_wide_admins_read_it_and_bad_filters_are_refused(hub: RunningHub) -> None:
    await add_operator(hub, "vic", "viewer")
    await add_operator(hub, "scoped", "admin", store_ids=("taipei-1",))
    async with browser(hub, "vic") as vic:
        refused = await vic.get("/audit")
        assert refused.status_code == 403
        assert "administer" in refused.text
    async with browser(hub, "scoped") as scoped:
        assert (await scoped.get("/audit")).status_code == 403
    async with hub.anonymous() as anonymous:
        assert (await anonymous.get("/audit")).headers["location"].startswith("/login")
    for params, name in (
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01T00:00"}, "until"),
        ({"since": "x" * 41}, "since"),
        ({"actor": "a" * 129}, "actor"),
        ({"target": "t" * 301}, "target"),
        ({"store_id": "Not A Store"}, "store_id"),
        ({"before": "0"}, "before"),
        ({"before": str(2**63)}, "before"),
        ({"limit": "201"}, "limit"),
    ):
        bad = await hub.client.get("/audit", params=params)
        assert bad.status_code == 422, params
        assert name in bad.json()["message"]


def test_changes_are_shown_compact_and_cut() -> None:
    assert audit_page.change_text(None) is None
    assert audit_page.change_text({"b": 1, "a": "台北"}) == '{"a": "台北", "b": 1}'
    long = audit_page.change_text({"note": "x" * 1000})
    assert long is not None
    assert len(long) == audit_page.MAX_CHANGE_CHARS + 1
    assert long.endswith("…")
