"""``/api/v1/releases`` and ``/api/v1/rollouts``: admins upload releases of the agent software and roll them out.

A release is the wheel the project builds, uploaded as the request body: checked (:func:`storegate.wheels.
inspect_wheel`: a zip of the ``storegate`` distribution, its version from METADATA, within ``releases.max_bytes``),
its SHA-256 recorded, kept in ``releases.directory``. A rollout offers one release to the enrolled gateways of the
stores chosen (all, a region, a list) in stages; :mod:`hub.releases.runner` runs it. Every change is audited.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID, uuid4

import structlog
from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.api.deps import NowDep, SessionDep, SettingsDep
from hub.api.schemas import ApiModel, ValidationProblem
from hub.auth.audit import note_change
from hub.auth.guard import PrincipalDep
from hub.catalog.models import StoreProfile
from hub.db.models import Gateway, Release, Rollout, RolloutTarget
from hub.releases import plan
from hub.releases.store import write_wheel
from hub.runtime import HubRuntime
from hub.snapshots.gateway_api import read_limited_body
from storegate import wire
from storegate.wheels import VERSION_PATTERN, WheelError, inspect_wheel

log = structlog.get_logger(__name__)

router = APIRouter(tags=["releases"])

RELEASES_PATH: Final = "/api/v1/releases"
ROLLOUTS_PATH: Final = "/api/v1/rollouts"
MAX_STORES: Final = 5000
MAX_STAGES: Final = 10
# How long a gateway has, beyond its probation, to download, install and switch before it counts as failed.
DEFAULT_ANSWER_MARGIN_S: Final = 600

VersionPath = Annotated[str, Path(pattern=VERSION_PATTERN, max_length=64, description="the release's version")]
RolloutIdPath = Annotated[UUID, Path(description="the rollout's id")]


class ReleaseOut(ApiModel):
    """A release of the agent software the hub can offer to gateways."""

    version: str
    sha256: str
    size: int
    uploaded_at: datetime
    uploaded_by: str


class ReleaseList(ApiModel):
    """The releases, newest upload first."""

    releases: list[ReleaseOut]


def _release_out(row: Release) -> ReleaseOut:
    return ReleaseOut(
        version=row.version, sha256=row.sha256, size=row.size, uploaded_at=row.uploaded_at, uploaded_by=row.uploaded_by
    )


@router.post(
    RELEASES_PATH,
    status_code=201,
    response_model=ReleaseOut,
    summary="Upload a release of the agent software",
    description="The body is the wheel the project builds (`pip wheel --no-deps .`), as "
    "`application/octet-stream`. The hub checks it is a wheel of the `storegate` distribution, reads its version "
    "from its METADATA and records its SHA-256; a version is uploaded once.",
    responses={
        409: {"description": "a release of that version exists (with another SHA-256 if it differs)"},
        413: {"description": "larger than releases.max_bytes"},
        422: {"model": ValidationProblem, "description": "not a wheel of the storegate distribution, in words"},
    },
)
async def upload_release(
    request: Request, session: SessionDep, now: NowDep, settings: SettingsDep, who: PrincipalDep
) -> ReleaseOut:
    """Check and keep one release; 201 with what was recorded."""
    config = settings.releases
    data = await read_limited_body(request, config.max_bytes)
    if data is None:
        log.warning("release_refused", reason="too_large", actor=who.actor)
        raise HTTPException(status_code=413, detail=f"a release may be at most {config.max_bytes:,} bytes")
    try:
        info = await asyncio.to_thread(inspect_wheel, data, max_bytes=config.max_bytes)
    except WheelError as err:
        log.warning("release_refused", reason="not_a_release", detail=str(err), actor=who.actor)
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body",), "msg": str(err), "input": None}]
        ) from None
    note_change(request, target=f"release:{info.version}", detail=f"sha256 {info.sha256}")
    existing = await session.get(Release, info.version)
    if existing is not None:
        same = "the same file" if existing.sha256 == info.sha256 else f"another file (sha256 {existing.sha256})"
        raise HTTPException(status_code=409, detail=f"release {info.version} exists already, uploaded as {same}")
    written = await asyncio.to_thread(write_wheel, config.directory, info, data)
    row = Release(
        version=info.version,
        sha256=info.sha256,
        size=info.size,
        path=str(written.resolve()),
        uploaded_at=now,
        uploaded_by=who.actor,
    )
    session.add(row)
    await session.commit()
    out = _release_out(row)
    note_change(request, after=out.model_dump(mode="json"))
    log.info("release_uploaded", version=info.version, sha256=info.sha256, size=info.size, actor=who.actor)
    return out


@router.get(RELEASES_PATH, response_model=ReleaseList, summary="The releases of the agent software")
async def list_releases(session: SessionDep) -> ReleaseList:
    """Every release, newest upload first."""
    rows = (await session.scalars(select(Release).order_by(Release.uploaded_at.desc(), Release.version))).all()
    return ReleaseList(releases=[_release_out(row) for row in rows])


# ---------------------------------------------------------------------------------------------------- rollouts


class StagesIn(BaseModel):
    """Cumulative stages: gateways (5 then 100 in all) or percent (10 then 100); the last takes the rest."""

    model_config = ConfigDict(extra="forbid")

    unit: plan.StageUnit = "gateways"
    sizes: list[Annotated[int, Field(ge=1, le=1_000_000)]] = Field(min_length=1, max_length=MAX_STAGES)

    @model_validator(mode="after")
    def _growing(self) -> StagesIn:
        if any(b <= a for a, b in zip(self.sizes, self.sizes[1:], strict=False)):
            raise ValueError("stage sizes are cumulative: each larger than the one before")
        if self.unit == "percent" and self.sizes[-1] > 100:
            raise ValueError("percentages go up to 100")
        return self


class RolloutIn(BaseModel):
    """A release to offer to the enrolled gateways of the stores chosen, in stages."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=VERSION_PATTERN, max_length=64, description="an uploaded release")
    stores: Literal["all", "region", "stores"] = Field(description="all stores, the stores of `region`, or a list")
    region: wire.StoreId | None = Field(default=None, description="with stores = region")
    store_ids: list[wire.StoreId] | None = Field(default=None, min_length=1, max_length=MAX_STORES)
    stages: StagesIn = Field(description='e.g. {"unit": "gateways", "sizes": [5, 100]}')
    probation_s: int = Field(
        default=300, ge=10, le=86_400, description="how long the new release has to reach the hub and its devices"
    )
    max_failed: int = Field(default=0, ge=0, le=1_000_000, description="the rollout halts past this many failures")
    answer_within_s: int | None = Field(
        default=None,
        ge=30,
        le=7 * 86_400,
        description="a gateway silent this long after its command counts as failed (default: probation + 600 s)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RolloutIn:
        if (self.stores == "region") != (self.region is not None):
            raise ValueError("region goes with stores = region, and stores = region needs it")
        if (self.stores == "stores") != (self.store_ids is not None):
            raise ValueError("store_ids go with stores = stores, and stores = stores needs them")
        return self


class TargetOut(ApiModel):
    """One gateway of a rollout and its outcome (waiting, sent, done, failed, skipped)."""

    store_id: str
    gateway_id: str
    stage: int
    outcome: str
    command_id: str | None
    sent_at: datetime | None
    finished_at: datetime | None
    detail: str | None


class RolloutOut(ApiModel):
    """A rollout: its release, stages, state (running, paused, halted, cancelled, done) and why."""

    rollout_id: str
    version: str
    status: str
    stage: int
    stage_counts: list[int]
    probation_s: int
    max_failed: int
    answer_within_s: int
    reason: str | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    counts: dict[str, int]


class RolloutDetailOut(RolloutOut):
    """A rollout with each gateway's outcome."""

    targets: list[TargetOut]


class RolloutList(ApiModel):
    """The rollouts, newest first."""

    rollouts: list[RolloutOut]


def _counts(targets: list[RolloutTarget]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for target in targets:
        counts[target.outcome] = counts.get(target.outcome, 0) + 1
    return counts


def _rollout_fields(row: Rollout, targets: list[RolloutTarget]) -> dict[str, object]:
    return {
        "rollout_id": row.rollout_id,
        "version": row.version,
        "status": row.status,
        "stage": row.stage,
        "stage_counts": list(row.stages.get("counts", [])),
        "probation_s": row.probation_s,
        "max_failed": row.max_failed,
        "answer_within_s": row.answer_within_s,
        "reason": row.reason,
        "created_at": row.created_at,
        "created_by": row.created_by,
        "updated_at": row.updated_at,
        "counts": _counts(targets),
    }


def _target_out(target: RolloutTarget) -> TargetOut:
    return TargetOut(
        store_id=target.store_id,
        gateway_id=target.gateway_id,
        stage=target.stage,
        outcome=target.outcome,
        command_id=target.command_id,
        sent_at=target.sent_at,
        finished_at=target.finished_at,
        detail=target.detail,
    )


async def _targets(session: AsyncSession, rollout_id: str) -> list[RolloutTarget]:
    return list(
        (
            await session.scalars(
                select(RolloutTarget)
                .where(RolloutTarget.rollout_id == rollout_id)
                .order_by(RolloutTarget.stage, RolloutTarget.store_id, RolloutTarget.gateway_id)
            )
        ).all()
    )


async def _detail(session: AsyncSession, row: Rollout) -> RolloutDetailOut:
    targets = await _targets(session, row.rollout_id)
    return RolloutDetailOut(**_rollout_fields(row, targets), targets=[_target_out(t) for t in targets])


async def _chosen_gateways(session: AsyncSession, rollout_in: RolloutIn) -> list[tuple[str, str]]:
    """The enrolled, unrevoked gateways of the stores chosen, in a stable order."""
    query = select(Gateway.store_id, Gateway.gateway_id).where(Gateway.revoked_at.is_(None))
    if rollout_in.stores == "stores" and rollout_in.store_ids is not None:
        query = query.where(Gateway.store_id.in_(rollout_in.store_ids))
    elif rollout_in.stores == "region":
        in_region = select(StoreProfile.store_id).where(StoreProfile.region == rollout_in.region)
        query = query.where(Gateway.store_id.in_(in_region))
    rows = (await session.execute(query.order_by(Gateway.store_id, Gateway.gateway_id))).all()
    return [(row.store_id, row.gateway_id) for row in rows]


def _wake_runner(request: Request) -> None:
    runtime: HubRuntime | None = getattr(request.app.state, "runtime", None)
    runner = getattr(runtime, "rollouts", None)
    if runner is not None:
        runner.notify()


@router.post(
    ROLLOUTS_PATH,
    status_code=201,
    response_model=RolloutDetailOut,
    summary="Roll a release out to gateways in stages",
    description="Offers the release to the enrolled gateways of the stores chosen, stage by stage: each gateway of a "
    "stage gets an `update` command, installs the release beside the running one, switches and keeps it only if it "
    "reaches the hub and its devices within `probation_s` (else it switches back by itself and reports `failed`). "
    "The next stage starts when every gateway of this one has answered; past `max_failed` failures the rollout "
    "halts and says why.",
    responses={
        404: {"description": "no release of that version"},
        409: {"description": "another rollout is running or paused, or the stores chosen have no enrolled gateway"},
        422: {"model": ValidationProblem, "description": "bad stages, store choice or times"},
    },
)
async def create_rollout(
    request: Request, rollout_in: RolloutIn, session: SessionDep, now: NowDep, who: PrincipalDep
) -> RolloutDetailOut:
    """Create a running rollout; 201 with its gateways and their stages."""
    note_change(request, target=f"release:{rollout_in.version}", detail="rollout")
    if await session.get(Release, rollout_in.version) is None:
        raise HTTPException(status_code=404, detail=f"no release {rollout_in.version}: upload it first")
    # One rollout at a time: two could offer one gateway two releases, and their outcomes would be hard to read.
    active = (await session.scalars(select(Rollout).where(Rollout.status.in_(["running", "paused"])).limit(1))).first()
    if active is not None:
        raise HTTPException(
            status_code=409,
            detail=f"rollout {active.rollout_id} of {active.version} is {active.status}: cancel it or let it finish "
            "before starting another",
        )
    gateways = await _chosen_gateways(session, rollout_in)
    if not gateways:
        raise HTTPException(status_code=409, detail="the stores chosen have no enrolled, unrevoked gateway")
    counts = plan.stage_counts(rollout_in.stages.unit, rollout_in.stages.sizes, len(gateways))
    rollout_id = str(uuid4())
    row = Rollout(
        rollout_id=rollout_id,
        version=rollout_in.version,
        status="running",
        stages={"unit": rollout_in.stages.unit, "sizes": rollout_in.stages.sizes, "counts": counts},
        stage=0,
        probation_s=rollout_in.probation_s,
        max_failed=rollout_in.max_failed,
        answer_within_s=rollout_in.answer_within_s or rollout_in.probation_s + DEFAULT_ANSWER_MARGIN_S,
        selection=rollout_in.model_dump(mode="json", include={"stores", "region", "store_ids"}),
        reason=None,
        created_at=now,
        created_by=who.actor,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    session.add_all(
        RolloutTarget(
            rollout_id=rollout_id,
            store_id=store_id,
            gateway_id=gateway_id,
            stage=stage,
            outcome=plan.WAITING,
            command_id=None,
            sent_at=None,
            finished_at=None,
            detail=None,
        )
        for store_id, gateway_id, stage in plan.assign_stages(gateways, counts)
    )
    await session.commit()
    out = await _detail(session, row)
    note_change(
        request,
        target=f"rollout:{rollout_id}",
        after=out.model_dump(mode="json", exclude={"targets"}),
    )
    log.info("rollout_created", rollout_id=rollout_id, version=row.version, gateways=len(gateways), stages=counts)
    _wake_runner(request)
    return out


@router.get(ROLLOUTS_PATH, response_model=RolloutList, summary="The rollouts")
async def list_rollouts(session: SessionDep) -> RolloutList:
    """Every rollout, newest first, with its counts by outcome."""
    rows = (await session.scalars(select(Rollout).order_by(Rollout.created_at.desc()))).all()
    out = [RolloutOut(**_rollout_fields(row, await _targets(session, row.rollout_id))) for row in rows]
    return RolloutList(rollouts=out)


_NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {404: {"description": "no such rollout"}}


async def _existing(session: AsyncSession, rollout_id: UUID) -> Rollout:
    row = await session.get(Rollout, str(rollout_id))
    if row is None:
        raise HTTPException(status_code=404, detail=f"no rollout {rollout_id}")
    return row


@router.get(ROLLOUTS_PATH + "/{rollout_id}", response_model=RolloutDetailOut, responses=_NOT_FOUND)
async def get_rollout(rollout_id: RolloutIdPath, session: SessionDep) -> RolloutDetailOut:
    """One rollout with each gateway's outcome."""
    return await _detail(session, await _existing(session, rollout_id))


# Which states each action leaves, and the state it makes.
_ACTIONS: Final[dict[str, tuple[frozenset[str], str]]] = {
    "pause": (frozenset({"running"}), "paused"),
    "resume": (frozenset({"paused"}), "running"),
    "cancel": (frozenset({"running", "paused", "halted"}), "cancelled"),
}


async def _act(
    request: Request, session: AsyncSession, now: datetime, rollout_id: UUID, action: str
) -> RolloutDetailOut:
    row = await _existing(session, rollout_id)
    before = (await _detail(session, row)).model_dump(mode="json", exclude={"targets"})
    leaves, becomes = _ACTIONS[action]
    if row.status not in leaves:
        raise HTTPException(status_code=409, detail=f"rollout {rollout_id} is {row.status}: it cannot {action}")
    row.status = becomes
    row.updated_at = now
    row.reason = f"{action} by an operator" if action != "resume" else None
    if action == "cancel":  # gateways not yet sent the release never get it; those sent it finish on their own
        for target in await _targets(session, row.rollout_id):
            if target.outcome == plan.WAITING:
                target.outcome, target.finished_at, target.detail = plan.SKIPPED, now, "the rollout was cancelled"
    await session.commit()
    out = await _detail(session, row)
    note_change(
        request, target=f"rollout:{rollout_id}", before=before, after=out.model_dump(mode="json", exclude={"targets"})
    )
    log.info("rollout_changed", action=action, rollout_id=str(rollout_id), status=becomes)
    _wake_runner(request)
    return out


_CONFLICT: Final[dict[int | str, dict[str, Any]]] = {
    **_NOT_FOUND,
    409: {"description": "the rollout's state does not allow it"},
}


@router.post(ROLLOUTS_PATH + "/{rollout_id}/pause", response_model=RolloutDetailOut, responses=_CONFLICT)
async def pause_rollout(
    request: Request, rollout_id: RolloutIdPath, session: SessionDep, now: NowDep
) -> RolloutDetailOut:
    """Pause: no more commands are sent; those sent finish and are recorded."""
    return await _act(request, session, now, rollout_id, "pause")


@router.post(ROLLOUTS_PATH + "/{rollout_id}/resume", response_model=RolloutDetailOut, responses=_CONFLICT)
async def resume_rollout(
    request: Request, rollout_id: RolloutIdPath, session: SessionDep, now: NowDep
) -> RolloutDetailOut:
    """Resume a paused rollout (a halted one is cancelled, and a new rollout made once the cause is fixed)."""
    return await _act(request, session, now, rollout_id, "resume")


@router.post(ROLLOUTS_PATH + "/{rollout_id}/cancel", response_model=RolloutDetailOut, responses=_CONFLICT)
async def cancel_rollout(
    request: Request, rollout_id: RolloutIdPath, session: SessionDep, now: NowDep
) -> RolloutDetailOut:
    """Cancel: the gateways not yet sent the release are skipped; it cannot be resumed."""
    return await _act(request, session, now, rollout_id, "cancel")
