"""Durable print jobs: a ``print`` command is stored on the gateway, printed once its printer is there, answered.

A pick list the hub sends must reach paper even when the printer is off, out of paper or unplugged for
hours, and must not come out twice because the broker redelivered the command or the agent restarted.
So a ``print`` command is not run like other commands (:mod:`edge_agent.commands`): it becomes a row of
its own SQLite file (default ``print-jobs.sqlite`` beside the outbox), keyed by its ``command_id``,
committed before anything is answered. Then:

- the hub hears ``accepted`` at once ("stored on the gateway, waiting for its printer");
- one worker per printer takes that printer's jobs in order, waits until the printer's driver is up,
  commits the job as ``printing`` (and its attempt number) *before* the driver gets it, and commits it
  ``printed`` *before* the result is published;
- a retryable driver error (printer absent, offline, out of paper, cover open, job interrupted) puts the
  job back in the queue with a jittered, capped backoff; a non-retryable one, or the command's
  ``expires_at`` passing, ends it ``failed`` with the reason;
- the final result (``done`` or ``failed``) waits in the row until the broker has acknowledged it
  (PUBACK), and is published again on every reconnect until then;
- a command delivered again (same ``command_id``, also after a restart) is answered from its row and
  never printed again.

What reaches paper: a job found ``printing`` after a crash may or may not have printed; it is printed
again with the next attempt number, and the printer driver marks every attempt after the first with a
REPRINT line. So each printed job has at least one complete copy, at most one copy without the REPRINT
mark (the first attempt's, which may be partial if it was interrupted), and every extra copy says it is
one. docs/reliability.md ("Print jobs") says the same for people.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, Protocol, TypeVar

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from device_drivers.base import CommandNotSupportedError, DeviceNotReadyError, DriverError
from edge_agent.errors import AgentError
from edge_agent.sqlite_thread import SqliteOnItsThread
from edge_agent.timing import Backoff
from storegate import wire
from storegate.mqtt import TAKEN_RC
from storegate.private_files import private_sqlite_files
from storegate.tasks import wait_for_event

if TYPE_CHECKING:
    from edge_agent.config import PrintJobsConfig
    from storegate.clock import Clock

log = structlog.get_logger(__name__)

PRINT_COMMAND: Final = "print"
JOBS_FILE_NAME: Final = "print-jobs.sqlite"
SCHEMA_VERSION: Final = 1
# Results published in one round, at most; the rest go in the next round.
PUBLISH_BATCH: Final = 100
# How long a round waits for the broker's PUBACKs before it publishes what is missing again.
PUBACK_WAIT_S: Final = 10.0
DETAIL_MAX: Final = 2000

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        command_id TEXT NOT NULL UNIQUE,
        device_id TEXT NOT NULL,
        command BLOB NOT NULL,
        received_at REAL NOT NULL,
        expires_at REAL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'printing', 'printed', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        result BLOB,
        ended_at REAL,
        accepted_published INTEGER NOT NULL DEFAULT 0,
        result_published INTEGER NOT NULL DEFAULT 0
    )""",
    # A printer's waiting jobs in order (the worker's query), and what is still to be published.
    "CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (device_id, id) WHERE state IN ('queued', 'printing')",
    "CREATE INDEX IF NOT EXISTS jobs_unpublished ON jobs (id) WHERE result_published = 0",
)
_WAITING: Final = ("queued", "printing")

T = TypeVar("T")


class PrintJobsError(AgentError):
    """The print-jobs file cannot be used: unreadable, not a database, in use, or from a newer agent."""


class JobState(StrEnum):
    """Where a print job is: waiting (``queued``), handed to the printer (``printing``), or ended."""

    QUEUED = "queued"
    PRINTING = "printing"
    PRINTED = "printed"
    FAILED = "failed"


class Printer(Protocol):
    """What a worker needs of a running device: whether its driver is up, and running a command on it."""

    @property
    def up(self) -> bool:
        """Whether the device's driver is open."""
        ...

    async def execute(self, command: wire.Command) -> wire.CommandResult:
        """Run ``command`` on the device's driver."""
        ...


class Devices(Protocol):
    """The gateway's running devices (:class:`edge_agent.hotplug.DeviceManager`)."""

    def supervisor(self, device_id: str) -> Printer | None:
        """The running device ``device_id``, or None while it is absent."""
        ...


class PublishedInfo(Protocol):
    """paho's ``MQTTMessageInfo``: the return code of a publish and, later, its PUBACK."""

    @property
    def rc(self) -> int:
        """paho's return code of the publish (0: sent or queued for sending)."""
        ...

    def wait_for_publish(self, timeout: float | None = None) -> None:
        """Block until the broker acknowledged the message or ``timeout`` passed."""
        ...

    def is_published(self) -> bool:
        """Whether the broker acknowledged the message."""
        ...


class ResultLink(Protocol):
    """What the result publisher needs of the MQTT link."""

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> PublishedInfo:
        """Queue a message."""
        ...


# --------------------------------------------------------------------------- the pure part


class Outcome(NamedTuple):
    """What one attempt at a job came to: the job's next state, the result status and detail, and whether to retry."""

    state: JobState
    status: Literal["done", "failed", "rejected"]
    detail: str
    retry: bool


def outcome_of(device_id: str, attempt: int, result: wire.CommandResult | BaseException) -> Outcome:
    """Decide what an attempt's result or error means for its job (no I/O).

    ``done`` from the driver is printed. A retryable driver error (and a timeout) sends the job back to
    the queue: the printer was absent or offline, or the job was interrupted and may be partly printed,
    which the next attempt's REPRINT line accounts for. An unknown command is ``rejected``; any other
    error, and a driver answer other than ``done``, ends the job ``failed`` with its reason.
    """
    if isinstance(result, wire.CommandResult):
        if result.status == "done":
            detail = result.detail or f"printed on {device_id}"
            return Outcome(JobState.PRINTED, "done", f"{detail} (attempt {attempt})", retry=False)
        return Outcome(JobState.FAILED, "failed", f"{device_id} answered {result.status}: {result.detail}", False)
    if isinstance(result, TimeoutError):
        return Outcome(JobState.QUEUED, "failed", f"{device_id} did not finish attempt {attempt} in time", True)
    if isinstance(result, CommandNotSupportedError):
        return Outcome(JobState.FAILED, "rejected", f"{device_id}: {result}", retry=False)
    if isinstance(result, DriverError):
        if result.retryable:
            return Outcome(JobState.QUEUED, "failed", f"{device_id}: {result}", retry=True)
        return Outcome(JobState.FAILED, "failed", f"{device_id} refused the job: {result}", retry=False)
    return Outcome(JobState.FAILED, "failed", f"the driver of {device_id} failed: {result!r}", retry=False)


def expired_detail(device_id: str, expires_at: datetime, attempts: int, last_error: str | None) -> str:
    """Why a job that outlived its command ended unprinted, in words for the restock task."""
    tried = "never handed to the printer" if attempts == 0 else f"{attempts} attempt(s)"
    last = f"; last error: {last_error}" if last_error else ""
    return f"not printed: expired at {expires_at.isoformat()} waiting for {device_id} ({tried}{last})"


def describe_waiting(waiting: Iterable[tuple[str, float]], *, now: float, warn_after_s: float) -> list[str]:
    """Health problems in words: one per printer whose oldest waiting job is older than ``warn_after_s``.

    ``waiting`` gives (device_id, received_at) of each waiting job, Unix seconds.
    """
    per_device: dict[str, tuple[int, float]] = {}
    for device_id, received_at in waiting:
        count, oldest = per_device.get(device_id, (0, received_at))
        per_device[device_id] = (count + 1, min(oldest, received_at))
    problems = []
    for device_id, (count, oldest) in sorted(per_device.items()):
        age_s = now - oldest
        if age_s > warn_after_s:
            jobs = "1 print job" if count == 1 else f"{count} print jobs"
            problems.append(f"{jobs} waiting for printer {device_id}, the oldest for {age_s / 60:.0f} min")
    return problems


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True, slots=True)
class Job:
    """One waiting print job, as a worker takes it."""

    id: int
    command: wire.Command
    attempts: int
    last_error: str | None

    @property
    def device_id(self) -> str:
        """The printer it is for."""
        assert self.command.device_id is not None  # only print commands naming a device are stored
        return self.command.device_id


@dataclass(frozen=True, slots=True)
class PrintJobStats:
    """Counters and gauges for /metrics; a snapshot, safe to read from any thread."""

    waiting: int
    oldest_waiting_age_s: float | None
    printed: int
    failed: int
    reprinted: int
    redelivered: int


class PrintJobs(SqliteOnItsThread):
    """The gateway's durable print queue. Async context manager; ``run(link)`` works it until cancelled.

    ``devices`` finds each printer; ``known_device`` says whether a device id is one this gateway may
    print on while it is absent (a configured device); ``config`` is the ``[print_jobs]`` section.
    """

    thread_name = "print-jobs"

    def __init__(
        self,
        *,
        path: Path,
        config: PrintJobsConfig,
        store_id: str,
        gateway_id: str,
        devices: Devices,
        known_device: Callable[[str], bool],
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self.path = path
        self._config = config
        self._store_id, self._gateway_id = store_id, gateway_id
        self._results_topic = wire.topic(store_id, gateway_id, wire.Channel.COMMAND_RESULTS)
        self._devices = devices
        self._known_device = known_device
        self._clock = clock
        self._rng = rng or random.Random()  # jitter only
        self._backoff = Backoff(initial_s=config.retry_initial_s, max_s=config.retry_max_s)
        super().__init__()
        self._link: ResultLink | None = None
        self._publish_wake = asyncio.Event()
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._worker_wakes: dict[str, asyncio.Event] = {}
        # Mirrors, changed on the loop after each commit: command_id -> (device_id, received_at).
        self._waiting: dict[str, tuple[str, float]] = {}
        self.printed_total = 0
        self.failed_total = 0
        self.reprinted_total = 0  # attempts after the first (each prints a REPRINT line)
        self.redelivered_total = 0  # commands answered from the table instead of printed again

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Stop the workers, wait for the running operation, close the file; idempotent."""
        await self._stop_workers()
        await self._close_thread()

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The jobs hold pick lists (what a store is short of): 0600 from creation, like the outbox.
            for file, was in private_sqlite_files(self.path):
                log.warning("print_jobs_file_made_private", path=str(file), was=f"{was:04o}")
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=1.0)
        except (OSError, sqlite3.Error) as err:
            raise PrintJobsError(f"cannot open print jobs {self.path}: {err}") from err
        try:
            # Exclusive: a second agent on the same file fails at once instead of printing the same jobs.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            if str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() != "wal":
                raise PrintJobsError(f"print jobs {self.path} cannot use WAL journal mode")
            # FULL, not NORMAL: NORMAL in WAL mode may undo the last commits on a power cut. A lost
            # "printing" mark would print the job again as attempt 1, without its REPRINT line; a lost
            # "printed" would print it again; a lost new job would be acknowledged and never printed.
            # A store prints a few jobs an hour: an fsync each costs nothing that matters.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = int(conn.execute("PRAGMA user_version").fetchone()[0] or 0)
                if version > SCHEMA_VERSION:
                    raise PrintJobsError(
                        f"print jobs {self.path} have schema version {version}; this agent knows up to {SCHEMA_VERSION}"
                    )
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._prune_sync(conn)
                waiting = conn.execute(
                    "SELECT command_id, device_id, received_at FROM jobs WHERE state IN ('queued', 'printing')"
                ).fetchall()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except BaseException as err:
            conn.close()
            if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
                raise PrintJobsError(f"print jobs {self.path} are in use by another process") from err
            if isinstance(err, sqlite3.Error):
                raise PrintJobsError(f"cannot use print jobs {self.path}: {err}") from err
            raise
        self._conn = conn
        self._waiting = {command_id: (device_id, float(received)) for command_id, device_id, received in waiting}

    def _prune_sync(self, conn: sqlite3.Connection) -> None:
        """Forget ended jobs whose result the broker has, once older than ``keep_ended_s`` (in a transaction)."""
        before = self._clock.now().timestamp() - self._config.keep_ended_s
        conn.execute(
            "DELETE FROM jobs WHERE state IN ('printed', 'failed') AND result_published = 1 AND ended_at < ?",
            (before,),
        )

    def _write(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` in one committed transaction (synchronous=FULL: on disk when this returns)."""
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            value = operation(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return value

    # ------------------------------------------------------------------ state for health and metrics

    def stats(self) -> PrintJobStats:
        """Counters and gauges as of now."""
        waiting = list(self._waiting.values())
        oldest = min((received for _, received in waiting), default=None)
        now = self._clock.now().timestamp()
        return PrintJobStats(
            waiting=len(waiting),
            oldest_waiting_age_s=None if oldest is None else max(0.0, now - oldest),
            printed=self.printed_total,
            failed=self.failed_total,
            reprinted=self.reprinted_total,
            redelivered=self.redelivered_total,
        )

    def problems(self) -> list[str]:
        """Printers whose jobs have waited too long, in words (for the health report)."""
        return describe_waiting(
            list(self._waiting.values()),
            now=self._clock.now().timestamp(),
            warn_after_s=self._config.warn_after_s,
        )

    async def job_state(self, command_id: str) -> tuple[JobState, int] | None:
        """A job's state and attempts so far, or None when there is no such job (for tests and tools)."""

        def query() -> tuple[JobState, int] | None:
            row = self._db().execute("SELECT state, attempts FROM jobs WHERE command_id = ?", (command_id,)).fetchone()
            return None if row is None else (JobState(row[0]), int(row[1]))

        return await self._run(query)

    # ------------------------------------------------------------------ taking commands

    async def submit(self, command: wire.Command) -> bool:
        """Store a ``print`` command (committed before this returns) and have it answered; False if it was known.

        A new command is queued for its printer, or ended at once when it cannot be printed (expired,
        unknown device, queue full); a command already stored is not queued again: its answer (the
        final result, or ``accepted`` while it waits) is published again.
        """
        if command.device_id is None:
            raise ValueError("a print job needs a device_id")
        device_id = command.device_id
        now = self._clock.now()
        refusal = self._refusal(command, now)
        new: bool = await self._run(self._write, partial(self._submit_sync, command=command, refusal=refusal, now=now))
        if new:
            if refusal is None:
                self._waiting[str(command.command_id)] = (device_id, now.timestamp())
                log.info("print_job_queued", command_id=str(command.command_id), device_id=device_id)
                self._wake_worker(device_id)
            else:
                self.failed_total += 1
                log.warning("print_job_refused", command_id=str(command.command_id), device_id=device_id, why=refusal)
        else:
            self.redelivered_total += 1
            log.info("print_job_redelivered", command_id=str(command.command_id), device_id=device_id)
        self._publish_wake.set()
        return new

    def _refusal(self, command: wire.Command, now: datetime) -> tuple[Literal["expired", "rejected"], str] | None:
        """Why a new command cannot be queued, or None."""
        assert command.device_id is not None
        if command.expires_at is not None and command.expires_at <= now:
            return "expired", f"expired at {command.expires_at.isoformat()} before it reached the gateway"
        if self._devices.supervisor(command.device_id) is None and not self._known_device(command.device_id):
            return "rejected", (
                f"no printer {command.device_id!r} on this gateway: it is neither running nor configured in "
                "[[devices]] (configure it with its identity so that jobs wait while it is unplugged)"
            )
        if len(self._waiting) >= self._config.max_waiting:
            return "rejected", f"the gateway's print queue is full ({len(self._waiting)} jobs waiting)"
        return None

    def _submit_sync(
        self,
        conn: sqlite3.Connection,
        command: wire.Command,
        refusal: tuple[Literal["expired", "rejected"], str] | None,
        now: datetime,
    ) -> bool:
        command_id = str(command.command_id)
        row = conn.execute("SELECT state FROM jobs WHERE command_id = ?", (command_id,)).fetchone()
        if row is not None:
            # Delivered again: answer again, from the row. Its answer goes out on the next publish round.
            column = "accepted_published" if row[0] in _WAITING else "result_published"
            conn.execute(f"UPDATE jobs SET {column} = 0 WHERE command_id = ?", (command_id,))  # noqa: S608 (constant)
            return False
        state, result, ended = JobState.QUEUED.value, None, None
        if refusal is not None:
            status, detail = refusal
            state, ended = JobState.FAILED.value, now.timestamp()
            result = wire.encode(self._result(command.command_id, status, detail, now))
        conn.execute(
            "INSERT INTO jobs (command_id, device_id, command, received_at, expires_at, state, result, ended_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                command_id,
                command.device_id,
                wire.encode(command),
                now.timestamp(),
                _ts(command.expires_at),
                state,
                result,
                ended,
            ),
        )
        return True

    def _result(self, command_id: Any, status: str, detail: str, at: datetime) -> wire.CommandResult:
        return wire.CommandResult.model_validate(
            {
                "command_id": command_id,
                "store_id": self._store_id,
                "gateway_id": self._gateway_id,
                "status": status,
                "detail": detail[:DETAIL_MAX],
                "ts": at,
            }
        )

    # ------------------------------------------------------------------ running

    async def run(self, link: ResultLink) -> None:
        """Work the queue until cancelled: a worker per printer with waiting jobs, results published on ``link``."""
        self._link = link
        for device_id in sorted({device_id for device_id, _ in self._waiting.values()}):
            self._wake_worker(device_id)
        self._publish_wake.set()
        try:
            await self._publish_results()
        finally:
            self._link = None
            await self._stop_workers()

    def connected(self) -> None:
        """The link (re)connected: publish every result the broker has not acknowledged yet."""
        self._publish_wake.set()

    def devices_changed(self) -> None:
        """A device started or stopped: workers waiting for their printer look again now."""
        for wake in self._worker_wakes.values():
            wake.set()

    def _wake_worker(self, device_id: str) -> None:
        wake = self._worker_wakes.setdefault(device_id, asyncio.Event())
        wake.set()
        worker = self._workers.get(device_id)
        if worker is None or worker.done():
            task = asyncio.create_task(self._work(device_id, wake), name=f"print jobs {device_id}")
            self._workers[device_id] = task

    async def _stop_workers(self) -> None:
        workers, self._workers = list(self._workers.values()), {}
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _work(self, device_id: str, wake: asyncio.Event) -> None:
        """One printer's worker: its waiting jobs in order, until none is left."""
        while True:
            wake.clear()
            try:
                job, unreadable = await self._run(self._next_job_sync, device_id)
                for command_id in unreadable:
                    self._waiting.pop(command_id, None)
                    self.failed_total += 1
                    self._publish_wake.set()
                if job is None:
                    if wake.is_set():  # a job was queued while the query ran
                        continue
                    return
                await self._work_on(job, wake)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the file failed (disk full, I/O error): the job stays; try again later
                log.error("print_worker_failed", device_id=device_id, error=repr(err), exc_info=err)
                await wait_for_event(wake, self._config.retry_max_s)

    def _next_job_sync(self, device_id: str) -> tuple[Job | None, list[str]]:
        """The printer's next waiting job, and the command ids of stored jobs that could not be read.

        A row whose command no longer parses (a damaged file) is ended ``failed`` and reported, so one bad
        row neither stops the printer's queue nor is lost silently.
        """
        unreadable: list[str] = []
        while True:
            row = (
                self._db()
                .execute(
                    "SELECT id, command_id, command, attempts, last_error FROM jobs "
                    "WHERE device_id = ? AND state IN ('queued', 'printing') ORDER BY id LIMIT 1",
                    (device_id,),
                )
                .fetchone()
            )
            if row is None:
                return None, unreadable
            job_id, command_id, raw, attempts, last_error = row
            try:
                command = wire.decode(wire.Command, bytes(raw))
            except (wire.WireError, TypeError) as err:
                log.error("print_job_unreadable", command_id=command_id, device_id=device_id, error=str(err))
                now = self._clock.now()
                detail = f"the gateway could not read the stored job back ({err}); it was not printed"
                result = wire.encode(self._result(command_id, "failed", detail, now))
                self._write(partial(self._fail_unreadable, job_id=job_id, result=result, at=now.timestamp()))
                unreadable.append(command_id)
                continue
            return Job(id=int(job_id), command=command, attempts=int(attempts), last_error=last_error), unreadable

    @staticmethod
    def _fail_unreadable(conn: sqlite3.Connection, job_id: int, result: bytes, at: float) -> None:
        conn.execute(
            "UPDATE jobs SET state = 'failed', result = ?, ended_at = ?, result_published = 0 WHERE id = ?",
            (result, at, job_id),
        )

    async def _work_on(self, job: Job, wake: asyncio.Event) -> None:
        """Print one job: wait for its printer, attempt, and retry until it is printed, failed or expired."""
        attempts, last_error = job.attempts, job.last_error
        retries = 0
        while True:
            printer = await self._wait_for_printer(job, wake)
            if printer is None:  # expired while waiting
                await self._expire(job, attempts, last_error)
                return
            attempts += 1
            await self._run(self._write, partial(self._mark_printing, job_id=job.id, attempts=attempts))
            log.info(
                "print_job_printing", command_id=str(job.command.command_id), device_id=job.device_id, attempt=attempts
            )
            answer = await self._attempt(printer, job.command, attempts)
            if isinstance(answer, DeviceNotReadyError):
                # The printer refused before the job (paper out, cover open): nothing reached paper, so the next
                # try is still this attempt, and a job that waited for paper prints without a REPRINT mark.
                attempts -= 1
            elif attempts > 1:
                self.reprinted_total += 1
            outcome = outcome_of(job.device_id, attempts, answer)
            if not outcome.retry:
                await self._end(job, outcome.state, outcome.status, outcome.detail)
                return
            last_error = outcome.detail
            await self._run(self._write, partial(self._requeue, job_id=job.id, attempts=attempts, error=outcome.detail))
            retries += 1
            delay = self._backoff.delay(retries, self._rng)
            log.warning(
                "print_job_retry",
                command_id=str(job.command.command_id),
                device_id=job.device_id,
                attempt=attempts,
                error=outcome.detail,
                retry_in_s=round(delay, 1),
            )
            await wait_for_event(wake, min(delay, self._until_expiry(job)))
            wake.clear()

    async def _attempt(
        self, printer: Printer, command: wire.Command, attempt: int
    ) -> wire.CommandResult | BaseException:
        # The driver marks attempts after the first with a REPRINT line; it learns the number from the args.
        numbered = command.model_copy(update={"args": {**command.args, "attempt": attempt}})
        try:
            async with asyncio.timeout(self._config.attempt_timeout_s):
                return await printer.execute(numbered)
        except asyncio.CancelledError:
            raise  # the agent stops: the job stays "printing" and is printed again (as a reprint) after the restart
        except Exception as err:  # every failure becomes an outcome; a driver bug is logged with its traceback
            if not isinstance(err, DriverError | TimeoutError):
                log.error("print_driver_crashed", device_id=command.device_id, exc_info=err)
            return err

    def _until_expiry(self, job: Job) -> float:
        expires_at = job.command.expires_at
        if expires_at is None:
            return self._config.retry_max_s
        return max(0.0, (expires_at - self._clock.now()).total_seconds())

    def _expired(self, job: Job) -> bool:
        expires_at = job.command.expires_at
        return expires_at is not None and expires_at <= self._clock.now()

    async def _wait_for_printer(self, job: Job, wake: asyncio.Event) -> Printer | None:
        """The job's printer once its driver is up; None if the job expires first.

        Woken when devices start or stop (hot-plug); the driver coming up within a running device is seen
        by looking again after a jittered, capped backoff: no busy loop, and at most ``retry_max_s`` late.
        """
        looks = 0
        while not self._expired(job):
            printer = self._devices.supervisor(job.device_id)
            if printer is not None and printer.up:
                return printer
            looks += 1
            if looks == 1:
                log.info(
                    "print_job_waiting_for_printer", command_id=str(job.command.command_id), device_id=job.device_id
                )
            delay = self._backoff.delay(looks, self._rng)
            await wait_for_event(wake, min(delay, self._until_expiry(job)))
            wake.clear()
        return None

    @staticmethod
    def _mark_printing(conn: sqlite3.Connection, job_id: int, attempts: int) -> None:
        conn.execute("UPDATE jobs SET state = 'printing', attempts = ? WHERE id = ?", (attempts, job_id))

    @staticmethod
    def _requeue(conn: sqlite3.Connection, job_id: int, attempts: int, error: str) -> None:
        conn.execute(
            "UPDATE jobs SET state = 'queued', attempts = ?, last_error = ? WHERE id = ?",
            (attempts, error[:DETAIL_MAX], job_id),
        )

    async def _expire(self, job: Job, attempts: int, last_error: str | None) -> None:
        assert job.command.expires_at is not None
        await self._end(
            job, JobState.FAILED, "failed", expired_detail(job.device_id, job.command.expires_at, attempts, last_error)
        )

    async def _end(self, job: Job, state: JobState, status: str, detail: str) -> None:
        """Commit the job's end and its result, then publish the result."""
        now = self._clock.now()
        result = wire.encode(self._result(job.command.command_id, status, detail, now))

        def end(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE jobs SET state = ?, result = ?, ended_at = ?, result_published = 0 WHERE id = ?",
                (state.value, result, now.timestamp(), job.id),
            )
            self._prune_sync(conn)

        await self._run(self._write, end)
        self._waiting.pop(str(job.command.command_id), None)
        if state is JobState.PRINTED:
            self.printed_total += 1
            log.info("print_job_printed", command_id=str(job.command.command_id), device_id=job.device_id)
        else:
            self.failed_total += 1
            log.warning(
                "print_job_failed", command_id=str(job.command.command_id), device_id=job.device_id, detail=detail
            )
        self._publish_wake.set()

    # ------------------------------------------------------------------ publishing results

    async def _publish_results(self) -> None:
        """Publish every answer the broker has not acknowledged, while connected; forever."""
        while True:
            await wait_for_event(self._publish_wake, PUBACK_WAIT_S)
            self._publish_wake.clear()
            link = self._link
            if link is None or not link.connected:
                continue  # connected() wakes this up again
            try:
                more = await self._publish_round(link)
            except Exception as err:  # the file failed: the answers stay unpublished; the next round tries again
                log.warning("print_results_not_published", error=repr(err))
                continue
            if more:
                self._publish_wake.set()

    async def _publish_round(self, link: ResultLink) -> bool:
        """Publish up to a batch of answers and mark those the broker acknowledged; whether to go on at once."""
        answers = await self._run(self._unpublished_sync)
        if not answers:
            return False
        sent = [
            (command_id, final, link.publish(self._results_topic, payload, qos=1))
            for command_id, final, payload in answers
        ]
        acknowledged = await asyncio.to_thread(_wait_for_pubacks, sent, PUBACK_WAIT_S)
        if not acknowledged:
            return False  # the link is down or the broker silent: the next wake-up or timeout tries again
        await self._run(self._write, partial(self._mark_published, acknowledged=acknowledged))
        return len(acknowledged) < len(sent) or len(answers) == PUBLISH_BATCH

    def _unpublished_sync(self) -> list[tuple[str, bool, bytes]]:
        """(command_id, is final, payload) of the answers still to publish, oldest first."""
        rows = (
            self._db()
            .execute(
                "SELECT command_id, device_id, state, result, received_at FROM jobs "
                "WHERE result_published = 0 AND (state IN ('printed', 'failed') OR accepted_published = 0) "
                "ORDER BY id LIMIT ?",
                (PUBLISH_BATCH,),
            )
            .fetchall()
        )
        answers = []
        for command_id, device_id, state, result, received_at in rows:
            if state in _WAITING:
                accepted = self._result(
                    command_id, "accepted", f"stored on the gateway, waiting for printer {device_id}", _dt(received_at)
                )
                answers.append((command_id, False, wire.encode(accepted)))
            else:
                answers.append((command_id, True, bytes(result)))
        return answers

    @staticmethod
    def _mark_published(conn: sqlite3.Connection, acknowledged: list[tuple[str, bool]]) -> None:
        for command_id, final in acknowledged:
            if final:
                conn.execute(
                    "UPDATE jobs SET result_published = 1, accepted_published = 1 WHERE command_id = ?", (command_id,)
                )
            else:
                conn.execute("UPDATE jobs SET accepted_published = 1 WHERE command_id = ?", (command_id,))


def _wait_for_pubacks(sent: list[tuple[str, bool, PublishedInfo]], timeout_s: float) -> list[tuple[str, bool]]:
    """The answers the broker acknowledged within ``timeout_s`` in all (runs in a thread: paho's wait blocks)."""
    deadline = _monotonic() + timeout_s
    acknowledged = []
    for command_id, final, info in sent:
        if info.rc != TAKEN_RC:
            continue  # not even sent (no connection): the next round publishes it again
        with contextlib.suppress(RuntimeError, ValueError):  # the connection dropped meanwhile
            info.wait_for_publish(max(0.0, deadline - _monotonic()))
        if info.is_published():
            acknowledged.append((command_id, final))
    return acknowledged


def _monotonic() -> float:
    return time.monotonic()


# --------------------------------------------------------------------------- metrics


class PrintJobsCollector:
    """Prometheus collector of the print queue's counters, read at scrape time (from the server's thread)."""

    def __init__(self, snapshot: Callable[[], PrintJobStats]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        """The print queue's metrics as of now."""
        stats = self._snapshot()
        yield GaugeMetricFamily(
            "storegate_agent_print_jobs_waiting",
            "Print jobs stored and not yet printed or failed.",
            value=stats.waiting,
        )
        yield GaugeMetricFamily(
            "storegate_agent_print_jobs_oldest_waiting_age_seconds",
            "Age of the oldest waiting print job; 0 when none waits.",
            value=stats.oldest_waiting_age_s or 0.0,
        )
        for name, doc, value in (
            ("storegate_agent_print_jobs_printed", "Print jobs the printer confirmed.", stats.printed),
            (
                "storegate_agent_print_jobs_failed",
                "Print jobs ended unprinted (refused, expired, invalid).",
                stats.failed,
            ),
            ("storegate_agent_print_jobs_reprinted", "Attempts after a job's first (marked REPRINT).", stats.reprinted),
            (
                "storegate_agent_print_jobs_redelivered",
                "Print commands delivered again and answered from the queue, not printed again.",
                stats.redelivered,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
