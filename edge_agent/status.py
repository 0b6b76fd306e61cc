"""The agent's status file, and ``storegate agent status``: how the agent is doing, from the gateway's shell.

The running agent writes ``<outbox path>.status.json`` every health interval and on
every connect and disconnect, atomically (a temporary file renamed over the old one),
so a reader never sees half a file (:class:`StatusFile`; the health reporter in
:mod:`edge_agent.health` says what goes in it). :func:`agent_status` reads it back for people:
it works whether or not the broker or the hub can be reached, which is when it is needed.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from pathlib import Path
from typing import Final

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.config import load_agent_config
from storegate.configfile import ConfigError
from storegate.private_files import PRIVATE_FILE_MODE
from storegate.wire import UtcDatetime, utc_now

log = structlog.get_logger(__name__)

EXIT_HEALTHY: Final = 0
EXIT_PROBLEMS: Final = 1
EXIT_NO_STATUS: Final = 2
# A status older than this many health intervals (and at least STALE_MIN_S) means the agent is not running.
STALE_INTERVALS: Final = 3
STALE_MIN_S: Final = 10.0


class AgentStatusFile(BaseModel):
    """What the agent writes to its status file (unknown keys are ignored, so an older reader copes)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    pid: int
    written_at: UtcDatetime
    running: bool = Field(description="False in the last status written by a clean stop")
    store_id: str
    gateway_id: str
    broker: str
    connected: bool
    disconnected_for_s: float | None = None
    health_interval_s: float = Field(gt=0)
    outbox_depth: int
    outbox_bytes: int
    oldest_unacked_age_s: float | None = None
    publish_rate: float
    ack_rate: float
    published_total: int
    acked_total: int
    resent_total: int
    evicted_total: int
    evicted_by_priority: dict[str, int] = Field(default_factory=dict)
    reconnects_total: int
    duplicates_total: int
    rejected_total: int
    problems: list[str] = Field(default_factory=list)


def status_path(outbox_path: Path) -> Path:
    """Where the agent of an outbox writes its status."""
    return outbox_path.with_name(outbox_path.name + ".status.json")


def write_status(path: Path, status: AgentStatusFile) -> None:
    """Replace the status file atomically, 0600 (no fsync: after a power cut the next status replaces it)."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        # The store's and broker's names, the backlog: the gateway's business. A .tmp an older
        # agent left keeps its mode through O_CREAT, hence the fchmod.
        os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)
        handle.write(status.model_dump_json(indent=2) + "\n")
    os.replace(temporary, path)


class StatusFile:
    """The running agent's status file at ``path``: written off the event loop; a failure is logged once."""

    def __init__(self, *, path: Path) -> None:
        self.path = path
        self._failing = False

    async def write(self, status: AgentStatusFile) -> None:
        """Replace the file with ``status``; a write that fails is logged (once until one works) and dropped."""
        try:
            await asyncio.to_thread(write_status, self.path, status)
        except OSError as err:
            if not self._failing:
                log.warning("status_file_not_written", path=str(self.path), error=str(err))
            self._failing = True
        else:
            self._failing = False


def _age(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def describe_status(status: AgentStatusFile, *, now: datetime, pid_alive: bool = True) -> tuple[str, int]:
    """The status in words and the exit code (0 healthy, 1 problems or not running)."""
    age_s = max(0.0, (now - status.written_at).total_seconds())
    stale = age_s > max(STALE_INTERVALS * status.health_interval_s, STALE_MIN_S)
    running = status.running and pid_alive and not stale
    head = f"gateway {status.store_id}/{status.gateway_id}: "
    if running:
        head += f"agent running (pid {status.pid}, status {_age(age_s)} old)"
    elif not status.running:
        head += f"agent not running (stopped cleanly; status {_age(age_s)} old)"
    else:
        head += f"agent not running (status {_age(age_s)} old)"
    if status.connected:
        broker = f"broker {status.broker}: connected"
    elif status.disconnected_for_s is not None:
        broker = f"broker {status.broker}: unreachable for {_age(status.disconnected_for_s)}"
    else:
        broker = f"broker {status.broker}: not connected"
    oldest = (
        "" if status.oldest_unacked_age_s is None else f", oldest unacknowledged {_age(status.oldest_unacked_age_s)}"
    )
    evicted = ", ".join(f"{name} {count:,}" for name, count in status.evicted_by_priority.items() if count)
    lines = [
        head,
        broker + ("" if running else ", when last seen"),
        f"backlog: {status.outbox_depth:,} event{'' if status.outbox_depth == 1 else 's'} "
        f"({status.outbox_bytes / 1e6:,.1f} MB){oldest}",
        f"rates over the last minute: published {status.publish_rate:,.1f} events/s, "
        f"acknowledged {status.ack_rate:,.1f} events/s",
        f"published {status.published_total:,}, acknowledged {status.acked_total:,}, "
        f"resent {status.resent_total:,}, reconnects {status.reconnects_total:,}",
        f"evicted {status.evicted_total:,}"
        + (f" ({evicted})" if evicted else "")
        + f", duplicates dropped {status.duplicates_total:,}, invalid readings {status.rejected_total:,}",
    ]
    problems = list(status.problems) if running else ["the agent is not running", *status.problems]
    if problems:
        lines.append("problems:")
        lines += [f"  - {problem}" for problem in problems]
    else:
        lines.append("problems: none")
    return "\n".join(lines), EXIT_PROBLEMS if problems else EXIT_HEALTHY


def agent_status(config_path: Path) -> tuple[str, int]:
    """How the agent of ``config_path`` is doing, in words, and an exit code.

    0: running without problems; 1: problems, or not running; 2: no status file, or the
    config or the status file cannot be read.
    """
    try:
        config = load_agent_config(config_path)
    except ConfigError as err:
        return str(err), EXIT_NO_STATUS
    path = status_path(config.outbox.path)
    try:
        status = AgentStatusFile.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return f"no status file {path}: the agent has not run with this config", EXIT_NO_STATUS
    except OSError as err:
        return f"cannot read status file {path}: {err.strerror}", EXIT_NO_STATUS
    except ValidationError as err:
        return f"status file {path} is not a valid status: {err.errors()[0]['msg']}", EXIT_NO_STATUS
    return describe_status(status, now=utc_now(), pid_alive=_pid_alive(status.pid))
