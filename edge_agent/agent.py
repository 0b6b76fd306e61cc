"""The edge agent: device readings in, durable events out, deleted only when the hub has them.

Data path::

    drivers --record()--> bounded queue --writer--> SQLite outbox --sender--> MQTT events topic
                                                          ^                          |
                                                          +---- ack handler <--------+ hub's Ack

- ``record()`` validates a reading once against the wire contract and serialises its
  payload; nothing downstream parses it again.
- The writer commits as many queued readings per transaction as are waiting (up to
  ``commit_max_events``), so one fsync makes a whole group durable. The outbox gives
  each event its seq and stores its JSON; it drops replayed device readings and evicts
  the least important events when its quota is full (reporting them as ``outbox.loss``).
  When SQLite says the disk is full, the writer evicts more and retries; while that does
  not help, readings wait in the bounded queue and health says so.
- The sender splices stored JSON into ``EventBatch`` messages. A :class:`SendWindow`
  with two lanes decides what goes next: the backlog oldest-first, and security and
  sales events ahead of it. It rewinds after every (re)connect and after
  ``ack_timeout_s`` without the hub's ``through_seq`` moving. The hub stores
  idempotently, so this is at-least-once.
- The ack handler deletes rows up to ``through_seq``, resends at once the seqs an ack
  names as ``gaps``, and reports seqs the hub lost after acknowledging them as
  ``not_held``.
- Each device runs in its own :class:`DeviceSupervisor` task, kept by the
  :class:`DeviceManager`, which also starts and stops hot-plugged devices.
- Commands from the hub (``commands`` topic) go to the device they name; each result is
  published on ``command_results``.
- Presence: a retained birth status on every connect, a retained "lost" last will, and
  a retained "shutdown" status on a clean stop. Health: a retained health message and
  the status file every ``health.interval_s``, Prometheus ``/metrics`` on request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
from collections import Counter
from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import Any, Final, Literal
from uuid import UUID, uuid5

import structlog
from pydantic import ValidationError

import storegate
from device_drivers.base import CommandNotSupportedError, DriverError, Reading
from device_drivers.profiles import ProfileCatalog
from edge_agent.config import AgentConfig, catalog_of, config_hash
from edge_agent.devices import DriverBuilder, DriverFactory
from edge_agent.errors import AgentFailedError, AgentStoppedError, InvalidReadingError
from edge_agent.health import AgentStats, MetricsServer, RateMeter, agent_registry, describe_problems
from edge_agent.hotplug import DeviceManager, PortLister, default_lister
from edge_agent.outbox import (
    AppendResult,
    NewEvent,
    Outbox,
    OutboxFullError,
    OutboxRow,
    Quota,
    encode_json,
    event_body,
    event_json,
    identity_prefix,
    is_disk_full,
    merge_ranges,
)
from edge_agent.status import AgentStatusFile, status_path, write_status
from edge_agent.timing import Backoff
from edge_agent.window import SendWindow
from storegate import wire
from storegate.clock import Clock, SystemClock
from storegate.mqtt import Incoming, MqttLink, Will
from storegate.wire import EventKind

log = structlog.get_logger(__name__)

# One event's payload, as JSON, at most: far above any device's reading, and small enough
# that a batch never has to carry a single event above the broker's and hub's message limit.
MAX_PAYLOAD_BYTES: Final = 64 * 1024
# How long a clean shutdown waits for queued readings to be committed before giving up on them.
DRAIN_TIMEOUT_S: Final = 10.0
# How long a clean shutdown waits for the broker to take the shutdown status.
SHUTDOWN_STATUS_TIMEOUT_S: Final = 2.0
# Retrying a failed outbox write (disk full, failing SD card) while the queue holds the readings.
WRITE_RETRY: Final = Backoff(initial_s=0.5, max_s=30.0)
# After SQLITE_FULL, evict at most this many times the batch's size to make room, then wait and retry.
DISK_FULL_EVICTION_FACTOR: Final = 8
# Acks taken off the queue at once: one delete for all of them.
ACK_COALESCE: Final = 100
# Events in the one batch that probes whether the hub listens, after a (re)connect or an ack timeout.
PROBE_EVENTS: Final = 50
# A part-filled batch waits at most this long for the hub's ack or more events (see _holding).
HOLD_MAX_S: Final = 0.05
# Rates are sampled this often (they are averaged over a minute).
RATE_SAMPLE_S: Final = 1.0
# The eviction episode ends (one log line) once the outbox is below this share of its quota.
EVICTION_CLEAR_SHARE: Final = 0.9
# Corrupt rows whose loss was logged, at most (each is logged once, not at every resend).
_CORRUPT_LOGGED_MAX: Final = 1000

# A device command that takes longer than this is answered "failed" (the device may still finish it).
COMMAND_TIMEOUT_S: Final = 30.0
# Results of recent commands kept to answer a redelivered command (QoS 1) without running it twice.
COMMAND_RESULTS_KEPT: Final = 1000

# Stand-ins to check a reading against the wire contract before it is stored.
_PROBE_UUID: Final = UUID(int=0)
_PRIORITY_NAMES: Final = tuple(priority.name.lower() for priority in wire.Priority)


def encode_batches(rows: Sequence[bytes], *, head: bytes, max_bytes: int) -> list[bytes]:
    """EventBatch messages of wire-ready event JSON, in order, each within ``max_bytes``.

    ``head`` opens the batch up to and including ``"events":[``; the caller bounds the
    number of events (one message never holds more than it is given).
    """
    tail = b"]}"
    messages: list[bytes] = []
    parts: list[bytes] = []
    size = len(head) + len(tail)
    for event in rows:
        if parts and size + len(event) + 1 > max_bytes:
            messages.append(head + b",".join(parts) + tail)
            parts, size = [], len(head) + len(tail)
        parts.append(event)
        size += len(event) + 1
    if parts:
        messages.append(head + b",".join(parts) + tail)
    return messages


class EdgeAgent:
    """One gateway's agent. Runs once: ``await agent.run(stop)`` until ``stop`` is set.

    ``clock``, ``driver_factory``, ``device_backoff``, ``rng``, ``catalog`` and ``port_lister``
    (the hot-plug port list; None turns hot-plug off) are seams for tests.
    """

    def __init__(
        self,
        *,
        config: AgentConfig,
        clock: Clock | None = None,
        driver_factory: DriverFactory | None = None,
        device_backoff: Backoff | None = None,
        rng: random.Random | None = None,
        catalog: ProfileCatalog | None = None,
        port_lister: PortLister | Literal["default"] | None = "default",
    ) -> None:
        self.config = config
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()  # jitter only; nothing secret
        self._config_hash = config_hash(config)
        store, gateway = config.store_id, config.gateway_id
        self._events_topic = wire.topic(store, gateway, wire.Channel.EVENTS)
        self._ack_topic = wire.topic(store, gateway, wire.Channel.ACK)
        self._status_topic = wire.topic(store, gateway, wire.Channel.STATUS)
        self._health_topic = wire.topic(store, gateway, wire.Channel.HEALTH)
        self._commands_topic = wire.topic(store, gateway, wire.Channel.COMMANDS)
        self._command_results_topic = wire.topic(store, gateway, wire.Channel.COMMAND_RESULTS)
        self._command_results: dict[UUID, wire.CommandResult] = {}
        self._command_tasks: set[asyncio.Task[None]] = set()
        self._commands_rejected = 0
        self._batch_head = f'{{"v":{wire.PROTOCOL_VERSION},"store_id":"{store}","gateway_id":"{gateway}","sent_at":"'
        self.status_path = status_path(config.outbox.path)

        self._queue: asyncio.Queue[NewEvent] = asyncio.Queue(maxsize=config.outbox.queue_size)
        self._accepting = True
        self._ran = False
        self._outbox: Outbox | None = None
        self._prefix = b""
        self._link: MqttLink | None = None
        self._window: SendWindow | None = None

        # Group commit: readings queued, readings committed (or dropped as replays), and a condition to wait on.
        self._recorded = 0
        self._committed = 0
        self._commit_progress = asyncio.Condition()
        self._write_failing: tuple[float, str] | None = None  # (since, error) while the outbox rejects writes
        # While the outbox is full: events evicted since it filled up, and why (quota or disk) in words.
        self._evicting: tuple[int, str] | None = None

        self._wake_sender = asyncio.Event()
        self._hold_until: float | None = None  # a part-filled batch waits until then at most
        self._blocked_by_low = True  # the last backlog read held events less important than sales
        self._last_publish_at = 0.0
        self._wake_health = asyncio.Event()
        self._connected = False
        self._connects = 0
        self._status_devices: list[str] = []  # as the last retained status published listed them
        self._disconnected_at: float | None = None
        self._foreign_stream_logged: UUID | None = None
        self._problems_logged = False
        self._status_failing = False
        self._acked_ts: datetime | None = None  # the hub's time on the ack that last moved acked_seq
        self._gap_resent: dict[int, float] = {}  # seq -> when a gap named it and it was resent
        self._corrupt_logged: set[int] = set()

        self._published = 0
        self._acked = 0
        self._resent = 0
        self._rejected = 0
        self._duplicates = 0
        self._evicted: Counter[wire.Priority] = Counter()
        self._publish_rate = RateMeter()
        self._ack_rate = RateMeter()

        catalog = catalog if catalog is not None else catalog_of(config)
        builder = DriverBuilder(catalog=catalog)
        factory = driver_factory
        self._devices = DeviceManager(
            devices=config.devices,
            build=builder if factory is None else (lambda device, identity: factory(device)),
            catalog=catalog,
            record=self.record,
            backoff=device_backoff or Backoff(),
            clock=self._clock,
            rng=self._rng,
            committed_mark=self._committed_mark,
            hotplug=config.hotplug,
            lister=default_lister(config.hotplug, catalog) if port_lister == "default" else port_lister,
            on_change=self._devices_changed,
        )
        self.registry = agent_registry(lambda: self.stats)
        self._metrics = (
            None
            if config.health.metrics_port is None
            else MetricsServer(registry=self.registry, host=config.health.metrics_host, port=config.health.metrics_port)
        )

    # ------------------------------------------------------------------ public state

    @property
    def stats(self) -> AgentStats:
        """A snapshot of the counters; safe to read from any thread."""
        window, outbox = self._window, self._outbox
        oldest = None if outbox is None else outbox.oldest_event_ts
        return AgentStats(
            depth=0 if outbox is None else outbox.depth(),
            size_bytes=0 if outbox is None else outbox.size_bytes,
            published=self._published,
            acked=self._acked,
            resent=self._resent,
            reconnects=max(self._connects - 1, 0),
            rejected=self._rejected,
            duplicates=self._duplicates,
            evicted_by_priority=tuple(
                (name, self._evicted[priority]) for name, priority in zip(_PRIORITY_NAMES, wire.Priority, strict=True)
            ),
            publish_rate=self._publish_rate.rate,
            ack_rate=self._ack_rate.rate,
            last_ack_seq=0 if window is None else window.acked_seq,
            connected=self._connected,
            oldest_unacked_age_s=None if oldest is None else max(0.0, (self._clock.now() - oldest).total_seconds()),
            devices_up=tuple((device.device_id, device.up) for device in self._devices.supervisors),
        )

    @property
    def stream(self) -> UUID | None:
        """The outbox's stream UUID once the agent has opened it, else None."""
        return None if self._outbox is None else self._outbox.stream

    @property
    def outbox(self) -> Outbox | None:
        """The open outbox while the agent runs (for tests and tools; the agent owns it)."""
        return self._outbox

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on while the agent runs (the bound one when configured as 0)."""
        return None if self._metrics is None else self._metrics.port

    @property
    def devices(self) -> DeviceManager:
        """The gateway's devices (for tests and tools; the agent owns them)."""
        return self._devices

    def _committed_mark(self, device_id: str) -> int | None:
        return None if self._outbox is None else self._outbox.device_mark(device_id)

    # ------------------------------------------------------------------ recording

    async def record(self, reading: Reading) -> None:
        """Queue one reading for the outbox, waiting while the queue is full.

        Returns once queued (see :meth:`flush` for durable). Raises InvalidReadingError
        for a reading that is no valid event (it is counted and dropped) and
        AgentStoppedError once the agent is shutting down.
        """
        if not self._accepting:
            raise AgentStoppedError("the agent is shutting down and no longer accepts readings")
        event = self._event_of(reading)
        await self._queue.put(event)
        self._recorded += 1

    async def flush(self) -> None:
        """Wait until every reading recorded before this call is committed to the outbox (while running)."""
        target = self._recorded
        async with self._commit_progress:
            await self._commit_progress.wait_for(lambda: self._committed >= target)

    def _event_of(self, reading: Reading) -> NewEvent:
        """The reading checked against the wire contract, once, and its payload serialised."""
        try:
            event = wire.Event(
                event_id=_PROBE_UUID,
                store_id=self.config.store_id,
                gateway_id=self.config.gateway_id,
                stream=_PROBE_UUID,
                seq=1,
                device_id=reading.device_id,
                kind=reading.kind,
                ts=reading.ts,
                payload=reading.payload,
            )
            if reading.source_seq is not None and reading.source_seq < 0:
                raise ValueError(f"source_seq {reading.source_seq} is negative")
            payload_json = encode_json(event.payload)
        except (ValidationError, ValueError, TypeError) as err:
            self._rejected += 1
            raise InvalidReadingError(f"{reading.kind} reading from {reading.device_id!r} is invalid: {err}") from err
        size = len(payload_json.encode())
        if size > MAX_PAYLOAD_BYTES:
            self._rejected += 1
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

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then drain queued readings into the outbox and disconnect cleanly.

        Raises OutboxError when the outbox cannot be opened, OSError when the metrics
        port cannot be bound, and AgentFailedError when one of the agent's own tasks fails.
        """
        if self._ran:
            raise RuntimeError("an EdgeAgent runs once; create a new one to run again")
        self._ran = True
        outbox_config = self.config.outbox
        try:
            async with Outbox(
                path=outbox_config.path,
                quota=Quota(max_events=outbox_config.max_events, max_bytes=outbox_config.max_bytes),
                loss_device_id=self.config.gateway_id,
                now=self._clock.now,
            ) as outbox:
                self._outbox = outbox
                await self._run_with_outbox(outbox, stop)
        finally:
            self._accepting = False

    async def _run_with_outbox(self, outbox: Outbox, stop: asyncio.Event) -> None:
        self._prefix = identity_prefix(
            store_id=self.config.store_id, gateway_id=self.config.gateway_id, stream=outbox.stream
        )
        self._window = window = SendWindow(
            acked_seq=outbox.acked_through,
            max_in_flight=self.config.outbox.max_in_flight,
            ack_timeout_s=self.config.outbox.ack_timeout_s,
            now=self._clock.monotonic(),
            probe_events=min(self.config.outbox.max_batch, PROBE_EVENTS),
        )
        self._disconnected_at = self._clock.monotonic()
        log.info(
            "agent_starting",
            store_id=self.config.store_id,
            gateway_id=self.config.gateway_id,
            stream=str(outbox.stream),
            outbox=str(outbox.path),
            waiting=outbox.depth(),
            broker=self.config.mqtt.address,
        )
        link = self._link = MqttLink(
            settings=self.config.mqtt,
            client_id=f"storegate-agent-{self.config.store_id}-{self.config.gateway_id}",
            subscriptions=[(self._ack_topic, 1), (self._commands_topic, 1)],
            will=Will(self._status_topic, wire.encode(self._status(online=False, reason="lost"))),
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            queue_size=1000,
        )
        core: dict[asyncio.Task[None], str] = {}
        devices: list[asyncio.Task[None]] = []
        failure: BaseException | None = None
        try:
            if self._metrics is not None:
                self._metrics.start()
            # The configured devices start before the first connect, so that the birth lists them: the
            # manager starts them in its first step, which this one turn of the loop runs (ordering, not
            # waiting). Readings they make meanwhile wait in the queue for the writer.
            devices = [asyncio.create_task(self._devices.run(), name="device manager")]
            await asyncio.sleep(0)
            await link.__aenter__()
            jobs: dict[str, Coroutine[Any, Any, None]] = {
                "writer": self._writer(outbox),
                "sender": self._sender(outbox, link, window),
                "ack handler": self._ack_handler(outbox, link, window),
                "health publisher": self._health_publisher(link),
            }
            core = {asyncio.create_task(job, name=f"agent {name}"): name for name, job in jobs.items()}
            stopping = asyncio.create_task(stop.wait(), name="agent stop")
            try:
                done, _ = await asyncio.wait([stopping, *core], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            for task, name in core.items():
                if task in done:
                    failure = task.exception() or RuntimeError(f"the {name} task ended on its own")
                    log.error("agent_task_failed", task=name, error=repr(failure), exc_info=failure)
        finally:
            await self._shutdown(core, devices, link)
            if self._metrics is not None:
                await asyncio.to_thread(self._metrics.stop)
        if failure is not None:
            raise AgentFailedError(f"the agent stopped because a task failed: {failure!r}") from failure
        log.info("agent_stopped", waiting=outbox.depth(), published=self._published, acked=self._acked)

    async def _shutdown(
        self, core: dict[asyncio.Task[None], str], devices: list[asyncio.Task[None]], link: MqttLink
    ) -> None:
        # Devices first, so nothing new arrives; then commit what they reported.
        for task in [*devices, *self._command_tasks]:
            task.cancel()
        await asyncio.gather(*devices, *self._command_tasks, return_exceptions=True)
        self._accepting = False
        writer_alive = any(name == "writer" and not task.done() for task, name in core.items())
        if writer_alive:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout=DRAIN_TIMEOUT_S)
        if not self._queue.empty():
            log.error("readings_lost_at_shutdown", count=self._queue.qsize(), reason="the outbox did not take them")
        for task in core:
            task.cancel()
        await asyncio.gather(*core, return_exceptions=True)
        # The last status, as things stand before the agent disconnects on purpose.
        await self._write_status(running=False)
        # Published here rather than through close(final_message=...), so that a failed
        # publish still lets the link disconnect and stop its network thread.
        if link.connected:
            try:
                info = link.publish(
                    self._status_topic, wire.encode(self._status(online=False, reason="shutdown")), qos=1, retain=True
                )
                await asyncio.to_thread(info.wait_for_publish, SHUTDOWN_STATUS_TIMEOUT_S)
            except (RuntimeError, ValueError) as err:
                log.warning("shutdown_status_not_sent", error=str(err))
        await link.close()
        self._connected = False

    # ------------------------------------------------------------------ presence

    def _status(self, *, online: bool, reason: wire.StatusReason) -> wire.GatewayStatus:
        return wire.GatewayStatus(
            store_id=self.config.store_id,
            gateway_id=self.config.gateway_id,
            online=online,
            reason=reason,
            ts=self._clock.now(),
            agent_version=storegate.__version__,
            config_hash=self._config_hash,
            devices=self._devices.device_ids[:256] if online else [],
        )

    def _on_connect(self) -> None:
        link, window = self._link, self._window
        if link is None or window is None:
            return
        self._connects += 1
        self._connected = True
        self._disconnected_at = None
        self._publish_status("birth")
        # Whatever was in flight may be lost with the old connection; the hub's acks say what it has.
        window.request_rewind()
        self._wake_sender.set()
        self._wake_health.set()

    def _publish_status(self, reason: wire.StatusReason) -> None:
        link = self._link
        if link is None:
            return
        status = self._status(online=True, reason=reason)
        link.publish(self._status_topic, wire.encode(status), qos=1, retain=True)
        self._status_devices = status.devices

    def _devices_changed(self) -> None:
        """A device started or stopped: while connected, the retained status says so (the hub's gateway view)."""
        if self._connected and self._devices.device_ids[:256] != self._status_devices:
            self._publish_status("devices")

    def _on_disconnect(self, reason: str) -> None:
        self._connected = False
        if self._disconnected_at is None:
            self._disconnected_at = self._clock.monotonic()
            self._wake_health.set()

    # ------------------------------------------------------------------ writer

    async def _writer(self, outbox: Outbox) -> None:
        limit = self.config.outbox.commit_max_events
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
                if self._write_failing is None:
                    self._write_failing = (self._clock.monotonic(), str(err))
                    log.error("outbox_write_failing", error=str(err), readings=len(batch), waiting=self._queue.qsize())
                    self._wake_health.set()
                await asyncio.sleep(WRITE_RETRY.delay(attempt, self._rng))
        if self._write_failing is not None:
            failed_for_s = self._clock.monotonic() - self._write_failing[0]
            log.info("outbox_write_recovered", failed_for_s=round(failed_for_s, 1))
            self._write_failing = None
            self._wake_health.set()
        self._duplicates += result.duplicates
        if result.evicted:
            self._evicted_now(result.evicted, result.loss_events, disk_full=disk_full)
        else:
            self._eviction_over(outbox)
        self._committed += len(batch)
        self._wake_sender.set()
        async with self._commit_progress:
            self._commit_progress.notify_all()

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

    def _evicted_now(self, evicted: dict[wire.Priority, int], loss_events: int, *, disk_full: bool) -> None:
        self._evicted.update(evicted)
        count = sum(evicted.values())
        by_priority = {priority.name.lower(): n for priority, n in sorted(evicted.items())}
        config = self.config.outbox
        why = "the disk is full" if disk_full else f"{config.max_events:,} events or {config.max_bytes / 1e6:,.0f} MB"
        if self._evicting is None:
            log.warning(
                "outbox_evicting",
                reason="disk full" if disk_full else "quota full",
                evicted=by_priority,
                loss_events=loss_events,
                max_events=config.max_events,
                max_bytes=config.max_bytes,
            )
            self._wake_health.set()
        else:
            log.debug("outbox_evicted", evicted=by_priority, loss_events=loss_events)
        self._evicting = ((0 if self._evicting is None else self._evicting[0]) + count, why)

    def _eviction_over(self, outbox: Outbox) -> None:
        if self._evicting is None:
            return
        config = self.config.outbox
        if (
            outbox.depth() <= config.max_events * EVICTION_CLEAR_SHARE
            and outbox.size_bytes <= config.max_bytes * EVICTION_CLEAR_SHARE
        ):
            log.info("outbox_eviction_stopped", evicted=self._evicting[0], waiting=outbox.depth())
            self._evicting = None
            self._wake_health.set()

    # ------------------------------------------------------------------ sender

    async def _sender(self, outbox: Outbox, link: MqttLink, window: SendWindow) -> None:
        while True:
            # Cleared before looking at the state, so a wake-up during the look is not lost.
            self._wake_sender.clear()
            if await self._send_once(outbox, link, window):
                continue
            now = self._clock.monotonic()
            deadlines = [
                deadline
                for deadline in (
                    window.ack_deadline() if self._connected else None,
                    self._hold_until if self._connected else None,
                )
                if deadline is not None
            ]
            timeout = None if not deadlines else max(min(deadlines) - now, 0.0) + 0.001
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_sender.wait(), timeout=timeout)

    def _holding(self, outbox: Outbox, window: SendWindow, now: float) -> bool:
        """Whether to let a part-filled batch wait for more events: Nagle's rule, with a cap.

        While a batch is unacknowledged and fewer events than a full batch wait, publish
        nothing until the hub answers or a batch fills (at most HOLD_MAX_S). At a trickle
        with a fast hub nothing waits; under load batches grow to what the hub's pace
        allows, instead of one message, one hub transaction and one ack per reading.
        """
        self._hold_until = None
        if window.in_flight == 0:
            return False
        if outbox.last_seq - window.next_after >= self.config.outbox.max_batch:
            return False
        hold_until = self._last_publish_at + HOLD_MAX_S
        if now >= hold_until:
            return False
        self._hold_until = hold_until
        return True

    async def _send_once(self, outbox: Outbox, link: MqttLink, window: SendWindow) -> bool:
        """Publish the next events if connected and the window has room; True when something went out."""
        # Both: the link's flag flips first, and _on_connect (birth, rewind) runs a moment later.
        if not (self._connected and link.connected):
            return False
        now = self._clock.monotonic()
        unacked, silent_for = window.in_flight, window.stalled_for(now)
        reason = window.rewind_if_due(now)
        if reason is not None and unacked:
            log.info(
                "resending",
                reason=reason,
                from_seq=window.acked_seq + 1,
                events=unacked,
                silent_for_s=None if silent_for is None else round(silent_for, 1),
            )
        if window.next_after >= outbox.last_seq or self._holding(outbox, window, now):
            return False
        max_batch = self.config.outbox.max_batch
        limit, ahead_limit = min(max_batch, window.room()), min(max_batch, window.ahead_room())
        if limit <= 0 and ahead_limit <= 0:
            return False
        backlog, ahead = await outbox.read_for_send(
            after=window.next_after,
            ahead_through=window.skip_through,
            limit=limit,
            ahead_limit=ahead_limit,
            blocked_by_low=self._blocked_by_low,
        )
        if backlog:
            # What stood in the way the last time decides for a full window (nothing is read then).
            self._blocked_by_low = any(row.priority > wire.Priority.SALES for row in backlog)
        if not (backlog or ahead):
            return False
        now = self._clock.monotonic()
        # Ahead first: on the wire they overtake the backlog batch read with them.
        if ahead:
            self._publish_rows(link, ahead)
            self._resent += window.published_ahead([row.seq for row in ahead], now)
        if backlog:
            self._publish_rows(link, backlog)
            self._resent += window.published([row.seq for row in backlog], now)
        self._published += len(backlog) + len(ahead)
        self._last_publish_at = now
        return True

    def _publish_rows(self, link: MqttLink, rows: Sequence[OutboxRow]) -> None:
        prefix = self._prefix
        events = [event_json(prefix, row.body if row.intact else self._corrupt_body(row.seq)) for row in rows]
        head = (self._batch_head + self._clock.now().isoformat() + '","events":[').encode()
        for payload in encode_batches(events, head=head, max_bytes=wire.MAX_MESSAGE_BYTES):
            # If the connection dropped meanwhile, paho keeps the QoS 1 message for the next
            # connection, and the rewind on connect sends it again anyway: nothing is lost.
            link.publish(self._events_topic, payload, qos=1)

    def _corrupt_body(self, seq: int) -> bytes:
        """A loss record in place of a stored event that fails its checksum, under the same seq."""
        if seq not in self._corrupt_logged and len(self._corrupt_logged) < _CORRUPT_LOGGED_MAX:
            self._corrupt_logged.add(seq)
            log.error("stored_event_corrupt", seq=seq, detail="the stored JSON fails its CRC; sent as a loss record")
        loss = wire.DataLoss(
            ranges=[wire.SeqRange(first=seq, last=seq)],
            count=1,
            reason="corrupt",
            detail="the gateway's stored copy of this event failed its checksum",
        )
        stream = self._outbox.stream if self._outbox is not None else _PROBE_UUID
        event = NewEvent(
            device_id=self.config.gateway_id,
            kind=EventKind.OUTBOX_LOSS,
            ts=self._clock.now(),
            payload_json=loss.model_dump_json(),
            # The same id at every resend, so the hub stores the record once.
            event_id=str(uuid5(stream, f"corrupt:{seq}")),
        )
        return event_body(event, seq)

    # ------------------------------------------------------------------ acks

    async def _ack_handler(self, outbox: Outbox, link: MqttLink, window: SendWindow) -> None:
        async for message in link.messages():
            raws: list[bytes] = []
            incoming: Incoming | None = message
            while incoming is not None:
                if incoming.topic == self._commands_topic:
                    self._start_command(link, incoming.payload)
                else:
                    raws.append(incoming.payload)
                incoming = link.get_nowait() if len(raws) < ACK_COALESCE else None
            if not raws:
                continue
            try:
                await self._handle_acks(outbox, link, window, raws)
            except (sqlite3.Error, OSError, OutboxFullError) as err:
                # The next ack says the same again (acks are cumulative); the agent goes on.
                log.warning("ack_not_applied", error=str(err))

    # ------------------------------------------------------------------ commands

    def _start_command(self, link: MqttLink, raw: bytes) -> None:
        # Each command in its own task: a slow device never holds up acks or other devices' commands.
        task = asyncio.create_task(self._run_command(link, raw), name="agent command")
        self._command_tasks.add(task)
        task.add_done_callback(self._command_tasks.discard)

    async def _run_command(self, link: MqttLink, raw: bytes) -> None:
        try:
            command = wire.decode(wire.Command, raw)
        except wire.WireError as err:
            self._commands_rejected += 1
            log.warning("command_invalid", reason=err.reason, detail=err.detail)
            return  # without a valid command_id there is no one to answer
        if (command.store_id, command.gateway_id) != (self.config.store_id, self.config.gateway_id):
            log.warning("command_for_other_gateway", store_id=command.store_id, gateway_id=command.gateway_id)
            return
        result = self._command_results.get(command.command_id)
        if result is None:
            result = await self._execute(command)
            self._command_results[command.command_id] = result
            while len(self._command_results) > COMMAND_RESULTS_KEPT:
                self._command_results.pop(next(iter(self._command_results)))
        log.info("command_done", command=command.name, device_id=command.device_id, status=result.status)
        if link.connected:
            link.publish(self._command_results_topic, wire.encode(result), qos=1)

    async def _execute(self, command: wire.Command) -> wire.CommandResult:
        def answer(status: Literal["done", "failed", "rejected", "expired"], detail: str) -> wire.CommandResult:
            return wire.CommandResult(
                command_id=command.command_id,
                store_id=command.store_id,
                gateway_id=command.gateway_id,
                status=status,
                detail=detail[:2000],
                ts=self._clock.now(),
            )

        if command.expires_at is not None and command.expires_at <= self._clock.now():
            return answer("expired", f"expired at {command.expires_at.isoformat()}")
        if command.device_id is None:
            if command.name == "ping":
                return answer("done", "pong")
            return answer("rejected", f"the gateway has no command {command.name!r}; name a device_id")
        supervisor = self._devices.supervisor(command.device_id)
        if supervisor is None:
            known = ", ".join(self._devices.device_ids) or "none"
            return answer("rejected", f"no device {command.device_id!r} on this gateway (devices: {known})")
        try:
            return await asyncio.wait_for(supervisor.execute(command), COMMAND_TIMEOUT_S)
        except CommandNotSupportedError as err:
            return answer("rejected", str(err))
        except DriverError as err:
            return answer("failed", str(err))
        except TimeoutError:
            return answer("failed", f"no answer from {command.device_id} within {COMMAND_TIMEOUT_S:.0f} s")
        except Exception as err:  # a driver bug answers "failed" and is logged; the agent goes on
            log.error("command_crashed", command=command.name, device_id=command.device_id, exc_info=err)
            return answer("failed", f"the driver failed: {err!r}")

    def _valid_ack(self, outbox: Outbox, raw: bytes) -> wire.Ack | None:
        try:
            ack = wire.decode(wire.Ack, raw)
        except wire.WireError as err:
            log.warning("ack_invalid", reason=err.reason, detail=err.detail)
            return None
        if (ack.store_id, ack.gateway_id) != (self.config.store_id, self.config.gateway_id):
            log.warning("ack_for_other_gateway", store_id=ack.store_id, gateway_id=ack.gateway_id)
            return None
        if ack.stream != outbox.stream:
            if self._foreign_stream_logged != ack.stream:  # once per stream, not once per ack
                self._foreign_stream_logged = ack.stream
                log.warning("ack_for_other_stream", stream=str(ack.stream), ours=str(outbox.stream))
            return None
        if ack.through_seq > outbox.last_seq:
            # The hub claims events this outbox never had: trust none of it, delete nothing.
            log.warning("ack_beyond_outbox", through_seq=ack.through_seq, last_seq=outbox.last_seq)
            return None
        return ack

    async def _handle_acks(self, outbox: Outbox, link: MqttLink, window: SendWindow, raws: list[bytes]) -> None:
        acks = [ack for raw in raws if (ack := self._valid_ack(outbox, raw)) is not None]
        if not acks:
            return
        if window.heard_from_hub():
            self._wake_sender.set()  # the whole window is open again
        best = max(acks, key=lambda ack: ack.through_seq)
        if best.through_seq > window.acked_seq:
            deleted = await outbox.ack_through(best.through_seq)
            window.acknowledged(best.through_seq, self._clock.monotonic())
            self._acked += deleted
            self._acked_ts = best.ts
            self._eviction_over(outbox)
            self._wake_sender.set()
        # The latest ack is the hub's latest word on what it is missing.
        latest = acks[-1]
        if latest.through_seq >= outbox.acked_through:
            await outbox.forget_not_held()
        elif self._acked_ts is None or latest.ts > self._acked_ts:
            # Newer than the ack that took us further: the hub lost what it had acknowledged.
            await self._report_not_held(outbox, latest)
        if latest.gaps:
            await self._repair_gaps(outbox, link, window, latest.gaps)

    async def _report_not_held(self, outbox: Outbox, ack: wire.Ack) -> None:
        held_through = outbox.acked_through
        lost = wire.SeqRange(first=ack.through_seq + 1, last=held_through)
        # Without gaps the hub holds nothing above through_seq; with gaps, only those are known missing.
        missing = (
            [
                wire.SeqRange(first=max(gap.first, lost.first), last=min(gap.last, lost.last))
                for gap in ack.gaps
                if gap.first <= lost.last and gap.last >= lost.first
            ]
            if ack.gaps
            else [lost]
        )
        if not missing:
            return
        detail = (
            f"the hub had acknowledged through seq {held_through:,} and now holds only through "
            f"{ack.through_seq:,} (restored from an older backup?); the gateway deleted these after the "
            "earlier acknowledgement"
        )
        events = await outbox.report_not_held(missing, detail=detail)
        if events:
            log.warning(
                "hub_lost_acknowledged_events",
                hub_through_seq=ack.through_seq,
                acked_through=held_through,
                ranges=[(r.first, r.last) for r in merge_ranges(missing)][:20],
                loss_events=events,
            )
            self._wake_sender.set()

    async def _repair_gaps(
        self, outbox: Outbox, link: MqttLink, window: SendWindow, gaps: Sequence[wire.SeqRange]
    ) -> None:
        """Resend at once the gap seqs that were lost on the way, and that the outbox still holds.

        A gap may also be events still in flight: the hub holds a later event because it
        went ahead of the backlog. So a gap counts as lost only below a *witness* the backlog
        lane published after it: the seq right after a gap (which the hub holds) when it is
        no event sent ahead. MQTT keeps one connection's messages in order, so what the
        backlog lane published before the witness and the hub lacks is lost. Events sent
        ahead that went missing are repaired when the backlog passes them.
        """
        candidates = sorted({gap.last + 1 for gap in gaps if window.acked_seq < gap.last + 1 <= window.next_after})
        if not candidates or not (self._connected and link.connected):
            return
        found = await outbox.read_ranges([wire.SeqRange(first=seq, last=seq) for seq in candidates], limit=len(gaps))
        sent_ahead = int(wire.Priority.SALES)
        witness = max(
            (row.seq for row in found if row.priority > sent_ahead or row.seq > window.skip_through), default=None
        )
        if witness is None:
            return
        now = self._clock.monotonic()
        timeout = self.config.outbox.ack_timeout_s
        # Resent ones get an ack timeout to arrive before they are resent again.
        self._gap_resent = {
            seq: at for seq, at in self._gap_resent.items() if seq > window.acked_seq and now - at < timeout
        }
        lost = [
            wire.SeqRange(first=max(gap.first, window.acked_seq + 1), last=min(gap.last, witness - 1))
            for gap in gaps
            if gap.last > window.acked_seq and gap.first < witness
        ]
        room = self.config.outbox.max_in_flight - len(self._gap_resent)
        if not lost or room <= 0:
            return
        rows = [row for row in await outbox.read_ranges(lost, limit=room) if row.seq not in self._gap_resent]
        if not rows:
            return
        max_batch = self.config.outbox.max_batch
        for start in range(0, len(rows), max_batch):
            self._publish_rows(link, rows[start : start + max_batch])
        for row in rows:
            self._gap_resent[row.seq] = now
        self._resent += len(rows)
        self._published += len(rows)
        log.info("gap_resent", events=len(rows), first_seq=rows[0].seq, last_seq=rows[-1].seq)

    # ------------------------------------------------------------------ health

    async def _health_publisher(self, link: MqttLink) -> None:
        interval_s = self.config.health.interval_s
        next_report = self._clock.monotonic() + interval_s  # or at the first connect
        await self._write_status(running=True)  # at once, so `storegate agent status` has something to say
        while True:
            now = self._clock.monotonic()
            self._publish_rate.sample(now, self._published)
            self._ack_rate.sample(now, self._acked)
            if self._wake_health.is_set() or now >= next_report:
                self._wake_health.clear()
                next_report = now + interval_s
                await self._report(link)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake_health.wait(), timeout=max(0.0, min(RATE_SAMPLE_S, next_report - now))
                )

    async def _report(self, link: MqttLink) -> None:
        report = self.health()
        if report.problems and not self._problems_logged:
            log.warning("health_degraded", problems=report.problems)
        elif not report.problems and self._problems_logged:
            log.info("health_recovered")
        self._problems_logged = bool(report.problems)
        if link.connected:
            link.publish(self._health_topic, wire.encode(report), qos=0, retain=True)
        await self._write_status(running=True, report=report)

    async def _write_status(self, *, running: bool, report: wire.GatewayHealth | None = None) -> None:
        report = report or self.health()
        stats = self.stats
        now = self._clock.monotonic()
        status = AgentStatusFile(
            pid=os.getpid(),
            written_at=self._clock.now(),
            running=running,
            store_id=self.config.store_id,
            gateway_id=self.config.gateway_id,
            broker=self.config.mqtt.address,
            connected=stats.connected,
            disconnected_for_s=None if self._disconnected_at is None else now - self._disconnected_at,
            health_interval_s=self.config.health.interval_s,
            outbox_depth=stats.depth,
            outbox_bytes=stats.size_bytes,
            oldest_unacked_age_s=stats.oldest_unacked_age_s,
            publish_rate=stats.publish_rate,
            ack_rate=stats.ack_rate,
            published_total=stats.published,
            acked_total=stats.acked,
            resent_total=stats.resent,
            evicted_total=stats.evicted,
            evicted_by_priority=dict(stats.evicted_by_priority),
            reconnects_total=stats.reconnects,
            duplicates_total=stats.duplicates,
            rejected_total=stats.rejected,
            problems=report.problems,
        )
        try:
            await asyncio.to_thread(write_status, self.status_path, status)
        except OSError as err:
            if not self._status_failing:
                log.warning("status_file_not_written", path=str(self.status_path), error=str(err))
            self._status_failing = True
        else:
            self._status_failing = False

    def _hub_silent_for(self, now: float) -> float | None:
        silent_for = None if self._window is None else self._window.hub_silent_for(now)
        return silent_for if silent_for is not None and silent_for >= self.config.outbox.ack_timeout_s else None

    def health(self) -> wire.GatewayHealth:
        """The health report as of now, as the agent publishes it."""
        stats = self.stats
        now = self._clock.monotonic()
        write_failing = self._write_failing
        problems = describe_problems(
            broker=self.config.mqtt.address,
            connected=stats.connected,
            disconnected_for_s=None if self._disconnected_at is None else now - self._disconnected_at,
            depth=stats.depth,
            ack_stalled_for_s=self._hub_silent_for(now),
            write_failing=None if write_failing is None else (now - write_failing[0], write_failing[1]),
            devices_down=[
                (device.device_id, down_for, device.last_error)
                for device in self._devices.supervisors
                if (down_for := device.down_for(now)) is not None
            ],
            queued=self._queue.qsize(),
            evicting=self._evicting,
        )
        return wire.GatewayHealth(
            store_id=self.config.store_id,
            gateway_id=self.config.gateway_id,
            ts=self._clock.now(),
            outbox_depth=stats.depth,
            oldest_unacked_age_s=stats.oldest_unacked_age_s,
            published_total=stats.published,
            acked_total=stats.acked,
            resent_total=stats.resent,
            reconnects_total=stats.reconnects,
            evicted_total=stats.evicted,
            duplicates_dropped_total=stats.duplicates,
            outbox_bytes=stats.size_bytes,
            publish_rate=round(stats.publish_rate, 1),
            ack_rate=round(stats.ack_rate, 1),
            problems=problems,
        )
