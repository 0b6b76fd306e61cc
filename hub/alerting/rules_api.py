"""``/api/v1/rules`` and ``/api/v1/stores/{store_id}/rules``: the chain's monitoring rules and each
store's overrides, as data.

A chain rule is written whole (``kind`` and its fields) and validated as a whole; a store override is
the fields to change (``{"enabled": false}`` disables the rule there) and is validated merged into the
chain's rule. Refusals are 422 (invalid), 404 (no such rule or override) or 409 (cannot apply now), each
with a ``message`` that names the rule and the field. Who made a change is the request's principal
(operator or API token); the audit log keeps the definition or changes before and after.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Body, Depends, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field, JsonValue

from hub.alerting import rules_db
from hub.alerting.rules_db import (
    RuleNotFoundError,
    RulesConflictError,
    SkippedRule,
    StoredChainRule,
    StoreRulesView,
)
from hub.api.deps import NowDep, SessionDep, rules_may_change
from hub.api.schemas import ApiModel, Problem, ValidationProblem
from hub.auth.audit import note_change
from hub.auth.guard import PrincipalDep
from hub.domain.rules import RuleSetError

router = APIRouter(prefix="/api/v1", tags=["rules"], dependencies=[Depends(rules_may_change)])


class SkippedOut(ApiModel):
    """A stored chain rule (``store_id`` null) or store override that is not in force, and why."""

    rule_id: str
    store_id: str | None
    message: str
    changes: JsonValue = Field(
        default=None, description="the skipped override's stored changes (null for a chain rule)"
    )


class ChainRuleOut(ApiModel):
    """One chain rule as stored: every field, defaults filled in."""

    rule_id: str
    definition: JsonValue = Field(description="the rule: its kind and every field")
    in_force: bool = Field(description="valid and enabled (stores may still disable or change it)")
    problem: str | None = Field(description="why a stored definition does not validate (it is then left out)")
    updated_at: datetime
    updated_by: str


class ChainRuleList(ApiModel):
    """The chain's rules, by id."""

    items: list[ChainRuleOut]


class ChainRulePutOut(ApiModel):
    """The rule as stored now, and the store overrides it left invalid (skipped until fixed or deleted)."""

    rule: ChainRuleOut
    created: bool
    changed: bool = Field(description="false when the same definition was stored already (nothing was written)")
    invalid_overrides: list[SkippedOut]


class ChainRuleDeleteOut(ApiModel):
    """A deleted chain rule and how many store overrides were deleted with it."""

    rule_id: str
    overrides_deleted: int


class StoreRuleOut(ApiModel):
    """One chain rule as it stands in a store."""

    rule_id: str
    source: Literal["chain", "overridden"] = Field(description="overridden: the store's changes are applied")
    in_force: bool = Field(description="enabled in this store")
    definition: dict[str, JsonValue] = Field(description="the rule as evaluated in this store")
    changes: dict[str, JsonValue] | None = Field(description="the store's changes, when overridden")
    updated_at: datetime | None = Field(description="when the store's override was last changed")
    updated_by: str | None


class StoreRuleList(ApiModel):
    """Every chain rule as it stands in one store, and what is not in force and why."""

    store_id: str
    items: list[StoreRuleOut]
    skipped: list[SkippedOut] = Field(
        description="invalid chain rules (left out) and this store's invalid overrides (the chain's rule "
        "applies instead, still disabled if the override said enabled: false)"
    )


class StoreRulePutOut(ApiModel):
    """The rule as it now stands in the store."""

    rule: StoreRuleOut
    created: bool
    changed: bool = Field(description="false when the same changes were stored already (nothing was written)")


RuleIdPath = Annotated[str, Path(description="rule id: a-z, 0-9 and _.- , at most 64 characters")]
StoreIdPath = Annotated[str, Path(max_length=63, description="store id")]

_RULE_EXAMPLES: Final[dict[str, Any]] = {
    "sweep": {"summary": "a shelf sweep", "value": {"kind": "shelf_sweep", "min_items": 6, "window_s": 30}},
    "chillers": {
        "summary": "every chiller, 0 to 5 °C",
        "value": {"kind": "environment_range", "zone": "chiller-*", "low": 0, "high": 5, "alarm_after_s": 900},
    },
}
_CHANGES_EXAMPLES: Final[dict[str, Any]] = {
    "disable": {"summary": "disable the rule in this store", "value": {"enabled": False}},
    "tolerate": {"summary": "larger grabs before a sweep alarms", "value": {"min_items": 10}},
}
_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": Problem, "description": "no such rule (or no such override)"},
    409: {"model": Problem, "description": "it cannot be applied now (a concurrent change; an invalid chain rule)"},
    422: {"model": ValidationProblem, "description": "invalid: the message names the rule and the field"},
}


def _refuse(err: Exception) -> JSONResponse:
    """The hub's error shapes: a Problem for 404 and 409, a ValidationProblem naming the rule and field for 422."""
    if isinstance(err, RuleNotFoundError | RulesConflictError):
        status = 404 if isinstance(err, RuleNotFoundError) else 409
        return JSONResponse(status_code=status, content=Problem(detail=str(err)).model_dump())
    issue = {"type": "value_error", "loc": ["body"], "msg": str(err)}
    problem = ValidationProblem.model_validate({"detail": [issue], "message": str(err)})
    return JSONResponse(status_code=422, content=problem.model_dump(mode="json", exclude_unset=True))


async def _chain_definition(session: SessionDep, rule_id: str) -> dict[str, Any] | None:
    """A chain rule's stored definition, for the audit log."""
    stored = await rules_db.get_chain_rule(session, rule_id)
    return {"definition": stored.definition} if stored is not None else None


async def _override_changes(session: SessionDep, store_id: str, rule_id: str) -> dict[str, Any] | None:
    """A store override's stored changes, for the audit log."""
    for override in await rules_db.list_overrides(session, store_id=store_id):
        if override.rule_id == rule_id:
            return {"changes": override.changes}
    return None


def _skipped_out(skipped: SkippedRule, changes: JsonValue = None) -> SkippedOut:
    return SkippedOut(rule_id=skipped.rule_id, store_id=skipped.store_id, message=skipped.message, changes=changes)


def _chain_rule_out(stored: StoredChainRule) -> ChainRuleOut:
    return ChainRuleOut(
        rule_id=stored.rule_id,
        definition=stored.definition,
        in_force=stored.rule is not None and stored.rule.enabled,
        problem=stored.problem,
        updated_at=stored.updated_at,
        updated_by=stored.updated_by,
    )


def _store_rule_out(view: StoreRulesView, rule_id: str) -> StoreRuleOut:
    rule = view.rules.merged[rule_id]
    override = view.overrides.get(rule_id) if rule_id in view.rules.overridden else None
    return StoreRuleOut(
        rule_id=rule_id,
        source="overridden" if override is not None else "chain",
        in_force=rule.enabled,
        definition=rules_db.rule_definition(rule),
        changes=override.changes if override is not None else None,
        updated_at=override.updated_at if override is not None else None,
        updated_by=override.updated_by if override is not None else None,
    )


# --------------------------------------------------------------------------- the chain's rules


@router.get("/rules", response_model=ChainRuleList, summary="The chain's rules")
async def get_chain_rules(session: SessionDep) -> ChainRuleList:
    """Every chain rule by id, as stored; a stored rule that no longer validates says why."""
    return ChainRuleList(items=[_chain_rule_out(s) for s in await rules_db.list_chain_rules(session)])


@router.get("/rules/{rule_id}", response_model=ChainRuleOut, summary="One chain rule", responses=_ERRORS)
async def get_chain_rule(session: SessionDep, rule_id: RuleIdPath) -> ChainRuleOut | JSONResponse:
    """One chain rule."""
    stored = await rules_db.get_chain_rule(session, rule_id)
    if stored is None:
        return _refuse(RuleNotFoundError(f"rule {rule_id!r}: the chain has no such rule"))
    return _chain_rule_out(stored)


@router.put(
    "/rules/{rule_id}",
    response_model=ChainRulePutOut,
    summary="Create or replace a chain rule",
    responses={201: {"model": ChainRulePutOut, "description": "created"}, **_ERRORS},
)
async def put_chain_rule(
    request: Request,
    session: SessionDep,
    now: NowDep,
    who: PrincipalDep,
    response: Response,
    rule_id: RuleIdPath,
    definition: Annotated[
        dict[str, Any], Body(description="the whole rule: its kind and fields", openapi_examples=_RULE_EXAMPLES)
    ],
) -> ChainRulePutOut | JSONResponse:
    """Store a rule, validated as a whole; store overrides it leaves invalid are listed (and skipped)."""
    before = await _chain_definition(session, rule_id)
    try:
        change = await rules_db.put_chain_rule(session, rule_id, definition, actor=who.actor, now=now)
    except (RuleSetError, RulesConflictError) as err:
        return _refuse(err)
    note_change(request, target=f"rule:{rule_id}", before=before, after={"definition": change.stored.definition})
    response.status_code = 201 if change.created else 200
    return ChainRulePutOut(
        rule=_chain_rule_out(change.stored),
        created=change.created,
        changed=change.changed,
        invalid_overrides=[_skipped_out(s) for s in change.invalid_overrides],
    )


@router.delete("/rules/{rule_id}", response_model=ChainRuleDeleteOut, summary="Delete a chain rule", responses=_ERRORS)
async def delete_chain_rule(
    request: Request, session: SessionDep, who: PrincipalDep, rule_id: RuleIdPath
) -> ChainRuleDeleteOut | JSONResponse:
    """Delete a rule and every store's override of it (a store cannot keep a rule the chain has not)."""
    before = await _chain_definition(session, rule_id)
    try:
        count = await rules_db.delete_chain_rule(session, rule_id, actor=who.actor)
    except RuleNotFoundError as err:
        return _refuse(err)
    note_change(request, target=f"rule:{rule_id}", before=before, detail=f"{count} store overrides deleted with it")
    return ChainRuleDeleteOut(rule_id=rule_id, overrides_deleted=count)


# --------------------------------------------------------------------------- a store's rules


@router.get("/stores/{store_id}/rules", response_model=StoreRuleList, summary="A store's rules", responses=_ERRORS)
async def get_store_rules(session: SessionDep, store_id: StoreIdPath) -> StoreRuleList | JSONResponse:
    """Every chain rule as it stands in the store (disabled ones too), marked chain or overridden."""
    try:
        rules_db.check_store_id(store_id)
    except RuleSetError as err:
        return _refuse(err)
    view = await rules_db.load_store_rules(session, store_id)
    stored_changes = {rule_id: o.changes for rule_id, o in view.overrides.items()}
    return StoreRuleList(
        store_id=store_id,
        items=[_store_rule_out(view, rule_id) for rule_id in sorted(view.rules.merged)],
        skipped=[_skipped_out(s) for s in view.chain_skipped]
        + [_skipped_out(s, stored_changes.get(s.rule_id)) for s in view.rules.skipped],
    )


@router.put(
    "/stores/{store_id}/rules/{rule_id}",
    response_model=StoreRulePutOut,
    summary="Override a chain rule in a store",
    responses={201: {"model": StoreRulePutOut, "description": "created"}, **_ERRORS},
)
async def put_store_rule(
    request: Request,
    session: SessionDep,
    now: NowDep,
    who: PrincipalDep,
    response: Response,
    store_id: StoreIdPath,
    rule_id: RuleIdPath,
    changes: Annotated[
        dict[str, Any],
        Body(
            description="the fields to change; replaces the store's earlier override",
            openapi_examples=_CHANGES_EXAMPLES,
        ),
    ],
) -> StoreRulePutOut | JSONResponse:
    """Set the store's override of a rule, validated merged into the chain's rule."""
    try:
        rules_db.check_store_id(store_id)
    except RuleSetError as err:
        return _refuse(err)
    before = await _override_changes(session, store_id, rule_id)
    try:
        change = await rules_db.put_store_override(session, store_id, rule_id, changes, actor=who.actor, now=now)
    except (RuleSetError, RuleNotFoundError, RulesConflictError) as err:
        return _refuse(err)
    note_change(
        request, target=f"rule:{rule_id}", store_id=store_id, before=before, after={"changes": change.stored.changes}
    )
    response.status_code = 201 if change.created else 200
    stored = change.stored
    out = StoreRuleOut(
        rule_id=rule_id,
        source="overridden",
        in_force=change.rule.enabled,
        definition=rules_db.rule_definition(change.rule),
        changes=stored.changes,
        updated_at=stored.updated_at,
        updated_by=stored.updated_by,
    )
    return StoreRulePutOut(rule=out, created=change.created, changed=change.changed)


@router.delete(
    "/stores/{store_id}/rules/{rule_id}",
    response_model=StoreRuleOut,
    summary="Remove a store's override",
    responses=_ERRORS,
)
async def delete_store_rule(
    request: Request, session: SessionDep, who: PrincipalDep, store_id: StoreIdPath, rule_id: RuleIdPath
) -> StoreRuleOut | JSONResponse:
    """Remove the store's override; answers the rule as it now stands there (the chain's)."""
    before = await _override_changes(session, store_id, rule_id)
    try:
        await rules_db.delete_store_override(session, store_id, rule_id, actor=who.actor)
    except RuleNotFoundError as err:
        return _refuse(err)
    note_change(request, target=f"rule:{rule_id}", store_id=store_id, before=before)
    view = await rules_db.load_store_rules(session, store_id)
    if rule_id not in view.rules.merged:  # the chain's own rule is invalid: it is not in force anywhere
        return _refuse(RulesConflictError(f"the override is deleted, but the chain's rule {rule_id!r} is invalid"))
    return _store_rule_out(view, rule_id)
