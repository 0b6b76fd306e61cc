"""The agent's status file, and ``storegate agent status``: how the agent is doing, from the gateway's shell.

The running agent writes ``<outbox path>.status.json`` every health interval and on
every connect and disconnect, atomically (a temporary file renamed over the old one),
so a reader never sees half a file (:class:`StatusFile`; the health reporter in
:mod:`edge_agent.health` says what goes in it). :func:`agent_status` reads it back for people:
it works whether or not the broker or the hub can be reached, which is when it is needed.

The file sits beside the outbox, on the filesystem that may be full. So every status is
padded to a fixed size (:data:`STATUS_FILE_BYTES`), and when the temporary file cannot be
written the status overwrites the old file in place, in blocks it already has: a full disk
never silences it. A reader that catches such an overwrite half done reads again. And when
the status is old, :func:`agent_status` asks the kernel whether its pid still holds the
outbox open, so a live agent that cannot write is never called "not running".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.config import load_agent_config
from storegate.configfile import ConfigError
from storegate.private_files import PRIVATE_FILE_MODE
from storegate.wire import UtcDatetime, utc_now

log = structlog.get_logger(__name__)

# Every status file is this long (JSON padded with spaces), so that overwriting it needs no new blocks.
STATUS_FILE_BYTES: Final = 16 * 1024
# Reads of a status caught half overwritten in place, before giving up.
_READ_ATTEMPTS: Final = 5

EXIT_HEALTHY: Final = 0
EXIT_PROBLEMS: Final = 1
EXIT_NO_STATUS: Final = 2
# A status older than this many health intervals (and at least STALE_MIN_S) means the agent is not running.
STALE_INTERVALS: Final = 3
STALE_MIN_S: Final = 10.0


class DeviceState(BaseModel):
    """One running device as the status file lists it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    device_id: str
    up: bool
    down_for_s: float | None = Field(default=None, description="failing this long (None while up or still opening)")
    last_error: str | None = None
    attention: str | None = Field(default=None, description="works, but needs a person (out of paper...)")


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
    disk_full_since: UtcDatetime | None = Field(default=None, description="when the outbox's filesystem filled up")
    write_failing_since: UtcDatetime | None = Field(default=None, description="when outbox writes began to fail")
    last_write_at: UtcDatetime | None = Field(default=None, description="the last outbox write that worked")
    last_connection_error: str | None = Field(default=None, description="why the broker cannot be reached, in words")
    devices: list[DeviceState] = Field(default_factory=list, description="the devices running, with their state")


STATUS_NAME: Final = "<outbox>.status.json"


def status_path(outbox_path: Path) -> Path:
    """Where the agent of an outbox writes its status."""
    return outbox_path.with_name(outbox_path.name + ".status.json")


def status_bytes(status: AgentStatusFile) -> bytes:
    """The status as the file holds it: JSON padded with spaces to STATUS_FILE_BYTES (problems cut to fit)."""
    text = status.model_dump_json(indent=2).encode()
    problems, whole = list(status.problems), status
    while len(text) >= STATUS_FILE_BYTES and problems:
        problems = problems[: len(problems) // 2]
        cut = [*problems, f"(and {len(whole.problems) - len(problems):,} more problems)"]
        status = whole.model_copy(update={"problems": cut})
        text = status.model_dump_json(indent=2).encode()
    devices = list(status.devices)
    while len(text) >= STATUS_FILE_BYTES and devices:  # the failing devices are named in the problems too
        devices = devices[: len(devices) // 2]
        status = status.model_copy(update={"devices": devices})
        text = status.model_dump_json(indent=2).encode()
    return text + b"\n" + b" " * (STATUS_FILE_BYTES - len(text) - 1)


def write_status(path: Path, status: AgentStatusFile) -> None:
    """Replace the status file atomically, 0600 (no fsync: after a power cut the next status replaces it)."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            # The store's and broker's names, the backlog: the gateway's business. A .tmp an older
            # agent left keeps its mode through O_CREAT, hence the fchmod.
            os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)
            handle.write(status_bytes(status))
    except OSError:
        # Half a temporary file holds blocks the overwrite in place may need.
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    os.replace(temporary, path)


def overwrite_status(path: Path, status: AgentStatusFile) -> None:
    """Write the status over the existing file in place: no new blocks (it keeps its size), but not atomic."""
    fd = os.open(path, os.O_WRONLY)  # never creates: a new file would need blocks the disk does not have
    try:
        if os.fstat(fd).st_size < STATUS_FILE_BYTES:
            raise OSError(errno.ENOSPC, "the status file is shorter than a status; it cannot be overwritten")
        os.pwrite(fd, status_bytes(status), 0)
    finally:
        os.close(fd)


class StatusFile:
    """The running agent's status file at ``path``: written off the event loop; a failure is logged once.

    When the atomic replacement fails (a full disk), the status is written over the old file in place.
    """

    def __init__(self, *, path: Path) -> None:
        self.path = path
        self._failing = False
        self._in_place = False

    async def write(self, status: AgentStatusFile) -> None:
        """Replace the file with ``status`` (in place when it must); a write that fails is logged and dropped."""
        try:
            await asyncio.to_thread(write_status, self.path, status)
        except OSError as err:
            try:
                await asyncio.to_thread(overwrite_status, self.path, status)
            except OSError as in_place_err:
                if not self._failing:
                    log.warning("status_file_not_written", path=str(self.path), error=str(in_place_err))
                self._failing = True
                return
            if not self._in_place:
                log.warning("status_file_written_in_place", path=str(self.path), error=str(err))
            self._in_place = True
        else:
            self._in_place = False
        self._failing = False


def read_status(path: Path) -> AgentStatusFile:
    """The status in the file; read again when caught half overwritten in place (ValidationError if it stays so)."""
    for attempt in range(1, _READ_ATTEMPTS + 1):
        try:
            return AgentStatusFile.model_validate_json(path.read_bytes())
        except ValidationError:
            if attempt == _READ_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def clock_time(moment: datetime) -> str:
    """A moment as the time of day in UTC, the way problems and ``storegate agent status`` name it."""
    return moment.astimezone(UTC).strftime("%H:%M:%S UTC")


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


def holds_open(pid: int, path: Path) -> bool | None:
    """Whether process ``pid`` has ``path`` open (Linux /proc); None when that cannot be told.

    The agent keeps its outbox open, with SQLite's exclusive lock, from start to stop: a
    process holding it is the outbox's agent, whatever its status file says.
    """
    try:
        target = os.stat(path)
        for fd in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                held = os.stat(fd.path)
                if (held.st_dev, held.st_ino) == (target.st_dev, target.st_ino):
                    return True
    except FileNotFoundError:  # no such process (or no outbox)
        return False
    except OSError:  # no /proc, or another user's process
        return None
    return False


def running_agent_pid(outbox_path: Path) -> int | None:
    """The pid of the agent running on this outbox (its status says running and it holds the outbox), else None.

    For tools that must not run beside the agent: the connection check (same broker session), the self-test (same
    serial ports).
    """
    try:
        status = read_status(status_path(outbox_path))
    except (OSError, ValidationError):
        return None
    return status.pid if status.running and holds_open(status.pid, outbox_path) else None


def _outbox_trouble(status: AgentStatusFile, now: datetime) -> str:
    """The outbox's disk and writes in words, or "" when all is well."""
    if status.write_failing_since is not None:
        last = (
            ""
            if status.last_write_at is None
            else f", last write {_age((now - status.last_write_at).total_seconds())} ago"
        )
        cause = "disk full" if status.disk_full_since is not None else "failing"
        return f"outbox writes failing: {cause} since {clock_time(status.write_failing_since)}{last}"
    if status.disk_full_since is not None:
        return (
            f"outbox writes going on a full disk: disk full since {clock_time(status.disk_full_since)} "
            f"({status.evicted_total:,} events evicted, recorded as losses)"
        )
    return ""


class BrokerReport(BaseModel):
    """The broker connection as ``agent status --json`` gives it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    connected: bool
    unreachable_for_s: float | None = Field(description="how long the agent has been trying, as of now")
    trying_since: UtcDatetime | None = None
    last_error: str | None = Field(description="why the last connection attempt failed, in words")


class StatusReport(BaseModel):
    """``storegate agent status --json``: the assessment (running, problems, exit code) and the status file itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store_id: str
    gateway_id: str
    running: bool
    healthy: bool
    exit_code: int
    status_age_s: float
    broker: BrokerReport
    devices: list[DeviceState]
    problems: list[str]
    status: AgentStatusFile


def assess_status(
    status: AgentStatusFile, *, now: datetime, pid_alive: bool = True, holds_outbox: bool | None = None
) -> StatusReport:
    """What the status file means as of ``now``: is the agent running, for how long the broker has been away, what
    is wrong.

    ``holds_outbox``: whether the status's pid holds the outbox open (None: cannot tell). A
    live agent whose status is old (it cannot write it) is running all the same.
    """
    age_s = max(0.0, (now - status.written_at).total_seconds())
    stale = age_s > max(STALE_INTERVALS * status.health_interval_s, STALE_MIN_S)
    running = status.running and pid_alive and (not stale or holds_outbox is True)
    extra_problems: list[str] = []
    if running and stale:
        extra_problems.append(
            f"the agent has not updated its status for {_age(age_s)}: it cannot write {STATUS_NAME} "
            "(is the disk full?); figures below are as of then"
        )
    unreachable_for_s = trying_since = None
    if not status.connected and status.disconnected_for_s is not None:
        # The file says how long as of its writing; a running agent has gone on trying since.
        unreachable_for_s = status.disconnected_for_s + (age_s if running else 0.0)
        trying_since = status.written_at - timedelta(seconds=status.disconnected_for_s)
    problems = [*extra_problems, *status.problems] if running else ["the agent is not running", *status.problems]
    code = EXIT_PROBLEMS if problems else EXIT_HEALTHY
    return StatusReport(
        store_id=status.store_id,
        gateway_id=status.gateway_id,
        running=running,
        healthy=not problems,
        exit_code=code,
        status_age_s=round(age_s, 3),
        broker=BrokerReport(
            address=status.broker,
            connected=status.connected,
            unreachable_for_s=unreachable_for_s,
            trying_since=trying_since,
            last_error=status.last_connection_error,
        ),
        devices=status.devices,
        problems=problems,
        status=status,
    )


def _device_line(device: DeviceState) -> str:
    if device.up:
        return f"{device.device_id}: up" + (f", needs attention: {device.attention}" if device.attention else "")
    if device.down_for_s is None:
        return f"{device.device_id}: opening"
    error = f" ({device.last_error})" if device.last_error else ""
    return f"{device.device_id}: down for {_age(device.down_for_s)}{error}"


def describe_status(
    status: AgentStatusFile, *, now: datetime, pid_alive: bool = True, holds_outbox: bool | None = None
) -> tuple[str, int]:
    """The status in words and the exit code (0 healthy, 1 problems or not running)."""
    report = assess_status(status, now=now, pid_alive=pid_alive, holds_outbox=holds_outbox)
    age_s = report.status_age_s
    head = f"gateway {status.store_id}/{status.gateway_id}: "
    if report.running:
        head += f"agent running (pid {status.pid}, status {_age(age_s)} old)"
        trouble = _outbox_trouble(status, now)
        head += f"; {trouble}" if trouble else ""
    elif not status.running:
        head += f"agent not running (stopped cleanly; status {_age(age_s)} old)"
    else:
        head += f"agent not running (status {_age(age_s)} old)"
    broker_report = report.broker
    if status.connected:
        broker = f"broker {status.broker}: connected"
    elif broker_report.unreachable_for_s is not None and broker_report.trying_since is not None:
        broker = (
            f"broker {status.broker}: unreachable for {_age(broker_report.unreachable_for_s)} "
            f"(trying since {clock_time(broker_report.trying_since)})"
        )
    else:
        broker = f"broker {status.broker}: not connected"
    if not status.connected and broker_report.last_error:
        broker += f"; last error: {broker_report.last_error}"
    oldest = (
        "" if status.oldest_unacked_age_s is None else f", oldest unacknowledged {_age(status.oldest_unacked_age_s)}"
    )
    evicted = ", ".join(f"{name} {count:,}" for name, count in status.evicted_by_priority.items() if count)
    lines = [
        head,
        broker + ("" if report.running else ", when last seen"),
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
    if status.devices:
        lines.append("devices:")
        lines += [f"  - {_device_line(device)}" for device in status.devices]
    if report.problems:
        lines.append("problems:")
        lines += [f"  - {problem}" for problem in report.problems]
    else:
        lines.append("problems: none")
    return "\n".join(lines), report.exit_code


def agent_status(config_path: Path, *, as_json: bool = False) -> tuple[str, int]:
    """How the agent of ``config_path`` is doing, in words (or JSON, :class:`StatusReport`), and an exit code.

    0: running without problems; 1: problems, or not running; 2: no status file, or the
    config or the status file cannot be read (as JSON: ``{"error": ...}``).
    """

    def failed(text: str) -> tuple[str, int]:
        return (json.dumps({"error": text}) if as_json else text), EXIT_NO_STATUS

    try:
        config = load_agent_config(config_path)
    except ConfigError as err:
        return failed(str(err))
    path = status_path(config.outbox.path)
    try:
        status = read_status(path)
    except FileNotFoundError:
        return failed(f"no status file {path}: the agent has not run with this config")
    except OSError as err:
        return failed(f"cannot read status file {path}: {err.strerror}")
    except ValidationError as err:
        return failed(f"status file {path} is not a valid status: {err.errors()[0]['msg']}")
    now, alive, holds = utc_now(), _pid_alive(status.pid), holds_open(status.pid, config.outbox.path)
    if as_json:
        report = assess_status(status, now=now, pid_alive=alive, holds_outbox=holds)
        return report.model_dump_json(indent=2), report.exit_code
    return describe_status(status, now=now, pid_alive=alive, holds_outbox=holds)
