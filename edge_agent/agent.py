"""The edge agent: device readings in, durable events out, deleted only when the hub has them.

Data path::

    drivers --record()--> bounded queue --writer--> SQLite outbox --sender--> MQTT events topic
                                                          ^                          |
                                                          +---- ack handler <--------+ hub's Ack

- The writer commits as many queued readings per transaction as are waiting (up
  to ``commit_max_events``), so one fsync makes a whole group durable.
- The sender publishes rows after the cursor of its :class:`SendWindow`, at most
  ``max_in_flight`` unacknowledged, and rewinds after every (re)connect and
  after ``ack_timeout_s`` without the hub's ``through_seq`` moving. The hub
  stores idempotently, so this is at-least-once.
- The ack handler deletes rows up to ``through_seq`` of this outbox's stream.
- Each device runs in its own :class:`DeviceSupervisor` task.
- Presence: a retained birth status on every connect, a retained "lost" last
  will, and a retained "shutdown" status on a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, Final, Literal
from uuid import UUID

import structlog
from pydantic import JsonValue, ValidationError

import storegate
from device_drivers.base import Reading
from edge_agent.config import AgentConfig, config_hash
from edge_agent.devices import DeviceSupervisor, DriverFactory, make_driver
from edge_agent.errors import AgentFailedError, AgentStoppedError, InvalidReadingError
from edge_agent.health import AgentStats, MetricsServer, agent_registry, describe_problems
from edge_agent.outbox import NewEvent, Outbox, StoredEvent
from edge_agent.timing import Backoff, Clock, SystemClock
from edge_agent.window import SendWindow
from storegate import wire
from storegate.mqtt import MqttLink, Will

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

# Stand-ins to check a reading against the wire contract before it is stored.
_PROBE_UUID: Final = UUID(int=0)

StatusReason = Literal["birth", "shutdown", "lost"]


def encode_batches(
    events: list[wire.Event], *, store_id: str, gateway_id: str, sent_at: datetime, max_bytes: int
) -> list[bytes]:
    """Encode events as EventBatch messages in seq order, halving any message above ``max_bytes``."""
    payload = wire.encode(wire.EventBatch(store_id=store_id, gateway_id=gateway_id, sent_at=sent_at, events=events))
    if len(payload) <= max_bytes or len(events) == 1:
        return [payload]
    half = len(events) // 2
    return [
        *encode_batches(events[:half], store_id=store_id, gateway_id=gateway_id, sent_at=sent_at, max_bytes=max_bytes),
        *encode_batches(events[half:], store_id=store_id, gateway_id=gateway_id, sent_at=sent_at, max_bytes=max_bytes),
    ]


class EdgeAgent:
    """One gateway's agent. Runs once: ``await agent.run(stop)`` until ``stop`` is set.

    ``clock``, ``driver_factory``, ``device_backoff`` and ``rng`` are seams for tests.
    """

    def __init__(
        self,
        *,
        config: AgentConfig,
        clock: Clock | None = None,
        driver_factory: DriverFactory = make_driver,
        device_backoff: Backoff | None = None,
        rng: random.Random | None = None,
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

        self._queue: asyncio.Queue[NewEvent] = asyncio.Queue(maxsize=config.outbox.queue_size)
        self._accepting = True
        self._ran = False
        self._outbox: Outbox | None = None
        self._link: MqttLink | None = None
        self._window: SendWindow | None = None
        self._oldest_ts: datetime | None = None

        # Group commit: readings queued, readings committed, and a condition to wait on.
        self._recorded = 0
        self._committed = 0
        self._commit_progress = asyncio.Condition()
        self._write_failing: tuple[float, str] | None = None  # (since, error) while the outbox rejects writes

        self._wake_sender = asyncio.Event()
        self._wake_health = asyncio.Event()
        self._connected = False
        self._connects = 0
        self._disconnected_at: float | None = None
        self._foreign_stream_logged: UUID | None = None
        self._problems_logged = False

        self._published = 0
        self._acked = 0
        self._resent = 0
        self._rejected = 0

        backoff = device_backoff or Backoff()
        self._devices = [
            DeviceSupervisor(
                config=device,
                factory=driver_factory,
                record=self.record,
                backoff=backoff,
                clock=self._clock,
                rng=self._rng,
            )
            for device in config.devices
        ]
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
        oldest, window = self._oldest_ts, self._window
        return AgentStats(
            depth=0 if self._outbox is None else self._outbox.depth(),
            published=self._published,
            acked=self._acked,
            resent=self._resent,
            reconnects=max(self._connects - 1, 0),
            rejected=self._rejected,
            last_ack_seq=0 if window is None else window.acked_seq,
            connected=self._connected,
            oldest_unacked_age_s=None if oldest is None else max(0.0, (self._clock.now() - oldest).total_seconds()),
            devices_up=tuple((device.device_id, device.up) for device in self._devices),
        )

    @property
    def stream(self) -> UUID | None:
        """The outbox's stream UUID once the agent has opened it, else None."""
        return None if self._outbox is None else self._outbox.stream

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on while the agent runs (the bound one when configured as 0)."""
        return None if self._metrics is None else self._metrics.port

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
            # allow_nan=False: NaN is not JSON, and the hub would reject the whole batch for it.
            size = len(json.dumps(event.payload, separators=(",", ":"), allow_nan=False).encode())
        except (ValidationError, ValueError) as err:
            self._rejected += 1
            raise InvalidReadingError(f"{reading.kind} reading from {reading.device_id!r} is invalid: {err}") from err
        if size > MAX_PAYLOAD_BYTES:
            self._rejected += 1
            raise InvalidReadingError(
                f"{reading.kind} reading from {reading.device_id!r} has a {size:,}-byte payload; "
                f"the limit is {MAX_PAYLOAD_BYTES:,}"
            )
        return NewEvent(device_id=event.device_id, kind=event.kind, ts=event.ts, payload=event.payload)

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then drain queued readings into the outbox and disconnect cleanly.

        Raises OutboxError when the outbox cannot be opened, OSError when the metrics
        port cannot be bound, and AgentFailedError when one of the agent's own tasks fails.
        """
        if self._ran:
            raise RuntimeError("an EdgeAgent runs once; create a new one to run again")
        self._ran = True
        try:
            async with Outbox(path=self.config.outbox.path) as outbox:
                self._outbox = outbox
                await self._run_with_outbox(outbox, stop)
        finally:
            self._accepting = False

    async def _run_with_outbox(self, outbox: Outbox, stop: asyncio.Event) -> None:
        first_waiting = await outbox.first_seq()
        self._window = window = SendWindow(
            acked_seq=outbox.last_seq if first_waiting is None else first_waiting - 1,
            max_in_flight=self.config.outbox.max_in_flight,
            ack_timeout_s=self.config.outbox.ack_timeout_s,
            now=self._clock.monotonic(),
        )
        self._oldest_ts = await outbox.oldest_ts()
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
            subscriptions=[(self._ack_topic, 1)],
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
            await link.__aenter__()
            jobs: dict[str, Coroutine[Any, Any, None]] = {
                "writer": self._writer(outbox),
                "sender": self._sender(outbox, link, window),
                "ack handler": self._ack_handler(outbox, link, window),
                "health publisher": self._health_publisher(link),
            }
            core = {asyncio.create_task(job, name=f"agent {name}"): name for name, job in jobs.items()}
            devices = [asyncio.create_task(device.run(), name=f"device {device.device_id}") for device in self._devices]
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
        for task in devices:
            task.cancel()
        await asyncio.gather(*devices, return_exceptions=True)
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

    def _status(self, *, online: bool, reason: StatusReason) -> wire.GatewayStatus:
        return wire.GatewayStatus(
            store_id=self.config.store_id,
            gateway_id=self.config.gateway_id,
            online=online,
            reason=reason,
            ts=self._clock.now(),
            agent_version=storegate.__version__,
            config_hash=self._config_hash,
            devices=[device.device_id for device in self.config.devices] if online else [],
        )

    def _on_connect(self) -> None:
        link, window = self._link, self._window
        if link is None or window is None:
            return
        self._connects += 1
        self._connected = True
        self._disconnected_at = None
        link.publish(self._status_topic, wire.encode(self._status(online=True, reason="birth")), qos=1, retain=True)
        # Whatever was in flight may be lost with the old connection; the hub's acks say what it has.
        window.request_rewind()
        self._wake_sender.set()
        self._wake_health.set()

    def _on_disconnect(self, reason: str) -> None:
        self._connected = False
        if self._disconnected_at is None:
            self._disconnected_at = self._clock.monotonic()

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
                stored = await outbox.append(batch)
                break
            except (sqlite3.Error, OSError) as err:
                # Keep the readings and retry; meanwhile devices wait on the full queue.
                attempt += 1
                if self._write_failing is None:
                    self._write_failing = (self._clock.monotonic(), str(err))
                    log.error("outbox_write_failing", error=str(err), readings=len(batch))
                await asyncio.sleep(WRITE_RETRY.delay(attempt, self._rng))
        if self._write_failing is not None:
            failed_for_s = self._clock.monotonic() - self._write_failing[0]
            log.info("outbox_write_recovered", failed_for_s=round(failed_for_s, 1))
            self._write_failing = None
        if self._oldest_ts is None:
            self._oldest_ts = stored[0].ts
        self._committed += len(batch)
        self._wake_sender.set()
        async with self._commit_progress:
            self._commit_progress.notify_all()

    # ------------------------------------------------------------------ sender

    async def _sender(self, outbox: Outbox, link: MqttLink, window: SendWindow) -> None:
        while True:
            # Cleared before looking at the state, so a wake-up during the look is not lost.
            self._wake_sender.clear()
            if await self._send_once(outbox, link, window):
                continue
            deadline = window.ack_deadline() if self._connected else None
            timeout = None if deadline is None else max(deadline - self._clock.monotonic(), 0.0) + 0.01
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_sender.wait(), timeout=timeout)

    async def _send_once(self, outbox: Outbox, link: MqttLink, window: SendWindow) -> bool:
        """Publish the next batch if connected and the window has room; True when something went out."""
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
        limit = min(self.config.outbox.max_batch, window.room())
        if limit <= 0:
            return False
        rows = await outbox.read_after(window.next_after, limit)
        if not rows:
            return False
        events = [self._wire_event(row, outbox.stream) for row in rows]
        for payload in encode_batches(
            events,
            store_id=self.config.store_id,
            gateway_id=self.config.gateway_id,
            sent_at=self._clock.now(),
            max_bytes=wire.MAX_MESSAGE_BYTES,
        ):
            # If the connection dropped meanwhile, paho keeps the QoS 1 message for the next
            # connection, and the rewind on connect sends it again anyway: nothing is lost.
            link.publish(self._events_topic, payload, qos=1)
        self._published += len(rows)
        self._resent += window.published([row.seq for row in rows], self._clock.monotonic())
        return True

    def _wire_event(self, row: StoredEvent, stream: UUID) -> wire.Event:
        def event(device_id: str, kind: str, payload: dict[str, JsonValue]) -> wire.Event:
            return wire.Event(
                event_id=row.event_id,
                store_id=self.config.store_id,
                gateway_id=self.config.gateway_id,
                stream=stream,
                seq=row.seq,
                device_id=device_id,
                kind=kind,
                ts=row.ts,
                payload=payload,
            )

        try:
            return event(row.device_id, row.kind, row.payload)
        except ValidationError as err:
            # Only for a row an older agent stored under rules since tightened. A loss record
            # under its seq keeps the stream contiguous instead of blocking it forever.
            log.error("stored_event_invalid", seq=row.seq, event_id=str(row.event_id), error=str(err))
            loss = wire.DataLoss(
                first_seq=row.seq, last_seq=row.seq, count=1, reason=f"stored {row.kind} event is no longer valid"
            )
            return event(self.config.gateway_id, "outbox.loss", loss.model_dump(mode="json"))

    # ------------------------------------------------------------------ acks

    async def _ack_handler(self, outbox: Outbox, link: MqttLink, window: SendWindow) -> None:
        async for message in link.messages():
            await self._handle_ack(outbox, window, message.payload)

    async def _handle_ack(self, outbox: Outbox, window: SendWindow, raw: bytes) -> None:
        try:
            ack = wire.decode(wire.Ack, raw)
        except wire.WireError as err:
            log.warning("ack_invalid", reason=err.reason, detail=err.detail)
            return
        if (ack.store_id, ack.gateway_id) != (self.config.store_id, self.config.gateway_id):
            log.warning("ack_for_other_gateway", store_id=ack.store_id, gateway_id=ack.gateway_id)
            return
        if ack.stream != outbox.stream:
            if self._foreign_stream_logged != ack.stream:  # once per stream, not once per ack
                self._foreign_stream_logged = ack.stream
                log.warning("ack_for_other_stream", stream=str(ack.stream), ours=str(outbox.stream))
            return
        if ack.through_seq > outbox.last_seq:
            # The hub claims events this outbox never had: trust none of it, delete nothing.
            log.warning("ack_beyond_outbox", through_seq=ack.through_seq, last_seq=outbox.last_seq)
            return
        if ack.through_seq <= window.acked_seq:
            return  # a duplicate, or late for rows already deleted
        deleted = await outbox.ack_through(ack.through_seq)
        window.acknowledged(ack.through_seq, self._clock.monotonic())
        self._acked += deleted
        self._oldest_ts = await outbox.oldest_ts() if outbox.depth() else None
        self._wake_sender.set()

    # ------------------------------------------------------------------ health

    async def _health_publisher(self, link: MqttLink) -> None:
        interval_s = self.config.health.interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_health.wait(), timeout=interval_s)
            self._wake_health.clear()
            report = self.health()
            if report.problems and not self._problems_logged:
                log.warning("health_degraded", problems=report.problems)
            elif not report.problems and self._problems_logged:
                log.info("health_recovered")
            self._problems_logged = bool(report.problems)
            if link.connected:
                link.publish(self._health_topic, wire.encode(report), qos=0, retain=True)

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
                for device in self._devices
                if (down_for := device.down_for(now)) is not None
            ],
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
            problems=problems,
        )
