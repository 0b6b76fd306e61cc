"""Every route of the hub is decided by the policy table: walked as nobody, as a viewer, as a store-scoped
operator; a route without a row cannot even start."""

from __future__ import annotations

import re

import pytest
from fastapi import APIRouter, FastAPI

from hub.app import create_app
from hub.auth import guard
from hub.auth.policy import ROUTE_POLICIES, policy_of
from hub.domain.access import Capability, Principal, Role, StoreFrom
from hub.settings import HubSettings
from tests.hub.auth.helpers import concrete, every_route, load_catalog
from tests.hub.conftest import RunningHub

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def test_every_route_and_every_documented_operation_has_exactly_one_policy_row(hub_settings: HubSettings) -> None:
    app = create_app(hub_settings)
    routes = guard.app_routes(app)
    assert [path for method, path in routes if method == "*"] == [], "a route outside the gate"
    assert [r for r in routes if policy_of(*r) is None] == []
    documented = {
        (method.upper(), path) for path, operations in app.openapi()["paths"].items() for method in operations
    }
    assert documented <= set(routes)
    # The undocumented ones are walked too: the docs themselves, the login page and the dashboard.
    assert {("GET", "/docs"), ("GET", "/redoc"), ("GET", "/openapi.json"), ("GET", "/"), ("GET", "/metrics")} <= set(
        routes
    )
    assert set(ROUTE_POLICIES) == set(routes), "rows for routes that do not exist"


def test_an_app_with_a_route_the_table_does_not_know_does_not_start(hub_settings: HubSettings) -> None:
    extra = APIRouter()

    @extra.post("/api/v1/gateways/{gateway_id}/enrol")
    async def enrol() -> None:
        """A route someone forgot to give a policy."""

    app = FastAPI(dependencies=[guard.GATE])
    app.include_router(extra)
    with pytest.raises(guard.UncoveredRoutesError, match=re.escape("POST /api/v1/gateways/{gateway_id}/enrol")):
        guard.install(app, hub_settings)


def test_an_app_whose_routes_are_not_behind_the_gate_does_not_start(hub_settings: HubSettings) -> None:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)  # and without dependencies=[GATE]

    @app.get("/healthz")
    async def healthz() -> None:
        """Open by policy, but the gate would not even run."""

    with pytest.raises(guard.UncoveredRoutesError, match="not behind the gate"):
        guard.install(app, hub_settings)


async def test_anonymous_requests_are_refused_everywhere_but_the_open_routes(
    hub: RunningHub, hub_settings: HubSettings
) -> None:
    walked = opened = 0
    async with hub.anonymous() as nobody:
        for method, template in every_route(hub_settings):
            policy = policy_of(method, template)
            assert policy is not None
            response = await nobody.request(method, concrete(template), json={} if method in WRITE_METHODS else None)
            walked += 1
            opened += policy.need is Capability.OPEN
            where = f"{method} {template}: {response.status_code} {response.text[:200]}"
            if policy.need is Capability.OPEN:
                assert response.status_code not in (401, 403), where
            elif policy.page:
                assert response.status_code == 303, where
                assert response.headers["location"].startswith("/login?next="), where
            else:
                assert response.status_code == 401, where
                assert response.headers["www-authenticate"] == "Bearer", where
    assert walked >= 70
    refused = hub.runtime.metrics.access_refused.labels(status="401", cause="anonymous")._value.get()
    assert refused >= walked - opened


@pytest.mark.parametrize("role", [Role.VIEWER, Role.TECHNICIAN, Role.OPS])
async def test_each_role_is_refused_exactly_what_its_capabilities_do_not_cover(
    hub: RunningHub, hub_settings: HubSettings, role: Role
) -> None:
    who = Principal(kind="token", name="probe", role=role, store_ids=None)
    async with await hub.client_as(role.value) as client:
        for method, template in every_route(hub_settings):
            policy = policy_of(method, template)
            assert policy is not None
            if template == "/logout":
                continue  # a token has no session to end; it is allowed and harmless, but skips the walk's point
            response = await client.request(method, concrete(template), json={} if method in WRITE_METHODS else None)
            where = f"{role} {method} {template}: {response.status_code} {response.text[:200]}"
            if who.can(policy.need):
                assert response.status_code not in (401, 403), where
            else:
                assert response.status_code == 403, where
                assert policy.need.value in response.json()["detail"], where


async def test_a_viewer_token_is_refused_every_write(hub: RunningHub, hub_settings: HubSettings) -> None:
    # Signing in and out, and choosing the console's language, change only the caller's own session or account;
    # a gateway enrolling itself is open to anyone: the one-time token in its body is the credential, not a role.
    own = ("/login", "/logout", "/console/language", "/api/v1/enrol")
    writes = [r for r in every_route(hub_settings) if r[0] in WRITE_METHODS and r[1] not in own]
    assert len(writes) >= 18
    async with await hub.client_as("viewer") as viewer:
        for method, template in writes:
            response = await viewer.request(method, concrete(template), json={})
            assert response.status_code == 403, f"{method} {template}: {response.status_code}"


async def test_a_store_scoped_operator_acts_in_its_store_only(hub: RunningHub, hub_settings: HubSettings) -> None:
    await load_catalog(hub.client)
    store_writes = [
        (method, template)
        for method, template in every_route(hub_settings)
        if method in WRITE_METHODS
        and (policy := policy_of(method, template)) is not None
        and policy.need is Capability.OPERATE
        and policy.store_from is StoreFrom.PATH
    ]
    assert ("POST", "/api/v1/stores/{store_id}/stock/adjustments") in store_writes
    async with await hub.client_as("ops", store_ids=["store-0001"]) as ops:
        for method, template in store_writes:
            response = await ops.request(method, concrete(template, store_id="store-0002"), json={})
            assert response.status_code == 403, f"{method} {template}: {response.status_code}"
            assert "store-0002" in response.json()["detail"]
        own = await ops.post(
            "/api/v1/stores/store-0001/stock/adjustments", json={"sku_id": "A", "quantity": 4, "note": "found"}
        )
        assert own.status_code == 201, own.text
        other = await ops.post(
            "/api/v1/stores/store-0002/stock/adjustments", json={"sku_id": "A", "quantity": -4, "note": "took"}
        )
        assert other.status_code == 403
        # A transfer names its stores in the body: both must be in scope.
        transfer = {"sku_id": "A", "from_store_id": "store-0001", "to_store_id": "store-0002", "quantity": 1}
        assert (await ops.post("/api/v1/transfers", json=transfer)).status_code == 403
        # Reads: another store named is 403; lists are cut to the scope or must name a store.
        assert (await ops.get("/api/v1/stores/store-0002/stock")).status_code == 403
        assert (await ops.get("/api/v1/stores/store-0001/stock")).json()["items"][0]["on_hand"] == 4
        profiles = (await ops.get("/api/v1/catalog/stores")).json()["items"]
        assert [p["store_id"] for p in profiles] == ["store-0001"]
        assert (await ops.get("/api/v1/events")).status_code == 403
        assert (await ops.get("/api/v1/events", params={"store_id": "store-0001"})).status_code == 200
        assert (await ops.get("/api/v1/events", params={"store_id": "store-0002"})).status_code == 403
        # Chain-wide things are not for a store's operator, even to read.
        assert (await ops.get("/api/v1/transfer-suggestions")).status_code == 403
    stock = (await hub.client.get("/api/v1/stores/store-0002/stock")).json()["items"]
    assert stock == []  # the refused adjustment changed nothing


async def test_a_region_scope_reaches_the_stores_of_that_region(hub: RunningHub) -> None:
    await load_catalog(hub.client)
    async with await hub.client_as("ops", regions=["south"]) as south:
        me = (await south.get("/api/v1/me")).json()
        assert me["store_ids"] == ["store-0002"]
        assert (await south.get("/api/v1/stores/store-0002/stock")).status_code == 200
        assert (await south.get("/api/v1/stores/store-0001/stock")).status_code == 403


async def test_a_scoped_admin_cannot_change_the_whole_chain(hub: RunningHub) -> None:
    async with await hub.client_as("admin", store_ids=["store-0001"]) as scoped_admin:
        response = await scoped_admin.put("/api/v1/rules/sweep", json={"kind": "shelf_sweep", "min_items": 6})
        assert response.status_code == 403
        assert "whole chain" in response.json()["detail"]
        assert (await scoped_admin.get("/api/v1/audit")).status_code == 403
        assert (await scoped_admin.get("/api/v1/rules")).status_code == 200  # reference data: readable
