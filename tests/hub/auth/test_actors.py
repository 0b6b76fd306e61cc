"""The issue's own attacks, replayed: acknowledging a critical alert "as store-manager-alice", from another store,
or anonymously; and operators managed through the API."""

from __future__ import annotations

from datetime import timedelta

from hub.alerting.models import AlertHistoryRow, AlertRow
from hub.db.engine import session_factory
from storegate import wire
from tests.hub.conftest import RunningHub

ALERT = "00000000-0000-0000-0000-00000000a1e7"


async def open_freezer_alert(hub: RunningHub, store_id: str = "store-0001") -> None:
    opened = wire.utc_now() - timedelta(minutes=5)
    async with session_factory(hub.runtime.engine)() as session:
        session.add(
            AlertRow(
                alert_id=ALERT,
                store_id=store_id,
                rule_id="freezers",
                rule_kind="environment_range",
                category="environment",
                subject_kind="zone",
                subject_id="freezer-1",
                active_key=f"{store_id}|freezers|zone|freezer-1",
                severity="critical",
                status="open",
                message="freezer-1 at -9 °C",
                opened_at=opened,
                last_seen_at=opened,
                count=1,
                evidence=[],
                snapshot_ref=None,
                escalate_after_s=[],
                escalation_level=0,
            )
        )
        await session.flush()
        session.add(
            AlertHistoryRow(
                alert_id=ALERT, at=opened, action="opened", actor="system", status="open", recorded_at=opened
            )
        )
        await session.commit()


async def test_an_alert_is_acknowledged_and_resolved_as_the_principal_only(hub: RunningHub) -> None:
    await open_freezer_alert(hub)
    async with hub.anonymous() as nobody:
        anonymous = await nobody.post(f"/api/v1/alerts/{ALERT}/acknowledge", json={})
        assert anonymous.status_code == 401
    async with await hub.client_as("ops", store_ids=["store-0002"]) as elsewhere:
        assert (await elsewhere.get(f"/api/v1/alerts/{ALERT}")).status_code == 403
        refused = await elsewhere.post(f"/api/v1/alerts/{ALERT}/acknowledge", json={})
        assert refused.status_code == 403
    async with await hub.client_as("viewer") as viewer:
        assert (await viewer.post(f"/api/v1/alerts/{ALERT}/resolve", json={"note": "x"})).status_code == 403
    async with await hub.client_as("ops", store_ids=["store-0001"]) as ops:
        me = (await ops.get("/api/v1/me")).json()["name"]
        spoof = await ops.post(
            f"/api/v1/alerts/{ALERT}/acknowledge",
            json={"by": "store-manager-alice"},
            headers={"X-Storegate-Actor": "store-manager-alice"},
        )
        assert spoof.status_code == 422
        acked = await ops.post(
            f"/api/v1/alerts/{ALERT}/acknowledge",
            json={"note": "on my way"},
            headers={"X-Storegate-Actor": "store-manager-alice"},
        )
        assert acked.status_code == 200, acked.text
        assert acked.json()["acknowledged_by"] == me
        resolved = await ops.post(f"/api/v1/alerts/{ALERT}/resolve", json={"note": "door shut"})
        assert [(h["action"], h["actor"]) for h in resolved.json()["history"]] == [
            ("opened", "system"),
            ("acknowledged", me),
            ("resolved", me),
        ]
    entries = (await hub.client.get("/api/v1/audit", params={"action": "POST /api/v1/alerts"})).json()["items"]
    assert [
        (e["action"].rsplit("/", 1)[-1], e["actor"].rsplit("-", 1)[0], e["outcome"]) for e in reversed(entries)
    ] == [
        ("acknowledge", "anonymous", "401"),
        ("acknowledge", "token:test-ops", "403"),
        ("resolve", "token:test-viewer", "403"),
        ("acknowledge", "token:test-ops", "422"),
        ("acknowledge", "token:test-ops", "200"),
        ("resolve", "token:test-ops", "200"),
    ]
    acknowledged, resolved_entry = entries[1], entries[0]
    assert acknowledged["store_id"] == "store-0001"
    assert acknowledged["before"]["status"] == "open"
    assert acknowledged["after"] == {
        "status": "acknowledged",
        "acknowledged_by": me,
        "resolved_by": None,
        "resolution_note": None,
    }
    assert resolved_entry["after"]["resolution_note"] == "door shut"
    assert "store-manager-alice" not in str(entries)


async def test_operators_are_added_and_disabled_through_the_api_but_not_the_last_admin(hub: RunningHub) -> None:
    added = await hub.client.post(
        "/api/v1/users",
        json={"username": "erin", "role": "ops", "password": "long enough password", "regions": ["north"]},
    )
    assert added.status_code == 201, added.text
    assert "password" not in added.text
    taken = await hub.client.post(
        "/api/v1/users", json={"username": "ERIN", "role": "viewer", "password": "long enough password"}
    )
    assert taken.status_code == 409
    weak = await hub.client.post("/api/v1/users", json={"username": "fay", "role": "viewer", "password": "short"})
    assert weak.status_code == 422
    assert "short" not in weak.text
    disabled = await hub.client.post("/api/v1/users/erin/disable")
    assert disabled.json()["disabled"] is True
    boss = await hub.client.post(
        "/api/v1/users", json={"username": "boss", "role": "admin", "password": "long enough password"}
    )
    assert boss.status_code == 201
    last = await hub.client.post("/api/v1/users/boss/disable")
    assert last.status_code == 409
    assert "last admin" in last.json()["detail"]
    listed = (await hub.client.get("/api/v1/users")).json()["items"]
    assert [(u["username"], u["role"], u["disabled"]) for u in listed] == [
        ("boss", "admin", False),
        ("erin", "ops", True),
    ]
