"""The chain's rules and the stores' overrides in the database: what is in force, a fingerprint cheap
enough to poll, the packaged defaults, and the changes the rules API makes.

Validation is :mod:`hub.domain.rules`' (its :class:`RuleSetError` messages name the rule and the field);
this module reads and writes rows and decides what happens to a stored rule that no longer validates.

**Invalid stored data never stops the monitoring.** The API refuses invalid rules, but a stored
override can still become invalid: the chain changes the rule under it (another kind, a field the store
overrides removed), or a release changes a rule model. One bad override must not take every store's
rules down, nor that store's other rules. So resolution works rule by rule: a chain rule that does not
validate is left out and reported; a store override that does not validate is skipped and reported, and
the store runs the chain's rule unchanged in its place, except that the override's ``enabled: false``
still holds (disabling is valid for every rule, and a store that turned a rule off wanted it off).
Reports are :class:`SkippedRule` values: ``load_rules`` logs each one once per (re)load, and the API
shows them. Failing towards the chain's rule rather than towards no rule is deliberate: an alarm that
is too eager is seen and fixed, a silent one is not.

**The fingerprint** is the row counts and the latest ``updated_at`` of both tables. Writes here never
reuse an ``updated_at`` (:func:`_stamp` moves it one microsecond past the latest one when the clock has
not moved on), so every committed insert or update raises the latest ``updated_at`` and every delete
lowers a count: any change between two polls changes the fingerprint, and nothing else does. A write
that changes nothing (the same definition again) is not made at all.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, Final

import structlog
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.alerting.models import ChainRule, StoreRuleOverride
from hub.domain.rules import Rule, RuleSet, RuleSetError, StoreOverrides, apply_override, load_rule_set
from hub.errors import HubError
from storegate.wire import StoreId

log = structlog.get_logger(__name__)

DEFAULT_RULES_FILE: Final = "default_rules.toml"
DEFAULTS_ACTOR: Final = "defaults"
# The smallest step both databases keep (PostgreSQL timestamps have microseconds).
_TICK: Final = timedelta(microseconds=1)
_STORE_ID: Final[TypeAdapter[str]] = TypeAdapter(StoreId)


class RuleNotFoundError(HubError, LookupError):
    """No chain rule, or no store override, with that id; the message says which."""


class RulesConflictError(HubError, RuntimeError):
    """The change cannot be applied as things stand (a concurrent write, an invalid chain rule); nothing was."""


# --------------------------------------------------------------------------- resolution (pure)


@dataclass(frozen=True, kw_only=True)
class SkippedRule:
    """A stored chain rule (``store_id`` None) or store override that is not in force, and why."""

    rule_id: str
    store_id: str | None
    message: str


@dataclass(frozen=True, kw_only=True)
class StoreRules:
    """Every chain rule as it stands in one store (disabled ones included), and the overrides skipped."""

    store_id: str
    merged: Mapping[str, Rule]
    overridden: frozenset[str] = frozenset()
    skipped: tuple[SkippedRule, ...] = ()

    @property
    def in_force(self) -> dict[str, Rule]:
        """The enabled rules: what the rules engine evaluates for this store."""
        return {rule_id: rule for rule_id, rule in self.merged.items() if rule.enabled}


def resolve_store_rules(chain: RuleSet, store_id: str, changes: Mapping[str, Any]) -> StoreRules:
    """The chain's rules with ``store_id``'s changes (per rule id) applied one rule at a time.

    An override that does not apply is skipped and reported; the chain's rule stays, disabled if the
    override said ``enabled: false`` (see the module's docstring).
    """
    merged: dict[str, Rule] = dict(chain.rules)
    overridden: set[str] = set()
    skipped: list[SkippedRule] = []
    for rule_id in sorted(changes):
        change = changes[rule_id]
        rule = chain.rules.get(rule_id)
        try:
            if rule is None:
                # The same words as effective_rules, which refuses such an override outright.
                raise RuleSetError(f"rule {rule_id!r}: the store overrides a rule the chain does not have")
            if not isinstance(change, Mapping):
                raise RuleSetError(f"rule {rule_id!r}: the store's stored changes are not an object")
            merged[rule_id] = apply_override(rule_id, rule, change)
        except RuleSetError as err:
            skipped.append(SkippedRule(rule_id=rule_id, store_id=store_id, message=str(err)))
            if rule is not None and isinstance(change, Mapping) and change.get("enabled") is False:
                merged[rule_id] = rule.model_copy(update={"enabled": False})
            continue
        overridden.add(rule_id)
    return StoreRules(store_id=store_id, merged=merged, overridden=frozenset(overridden), skipped=tuple(skipped))


@dataclass(frozen=True)
class RulesInForce:
    """The chain's valid rules, every store's overrides, and the fingerprint of the rows they came from."""

    chain: RuleSet
    overrides: Mapping[str, StoreOverrides]
    fingerprint: str
    # Stored chain rules left out of ``chain`` because they do not validate.
    skipped: tuple[SkippedRule, ...] = ()
    # Resolved stores, filled on first use: the rules engine asks for a store's rules per observation.
    _resolved: dict[str, StoreRules] = field(default_factory=dict, init=False, repr=False, compare=False)

    def store(self, store_id: str) -> StoreRules:
        """Every chain rule as it stands in ``store_id``, with the overrides that were skipped."""
        resolved = self._resolved.get(store_id)
        if resolved is None:
            overrides = self.overrides.get(store_id)
            resolved = resolve_store_rules(self.chain, store_id, overrides.rules if overrides is not None else {})
            self._resolved[store_id] = resolved
        return resolved

    def for_store(self, store_id: str) -> dict[str, Rule]:
        """The rules in force in ``store_id`` (enabled, overrides applied); invalid overrides are skipped."""
        return self.store(store_id).in_force

    def problems(self) -> tuple[SkippedRule, ...]:
        """Every stored rule and override not in force, chain rules first, then by store."""
        by_store = (self.store(store_id).skipped for store_id in sorted(self.overrides))
        return self.skipped + tuple(skipped for store in by_store for skipped in store)


# --------------------------------------------------------------------------- reading


def rule_definition(rule: Rule) -> dict[str, Any]:
    """A rule as stored and shown: every field, defaults filled in, as JSON values.

    Stored whole so that what the API shows is what runs, and a release that changes a default does
    not silently change a chain's monitoring.
    """
    return rule.model_dump(mode="json")


def validate_chain_rule(rule_id: str, definition: object) -> Rule:
    """One chain rule from plain data; RuleSetError names the rule (its id is checked too) and the field."""
    if not isinstance(definition, Mapping):
        raise RuleSetError(f"rule {rule_id!r}: a rule definition must be an object with a 'kind'")
    if "kind" not in definition:  # pydantic's words for it ("unable to extract tag") help nobody
        raise RuleSetError(f"rule {rule_id!r}, field 'kind': Field required")
    return load_rule_set({"rules": {rule_id: dict(definition)}}).rules[rule_id]


def _fingerprint(
    chain_count: int, chain_latest: datetime | None, store_count: int, store_latest: datetime | None
) -> str:
    def part(count: int, latest: datetime | None) -> str:
        return f"{count}@{latest.isoformat() if latest is not None else '-'}"

    return f"chain {part(chain_count, chain_latest)}; overrides {part(store_count, store_latest)}"


async def rules_fingerprint(session: AsyncSession) -> str:
    """A short string that changes whenever a chain rule or store override is written or deleted.

    One query of counts and maxima, cheap enough to poll every few seconds; equal to the fingerprint
    of :func:`load_rules` when nothing changed in between.
    """
    statement = select(
        select(func.count()).select_from(ChainRule).scalar_subquery(),
        select(func.max(ChainRule.updated_at)).scalar_subquery(),
        select(func.count()).select_from(StoreRuleOverride).scalar_subquery(),
        select(func.max(StoreRuleOverride.updated_at)).scalar_subquery(),
    )
    chain_count, chain_latest, store_count, store_latest = (await session.execute(statement)).one()
    return _fingerprint(chain_count, chain_latest, store_count, store_latest)


@dataclass(frozen=True, kw_only=True)
class StoredChainRule:
    """A chain rule's row: its definition as stored, the rule (None when it does not validate) and why not."""

    rule_id: str
    definition: Any
    rule: Rule | None
    problem: str | None
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True, kw_only=True)
class StoredOverride:
    """A store override's row, as stored."""

    store_id: str
    rule_id: str
    changes: Any
    updated_at: datetime
    updated_by: str


def _checked(rule_id: str, definition: Any, updated_at: datetime, updated_by: str) -> StoredChainRule:
    try:
        rule: Rule | None = validate_chain_rule(rule_id, definition)
        problem = None
    except RuleSetError as err:
        rule, problem = None, str(err)
    return StoredChainRule(
        rule_id=rule_id, definition=definition, rule=rule, problem=problem, updated_at=updated_at, updated_by=updated_by
    )


async def list_chain_rules(session: AsyncSession) -> list[StoredChainRule]:
    """Every stored chain rule by id, each validated."""
    # Columns, not ORM objects: a long-lived session of the rules engine must not serve stale instances.
    rows = await session.execute(
        select(ChainRule.rule_id, ChainRule.definition, ChainRule.updated_at, ChainRule.updated_by).order_by(
            ChainRule.rule_id
        )
    )
    return [_checked(*row) for row in rows]


async def get_chain_rule(session: AsyncSession, rule_id: str) -> StoredChainRule | None:
    """One stored chain rule, validated; None when there is none."""
    row = (
        await session.execute(
            select(ChainRule.rule_id, ChainRule.definition, ChainRule.updated_at, ChainRule.updated_by).where(
                ChainRule.rule_id == rule_id
            )
        )
    ).one_or_none()
    return None if row is None else _checked(*row)


async def list_overrides(session: AsyncSession, *, store_id: str | None = None) -> list[StoredOverride]:
    """Stored overrides (of one store, or all) by store and rule id."""
    statement = select(
        StoreRuleOverride.store_id,
        StoreRuleOverride.rule_id,
        StoreRuleOverride.changes,
        StoreRuleOverride.updated_at,
        StoreRuleOverride.updated_by,
    ).order_by(StoreRuleOverride.store_id, StoreRuleOverride.rule_id)
    if store_id is not None:
        statement = statement.where(StoreRuleOverride.store_id == store_id)
    rows = await session.execute(statement)
    return [StoredOverride(store_id=s, rule_id=r, changes=c, updated_at=at, updated_by=by) for s, r, c, at, by in rows]


def _chain_of(stored: Sequence[StoredChainRule]) -> tuple[RuleSet, tuple[SkippedRule, ...]]:
    rules = {s.rule_id: s.rule for s in stored if s.rule is not None}
    skipped = tuple(
        SkippedRule(rule_id=s.rule_id, store_id=None, message=s.problem) for s in stored if s.problem is not None
    )
    return RuleSet(rules=rules), skipped


async def load_rules(session: AsyncSession) -> RulesInForce:
    """The rules in force: valid chain rules, every store's overrides, and what is skipped (logged once here).

    The fingerprint is computed from the rows read, so a change that lands while they are read shows as
    a fingerprint that differs from the next :func:`rules_fingerprint`, and the caller loads again.
    """
    stored = await list_chain_rules(session)
    overrides = await list_overrides(session)
    chain, skipped = _chain_of(stored)
    by_store: dict[str, dict[str, Any]] = {}
    for override in overrides:
        by_store.setdefault(override.store_id, {})[override.rule_id] = override.changes
    in_force = RulesInForce(
        chain=chain,
        # StoreOverrides types the changes as objects; a row that is not one is reported by resolution.
        overrides={
            store_id: StoreOverrides.model_construct(store_id=store_id, rules=changes)
            for store_id, changes in by_store.items()
        },
        fingerprint=_fingerprint(
            len(stored),
            max((s.updated_at for s in stored), default=None),
            len(overrides),
            max((o.updated_at for o in overrides), default=None),
        ),
        skipped=skipped,
    )
    for problem in in_force.problems():
        log.warning(
            "rule_not_in_force",
            rule_id=problem.rule_id,
            store_id=problem.store_id,
            problem=problem.message,
            fallback="left out" if problem.store_id is None else "the chain's rule",
        )
    return in_force


# --------------------------------------------------------------------------- writing


async def _stamp(session: AsyncSession, now: datetime) -> datetime:
    """``now``, or a microsecond past the latest ``updated_at`` of both tables if the clock has not passed it."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"naive datetime {now.isoformat()}: the rules tables keep aware UTC times")
    latest = (
        await session.execute(
            select(
                select(func.max(ChainRule.updated_at)).scalar_subquery(),
                select(func.max(StoreRuleOverride.updated_at)).scalar_subquery(),
            )
        )
    ).one()
    stamps: list[datetime] = [at for at in latest if at is not None]
    if stamps and max(stamps) >= now:
        return max(stamps) + _TICK
    return now


async def _commit(session: AsyncSession, what: str) -> None:
    try:
        await session.commit()
    except IntegrityError as err:
        await session.rollback()
        raise RulesConflictError(
            f"{what} was changed at the same time by another request; nothing was applied"
        ) from err


def default_rule_set() -> RuleSet:
    """The packaged default rules (``default_rules.toml``), validated."""
    text = resources.files("hub.alerting").joinpath(DEFAULT_RULES_FILE).read_text(encoding="utf-8")
    return load_rule_set(tomllib.loads(text))


async def seed_default_rules(session: AsyncSession, *, now: datetime) -> int:
    """Insert the packaged defaults if the chain has no rules at all; returns how many were inserted.

    Meant for every start of the hub: a chain that has rules (even all disabled) keeps them. A chain
    that deleted every rule gets the defaults back, so turn rules off with ``enabled: false`` instead.
    """
    if await session.scalar(select(func.count()).select_from(ChainRule)):
        return 0
    defaults = default_rule_set()
    stamp = await _stamp(session, now)
    session.add_all(
        ChainRule(rule_id=rule_id, definition=rule_definition(rule), updated_at=stamp, updated_by=DEFAULTS_ACTOR)
        for rule_id, rule in sorted(defaults.rules.items())
    )
    try:
        await session.commit()
    except IntegrityError:
        # Another hub seeded between the count and the insert: its rules stand, ours are not needed.
        await session.rollback()
        return 0
    log.info("rules_seeded", count=len(defaults.rules), rule_ids=sorted(defaults.rules))
    return len(defaults.rules)


@dataclass(frozen=True, kw_only=True)
class ChainRuleChange:
    """What a PUT of a chain rule did, and the store overrides it left invalid (skipped until fixed)."""

    stored: StoredChainRule
    created: bool
    changed: bool
    invalid_overrides: tuple[SkippedRule, ...]


async def put_chain_rule(
    session: AsyncSession, rule_id: str, definition: object, *, actor: str, now: datetime
) -> ChainRuleChange:
    """Create or replace a chain rule (validated as a whole); RuleSetError when it is invalid.

    The store overrides of the rule stay; those the new definition makes invalid are returned (they are
    skipped until fixed or deleted). The same definition again writes nothing.
    """
    rule = validate_chain_rule(rule_id, definition)
    stored_definition = rule_definition(rule)
    row = await session.get(ChainRule, rule_id)
    created = row is None
    changed = row is None or row.definition != stored_definition
    if row is None:
        stamp = await _stamp(session, now)
        row = ChainRule(rule_id=rule_id, definition=stored_definition, updated_at=stamp, updated_by=actor)
        session.add(row)
    elif changed:
        row.definition = stored_definition
        row.updated_at = await _stamp(session, now)
        row.updated_by = actor
    stored = StoredChainRule(
        rule_id=rule_id,
        definition=stored_definition,
        rule=rule,
        problem=None,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )
    overrides = await session.execute(
        select(StoreRuleOverride.store_id, StoreRuleOverride.changes)
        .where(StoreRuleOverride.rule_id == rule_id)
        .order_by(StoreRuleOverride.store_id)
    )
    chain = RuleSet(rules={rule_id: rule})
    invalid = tuple(
        skipped
        for store_id, changes in overrides
        for skipped in resolve_store_rules(chain, store_id, {rule_id: changes}).skipped
    )
    if changed:
        await _commit(session, f"rule {rule_id!r}")
        log.info(
            "chain_rule_put",
            actor=actor,
            rule_id=rule_id,
            kind=rule.kind,
            created=created,
            overrides_left_invalid=[s.store_id for s in invalid],
        )
    else:
        await session.rollback()
    return ChainRuleChange(stored=stored, created=created, changed=changed, invalid_overrides=invalid)


async def delete_chain_rule(session: AsyncSession, rule_id: str, *, actor: str) -> int:
    """Delete a chain rule and every store's override of it; returns how many overrides went with it."""
    deleted = await session.execute(delete(ChainRule).where(ChainRule.rule_id == rule_id))
    if deleted.rowcount == 0:  # type: ignore[attr-defined]  # CursorResult of a DML statement
        await session.rollback()
        raise RuleNotFoundError(f"rule {rule_id!r}: the chain has no such rule")
    overrides = await session.execute(delete(StoreRuleOverride).where(StoreRuleOverride.rule_id == rule_id))
    count: int = overrides.rowcount  # type: ignore[attr-defined]
    await session.commit()
    log.info("chain_rule_deleted", actor=actor, rule_id=rule_id, overrides_deleted=count)
    return count


@dataclass(frozen=True, kw_only=True)
class OverrideChange:
    """What a PUT of a store override did, with the rule as it now stands in the store."""

    stored: StoredOverride
    rule: Rule
    created: bool
    changed: bool


def check_store_id(store_id: str) -> str:
    """``store_id`` if it is a valid store id (the wire's: lower case, a topic segment); RuleSetError if not."""
    try:
        return _STORE_ID.validate_python(store_id)
    except ValidationError as err:
        problem = err.errors()[0]["msg"]
        raise RuleSetError(f"store {store_id!r}: not a store id ({problem})") from None


async def put_store_override(
    session: AsyncSession, store_id: str, rule_id: str, changes: Mapping[str, Any], *, actor: str, now: datetime
) -> OverrideChange:
    """Set a store's override of a chain rule: the fields to change, replacing any earlier override of it.

    RuleNotFoundError when the chain has no such rule; RuleSetError when the merged rule is invalid;
    RulesConflictError when the chain's own definition of the rule is invalid. The store need not have
    sent anything yet (rules can be set up before a store opens). The same changes again write nothing.
    """
    check_store_id(store_id)
    if not changes:
        raise RuleSetError(f"rule {rule_id!r}: an override needs at least one field to change (DELETE removes it)")
    chain_rule = await get_chain_rule(session, rule_id)
    if chain_rule is None:
        raise RuleNotFoundError(f"rule {rule_id!r}: the chain has no such rule")
    if chain_rule.rule is None:
        raise RulesConflictError(f"the chain's own definition is invalid, fix it first: {chain_rule.problem}")
    merged = apply_override(rule_id, chain_rule.rule, changes)
    # Stored in the merged rule's own JSON form (tuples as lists, decimals as strings), only the fields given.
    merged_definition = rule_definition(merged)
    normalised = {name: merged_definition[name] for name in changes}
    row = await session.get(StoreRuleOverride, (store_id, rule_id))
    created = row is None
    changed = row is None or row.changes != normalised
    if row is None:
        stamp = await _stamp(session, now)
        row = StoreRuleOverride(
            store_id=store_id, rule_id=rule_id, changes=normalised, updated_at=stamp, updated_by=actor
        )
        session.add(row)
    elif changed:
        row.changes = normalised
        row.updated_at = await _stamp(session, now)
        row.updated_by = actor
    stored = StoredOverride(
        store_id=store_id, rule_id=rule_id, changes=normalised, updated_at=row.updated_at, updated_by=row.updated_by
    )
    if changed:
        await _commit(session, f"the override of rule {rule_id!r} in store {store_id!r}")
        log.info(
            "store_rule_override_put",
            actor=actor,
            rule_id=rule_id,
            store_id=store_id,
            fields=sorted(normalised),
            enabled=merged.enabled,
            created=created,
        )
    else:
        await session.rollback()
    return OverrideChange(stored=stored, rule=merged, created=created, changed=changed)


async def delete_store_override(session: AsyncSession, store_id: str, rule_id: str, *, actor: str) -> None:
    """Remove a store's override of a rule, so the chain's rule applies there again."""
    deleted = await session.execute(
        delete(StoreRuleOverride).where(StoreRuleOverride.store_id == store_id, StoreRuleOverride.rule_id == rule_id)
    )
    if deleted.rowcount == 0:  # type: ignore[attr-defined]  # CursorResult of a DML statement
        await session.rollback()
        raise RuleNotFoundError(f"rule {rule_id!r}: store {store_id!r} does not override it")
    await session.commit()
    log.info("store_rule_override_deleted", actor=actor, rule_id=rule_id, store_id=store_id)


@dataclass(frozen=True, kw_only=True)
class StoreRulesView:
    """A store's rules as resolved, with the rows of its overrides (who changed what, when)."""

    rules: StoreRules
    chain_skipped: tuple[SkippedRule, ...]
    overrides: Mapping[str, StoredOverride]


async def load_store_rules(session: AsyncSession, store_id: str) -> StoreRulesView:
    """One store's rules: every chain rule as it stands there, and what is skipped and why."""
    stored = await list_chain_rules(session)
    overrides = {o.rule_id: o for o in await list_overrides(session, store_id=store_id)}
    chain, skipped = _chain_of(stored)
    resolved = resolve_store_rules(chain, store_id, {rule_id: o.changes for rule_id, o in overrides.items()})
    return StoreRulesView(rules=resolved, chain_skipped=skipped, overrides=overrides)
