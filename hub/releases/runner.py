"""The leader-only loop that runs rollouts: sends ``update`` commands stage by stage and reads their outcomes.

One pass (:meth:`RolloutRunner.run_once`), for each running rollout, in one transaction:

* each gateway of the current stage still ``waiting`` gets an ``update`` command (a ``commands`` row, published
  by :class:`hub.commands.sender.CommandPublisher`): the version, its SHA-256, where to download it on the gateway
  listener, and the probation;
* each gateway ``sent`` its command takes the command's final status (``done``; ``failed``, ``rejected``,
  ``expired``, ``undeliverable`` are failures, with the gateway's words), or fails once ``answer_within_s`` has
  passed without one;
* :func:`hub.releases.plan.next_step` says what follows: wait, the next stage, done, or halt past the threshold.

Each change of a rollout's state is audited as the system's (``actor_kind`` ``system``). With N hub workers only
the leader (:class:`hub.ingest.shared.Leadership`) runs passes, like the report schedules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final
from uuid import uuid4

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from hub.auth import audit
from hub.auth.audit import AuditEvent
from hub.db import writegate
from hub.db.engine import session_factory
from hub.db.models import OutgoingCommand, Release, Rollout, RolloutTarget
from hub.db.writegate import NO_TURNS, WriteGate
from hub.metrics import HubMetrics
from hub.releases import plan
from storegate import wire
from storegate.tasks import BackgroundTask, wait_for_event

log = structlog.get_logger(__name__)

UPDATE_COMMAND: Final = "update"
SYSTEM_ACTOR: Final = "system:rollouts"
# Where a gateway downloads a release on the gateway listener (hub.releases.gateway_api serves it).
DOWNLOAD_PATH: Final = "/api/v1/gateway/releases/{version}/wheel"


def update_args(release: Release, probation_s: int) -> dict[str, object]:
    """The ``update`` command's arguments (edge_agent.updates.UpdateArgs reads them)."""
    return {
        "version": release.version,
        "sha256": release.sha256,
        "download_path": DOWNLOAD_PATH.format(version=release.version),
        "probation_s": probation_s,
    }


async def advance(
    session: AsyncSession, rollout: Rollout, *, now: datetime, finished: list[str] | None = None
) -> list[AuditEvent]:
    """One step of a running rollout (the caller commits); the audit events of any change of its state.

    The outcome of each gateway that finished in this step is appended to ``finished`` (for the counters).
    """
    finished = [] if finished is None else finished
    targets = list(
        (await session.scalars(select(RolloutTarget).where(RolloutTarget.rollout_id == rollout.rollout_id))).all()
    )
    release = await session.get(Release, rollout.version)
    if release is None:  # the foreign key keeps it; a restore from an older backup might not
        return _change(rollout, "halted", f"release {rollout.version} is gone from the hub", now=now)
    # Outcomes of the commands out.
    sent = {t.command_id: t for t in targets if t.outcome == plan.SENT and t.command_id is not None}
    if sent:
        rows = await session.execute(
            select(OutgoingCommand.command_id, OutgoingCommand.status, OutgoingCommand.result_detail).where(
                OutgoingCommand.command_id.in_(list(sent))
            )
        )
        for command_id, status, detail in rows:
            target = sent[command_id]
            outcome = plan.COMMAND_OUTCOMES.get(status)
            if outcome is not None:
                target.outcome, target.finished_at = outcome, now
                target.detail = detail or status
                finished.append(outcome)
                log.info(
                    "rollout_gateway_finished", rollout_id=rollout.rollout_id, gateway=_name(target), outcome=outcome
                )
        deadline = timedelta(seconds=rollout.answer_within_s)
        for target in sent.values():
            if target.outcome == plan.SENT and target.sent_at is not None and now - target.sent_at >= deadline:
                target.outcome, target.finished_at = plan.FAILED, now
                target.detail = f"no outcome from the gateway within {rollout.answer_within_s} s of the command"
                finished.append(plan.FAILED)
                log.warning("rollout_gateway_silent", rollout_id=rollout.rollout_id, gateway=_name(target))
    step = plan.next_step(
        [(t.stage, t.outcome) for t in targets],
        stage=rollout.stage,
        stages=len(rollout.stages.get("counts", [])),
        max_failed=rollout.max_failed,
    )
    if step.action == "halt":
        return _change(rollout, "halted", step.reason, now=now)
    if step.action == "done":
        return _change(rollout, "done", step.reason, now=now)
    if step.action == "advance":
        rollout.stage += 1
        rollout.updated_at = now
        log.info("rollout_next_stage", rollout_id=rollout.rollout_id, stage=rollout.stage, reason=step.reason)
    # Commands for the stage's gateways not yet sent one (the new stage's after an advance).
    for target in targets:
        if target.stage == rollout.stage and target.outcome == plan.WAITING:
            command_id = str(uuid4())
            session.add(
                OutgoingCommand(
                    command_id=command_id,
                    store_id=target.store_id,
                    gateway_id=target.gateway_id,
                    device_id=None,
                    name=UPDATE_COMMAND,
                    args=update_args(release, rollout.probation_s),
                    issued_at=now,
                    expires_at=now + timedelta(seconds=rollout.answer_within_s),
                    status="pending",
                    sent_at=None,
                    result_detail=None,
                    result_at=None,
                )
            )
            target.outcome, target.command_id, target.sent_at = plan.SENT, command_id, now
    if step.action == "advance":
        return [_event(rollout, "rollout.stage", step.reason)]
    return []


def _name(target: RolloutTarget) -> str:
    return f"{target.store_id}/{target.gateway_id}"


def _event(rollout: Rollout, action: str, detail: str) -> AuditEvent:
    return AuditEvent(
        action=action,
        actor=SYSTEM_ACTOR,
        actor_kind="system",
        outcome="ok",
        target=f"rollout:{rollout.rollout_id}",
        after={"status": rollout.status, "stage": rollout.stage, "version": rollout.version},
        detail=detail,
    )


def _change(rollout: Rollout, status: str, reason: str, *, now: datetime) -> list[AuditEvent]:
    rollout.status, rollout.reason, rollout.updated_at = status, reason, now
    if status == "halted":
        log.warning("rollout_changed", status=status, rollout_id=rollout.rollout_id, reason=reason)
    else:
        log.info("rollout_changed", status=status, rollout_id=rollout.rollout_id, reason=reason)
    return [_event(rollout, f"rollout.{status}", reason)]


class RolloutRunner:
    """Runs the rollouts in the background: ``start()``, ``await stop()``; ``run_once()`` is one pass."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        poll_s: float,
        metrics: HubMetrics | None = None,
        notify_commands: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = wire.utc_now,
        write_gate: WriteGate = NO_TURNS,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self._sessions = session_factory(engine)
        self._poll_s = poll_s
        self._metrics = metrics
        self._notify_commands = notify_commands
        self._clock = clock
        self._gate = write_gate
        self._active = active
        self._wake = asyncio.Event()
        self._task = BackgroundTask(self._loop, name="storegate-hub-rollouts")
        self.passes = 0

    def start(self) -> None:
        """Start the loop; a no-op while it runs."""
        if not self._task.running:
            self._task.start()

    def notify(self) -> None:
        """A rollout changed: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop the loop (a rollout goes on at the next start: its state is in the database)."""
        await self._task.stop()

    async def run_once(self) -> None:
        """One pass over the running rollouts."""
        now = self._clock()
        async with self._gate.turn(writegate.COMMANDS), self._sessions() as session, session.begin():
            rollouts = (await session.scalars(select(Rollout).where(Rollout.status == "running"))).all()
            events: list[AuditEvent] = []
            finished: list[str] = []
            for rollout in rollouts:
                events += await advance(session, rollout, now=now, finished=finished)
            if events:
                await audit.append(session, events, at=now)
        self.passes += 1
        if self._metrics is not None:  # counted once committed
            for outcome in finished:
                self._metrics.update_outcomes.labels(outcome=outcome).inc()
            self._metrics.rollouts_halted.inc(sum(1 for e in events if e.action == "rollout.halted"))
        if rollouts:
            self._notify_commands()

    async def _loop(self) -> None:
        while True:
            await wait_for_event(self._wake, self._poll_s)
            self._wake.clear()
            if not self._active():
                continue
            try:
                await self.run_once()
            except Exception as err:  # the database may be away; the next pass tries again
                log.warning("rollout_pass_failed", error=type(err).__name__, detail=str(err)[:200])
