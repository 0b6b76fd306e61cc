"""Rules in the database, on SQLite and PostgreSQL: the packaged defaults seeded once into an empty chain,
a fingerprint that changes on every change and only then, and stored rules or overrides that no longer
validate skipped and reported while every other store keeps its rules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from hub.alerting import rules_db
from hub.alerting.models import ChainRule, StoreRuleOverride
from hub.alerting.rules_db import (
    RuleNotFoundError,
    RulesInForce,
    SkippedRule,
    default_rule_set,
    load_rules,
    put_chain_rule,
    put_store_override,
    resolve_store_rules,
    rules_fingerprint,
    seed_default_rules,
)
from hub.db.engine import session_factory
from hub.domain.alerts import Severity
from hub.domain.rules import (
    DoorHeldOpenRule,
    EnvironmentRangeRule,
    RuleSet,
    RuleSetError,
    ShelfSweepRule,
    ShrinkRule,
    load_rule_set,
)
from storegate.wire import Quantity

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

SWEEP = {"kind": "shelf_sweep", "min_items": 6, "window_s": 30}
DOOR = {"kind": "door_held_open", "grace_s": 300}
SHRINK = {"kind": "shrink_over_threshold", "max_units": 10, "max_value": "100"}


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
async def session(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessions() as s:
        yield s


# --------------------------------------------------------------------------- the packaged defaults


def test_the_packaged_defaults_load_with_their_documented_parameters() -> None:
    rules = default_rule_set().rules
    expected: dict[str, dict[str, Any]] = {
        "after-hours-motion": {"kind": "after_hours_motion", "severity": Severity.CRITICAL},
        "camera-tamper": {"kind": "camera_tamper", "severity": Severity.CRITICAL},
        "shelf-sweep": {"kind": "shelf_sweep", "min_items": 6, "window_s": 30.0},
        "shrink-over-threshold": {"kind": "shrink_over_threshold", "max_units": 10, "max_value": Decimal("100")},
        "device-unplugged": {"kind": "device_unplugged", "grace_s": 120.0},
        "gateway-offline": {"kind": "gateway_offline", "grace_s": 300.0},
        "door-after-hours": {"kind": "door_after_hours", "severity": Severity.CRITICAL},
        "door-held-open": {"kind": "door_held_open", "grace_s": 300.0},
        "printer-paper-out": {"kind": "printer_paper_out", "severity": Severity.WARNING, "cover_open": True},
        "chillers": {"kind": "environment_range", "zone": "chiller-*", "low": 0.0, "high": 5.0},
        "freezers": {"kind": "environment_range", "zone": "freezer-*", "low": None, "high": -18.0},
        "back-room-humidity": {"kind": "environment_range", "zone": "back-room*", "quantity": Quantity.HUMIDITY},
    }
    assert sorted(rules) == sorted(expected)
    for rule_id, fields in expected.items():
        rule = rules[rule_id]
        assert rule.enabled, rule_id
        assert {name: getattr(rule, name) for name in fields} == fields, rule_id


async def test_defaults_are_seeded_once_into_an_empty_chain(session: AsyncSession) -> None:
    assert await seed_default_rules(session, now=NOW) == len(default_rule_set().rules)
    seeded = await load_rules(session)
    assert seeded.chain == default_rule_set()
    assert seeded.problems() == ()
    rows = (await session.scalars(select(ChainRule))).all()
    assert {(row.updated_by, row.updated_at) for row in rows} == {("defaults", NOW)}

    assert await seed_default_rules(session, now=NOW + timedelta(hours=1)) == 0
    assert await rules_fingerprint(session) == seeded.fingerprint
    assert (await load_rules(session)).chain == seeded.chain


async def test_defaults_are_not_seeded_into_a_chain_that_has_rules_even_all_disabled(session: AsyncSession) -> None:
    await put_chain_rule(session, "sweep", {**SWEEP, "enabled": False}, actor="alice", now=NOW)
    assert await seed_default_rules(session, now=NOW) == 0
    loaded = await load_rules(session)
    assert list(loaded.chain.rules) == ["sweep"]
    assert loaded.for_store("store-1") == {}


# --------------------------------------------------------------------------- the fingerprint

Step = Callable[[AsyncSession], Awaitable[object]]


async def _ignore_refusal(step: Awaitable[object]) -> None:
    with pytest.raises((RuleSetError, RuleNotFoundError)):
        await step


# Every write happens at the same frozen instant: the fingerprint must not depend on the clock moving.
FINGERPRINT_STEPS: list[tuple[str, Step, bool]] = [
    ("nothing yet", lambda s: rules_fingerprint(s), False),
    ("add a chain rule", lambda s: put_chain_rule(s, "sweep", SWEEP, actor="a", now=NOW), True),
    ("the same rule again", lambda s: put_chain_rule(s, "sweep", SWEEP, actor="b", now=NOW), False),
    ("change it", lambda s: put_chain_rule(s, "sweep", {**SWEEP, "min_items": 8}, actor="a", now=NOW), True),
    ("add another", lambda s: put_chain_rule(s, "door", DOOR, actor="a", now=NOW), True),
    ("an invalid rule", lambda s: _ignore_refusal(put_chain_rule(s, "door", {"kind": "x"}, actor="a", now=NOW)), False),
    ("override it", lambda s: put_store_override(s, "store-1", "sweep", {"min_items": 12}, actor="a", now=NOW), True),
    (
        "the same override",
        lambda s: put_store_override(s, "store-1", "sweep", {"min_items": 12}, actor="a", now=NOW),
        False,
    ),
    (
        "change the override",
        lambda s: put_store_override(s, "store-1", "sweep", {"enabled": False}, actor="a", now=NOW),
        True,
    ),
    ("another store", lambda s: put_store_override(s, "store-2", "door", {"grace_s": 60}, actor="a", now=NOW), True),
    (
        "an invalid override",
        lambda s: _ignore_refusal(put_store_override(s, "store-2", "door", {"grace_s": -1}, actor="a", now=NOW)),
        False,
    ),
    ("read everything", lambda s: rules_db.list_chain_rules(s), False),
    ("load", lambda s: load_rules(s), False),
    ("delete an override", lambda s: rules_db.delete_store_override(s, "store-2", "door", actor="a"), True),
    (
        "delete a missing override",
        lambda s: _ignore_refusal(rules_db.delete_store_override(s, "store-2", "door", actor="a")),
        False,
    ),
    ("delete the override again, re-add it", lambda s: _delete_and_readd_override(s), True),
    ("replace a rule by another between two polls", lambda s: _replace_rule(s), True),
    ("delete a rule with its overrides", lambda s: rules_db.delete_chain_rule(s, "sweep", actor="a"), True),
    ("seed into a chain that has rules", lambda s: seed_default_rules(s, now=NOW), False),
]


async def _delete_and_readd_override(session: AsyncSession) -> None:
    await rules_db.delete_store_override(session, "store-1", "sweep", actor="a")
    await put_store_override(session, "store-1", "sweep", {"enabled": False}, actor="a", now=NOW)


async def _replace_rule(session: AsyncSession) -> None:
    await rules_db.delete_chain_rule(session, "door", actor="a")
    await put_chain_rule(session, "door-2", DOOR, actor="a", now=NOW)


async def test_the_fingerprint_changes_on_every_change_and_not_otherwise(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as s:
        before = await rules_fingerprint(s)
    for what, step, changes in FINGERPRINT_STEPS:
        async with sessions() as s:  # a session per step, as the API has one per request
            await step(s)
        async with sessions() as s:
            after = await rules_fingerprint(s)
            loaded = await load_rules(s)
        assert loaded.fingerprint == after, what
        assert (after != before) == changes, f"{what}: {before} -> {after}"
        before = after


# --------------------------------------------------------------------------- invalid stored data


async def test_an_override_left_invalid_by_a_chain_change_is_skipped_and_reported(session: AsyncSession) -> None:
    for rule_id, definition in (("sweep", SWEEP), ("door", DOOR), ("shrink", SHRINK)):
        await put_chain_rule(session, rule_id, definition, actor="chain", now=NOW)
    # store-a watches value only; store-b tolerates more value; store-c keeps the chain's rules.
    await put_store_override(session, "store-a", "shrink", {"max_units": None}, actor="a", now=NOW)
    await put_store_override(session, "store-a", "sweep", {"min_items": 10}, actor="a", now=NOW)
    await put_store_override(session, "store-b", "shrink", {"max_value": "250"}, actor="b", now=NOW)

    # The chain moves to a unit limit only: store-a's override now leaves the rule without any limit.
    change = await put_chain_rule(
        session, "shrink", {**SHRINK, "max_units": 5, "max_value": None}, actor="chain", now=NOW
    )
    message = "rule 'shrink', field '(rule)': Value error, a shrink rule needs max_units or max_value"
    assert change.invalid_overrides == (SkippedRule(rule_id="shrink", store_id="store-a", message=message),)

    with capture_logs() as logs:
        loaded = await load_rules(session)
    assert loaded.problems() == change.invalid_overrides
    assert [(e["event"], e["rule_id"], e["store_id"], e["problem"]) for e in logs if e["log_level"] == "warning"] == [
        ("rule_not_in_force", "shrink", "store-a", message)
    ]

    chain_shrink = ShrinkRule(max_units=5, max_value=None)
    store_a = loaded.for_store("store-a")
    assert store_a["shrink"] == chain_shrink  # the chain's rule in place of the skipped override
    assert store_a["sweep"] == ShelfSweepRule(min_items=10, window_s=30)  # its other override still holds
    assert loaded.store("store-a").overridden == {"sweep"}
    assert loaded.for_store("store-b")["shrink"] == ShrinkRule(max_units=5, max_value=Decimal("250"))
    assert loaded.for_store("store-c") == dict(loaded.chain.rules)
    assert loaded.for_store("store-c")["shrink"] == chain_shrink


async def test_invalid_stored_chain_rules_and_orphan_overrides_are_left_out_and_reported(
    session: AsyncSession,
) -> None:
    await put_chain_rule(session, "door", DOOR, actor="chain", now=NOW)
    # Written past the API, as an old release or a hand edit could have left them.
    await session.execute(
        insert(ChainRule).values(rule_id="teleport", definition={"kind": "teleport"}, updated_at=NOW, updated_by="x")
    )
    await session.execute(
        insert(StoreRuleOverride),
        [
            {
                "store_id": "store-a",
                "rule_id": "gone",
                "changes": {"enabled": False},
                "updated_at": NOW,
                "updated_by": "x",
            },
            {
                "store_id": "store-a",
                "rule_id": "door",
                "changes": ["not", "an object"],
                "updated_at": NOW,
                "updated_by": "x",
            },
        ],
    )
    await session.commit()

    loaded = await load_rules(session)
    assert list(loaded.chain.rules) == ["door"]
    assert [(p.rule_id, p.store_id) for p in loaded.problems()] == [
        ("teleport", None),
        ("door", "store-a"),
        ("gone", "store-a"),
    ]
    messages = [p.message for p in loaded.problems()]
    assert messages[0].startswith("rule 'teleport', field '(rule)': Input tag 'teleport' found using 'kind'")
    assert messages[1:] == [
        "rule 'door': the store's stored changes are not an object",
        "rule 'gone': the store overrides a rule the chain does not have",
    ]
    assert loaded.for_store("store-a") == {"door": DoorHeldOpenRule(grace_s=300)}
    assert await rules_fingerprint(session) == loaded.fingerprint


# --------------------------------------------------------------------------- resolution, pure

CHAIN = load_rule_set(
    {
        "rules": {
            "sweep": SWEEP,
            "door": DOOR,
            "chillers": {"kind": "environment_range", "zone": "chiller-*", "low": 0, "high": 5},
        }
    }
)

# (what, the store's changes, rules in force with the fields that matter, skipped messages)
RESOLUTION_CASES: list[tuple[str, dict[str, Any], dict[str, dict[str, Any]], list[str]]] = [
    (
        "no overrides",
        {},
        {"sweep": {"min_items": 6}, "door": {"grace_s": 300}, "chillers": {"high": 5}},
        [],
    ),
    (
        "merged and disabled",
        {"sweep": {"min_items": 10}, "door": {"enabled": False}, "chillers": {"high": 7, "zone": "chiller-2"}},
        {"sweep": {"min_items": 10}, "chillers": {"high": 7, "zone": "chiller-2"}},
        [],
    ),
    (
        "an invalid override falls back to the chain's rule",
        {"sweep": {"min_items": 1}, "chillers": {"low": 9}},
        {"sweep": {"min_items": 6}, "door": {"grace_s": 300}, "chillers": {"low": 0}},
        [
            "rule 'chillers', field '(rule)': Value error, low 9.0 must be below high 5.0",
            "rule 'sweep', field 'min_items': Input should be greater than or equal to 2",
        ],
    ),
    (
        "an invalid override that disabled the rule keeps it disabled",
        {"door": {"enabled": False, "grace_s": -5}},
        {"sweep": {"min_items": 6}, "chillers": {"high": 5}},
        ["rule 'door', field 'grace_s': Input should be greater than or equal to 0"],
    ),
    (
        "a store cannot change the kind, nor add a rule",
        {"door": {"kind": "door_after_hours"}, "mine": {"enabled": True}},
        {"sweep": {"min_items": 6}, "door": {"grace_s": 300}, "chillers": {"high": 5}},
        [
            "rule 'door', field 'kind': a store cannot change a rule's kind (door_held_open)",
            "rule 'mine': the store overrides a rule the chain does not have",
        ],
    ),
]


@pytest.mark.parametrize(
    ("changes", "in_force", "skipped"), [case[1:] for case in RESOLUTION_CASES], ids=[c[0] for c in RESOLUTION_CASES]
)
def test_store_rules_are_resolved_rule_by_rule(
    changes: dict[str, Any], in_force: dict[str, dict[str, Any]], skipped: list[str]
) -> None:
    resolved = resolve_store_rules(CHAIN, "store-1", changes)
    assert sorted(resolved.in_force) == sorted(in_force)
    for rule_id, fields in in_force.items():
        rule = resolved.in_force[rule_id]
        assert {name: getattr(rule, name) for name in fields} == fields, rule_id
    assert [s.message for s in resolved.skipped] == skipped
    assert {s.store_id for s in resolved.skipped} <= {"store-1"}


def test_rules_in_force_built_by_hand_skip_invalid_overrides_too() -> None:
    from hub.domain.rules import StoreOverrides

    in_force = RulesInForce(
        chain=CHAIN,
        overrides={"store-1": StoreOverrides(store_id="store-1", rules={"chillers": {"low": 9}})},
        fingerprint="test",
    )
    assert in_force.for_store("store-1")["chillers"] == CHAIN.rules["chillers"]
    assert isinstance(in_force.for_store("store-2")["chillers"], EnvironmentRangeRule)
    assert [p.rule_id for p in in_force.problems()] == ["chillers"]
    assert RuleSet(rules=dict(in_force.for_store("store-2"))) == CHAIN
