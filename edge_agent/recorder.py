"""Recording: device readings validated once, queued, and group-committed to the outbox.

- :meth:`Recorder.record` checks a reading against the wire contract once and serialises
  its payload; nothing downstream parses it again. It waits while the bounded queue is full
  (``outbox.queue_size``): a driver that produces faster than the disk takes simply waits.
- The writer (:meth:`Recorder.run`) commits as many queued readings per transaction as are
  waiting (up to ``outbox.commit_max_events``), so one fsync makes a whole group durable. The
  outbox gives each event its seq and stores its JSON; it drops replayed device readings and
  evicts the least important events when its quota is full (reporting them as ``outbox.loss``).
- When SQLite says the disk is full, the outbox first checkpoints its WAL and uses its reserve
  file (see :meth:`edge_agent.outbox.Outbox.append`); when only an eviction helps, the writer
  evicts and retries; while that does not help either, readings wait in the bounded queue
  (drivers wait, nothing piles up in memory) and health says so.
- :class:`Evictions` counts what the outbox evicted and logs each episode once, from the
  first eviction until the outbox is below :data:`EVICTION_CLEAR_SHARE` of its quota again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Final
from uuid import UUID

import structlog
from pydantic import JsonValue, ValidationError

from edge_agent.errors import AgentStoppedError, InvalidReadingError
from edge_agent.outbox import AppendResult, NewEvent, Outbox, OutboxFullError, encode_json, is_disk_full
from edge_agent.timing import Backoff
from storegate import wire

if TYPE_CHECKING:
    from device_drivers.base import Reading
    from edge_agent.config import AgentConfig
    from edge_agent.snapshots import SnapshotSpool
    from edge_agent.state import AgentState
    from storegate.clock import Clock

log = structlog.get_logger(__name__)

# One event's payload, as JSON, at most: far above any device's reading, and small enough
# that a batch never has to carry a single event above the broker's and hub's message limit.
MAX_PAYLOAD_BYTES: Final = 64 * 1024
# How long a clean shutdown waits for queued readings to be committed before giving up on them.
DRAIN_TIMEOUT_S: Final = 10.0
# Retrying a failed outbox write (disk full, failing SD card) while the queue holds the readings.
WRITE_RETRY: Final = Backoff(initial_s=0.5, max_s=30.0)
# After SQLITE_FULL, evict at most this many times the batch's size to make room, then wait and retry.
DISK_FULL_EVICTION_FACTOR: Final = 8
# The eviction episode ends (one log line) once the outbox is below this share of its quota.
EVICTION_CLEAR_SHARE: Final = 0.9

# A stand-in to check a reading against the wire contract before it is stored.
_PROBE_UUID: Final = UUID(int=0)


class Evictions:
    """Events the outbox evicted, by priority, and the episode of a full outbox while it lasts.

    ``episode`` is ``(events evicted since the outbox filled up, the quota in words)`` while it
    is full, else None; health shows it as a problem. ``wake_health`` is set when it begins or ends.
    ``max_events`` and ``max_bytes`` are the outbox's quota.
    """

    def __init__(self, *, max_events: int, max_bytes: int, wake_health: asyncio.Event) -> None:
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._wake_health = wake_health
        self.by_priority: Counter[wire.Priority] = Counter()
        self.episode: tuple[int, str] | None = None

    def evicted(self, evicted: dict[wire.Priority, int], loss_events: int, *, disk_full: bool) -> None:
        """An append evicted these events (and wrote ``loss_events`` records of them)."""
        self.by_priority.update(evicted)
        count = sum(evicted.values())
        by_priority = {priority.name.lower(): n for priority, n in sorted(evicted.items())}
        max_events, max_bytes = self._max_events, self._max_bytes
        why = "the disk is full" if disk_full else f"{max_events:,} events or {max_bytes / 1e6:,.0f} MB"
        if self.episode is None:
            log.warning(
                "outbox_evicting",
                reason="disk full" if disk_full else "quota full",
                evicted=by_priority,
                loss_events=loss_events,
                max_events=max_events,
                max_bytes=max_bytes,
            )
            self._wake_health.set()
        else:
            log.debug("outbox_evicted", evicted=by_priority, loss_events=loss_events)
        self.episode = ((0 if self.episode is None else self.episode[0]) + count, why)

    def check_over(self, outbox: Outbox) -> None:
        """End the episode once the outbox is below EVICTION_CLEAR_SHARE of its quota (after an ack or a commit)."""
        if self.episode is None:
            return
        if (
            outbox.depth() <= self._max_events * EVICTION_CLEAR_SHARE
            and outbox.size_bytes <= self._max_bytes * EVICTION_CLEAR_SHARE
        ):
            log.info("outbox_eviction_stopped", evicted=self.episode[0], waiting=outbox.depth())
            self.episode = None
            self._wake_health.set()


class Recorder:
    """Readings in, committed events out: the bounded queue, its writer, and the group commit.

    Counts what it rejects (``rejected``) and what the outbox dropped as replays
    (``duplicates``); ``write_failing`` is ``(since, error)`` while the outbox rejects writes.
    After each commit it sets ``state.wake_sender``.
    """

    def __init__(
        self,
        *,
        config: AgentConfig,
        clock: Clock,
        rng: random.Random,
        state: AgentState,
        spool: SnapshotSpool | None = None,
    ) -> None:
        self._store_id = config.store_id
        self._gateway_id = config.gateway_id
        self._commit_max_events = config.outbox.commit_max_events
        self._clock = clock
        self._rng = rng  # retry jitter only
        self._state = state
        self._spool = spool  # where a reading's attachment (a camera still) is kept; None: attachments are dropped
        self._queue: asyncio.Queue[NewEvent] = asyncio.Queue(maxsize=config.outbox.queue_size)
        self._accepting = True
        # Group commit: readings queued, readings committed (or dropped as replays), and a condition to wait on.
        self._recorded = 0
        self._committed = 0
        self._commit_progress = asyncio.Condition()
        self.write_failing: tuple[float, str] | None = None  # (since, error) while the outbox rejects writes
        self.last_write_at: datetime | None = None  # the last commit that worked, wall clock
        self._disk_full = False  # the outbox's disk_full_since was set at the last commit
        self.rejected = 0
        self.duplicates = 0
        self.evictions = Evictions(
            max_events=config.outbox.max_events, max_bytes=config.outbox.max_bytes, wake_health=state.wake_health
        )

    @property
    def queued(self) -> int:
        """Readings waiting in the queue for the writer."""
        return self._queue.qsize()

    def committed_mark(self, device_id: str) -> int | None:
        """The highest ``source_seq`` of ``device_id`` the outbox has committed (None before it is open)."""
        outbox = self._state.outbox
        return None if outbox is None else outbox.device_mark(device_id)

    # ------------------------------------------------------------------ readings in

    async def record(self, reading: Reading) -> None:
        """Queue one reading for the outbox, waiting while the queue is full.

        Returns once queued (see :meth:`flush` for durable). Raises InvalidReadingError
        for a reading that is no valid event (it is counted and dropped) and
        AgentStoppedError once the agent is shutting down.
        """
        if not self._accepting:
            raise AgentStoppedError("the agent is shutting down and no longer accepts readings")
        payload = reading.payload
        if reading.attachment is not None:
            payload = await self._with_snapshot(reading)
        event = self._event_of(reading, payload)
        await self._queue.put(event)
        self._recorded += 1

    async def flush(self) -> None:
        """Wait until every reading recorded before this call is committed to the outbox (while running)."""
        target = self._recorded
        async with self._commit_progress:
            await self._commit_progress.wait_for(lambda: self._committed >= target)

    async def _with_snapshot(self, reading: Reading) -> dict[str, JsonValue]:
        """The payload with the spooled attachment's ``snapshot_ref``; unchanged when the still cannot be kept.

        The event matters more than its still: a full or failing disk costs the still, never the event.
        """
        assert reading.attachment is not None
        if self._spool is None:
            return reading.payload
        try:
            ref = await self._spool.keep(reading.attachment, device_id=reading.device_id, taken_at=reading.ts)
        except (OSError, ValueError) as err:
            self._spool.stats.failed += 1
            log.error("snapshot_not_kept", device_id=reading.device_id, kind=reading.kind, error=str(err))
            return reading.payload
        return {**reading.payload, "snapshot_ref": ref}

    def _event_of(self, reading: Reading, payload: dict[str, JsonValue]) -> NewEvent:
        """The reading checked against the wire contract, once, and its payload serialised."""
        try:
            event = wire.Event(
                event_id=_PROBE_UUID,
                store_id=self._store_id,
                gateway_id=self._gateway_id,
                stream=_PROBE_UUID,
                seq=1,
                device_id=reading.device_id,
                kind=reading.kind,
                ts=reading.ts,
                payload=payload,
            )
            if reading.source_seq is not None and reading.source_seq < 0:
                raise ValueError(f"source_seq {reading.source_seq} is negative")
            payload_json = encode_json(event.payload)
        except (ValidationError, ValueError, TypeError) as err:
            self.rejected += 1
            raise InvalidReadingError(f"{reading.kind} reading from {reading.device_id!r} is invalid: {err}") from err
        size = len(payload_json.encode())
        if size > MAX_PAYLOAD_BYTES:
            self.rejected += 1
            raise InvalidReadingError(
                f"{reading.kind} reading from {reading.device_id!r} has a {size:,}-byte payload; "
                f"the limit is {MAX_PAYLOAD_BYTES:,}"
            )
        return NewEvent(
            device_id=event.device_id,
            kind=event.kind,
            ts=event.ts,
            payload_json=payload_json,
            source_seq=reading.source_seq,
        )

    def stop_accepting(self) -> None:
        """From now on :meth:`record` raises AgentStoppedError."""
        self._accepting = False

    async def finish(self, *, drain: bool) -> None:
        """Accept no more readings; with ``drain`` (the writer runs), wait up to DRAIN_TIMEOUT_S for the queue.

        What is still queued then is lost, and logged as such.
        """
        self._accepting = False
        if drain:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout=DRAIN_TIMEOUT_S)
        if not self._queue.empty():
            log.error("readings_lost_at_shutdown", count=self._queue.qsize(), reason="the outbox did not take them")

    # ------------------------------------------------------------------ the writer

    async def run(self, outbox: Outbox) -> None:
        """The writer: commit queued readings to ``outbox``, as many a transaction as wait, until cancelled."""
        limit = self._commit_max_events
        while True:
            batch = [await self._queue.get()]
            while len(batch) < limit and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit(outbox, batch)
            for _ in batch:
                self._queue.task_done()

    async def _commit(self, outbox: Outbox, batch: list[NewEvent]) -> None:
        attempt = 0
        while True:
            try:
                result, disk_full = await self._append(outbox, batch)
                break
            except (sqlite3.Error, OSError, OutboxFullError) as err:
                # Keep the readings and retry; meanwhile devices wait on the full queue.
                attempt += 1
                if self.write_failing is None:
                    self.write_failing = (self._clock.monotonic(), str(err))
                    log.error("outbox_write_failing", error=str(err), readings=len(batch), waiting=self._queue.qsize())
                    self._state.wake_health.set()
                await self._clock.sleep(WRITE_RETRY.delay(attempt, self._rng))
        if self.write_failing is not None:
            failed_for_s = self._clock.monotonic() - self.write_failing[0]
            log.info("outbox_write_recovered", failed_for_s=round(failed_for_s, 1))
            self.write_failing = None
            self._state.wake_health.set()
        self._note_disk_full(outbox)
        self.duplicates += result.duplicates
        if result.evicted:
            self.evictions.evicted(result.evicted, result.loss_events, disk_full=disk_full)
        else:
            self.evictions.check_over(outbox)
        self._committed += len(batch)
        self.last_write_at = self._clock.now()
        self._state.wake_sender.set()
        async with self._commit_progress:
            self._commit_progress.notify_all()

    def _note_disk_full(self, outbox: Outbox) -> None:
        """Report at once when the outbox's filesystem fills up or has room again."""
        disk_full = outbox.disk_full_since is not None
        if disk_full != self._disk_full:
            self._disk_full = disk_full
            self._state.wake_health.set()

    async def _append(self, outbox: Outbox, batch: list[NewEvent]) -> tuple[AppendResult, bool]:
        """Append; when SQLite says the disk is full, evict as many events as the batch holds, then 2, 4, 8 times."""
        make_room = 0
        while True:
            try:
                return await outbox.append(batch, make_room=make_room), make_room > 0
            except sqlite3.Error as err:
                # Bounded, so that a disk filled by something else never costs more than a few batches.
                limit = min(len(batch) * DISK_FULL_EVICTION_FACTOR, outbox.depth())
                if not is_disk_full(err) or make_room >= limit:
                    raise
                make_room = min(max(len(batch), make_room * 2), limit)
