"""The alert list and an alert's page: filters, scope, acting in one step (audited, 409 when someone acted first),
the history with who did what; on SQLite and PostgreSQL. Alerts are opened the way the rules open them
(hub.alerting.alerts_db.apply_signals)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from hub.alerting import alerts_db
from hub.alerting.models import AlertRow
from hub.auth.models import AuditEntry
from hub.catalog.models import StoreProfile
from hub.console.i18n import Formats
from hub.db.models import Gateway, Store
from hub.domain.alerts import AlertSignal, Severity, Subject
from hub.settings import HubSettings
from storegate import wire
from tests.hub.conftest import RunningHub, running_hub
from tests.hub.console.conftest import add_operator, browser


@pytest.fixture
async def any_hub(hub_settings: HubSettings, database_url: str) -> AsyncIterator[RunningHub]:
    """A running hub on SQLite or PostgreSQL."""
    async with running_hub(hub_settings.model_copy(update={"database_url": database_url})) as running:
        yield running


@dataclass(frozen=True)
class Shop:
    """A store for a test: its profile and its gateways' states."""

    store_id: str
    name: str | None = None
    region: str | None = None
    timezone: str = "UTC"
    gateways: Sequence[bool | None] = (True,)  # online, offline, never heard from
    silent: bool = False  # its online gateways have not been heard from for a long time
    backlog: int = 0


async def add_stores(hub: RunningHub, *shops: Shop) -> None:
    """Stores, their profiles (when named) and their gateways, written as the registry and the consumer do."""
    now = wire.utc_now()
    async with hub.runtime.sessions() as session, session.begin():
        for shop in shops:
            session.add(Store(store_id=shop.store_id, first_seen=now, event_count=0))
            await session.flush()
            if shop.name is not None:
                await session.execute(
                    insert(StoreProfile).values(
                        store_id=shop.store_id,
                        name=shop.name,
                        timezone=shop.timezone,
                        currency="EUR",
                        opening_hours={},
                        region=shop.region,
                        updated_at=now,
                    )
                )
            for number, online in enumerate(shop.gateways, start=1):
                seen = now - timedelta(hours=2) if shop.silent else now
                session.add(
                    Gateway(
                        store_id=shop.store_id,
                        gateway_id=f"gw-{number}",
                        online=online,
                        last_seen_at=None if online is None else seen,
                        devices=[],
                        last_health={"outbox_depth": shop.backlog} if shop.backlog else None,
                        enrolled_at=now,
                        enrolled_by="tests",
                        enrolment="operator",
                    )
                )


async def raise_alert(
    hub: RunningHub,
    store_id: str,
    *,
    severity: str = "critical",
    rule_id: str = "freezers",
    subject: str = "freezer-1",
    message: str = "freezer-1 at -9 °C",
    at: datetime | None = None,
) -> str:
    """An alert opened by a rule's signal, committed; its id."""
    signal = AlertSignal(
        action="raise",
        store_id=store_id,
        rule_id=rule_id,
        subject=Subject(kind="zone", id=subject),
        severity=Severity(severity),
        at=at or wire.utc_now(),
        message=message,
    )
    async with hub.runtime.sessions() as session, session.begin():
        [effect] = await alerts_db.apply_signals(
            session, [signal], rule_kinds={rule_id: "environment_range"}, now=wire.utc_now()
        )
    assert effect.alert_id is not None
    return effect.alert_id


def store_rows(html: str) -> list[str]:
    """The stores of the overview's table, in order."""
    body = html.split('<table id="stores"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr id="store-[^"]+" data-store-id="([^"]+)"', body)


def alert_rows(html: str) -> list[str]:
    """The alerts of the list, in order."""
    return re.findall(r'<tr id="alert-([^"]+)"', html)


async def status_of(hub: RunningHub, alert_id: str) -> str:
    async with hub.runtime.sessions() as session:
        row = await session.get(AlertRow, alert_id)
        assert row is not None
        return row.status


# --------------------------------------------------------------------------- the list


async def test_the_list_shows_the_readers_alerts_filtered_newest_first_in_the_store_time(any_hub: RunningHub) -> None:
    hub = any_hub
    await add_stores(
        hub,
        Shop("taipei-1", name="台北一店", timezone="Asia/Taipei", region="north"),
        Shop("berlin-1", name="Berlin <Mitte>", timezone="Europe/Berlin"),
    )
    now = wire.utc_now().replace(microsecond=0)
    older = await raise_alert(hub, "taipei-1", severity="warning", rule_id="chillers", at=now - timedelta(hours=1))
    newer = await raise_alert(hub, "berlin-1", message="<script>alert(1)</script>", at=now)
    await add_operator(hub, "olga", "ops")
    async with browser(hub, "olga") as olga:
        page = await olga.get("/alerts")
        assert page.status_code == 200
        assert alert_rows(page.text) == [newer, older]
        assert "<script>alert(1)" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "Berlin &lt;Mitte&gt;" in page.text
        # Opened on the store's wall clock (Taipei is UTC+8), not the hub's.
        assert Formats("en").date_time(now - timedelta(hours=1), "Asia/Taipei", size="short") in page.text
        assert 'data-severity="warning" data-state="open" data-store-id="taipei-1"' in page.text
        # Each filter narrows the list.
        for query, expected in [
            ("severity=warning", [older]),
            ("severity=critical", [newer]),
            ("rule=chillers", [older]),
            ("store_id=berlin-1", [newer]),
            ("state=resolved", []),
            ("state=active", [newer, older]),
        ]:
            assert alert_rows((await olga.get(f"/alerts?{query}")).text) == expected, query
        assert (await olga.get("/alerts?severity=fatal")).status_code == 422
        assert (await olga.get("/alerts?state=gone")).status_code == 422
        assert (await olga.get("/alerts?store_id=" + "x" * 200)).status_code == 422


async def test_a_scoped_operator_sees_only_its_stores_alerts_and_not_anothers_alert_page(hub: RunningHub) -> None:
    await add_stores(hub, Shop("north-1", region="north"), Shop("south-1", region="south"))
    mine = await raise_alert(hub, "north-1")
    theirs = await raise_alert(hub, "south-1")
    await add_operator(hub, "nina", "ops", store_ids=("north-1",))
    async with browser(hub, "nina") as nina:
        assert alert_rows((await nina.get("/alerts")).text) == [mine]
        assert (await nina.get("/alerts?store_id=south-1")).status_code == 403
        assert (await nina.get(f"/alerts/{theirs}")).status_code == 403
        refused = await nina.post(f"/alerts/{theirs}/acknowledge", data={"note": "not mine"})
        assert refused.status_code == 403
        assert "outside your access" in refused.text
    assert await status_of(hub, theirs) == "open"


async def test_a_viewer_sees_no_buttons_and_a_forged_post_is_refused(hub: RunningHub) -> None:
    await add_stores(hub, Shop("store-0001"))
    alert_id = await raise_alert(hub, "store-0001")
    await add_operator(hub, "vera", "viewer")
    async with browser(hub, "vera") as vera:
        page = (await vera.get("/alerts")).text
        assert alert_rows(page) == [alert_id]
        assert 'data-action="acknowledge"' not in page
        assert 'data-action="resolve"' not in page
        assert 'name="note"' not in page
        for action in ("acknowledge", "resolve"):
            forged = await vera.post(f"/alerts/{alert_id}/{action}", data={"note": "forged"})
            assert forged.status_code == 403, action
            assert "may not do this" in forged.text
    assert await status_of(hub, alert_id) == "open"


# --------------------------------------------------------------------------- acting


async def test_ops_acknowledge_and_resolve_in_one_step_audited_with_the_history(any_hub: RunningHub) -> None:
    hub = any_hub
    await add_stores(hub, Shop("store-0001", name="Main street", timezone="Asia/Taipei"))
    alert_id = await raise_alert(hub, "store-0001")
    await add_operator(hub, "olga", "ops")
    async with browser(hub, "olga") as olga:
        page = (await olga.get("/alerts")).text
        assert f'hx-post="/alerts/{alert_id}/acknowledge"' in page
        acknowledged = await olga.post(f"/alerts/{alert_id}/acknowledge", data={"note": "on my way"})
        assert acknowledged.status_code == 200, acknowledged.text
        assert acknowledged.text.lstrip().startswith(f'<tr id="alert-{alert_id}"')
        assert 'data-state="acknowledged"' in acknowledged.text
        assert 'data-action="acknowledge"' not in acknowledged.text  # done: only resolving is left
        # Resolving needs words.
        empty = await olga.post(f"/alerts/{alert_id}/resolve", data={"note": "  "})
        assert empty.status_code == 422
        assert "say what was found or done" in empty.text
        resolved = await olga.post(f"/alerts/{alert_id}/resolve", data={"note": "door was open, closed it"})
        assert resolved.status_code == 200
        assert 'data-state="resolved"' in resolved.text
        # Someone acted first: 409 in words, nothing changed.
        again = await olga.post(f"/alerts/{alert_id}/acknowledge", data={"note": "late"})
        assert again.status_code == 409
        assert "someone may have acted first" in again.json()["detail"]
        # The alert's page: every transition, who, and the note.
        detail = await olga.get(f"/alerts/{alert_id}")
        assert detail.status_code == 200
        history = detail.text.split('<table id="history"', 1)[1].split("</table>", 1)[0]
        steps = re.findall(r'<tr data-action="(\w+)">(.*?)</tr>', history, flags=re.S)
        assert [action for action, _ in steps] == ["opened", "acknowledged", "resolved"]
        assert "olga" in steps[1][1]
        assert "on my way" in steps[1][1]
        assert "olga" in steps[2][1]
        assert "door was open, closed it" in steps[2][1]
        assert (await olga.get(f"/alerts/{uuid.uuid4()}")).status_code == 404
        # Without the CSRF token (a form posted from another site) nothing happens.
        del olga.headers["X-CSRF-Token"]
        assert (await olga.post(f"/alerts/{alert_id}/resolve", data={"note": "x"})).status_code == 403
    async with hub.runtime.sessions() as session:
        entries = list(
            await session.scalars(
                select(AuditEntry).where(AuditEntry.target == f"alert:{alert_id}").order_by(AuditEntry.id)
            )
        )
    changes: list[tuple[Any, Any]] = [(e.before["status"], e.after["status"]) for e in entries]  # type: ignore[index]
    assert changes == [("open", "acknowledged"), ("acknowledged", "resolved")]
    assert {e.actor for e in entries} == {"olga"}


async def test_a_note_too_long_is_refused_in_words(hub: RunningHub) -> None:
    await add_stores(hub, Shop("store-0001"))
    alert_id = await raise_alert(hub, "store-0001")
    await add_operator(hub, "olga", "ops")
    async with browser(hub, "olga") as olga:
        refused = await olga.post(f"/alerts/{alert_id}/acknowledge", data={"note": "x" * 2001})
        assert refused.status_code == 422
        assert "note" in refused.text
    assert await status_of(hub, alert_id) == "open"


async def test_the_alert_pages_speak_chinese(hub: RunningHub) -> None:
    await add_stores(hub, Shop("store-0001", name="信義店", timezone="Asia/Taipei"))
    alert_id = await raise_alert(hub, "store-0001")
    await add_operator(hub, "mei", "ops")
    async with browser(hub, "mei") as mei:
        await mei.post("/console/language", data={"language": "zh_Hant"})
        page = (await mei.get("/alerts")).text
        assert "確認" in page
        assert "解決" in page
        assert "信義店" in page
        await mei.post("/console/language", data={"language": "zh_Hans"})
        assert "历史记录" in (await mei.get(f"/alerts/{alert_id}")).text
