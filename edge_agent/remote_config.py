"""A config pushed by the hub (``config.apply``): checked, written, tried on probation, rolled back if it fails.

The steps, each one surviving a restart of the process::

    config.apply(version, toml, probation_s)
      -> checked as load_agent_config checks a file, and store_id/gateway_id unchanged: else ``rejected``
      -> agent.toml copied to agent.toml.previous, the new text written (0600, atomically),
         the pending-apply record written (config-apply.json, 0600, phase "probation"),
         ``accepted`` published, and the runner restarts the agent's work with the new file
      -> probation: within probation_s the new agent must be connected to the broker, acknowledged by the hub
         when it has events to send, and have its configured devices open (:func:`probation_problems`)
      -> passed: the record says "done" and the result ``done`` "applied version N" is published;
         failed: agent.toml.previous is written back, the record says "failed", the agent restarts with the old
         file and publishes ``failed`` "rolled back: <why>".

An agent killed during its probation finds the record in phase "probation" when it starts again and rolls back
first (:meth:`RemoteConfig.recover_on_start`): a config that kills the agent is the worst kind of broken.
The record is deleted once the broker has acknowledged the final result (PUBACK); until then each new agent
publishes it again, and the hub keeps the first final result.

Why "an ack" and not only "connected": a config can point at a broker that accepts the connection but not the
gateway's publishes (a wrong username under the broker's ACL), and only the hub's ack proves events arrive.
An outbox with nothing to send has nothing to acknowledge, so there connected is the test: the hub sends
nothing unasked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Final, Literal, Protocol
from uuid import UUID

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.commands import FinalStatus, Progress
from edge_agent.config import AgentConfig, ProfiledDeviceConfig, config_hash, load_agent_config
from storegate import wire
from storegate.clock import SYSTEM_CLOCK, Clock
from storegate.configfile import ConfigError, describe_validation_error
from storegate.private_files import write_private

log = structlog.get_logger(__name__)

APPLY_COMMAND: Final = "config.apply"
RESEND_COMMAND: Final = "resend"
# An agent.toml of a gateway with its 256 devices stays well under this; the hub refuses larger pushes too.
MAX_CONFIG_BYTES: Final = 64 * 1024
DEFAULT_PROBATION_S: Final = 120.0
MIN_PROBATION_S: Final = 1.0
MAX_PROBATION_S: Final = 900.0
# How often the probation looks at the new agent: a check is a few attribute reads.
PROBATION_POLL_S: Final = 0.2
# How often a final result waits for a connection to go out on.
RESULT_RETRY_S: Final = 0.5
PENDING_FILE: Final = "config-apply.json"


class ApplyArgs(BaseModel):
    """The arguments of ``config.apply``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1, le=2**31 - 1, description="the hub's version number of this gateway's config")
    toml: str = Field(min_length=1, max_length=MAX_CONFIG_BYTES, description="the whole agent.toml")
    probation_s: float = Field(
        default=DEFAULT_PROBATION_S, ge=MIN_PROBATION_S, le=MAX_PROBATION_S, description="time to prove itself"
    )


class ResendArgs(BaseModel):
    """The arguments of ``resend``: the events from ``from_seq`` on go again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    from_seq: int = Field(ge=1, le=2**63 - 1)


class PendingApply(BaseModel):
    """The pending-apply record (``config-apply.json``): a pushed config on probation, or its unpublished outcome."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command_id: UUID
    store_id: str
    gateway_id: str
    version: int
    probation_s: float
    phase: Literal["probation", "done", "failed"]
    detail: str = ""

    def result(self, ts: datetime) -> wire.CommandResult:
        """The final result this record says (phase done or failed)."""
        return wire.CommandResult(
            command_id=self.command_id,
            store_id=self.store_id,
            gateway_id=self.gateway_id,
            status="done" if self.phase == "done" else "failed",
            detail=self.detail[:2000],
            ts=ts,
        )


class ProbationSubject(Protocol):
    """What the probation looks at: an :class:`~edge_agent.agent.EdgeAgent` (a Protocol, to test it bare)."""

    config: AgentConfig

    @property
    def connected(self) -> bool: ...

    @property
    def acked(self) -> int: ...

    def waiting_events(self) -> int: ...

    def device_up(self, device_id: str) -> bool | None: ...


class ResultSubject(ProbationSubject, Protocol):
    """An agent that can also publish a command result."""

    async def publish_command_result(self, result: wire.CommandResult) -> bool: ...


def expected_devices(config: AgentConfig) -> list[str]:
    """The devices a config must have open to pass probation: every fixed one (hot-plugged ones may be absent)."""
    return [
        device.device_id
        for device in config.devices
        if not (isinstance(device, ProfiledDeviceConfig) and device.identity is not None)
    ]


def probation_problems(agent: ProbationSubject) -> list[str]:
    """Why the agent has not passed its probation yet, in words; empty once it has."""
    problems: list[str] = []
    if not agent.connected:
        problems.append(f"the broker at {agent.config.mqtt.address} was not reached")
    elif agent.acked == 0 and agent.waiting_events() > 0:
        problems.append("the hub acknowledged none of the events sent since the restart")
    down = [device for device in expected_devices(agent.config) if not agent.device_up(device)]
    if down:
        problems.append(f"device(s) not connected: {', '.join(down)}")
    return problems


def candidate_problems(text: str, *, running: AgentConfig, config_path: Path) -> list[str]:
    """What is wrong with ``text`` as this gateway's next agent.toml, in words; empty if nothing.

    Checked exactly as :func:`~edge_agent.config.load_agent_config` checks the file at start (relative paths
    from the same directory, secret files' modes, device profiles), plus: the same store and gateway, and no
    broker password written inline (the hub's copy would hold it).
    """
    if len(text.encode()) > MAX_CONFIG_BYTES:
        return [f"the config is {len(text.encode())} bytes, more than {MAX_CONFIG_BYTES}"]
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        return [f"not TOML: {err}"]
    mqtt = document.get("mqtt")
    if isinstance(mqtt, dict) and "password" in mqtt:
        return ["mqtt.password is written inline: name a 0600 file with mqtt.password_file instead"]
    fd, temporary = tempfile.mkstemp(dir=config_path.parent, prefix=".agent-candidate.", suffix=".toml")  # 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        candidate = load_agent_config(Path(temporary))
    except ConfigError as err:
        return list(err.problems)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    problems: list[str] = []
    if candidate.store_id != running.store_id:
        problems.append(f"store_id: {candidate.store_id!r} is not this gateway's store {running.store_id!r}")
    if candidate.gateway_id != running.gateway_id:
        problems.append(f"gateway_id: {candidate.gateway_id!r} is not this gateway {running.gateway_id!r}")
    # The events waiting in the outbox stay there: a push that moved it would leave them behind unsent.
    if candidate.outbox.path != running.outbox.path:
        problems.append(
            f"outbox.path: a push may not move the outbox (from {running.outbox.path} to {candidate.outbox.path}): "
            "the events waiting in it would be left behind"
        )
    return problems


def previous_path(config_path: Path) -> Path:
    """Where the config before the last push is kept: ``agent.toml.previous`` beside ``agent.toml``."""
    return config_path.with_name(config_path.name + ".previous")


class RemoteConfig:
    """The pushed-config steps of one gateway's config file, for the runner (``edge_agent.runner``)."""

    def __init__(self, *, config_path: Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self.config_path = config_path
        self.previous_path = previous_path(config_path)
        self.pending_path = config_path.with_name(PENDING_FILE)

    # ------------------------------------------------------------------ the record

    def pending(self) -> PendingApply | None:
        """The pending-apply record, or None; a corrupt one is set aside (logged) rather than stop the agent."""
        try:
            raw = self.pending_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return PendingApply.model_validate_json(raw)
        except ValidationError as err:
            aside = self.pending_path.with_name(PENDING_FILE + ".corrupt")
            os.replace(self.pending_path, aside)
            log.error("config_apply_record_corrupt", path=str(aside), problems=describe_validation_error(err)[:5])
            return None

    def _write(self, record: PendingApply) -> None:
        write_private(self.pending_path, record.model_dump_json())

    def finished(self) -> None:
        """The final result has gone out: forget the record."""
        with contextlib.suppress(FileNotFoundError):
            self.pending_path.unlink()

    # ------------------------------------------------------------------ steps

    def recover_on_start(self) -> None:
        """At process start: a config still on probation means the agent died trying it; roll it back."""
        record = self.pending()
        if record is not None and record.phase == "probation":
            self.roll_back(record, f"the agent stopped during the probation of version {record.version}")

    def roll_back(self, record: PendingApply, why: str) -> None:
        """Write agent.toml.previous back and record the outcome ``failed`` "rolled back: <why>"."""
        try:
            write_private(self.config_path, self.previous_path.read_bytes())
        except OSError as err:
            detail = f"could not roll back version {record.version} ({why}): {err}"
            log.error("config_rollback_failed", version=record.version, why=why, error=str(err))
        else:
            detail = f"rolled back: {why}"
            log.warning("config_rolled_back", version=record.version, why=why)
        self._write(record.model_copy(update={"phase": "failed", "detail": detail}))

    def passed(self, record: PendingApply) -> PendingApply:
        """The new config passed its probation: record ``done`` "applied version N"."""
        done = record.model_copy(update={"phase": "done", "detail": f"applied version {record.version}"})
        self._write(done)
        log.info("config_applied", version=record.version)
        return done

    async def settle(self, agent: ResultSubject, restart: asyncio.Event) -> None:
        """Run beside a new agent: judge a config on probation, then publish the outcome once connected.

        A config that fails its probation is rolled back and ``restart`` set: the next agent (with the old
        config) publishes the outcome.
        """
        record = self.pending()
        if record is None:
            return
        if record.phase == "probation":
            deadline = self._clock.monotonic() + record.probation_s
            while problems := probation_problems(agent):
                if self._clock.monotonic() >= deadline:
                    why = f"after {record.probation_s:g} s of probation of version {record.version}: " + "; ".join(
                        problems
                    )
                    await asyncio.to_thread(self.roll_back, record, why)
                    restart.set()
                    return
                await self._clock.sleep(PROBATION_POLL_S)
            record = await asyncio.to_thread(self.passed, record)
        result = record.result(self._clock.now())
        while not await agent.publish_command_result(result):
            await self._clock.sleep(RESULT_RETRY_S)
        log.info("config_apply_result_published", version=record.version, status=result.status, detail=result.detail)
        await asyncio.to_thread(self.finished)

    async def apply(
        self, command: wire.Command, progress: Progress, *, running: AgentConfig, restart: asyncio.Event
    ) -> tuple[FinalStatus, str]:
        """The ``config.apply`` handler: check, write, ask for a restart; the final result comes after probation."""
        try:
            args = ApplyArgs.model_validate(command.args)
        except ValidationError as err:
            return "rejected", "config.apply: " + "; ".join(describe_validation_error(err))
        record = self.pending()
        if record is not None and record.command_id == command.command_id:
            # Delivered again (after a reconnect): the outcome of the first delivery is what goes out, once.
            log.info("config_apply_redelivered", version=record.version, phase=record.phase)
            await asyncio.Event().wait()
        if record is not None and record.phase == "probation":
            return "rejected", f"version {record.version} is still on probation: push again once it has ended"
        problems = await asyncio.to_thread(candidate_problems, args.toml, running=running, config_path=self.config_path)
        if problems:
            log.warning("config_push_rejected", version=args.version, problems=problems)
            return "rejected", f"version {args.version} refused, nothing changed: " + "; ".join(problems)
        current = await asyncio.to_thread(self.config_path.read_bytes)
        await asyncio.to_thread(write_private, self.previous_path, current)
        self._write(
            PendingApply(
                command_id=command.command_id,
                store_id=command.store_id,
                gateway_id=command.gateway_id,
                version=args.version,
                probation_s=args.probation_s,
                phase="probation",
            )
        )
        await asyncio.to_thread(write_private, self.config_path, args.toml)
        log.info("config_written", version=args.version, probation_s=args.probation_s, was=config_hash(running))
        progress(f"version {args.version} written; restarting with it, then {args.probation_s:g} s of probation")
        restart.set()
        # The runner stops this agent, which cancels this handler: the agent that follows publishes the outcome.
        await asyncio.Event().wait()
        raise AssertionError("unreachable")
