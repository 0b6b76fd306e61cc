"""API tokens (shown once, stored hashed, expiring, revocable) and the audit log (every write with its actor,
before and after; append-only down to the database)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from hub.auth import credentials
from hub.auth.audit import AuditEvent, append
from hub.auth.models import ApiToken, AuditEntry
from hub.db.engine import session_factory
from storegate import wire
from tests.hub.auth.helpers import load_catalog
from tests.hub.conftest import RunningHub, make_token


async def audit_of(hub: RunningHub, **params: str | int) -> list[dict[str, object]]:
    response = await hub.client.get("/api/v1/audit", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, object]] = response.json()["items"]
    return items


async def test_a_token_is_shown_once_stored_hashed_and_stops_working_when_revoked(hub: RunningHub) -> None:
    created = await hub.client.post(
        "/api/v1/tokens", json={"name": "erp-export", "role": "viewer", "expires_in_days": 30}
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    token_id = created.json()["token_id"]
    assert token.startswith("sgt_")
    listed = (await hub.client.get("/api/v1/tokens")).json()["items"]
    assert token not in str(listed)
    assert "token" not in next(t for t in listed if t["token_id"] == token_id)
    async with session_factory(hub.runtime.engine)() as session:
        row = await session.get(ApiToken, token_id)
        assert row is not None
        assert row.token_digest == credentials.digest(token)
        assert token not in str(row.__dict__)

    async with hub.client_with(token) as erp:
        me = await erp.get("/api/v1/me")
        assert me.json() == {"name": "token:erp-export", "kind": "token", "role": "viewer", "store_ids": None}
        assert (await erp.get("/api/v1/stores")).status_code == 200
        assert (await erp.get("/api/v1/users")).status_code == 403  # wrong role
        revoked = await hub.client.delete(f"/api/v1/tokens/{token_id}")
        assert revoked.json()["revoked_by"].startswith("token:test-admin")
        refused = await erp.get("/api/v1/stores")
        assert refused.status_code == 401
        assert "revoked token" in refused.json()["detail"]

    entries = await audit_of(hub, action="token.")
    assert [(e["action"], e["actor"], e["detail"]) for e in entries if e["actor"] == "token:erp-export"] == [
        ("token.refused", "token:erp-export", "revoked token"),
        ("token.used", "token:erp-export", f"token {token_id}; recorded at most once an hour, writes each time"),
    ]
    creation = await audit_of(hub, action="POST /api/v1/tokens")
    assert creation[0]["after"]["name"] == "erp-export"  # type: ignore[index]
    assert token not in str(creation)


async def test_expired_unknown_and_malformed_tokens_are_401(hub: RunningHub) -> None:
    expired = await make_token(hub.runtime, "admin", name="old")
    async with session_factory(hub.runtime.engine)() as session:
        await session.execute(
            update(ApiToken).where(ApiToken.name == "old").values(expires_at=wire.utc_now() - timedelta(seconds=1))
        )
        await session.commit()
    for header, words in [
        (f"Bearer {expired}", "expired token"),
        ("Bearer sgt_" + "A" * 43, "unknown token"),
        ("Bearer not-even-ours", "not a token of this hub"),
        (f"Basic {expired}", "must be 'Bearer <token>'"),
    ]:
        async with hub.anonymous() as client:
            response = await client.get("/api/v1/stores", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert words in response.json()["detail"]
        assert expired not in response.text
    refused = hub.runtime.metrics.access_refused.labels(status="401", cause="token")._value.get()
    assert refused == 4


async def test_metrics_and_docs_need_a_token_and_health_says_only_its_status_to_strangers(hub: RunningHub) -> None:
    async with hub.anonymous() as nobody:
        assert (await nobody.get("/metrics")).status_code == 401
        assert (await nobody.get("/openapi.json")).status_code == 401
        assert (await nobody.get("/docs")).status_code == 303
        health = await nobody.get("/healthz")
        assert health.json() == {"status": "ok"}
    async with await hub.client_as("viewer") as viewer:
        assert "storegate_hub_access_refused" in (await viewer.get("/metrics")).text
        document = (await viewer.get("/openapi.json")).json()
        assert "/api/v1/audit" in document["paths"]
        assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert document["security"] == [{"bearer": []}]
        assert (await viewer.get("/docs")).status_code == 200
        detailed = (await viewer.get("/healthz")).json()
        assert set(detailed) == {"status", "problems", "checks", "version"}


async def test_every_write_is_audited_with_the_principal_as_actor_and_before_after(hub: RunningHub) -> None:
    await load_catalog(hub.client)
    async with await hub.client_as("ops", store_ids=["store-0001"]) as ops:
        adjusted = await ops.post(
            "/api/v1/stores/store-0001/stock/adjustments",
            json={"sku_id": "A", "quantity": 5, "note": "count"},
            headers={"X-Storegate-Actor": "store-manager-alice"},
        )
        assert adjusted.status_code == 201
        spoofed = await ops.post(
            "/api/v1/stores/store-0001/stock/adjustments",
            json={"sku_id": "A", "quantity": -39, "note": "x", "by": "store-manager-alice"},
        )
        assert spoofed.status_code == 422
        refused = await ops.post(
            "/api/v1/stores/store-0002/stock/adjustments", json={"sku_id": "A", "quantity": -39, "note": "x"}
        )
        assert refused.status_code == 403
        me = (await ops.get("/api/v1/me")).json()["name"]
    put = await hub.client.put(
        "/api/v1/rules/freezers", json={"kind": "environment_range", "zone": "freezer-*", "low": -25, "high": -15}
    )
    assert put.status_code == 200, put.text
    webhook = await hub.client.post(
        "/api/v1/webhooks",
        json={"url": "https://alarms.example.com/in", "secret": "s" * 20},
        headers={"X-Storegate-Actor": "store-manager-alice"},
    )
    assert webhook.json()["created_by"].startswith("token:test-admin")
    user = await hub.client.post(
        "/api/v1/users", json={"username": "dana", "role": "viewer", "password": "correct horse battery"}
    )
    assert user.status_code == 201

    adjustments = await audit_of(hub, action="POST /api/v1/stores/{store_id}/stock/adjustments")
    assert [(e["actor"], e["outcome"], e["store_id"]) for e in adjustments] == [
        (me, "403", "store-0002"),
        (me, "422", "store-0001"),
        (me, "201", "store-0001"),
    ]
    assert adjustments[2]["before"] == {"sku_id": "A", "on_hand": {"store-0001": 0}}
    assert adjustments[2]["after"] == {"sku_id": "A", "on_hand": {"store-0001": 5}}
    assert adjustments[2]["client"] == "127.0.0.1"
    assert "store-manager-alice" not in str(await audit_of(hub))
    rule = (await audit_of(hub, action="PUT /api/v1/rules"))[0]
    assert rule["before"]["definition"]["high"] == -18  # type: ignore[index]  # the default freezers rule
    assert rule["after"]["definition"]["high"] == -15  # type: ignore[index]
    hook = (await audit_of(hub, action="POST /api/v1/webhooks"))[0]
    assert hook["after"]["url"] == "https://alarms.example.com/in"  # type: ignore[index]
    assert "s" * 20 not in str(hook)
    added = (await audit_of(hub, action="POST /api/v1/users"))[0]
    assert added["after"] == {
        "username": "dana",
        "role": "viewer",
        "store_ids": None,
        "regions": None,
        "disabled": False,
    }
    assert "correct horse" not in str(added)


async def test_the_audit_log_filters_and_pages(hub: RunningHub) -> None:
    for name in ("a", "b", "c"):
        response = await hub.client.post("/api/v1/tokens", json={"name": name, "role": "viewer", "expires_in_days": 1})
        assert response.status_code == 201
    first = await hub.client.get("/api/v1/audit", params={"action": "POST /api/v1/tokens", "limit": 2})
    page = first.json()
    assert [e["after"]["name"] for e in page["items"]] == ["c", "b"]
    rest = await hub.client.get(
        "/api/v1/audit", params={"action": "POST /api/v1/tokens", "limit": 2, "before": page["next_before"]}
    )
    assert [e["after"]["name"] for e in rest.json()["items"]] == ["a"]
    assert rest.json()["next_before"] is None
    assert (await hub.client.get("/api/v1/audit", params={"actor": "nobody-at-all"})).json()["items"] == []


@pytest.mark.parametrize(
    "params",
    [{"before": str(2**70)}, {"until": "0.5"}, {"since": "2025-01-01T00:00:00"}],
    ids=["a cursor past 64 bits", "a number for a time", "a time without a zone"],
)
async def test_the_audit_log_refuses_forged_cursors_and_times_cleanly(hub: RunningHub, params: dict[str, str]) -> None:
    # Schemathesis found the first one: it was a 500 (the database could not hold the number).
    refused = await hub.client.get("/api/v1/audit", params=params)
    assert refused.status_code == 422, refused.text
    assert next(iter(params)) in refused.json()["message"]


async def test_the_audit_log_refuses_update_and_delete_in_the_database(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        await append(
            session,
            [AuditEvent(action="login.failed", actor="mallory", actor_kind="anonymous", outcome="401")],
            at=wire.utc_now(),
        )
        await session.commit()
    for statement in ("UPDATE audit_log SET actor = 'someone-else'", "DELETE FROM audit_log"):
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError, match="append-only"):
                await connection.execute(text(statement))
    async with session_factory(engine)() as session:
        rows = (await session.scalars(select(AuditEntry))).all()
    assert [(r.actor, r.action) for r in rows] == [("mallory", "login.failed")]
