"""The rules API over HTTP, on SQLite and PostgreSQL: chain rules validated as a whole with messages that
name the rule and the field, store overrides merged into the chain's rule or disabling it, deletes that
take their overrides along, chain changes that leave an override invalid reported, and every change
logged with who made it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from structlog.testing import capture_logs

from hub.api.deps import get_now, get_session
from hub.app import create_app
from hub.db.engine import session_factory
from hub.domain.access import Principal, Role
from hub.settings import load_hub_settings
from tests.hub.conftest import act_as

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
# The header that used to name the actor: now ignored, the actor is the principal (alice@chain here).
ACTOR = {"X-Storegate-Actor": "mallory@elsewhere"}
ALICE = Principal(kind="user", name="alice@chain", role=Role.ADMIN, store_ids=None)

SWEEP = {"kind": "shelf_sweep", "min_items": 6, "window_s": 30}
SWEEP_STORED = {
    "kind": "shelf_sweep",
    "enabled": True,
    "severity": "critical",
    "escalate_after_s": [],
    "min_items": 6,
    "window_s": 30.0,
}
DOOR = {"kind": "door_held_open", "grace_s": 300}
SHRINK = {"kind": "shrink_over_threshold", "max_units": 10, "max_value": "100"}


@pytest.fixture
async def client(engine: AsyncEngine, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The hub's app (its routers and error handling) on this test's database, without MQTT."""
    sessions = session_factory(engine)
    app = create_app(load_hub_settings(None, database_url=database_url))

    async def session() -> AsyncIterator[AsyncSession]:
        async with sessions() as s:
            yield s

    app.dependency_overrides[get_session] = session
    act_as(app, ALICE)
    app.dependency_overrides[get_now] = lambda: NOW
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        yield http


async def put(client: httpx.AsyncClient, path: str, body: Any, status: int = 200, **kwargs: Any) -> dict[str, Any]:
    response = await client.put(path, json=body, **kwargs)
    assert response.status_code == status, response.text
    out: dict[str, Any] = response.json()
    return out


async def get(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    return out


# --------------------------------------------------------------------------- chain rules, table-driven

# (rule id, body, status, the stored definition's fields checked or the exact message)
CHAIN_RULE_CASES: list[tuple[str, Any, int, dict[str, Any] | str]] = [
    ("sweep", SWEEP, 201, SWEEP_STORED),
    (
        "chillers",
        {"kind": "environment_range", "zone": "chiller-*", "low": 0, "high": 5},
        201,
        {"zone": "chiller-*", "quantity": "temperature", "low": 0.0, "high": 5.0, "alarm_after_s": 900.0},
    ),
    ("shrink", SHRINK, 201, {"max_units": 10, "max_value": "100", "severity": "warning"}),
    (
        "night.motion_2",
        {"kind": "after_hours_motion", "escalate_after_s": [300, 900]},
        201,
        {"escalate_after_s": [300.0, 900.0], "event_kinds": ["camera.motion", "motion.detected"]},
    ),
    (
        "sweep",
        {"kind": "shelf_sweep", "min_items": 1},
        422,
        "rule 'sweep', field 'min_items': Input should be greater than or equal to 2",
    ),
    (
        "sweep",
        {"kind": "shelf_sweep", "colour": "red"},
        422,
        "rule 'sweep', field 'colour': Extra inputs are not permitted",
    ),
    (
        "sweep",
        {"kind": "shelf_sweep", "window_s": "soon"},
        422,
        "rule 'sweep', field 'window_s': Input should be a valid number, unable to parse string as a number",
    ),
    ("x", {"min_items": 6}, 422, "rule 'x', field 'kind': Field required"),
    (
        "x",
        {"kind": "teleport"},
        422,
        "rule 'x', field '(rule)': Input tag 'teleport' found using 'kind' does not match any of the expected tags: "
        "'after_hours_motion', 'camera_tamper', 'shelf_sweep', 'shrink_over_threshold', 'device_unplugged', "
        "'gateway_offline', 'door_after_hours', 'door_held_open', 'environment_range', 'printer_paper_out'",
    ),
    (
        "chillers",
        {"kind": "environment_range", "zone": "chiller-*"},
        422,
        "rule 'chillers', field '(rule)': Value error, a range needs a low or a high limit",
    ),
    (
        "chillers",
        {"kind": "environment_range", "zone": "chiller-*", "low": 5, "high": 0},
        422,
        "rule 'chillers', field '(rule)': Value error, low 5.0 must be below high 0.0",
    ),
    (
        "chillers",
        {"kind": "environment_range", "zone": "", "low": 0},
        422,
        "rule 'chillers', field 'zone': String should have at least 1 character",
    ),
    (
        "shrink",
        {"kind": "shrink_over_threshold", "max_units": None, "max_value": None},
        422,
        "rule 'shrink', field '(rule)': Value error, a shrink rule needs max_units or max_value",
    ),
    (
        "night",
        {"kind": "after_hours_motion", "escalate_after_s": [900, 300]},
        422,
        "rule 'night', field 'escalate_after_s': Value error, escalation delays must increase level by level",
    ),
    (
        "night",
        {"kind": "after_hours_motion", "severity": "loud"},
        422,
        "rule 'night', field 'severity': Input should be 'info', 'warning' or 'critical'",
    ),
    (
        "Night",
        {"kind": "after_hours_motion"},
        422,
        "rule 'Night', field '(rule id)': String should match pattern '^[a-z0-9][a-z0-9_.-]{0,63}$'",
    ),
    ("night", ["after_hours_motion"], 422, "request: Input should be a valid dictionary"),
]


async def test_chain_rules_are_validated_as_a_whole(client: httpx.AsyncClient) -> None:
    for rule_id, body, status, expected in CHAIN_RULE_CASES:
        response = await client.put(f"/api/v1/rules/{rule_id}", json=body)
        case = f"PUT {rule_id} {body}: {response.text}"
        assert response.status_code == status, case
        if isinstance(expected, str):
            assert response.json()["message"] == expected, case
        else:
            definition = response.json()["rule"]["definition"]
            assert {name: definition[name] for name in expected} == expected, case
    listed = await get(client, "/api/v1/rules")
    assert [item["rule_id"] for item in listed["items"]] == ["chillers", "night.motion_2", "shrink", "sweep"]
    assert all(item["in_force"] and item["problem"] is None for item in listed["items"])


async def test_a_chain_rule_is_created_replaced_and_deleted_with_its_overrides(client: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        created = await put(client, "/api/v1/rules/sweep", SWEEP, status=201, headers=ACTOR)
        assert created == {
            "rule": {
                "rule_id": "sweep",
                "definition": SWEEP_STORED,
                "in_force": True,
                "problem": None,
                "updated_at": "2026-11-27T12:00:00Z",
                "updated_by": "alice@chain",
            },
            "created": True,
            "changed": True,
            "invalid_overrides": [],
        }
        assert await get(client, "/api/v1/rules/sweep") == created["rule"]

        again = await put(client, "/api/v1/rules/sweep", SWEEP)  # the same definition: nothing changes
        assert (again["created"], again["changed"], again["rule"]["updated_by"]) == (False, False, "alice@chain")

        replaced = await put(client, "/api/v1/rules/sweep", {**SWEEP, "enabled": False})
        assert (replaced["created"], replaced["changed"]) == (False, True)
        assert (replaced["rule"]["in_force"], replaced["rule"]["updated_by"]) == (False, "alice@chain")

        await put(client, "/api/v1/stores/store-1/rules/sweep", {"min_items": 10}, status=201)
        await put(client, "/api/v1/stores/store-2/rules/sweep", {"enabled": True}, status=201, headers=ACTOR)
        deleted = await client.delete("/api/v1/rules/sweep", headers=ACTOR)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"rule_id": "sweep", "overrides_deleted": 2}

    missing = await client.get("/api/v1/rules/sweep")
    assert (missing.status_code, missing.json()) == (404, {"detail": "rule 'sweep': the chain has no such rule"})
    again_deleted = await client.delete("/api/v1/rules/sweep")
    assert again_deleted.status_code == 404
    assert (await get(client, "/api/v1/stores/store-1/rules"))["items"] == []

    changes = [(e["event"], e["actor"], e["rule_id"], e.get("store_id")) for e in logs if e["log_level"] == "info"]
    assert changes == [
        ("chain_rule_put", "alice@chain", "sweep", None),
        ("chain_rule_put", "alice@chain", "sweep", None),
        ("store_rule_override_put", "alice@chain", "sweep", "store-1"),
        ("store_rule_override_put", "alice@chain", "sweep", "store-2"),
        ("chain_rule_deleted", "alice@chain", "sweep", None),
    ]


# --------------------------------------------------------------------------- store overrides


async def test_store_overrides_are_merged_disabled_replaced_and_removed(client: httpx.AsyncClient) -> None:
    await put(client, "/api/v1/rules/sweep", SWEEP, status=201)
    await put(client, "/api/v1/rules/door", DOOR, status=201)

    merged = await put(client, "/api/v1/stores/store-1/rules/sweep", {"min_items": 10}, status=201, headers=ACTOR)
    # The clock stands still in this test; each write is stamped a microsecond after the one before.
    assert merged["rule"].pop("updated_at") == "2026-11-27T12:00:00.000002Z"
    assert merged == {
        "rule": {
            "rule_id": "sweep",
            "source": "overridden",
            "in_force": True,
            "definition": {**SWEEP_STORED, "min_items": 10},
            "changes": {"min_items": 10},
            "updated_by": "alice@chain",
        },
        "created": True,
        "changed": True,
    }
    disabled = await put(client, "/api/v1/stores/store-1/rules/door", {"enabled": False}, status=201)
    assert (disabled["rule"]["in_force"], disabled["rule"]["definition"]["enabled"]) == (False, False)

    store_1 = await get(client, "/api/v1/stores/store-1/rules")
    assert store_1["store_id"] == "store-1"
    assert store_1["skipped"] == []
    assert [(i["rule_id"], i["source"], i["in_force"], i["changes"]) for i in store_1["items"]] == [
        ("door", "overridden", False, {"enabled": False}),
        ("sweep", "overridden", True, {"min_items": 10}),
    ]
    store_2 = await get(client, "/api/v1/stores/store-2/rules")
    assert [(i["rule_id"], i["source"], i["in_force"], i["changes"], i["updated_by"]) for i in store_2["items"]] == [
        ("door", "chain", True, None, None),
        ("sweep", "chain", True, None, None),
    ]
    assert store_2["items"][1]["definition"] == SWEEP_STORED

    # PUT replaces the store's override of the rule as a whole; the same changes again write nothing.
    replaced = await put(client, "/api/v1/stores/store-1/rules/sweep", {"window_s": 60})
    assert (replaced["created"], replaced["changed"]) == (False, True)
    assert replaced["rule"]["definition"] == {**SWEEP_STORED, "window_s": 60.0}
    assert replaced["rule"]["changes"] == {"window_s": 60.0}
    same = await put(client, "/api/v1/stores/store-1/rules/sweep", {"window_s": 60.0})
    assert (same["created"], same["changed"]) == (False, False)

    removed = await client.delete("/api/v1/stores/store-1/rules/door")
    assert removed.status_code == 200, removed.text
    assert (removed.json()["source"], removed.json()["in_force"]) == ("chain", True)
    gone = await client.delete("/api/v1/stores/store-1/rules/door")
    assert (gone.status_code, gone.json()) == (404, {"detail": "rule 'door': store 'store-1' does not override it"})


# (store id, rule id, body, status, exact message)
OVERRIDE_REFUSALS: list[tuple[str, str, Any, int, str]] = [
    ("store-1", "nope", {"enabled": False}, 404, "rule 'nope': the chain has no such rule"),
    (
        "store-1",
        "sweep",
        {"min_items": 1},
        422,
        "rule 'sweep', field 'min_items': Input should be greater than or equal to 2",
    ),
    ("store-1", "sweep", {"colour": "red"}, 422, "rule 'sweep', field 'colour': Extra inputs are not permitted"),
    (
        "store-1",
        "sweep",
        {"enabled": "sometimes"},
        422,
        "rule 'sweep', field 'enabled': Input should be a valid boolean, unable to interpret input",
    ),
    (
        "store-1",
        "sweep",
        {"kind": "door_held_open"},
        422,
        "rule 'sweep', field 'kind': a store cannot change a rule's kind (shelf_sweep)",
    ),
    (
        "store-1",
        "shrink",
        {"max_units": None, "max_value": None},
        422,
        "rule 'shrink', field '(rule)': Value error, a shrink rule needs max_units or max_value",
    ),
    (
        "store-1",
        "sweep",
        {},
        422,
        "rule 'sweep': an override needs at least one field to change (DELETE removes it)",
    ),
    (
        "Store 1",
        "sweep",
        {"enabled": False},
        422,
        "store 'Store 1': not a store id (String should match pattern '^[a-z0-9][a-z0-9_-]{0,62}$')",
    ),
    ("store-1", "sweep", [False], 422, "request: Input should be a valid dictionary"),
]


async def test_invalid_overrides_are_refused_naming_the_rule_and_field(client: httpx.AsyncClient) -> None:
    await put(client, "/api/v1/rules/sweep", SWEEP, status=201)
    await put(client, "/api/v1/rules/shrink", SHRINK, status=201)
    for store_id, rule_id, body, status, message in OVERRIDE_REFUSALS:
        response = await client.put(f"/api/v1/stores/{store_id}/rules/{rule_id}", json=body)
        case = f"PUT {store_id}/{rule_id} {body}: {response.text}"
        said = response.json()["message" if status == 422 else "detail"]
        assert (response.status_code, said) == (status, message), case
    store_1 = await get(client, "/api/v1/stores/store-1/rules")
    assert {i["source"] for i in store_1["items"]} == {"chain"}


async def test_an_override_a_chain_change_left_invalid_is_reported_and_skipped(client: httpx.AsyncClient) -> None:
    await put(client, "/api/v1/rules/shrink", SHRINK, status=201)
    await put(client, "/api/v1/stores/store-a/rules/shrink", {"max_units": None}, status=201)
    await put(client, "/api/v1/stores/store-b/rules/shrink", {"max_value": "250"}, status=201)

    changed = await put(client, "/api/v1/rules/shrink", {**SHRINK, "max_units": 5, "max_value": None})
    message = "rule 'shrink', field '(rule)': Value error, a shrink rule needs max_units or max_value"
    assert changed["invalid_overrides"] == [
        {"rule_id": "shrink", "store_id": "store-a", "message": message, "changes": None}
    ]

    store_a = await get(client, "/api/v1/stores/store-a/rules")
    assert store_a["skipped"] == [
        {"rule_id": "shrink", "store_id": "store-a", "message": message, "changes": {"max_units": None}}
    ]
    assert [(i["source"], i["definition"]["max_units"], i["definition"]["max_value"]) for i in store_a["items"]] == [
        ("chain", 5, None)
    ]
    store_b = await get(client, "/api/v1/stores/store-b/rules")
    assert store_b["skipped"] == []
    assert [(i["source"], i["definition"]["max_units"], i["definition"]["max_value"]) for i in store_b["items"]] == [
        ("overridden", 5, "250")
    ]
    # Fixing the override (or deleting it) makes it apply again.
    fixed = await put(client, "/api/v1/stores/store-a/rules/shrink", {"max_units": 50})
    assert fixed["rule"]["definition"]["max_units"] == 50
    assert (await get(client, "/api/v1/stores/store-a/rules"))["skipped"] == []


async def test_the_rules_api_is_part_of_the_hub_app(client: httpx.AsyncClient) -> None:
    schema = await get(client, "/openapi.json")
    assert {"name": "rules", "description": "the chain's monitoring rules and each store's overrides, as data"} in (
        schema["tags"]
    )
    paths = {path: sorted(ops) for path, ops in schema["paths"].items() if "rules" in path}
    assert paths == {
        "/api/v1/rules": ["get"],
        "/api/v1/rules/{rule_id}": ["delete", "get", "put"],
        "/api/v1/stores/{store_id}/rules": ["get"],
        "/api/v1/stores/{store_id}/rules/{rule_id}": ["delete", "put"],
    }
    claimed = await client.put("/api/v1/rules/sweep", json=SWEEP, headers={"X-Storegate-Actor": "x" * 129})
    assert claimed.status_code == 201, claimed.text  # the header is not read at all any more
    assert claimed.json()["rule"]["updated_by"] == "alice@chain"
