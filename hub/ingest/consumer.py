"""The hub's MQTT consumer: gateways' events, status and health into the database, then acknowledgements.

Three layers, so each can be tested alone:

* :func:`~hub.ingest.classify.classify` is pure: one MQTT message in, a decoded message or a
  :class:`~hub.ingest.rejections.Rejection` out.
* :func:`~hub.ingest.unit.store_messages` writes a list of classified messages inside the caller's
  transaction and computes the Acks; it never commits and never touches MQTT.
* :class:`Ingestor` (here) drains the MQTT queue into units of work, commits each unit, and
  only after the commit publishes the Acks. Nothing is acknowledged that is not stored.
  While a unit is being stored it decodes the messages already waiting behind it.
  With ``linger_s`` (the ``ingest_linger_ms`` setting) it waits that long at most for more messages before a
  unit that has fewer than ``linger_messages`` (group commit: a transaction's cost hardly depends on its size).

A bad message never stops the consumer: it is counted in
``storegate_hub_rejected_messages_total{reason}``, logged with its topic and reason,
kept (its first 2 KB) in ``rejected_messages``, and the next message is processed. Everything from a
gateway that is not enrolled, or was revoked, is refused that way (reasons ``unknown_gateway`` and
``revoked_gateway``).

A bad event never stalls its gateway's stream: an invalid event of a batch (:mod:`hub.ingest.classify`), or
one the database refuses (found by storing the batch event by event, :func:`~hub.ingest.unit.find_unstorable`),
is set aside in ``refused_events`` and counted in ``storegate_hub_refused_events_total{reason}``; the rest of
the batch is stored, and the Ack moves past the refused seqs so the gateway deletes them.

A wrong gateway clock never costs an event: one whose device time the hub does not believe
(:mod:`hub.ingest.clock`) is stored with ``clock_issue`` set, counted in
``storegate_hub_events_clock_suspect_total{store,gateway,issue}`` and logged once per gateway per
``CLOCK_LOG_PERIOD_S``.
"""

from __future__ import annotations

import asyncio
import time
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any, Final, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.db import writegate
from hub.db.engine import describe_error, ping, session_factory
from hub.db.writegate import NO_TURNS, WriteGate
from hub.ingest.classify import (
    CHANNEL_OF,
    CONSUMED_CHANNELS,
    BatchMessage,
    Classified,
    Cleared,
    HealthMessage,
    StatusMessage,
    classify,
    weight,
)
from hub.ingest.clock import EventClockSettings
from hub.ingest.eventlog import DEFAULT_CLOCK, ClockSuspects, LossRecord
from hub.ingest.operations import HubOperations
from hub.ingest.rejections import Rejection, SetAside
from hub.ingest.seqs import describe
from hub.ingest.unit import StoreLocker, UnitResult, find_unstorable, store_messages
from hub.metrics import HubMetrics
from storegate import wire
from storegate.mqtt import TAKEN_RC, Incoming
from storegate.tasks import BackgroundTask, wait_for_event

log = structlog.get_logger(__name__)

# Times the database may refuse a single message, while answering SELECT 1, before it is rejected.
MAX_REFUSALS: Final = 3
# Shared mode: the pause before a unit whose every message was held (batches above a gap) is tried again.
HOLD_PAUSE_S: Final = 0.02
# At most one line per gateway in this long about its clock (the counter counts every event).
CLOCK_LOG_PERIOD_S: Final = 600.0


def subscriptions(shared_group: str | None) -> list[tuple[str, int]]:
    """The hub's subscriptions at QoS 1, as shared subscriptions when a group is given."""
    prefix = f"$share/{shared_group}/" if shared_group else ""
    return [(prefix + wire.subscription(channel), 1) for channel in CONSUMED_CHANNELS]


class MessageLink(Protocol):
    """What the consumer needs of an MQTT connection (:class:`storegate.mqtt.MqttLink` has it)."""

    def messages(self) -> AsyncIterator[Incoming]:
        """Incoming messages, forever."""
        ...

    def get_nowait(self) -> Incoming | None:
        """One waiting message, or None."""
        ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Any:
        """Queue a message for sending."""
        ...


class _LogLimiter:
    """At most ``limit`` log lines per key and window; the number left out is reported with the next one."""

    def __init__(self, *, limit: int = 20, window_s: float = 60.0) -> None:
        self._limit = limit
        self._window_s = window_s
        self._state: dict[str, tuple[float, int, int]] = {}  # key -> (window start, logged, suppressed)

    def admit(self, key: str) -> tuple[bool, int]:
        """Whether to log now, and how many lines of this key were left out before."""
        now = time.monotonic()
        start, logged, suppressed = self._state.get(key, (now, 0, 0))
        if now - start >= self._window_s:
            start, logged = now, 0
        if logged < self._limit:
            self._state[key] = (start, logged + 1, 0)
            return True, suppressed
        self._state[key] = (start, logged, suppressed + 1)
        return False, 0


class Ingestor:
    """Consumes gateway messages from ``link`` into the database and acknowledges stored events.

    ``start`` launches the consumer task, ``stop`` ends it after the unit in progress.
    While the database is unreachable the consumer holds its unit, retries with backoff
    and takes no further messages, so the bounded MQTT queue and the broker's persistent
    session hold the rest; nothing is acknowledged until it is committed.
    """

    def __init__(
        self,
        *,
        link: MessageLink,
        engine: AsyncEngine,
        metrics: HubMetrics,
        max_events_per_transaction: int = 5000,
        linger_s: float = 0.0,
        linger_messages: int = 32,
        rejected_keep: int = 10_000,
        retry_max_s: float = 10.0,
        clock: Callable[[], datetime] = wire.utc_now,
        operations: HubOperations | None = None,
        write_gate: WriteGate | None = None,
        accept_unknown_gateways: bool = False,
        event_clock: EventClockSettings = DEFAULT_CLOCK,
        store_locks: StoreLocker | None = None,
    ) -> None:
        self._link = link
        # N workers on a shared subscription: each unit locks its stores (hub.ingest.shared); one process: None.
        self._store_locks = store_locks
        self._carried: set[int] = set()  # ids of the items deferred by the last unit (shared mode)
        self._event_clock = event_clock
        # Off in production: a gateway must be enrolled before anything of it is accepted.
        self._accept_unknown = accept_unknown_gateways
        self._operations = operations
        # One gate for every writer of the process: the operations' when there are operations.
        if write_gate is None:
            write_gate = operations.write_gate if operations is not None else NO_TURNS
        self._gate = write_gate
        self._engine = engine
        self._sessions: async_sessionmaker[AsyncSession] = session_factory(engine)
        self.metrics = metrics
        self._max_events = max_events_per_transaction
        # Group commit: a transaction costs a fixed number of statements whatever it carries, so at moderate rates
        # (a message or two waiting) a short wait for more makes fewer, fuller transactions.
        self._linger_s = linger_s
        self._linger_messages = linger_messages
        self._pending: asyncio.Future[Incoming] | None = None  # the wait for a message a linger left open
        self._stop_waiter: asyncio.Future[Any] | None = None
        self._rejected_keep = rejected_keep
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._stopping = asyncio.Event()
        self._idle = False
        self._consumer = BackgroundTask(self._run, name="storegate-hub-ingest")
        self._log_limiter = _LogLimiter()
        # A gateway whose clock is off flags every event it sends: one line per gateway and period says so.
        self._clock_log_limiter = _LogLimiter(limit=1, window_s=CLOCK_LOG_PERIOD_S)
        self.database_ok = True
        self.last_database_error: str | None = None
        self.units_committed = 0
        self.metrics.database_up.set(1)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the consumer task on the running loop."""
        self._consumer.start()

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Finish the unit in progress (up to ``timeout`` seconds), then end the task."""
        self._stopping.set()
        if not self._consumer.running:
            return
        if self._idle:  # waiting for a message: nothing in hand to finish
            self._consumer.cancel()
        if not await self._consumer.wait(timeout):
            log.warning("ingest_stop_timeout", timeout_s=timeout)
            await self._consumer.stop()

    @property
    def failure(self) -> BaseException | None:
        """The exception that ended the consumer task, if it ended by one."""
        return self._consumer.failure

    @property
    def running(self) -> bool:
        """Whether the consumer task is alive."""
        return self._consumer.running

    async def _run(self) -> None:
        messages = aiter(self._link.messages())
        ahead: list[Classified] = []
        try:
            while not self._stopping.is_set():
                if not ahead:
                    self._idle = True
                    try:
                        first = await self._next(messages)
                    finally:
                        self._idle = False
                    ahead = [classify(first, received_at=self._clock())]
                items = self._drain(ahead)
                if self._linger_s > 0 and len(items) < self._linger_messages:
                    await self._linger(items, messages)
                unit = asyncio.ensure_future(self._handle(items))
                # Decode what is waiting while the unit is stored: PostgreSQL works meanwhile in its own process.
                # (SQLite's thread needs the GIL back for every row it binds, so there it overlaps little.)
                try:
                    ahead = await self._classify_while(unit)
                    result = await unit
                    if result.deferred:  # shared mode: busy stores, batches above a gap; first in the next unit
                        self._carried = {id(item) for item in result.deferred}
                        ahead = result.deferred + ahead
                        if len(result.deferred) == len(items):  # nothing could go: let the other workers commit
                            await self._stopped_within(HOLD_PAUSE_S)  # a pause, not a synchronisation
                except asyncio.CancelledError:
                    unit.cancel()  # stopping: the unit goes with the consumer, as when it was awaited alone
                    raise
                except Exception:  # a bug must not end ingestion for every store; nothing of this unit is acked
                    log.exception("ingest_unit_failed", messages=len(items))
        finally:
            for waiting in (self._pending, self._stop_waiter):
                if waiting is not None:
                    waiting.cancel()

    async def _next(self, messages: AsyncIterator[Incoming]) -> Incoming:
        """The next message, waited for (the wait a linger left open first)."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(anext(messages))
        try:
            return await self._pending
        finally:
            self._pending = None

    def _next_nowait(self) -> Incoming | None:
        """The next message if one is in hand: the open wait's first (it came before any still queued)."""
        if self._pending is not None and self._pending.done():
            pending, self._pending = self._pending, None
            return pending.result()
        return self._link.get_nowait()

    async def _linger(self, items: list[Classified], messages: AsyncIterator[Incoming]) -> None:
        """Add to ``items`` what arrives within the linger, until ``linger_messages`` or the events budget.

        Bounded by ``linger_s`` from its start whatever arrives. The wait for the next message still open when
        it ends is kept for the next unit (cancelling it would end the link's iterator, and could lose one).
        """
        deadline = time.monotonic() + self._linger_s
        budget = self._max_events - sum(weight(item) for item in items)
        while len(items) < self._linger_messages and budget > 0 and not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self._pending is None:
                self._pending = asyncio.ensure_future(anext(messages))
            if self._stop_waiter is None:  # one for the consumer's life: stop() must not wait out a linger
                self._stop_waiter = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({self._pending, self._stop_waiter}, timeout=remaining, return_when=FIRST_COMPLETED)
            if not self._pending.done():
                break
            before = len(items)
            self._drain_into(items, budget)
            budget -= sum(weight(item) for item in items[before:])

    def _drain(self, items: list[Classified]) -> list[Classified]:
        """``items`` and the messages waiting behind them, up to the events budget, classified."""
        self._drain_into(items, self._max_events - sum(weight(item) for item in items))
        return items

    def _drain_into(self, items: list[Classified], budget: int) -> None:
        """Append the messages waiting, classified, while ``budget`` events are left."""
        received_at = self._clock()
        while budget > 0:
            incoming = self._next_nowait()
            if incoming is None:
                break
            items.append(classify(incoming, received_at=received_at))
            budget -= weight(items[-1])

    async def _classify_while(self, unit: asyncio.Future[UnitResult]) -> list[Classified]:
        """Messages already waiting, classified while ``unit`` is in progress (at most one unit's budget).

        Only what is already queued is taken: a message that has not arrived is not waited for, so
        nothing is delayed. Classified messages not yet stored are not acknowledged either: if the
        hub stops, the gateways send them again.
        """
        ahead: list[Classified] = []
        budget = self._max_events
        while budget > 0 and not unit.done():
            incoming = self._next_nowait()
            if incoming is None:
                break
            ahead.append(classify(incoming, received_at=self._clock()))
            budget -= weight(ahead[-1])
            await asyncio.sleep(0)  # let the unit's database replies through between messages
        return ahead

    async def process(self, incoming: Sequence[Incoming]) -> UnitResult:
        """Classify, store and acknowledge ``incoming`` as one unit (the consumer task does this per drain)."""
        received_at = self._clock()
        return await self._handle([classify(message, received_at=received_at) for message in incoming])

    # ------------------------------------------------------------------ one unit

    async def _handle(self, items: list[Classified]) -> UnitResult:
        carried, self._carried = self._carried, set()
        for item in items:
            if id(item) in carried:  # counted when it came, the unit before
                continue
            if isinstance(item, Rejection):
                self._note_rejection(item)
            elif isinstance(item, Cleared):
                log.info("retained_message_cleared", topic=item.topic)
            else:
                self.metrics.messages_received.labels(channel=CHANNEL_OF[type(item)].value).inc()
        result = await self._store_resilient(items)
        self._after_commit(result)
        return result

    async def _commit(self, items: Sequence[Classified]) -> UnitResult:
        async with self._gate.turn(writegate.INGEST):  # the wait for it is measured by the gate, not here
            started = time.perf_counter()
            operations = self._operations
            if operations is None:
                async with self._sessions() as session, session.begin():
                    result = await store_messages(
                        session,
                        items,
                        now=self._clock(),
                        rejected_keep=self._rejected_keep,
                        accept_unknown_gateways=self._accept_unknown,
                        clock=self._event_clock,
                        store_locks=self._store_locks,
                        defer_busy=True,
                    )
            else:
                async with operations.unit():
                    async with self._sessions() as session, session.begin():
                        result = await store_messages(
                            session,
                            items,
                            now=self._clock(),
                            rejected_keep=self._rejected_keep,
                            operations=operations,
                            accept_unknown_gateways=self._accept_unknown,
                            clock=self._event_clock,
                            store_locks=self._store_locks,
                            defer_busy=True,
                        )
                    for outcome in result.operations:
                        operations.committed(outcome)
            self.metrics.batch_commit_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_events.observe(result.stored + result.duplicates)
        self.units_committed += 1
        return result

    async def _store_resilient(self, items: Sequence[Classified]) -> UnitResult:
        """Commit ``items``; wait out a database outage; isolate and reject an item the database refuses."""
        backoff = 0.5
        refusals = 0
        while True:
            try:
                result = await self._commit(items)
            except Exception as err:  # drivers raise more than SQLAlchemyError (OverflowError, OSError, ...)
                self.metrics.commit_failures.inc()
                if not await self._database_reachable():
                    self._database_down(err)
                    if await self._stopped_within(backoff):
                        log.warning("ingest_unit_abandoned", messages=len(items), why="stopping during outage")
                        return UnitResult()
                    backoff = min(backoff * 2, self._retry_max_s)
                    continue
                self._database_up()
                if len(items) == 1:
                    refusals += 1
                    # A lock timeout or a serialisation failure passes on a second try; a bad value does not.
                    if refusals < MAX_REFUSALS:
                        continue
                    item = items[0]
                    if isinstance(item, BatchMessage) and item.batch.events:
                        return await self._set_aside_unstorable(item, err)
                    return await self._reject_unstorable(item, err)
                # One item broke the transaction; store the others one by one and reject that one.
                log.warning("ingest_unit_isolating", messages=len(items), error=describe_error(err))
                merged = UnitResult()
                for item in items:
                    merged.extend(await self._store_resilient([item]))
                return merged
            self._database_up()
            return result

    async def _set_aside_unstorable(self, item: BatchMessage, err: BaseException) -> UnitResult:
        """A batch the database refuses: set aside the events it refuses, store and acknowledge the rest.

        The events it refuses are found by storing the batch event by event in savepoints, in a transaction
        that is then rolled back; the batch is stored again without them. A single event is set aside at once.
        """
        batch = item.batch
        log.warning(
            "ingest_batch_event_by_event",
            store_id=batch.store_id,
            gateway_id=batch.gateway_id,
            events=len(batch.events),
            error=describe_error(err),
        )
        if len(batch.events) == 1:
            refused = [(batch.events[0], err)]
        else:
            try:
                refused = await self._find_unstorable(item)
            except Exception as probe_err:  # drivers raise more than SQLAlchemyError
                if not await self._database_reachable():  # gone meanwhile: hold the batch and start over
                    log.warning("ingest_event_by_event_interrupted", error=describe_error(probe_err))
                    return await self._store_resilient([item])
                # The search itself fails with the database up: set the whole batch aside rather than stall.
                log.error("ingest_event_by_event_failed", error=describe_error(probe_err))
                refused = [(event, probe_err) for event in batch.events]
        if not refused:
            # Each event is storable alone but not the batch together: store them one unit each.
            merged = UnitResult()
            for event in batch.events:
                merged.extend(await self._store_resilient([_with_events(item, [event], ())]))
            return merged
        ids = {event.event_id for event, _ in refused}
        aside = tuple(
            SetAside.of_event(
                event,
                reason="storage_error",
                detail=f"the database refused it: {describe_error(error)}",
                received_at=item.received_at,
            )
            for event, error in refused
        )
        kept = [event for event in batch.events if event.event_id not in ids]
        return await self._store_resilient([_with_events(item, kept, item.set_aside + aside)])

    async def _find_unstorable(self, item: BatchMessage) -> list[tuple[wire.Event, BaseException]]:
        operations = self._operations
        refused: list[tuple[wire.Event, BaseException]] = []
        async with self._gate.turn(writegate.INGEST), AsyncExitStack() as stack:
            if operations is not None:
                await stack.enter_async_context(operations.unit())
            session = await stack.enter_async_context(self._sessions())
            try:
                refused = await find_unstorable(
                    session,
                    item,
                    now=self._clock(),
                    rejected_keep=self._rejected_keep,
                    operations=operations,
                    clock=self._event_clock,
                    store_locks=self._store_locks,
                )
            finally:
                await session.rollback()  # a probe: nothing of it is kept
        return refused

    async def _reject_unstorable(self, item: Classified, err: BaseException) -> UnitResult:
        detail = f"the database refused it: {describe_error(err)}"
        match item:
            case BatchMessage(batch=message, received_at=received_at):
                topic = wire.topic(message.store_id, message.gateway_id, wire.Channel.EVENTS)
            case StatusMessage(status=message, received_at=received_at):
                topic = wire.topic(message.store_id, message.gateway_id, wire.Channel.STATUS)
            case HealthMessage(health=message, received_at=received_at):
                topic = wire.topic(message.store_id, message.gateway_id, wire.Channel.HEALTH)
            case _:
                log.error("rejection_not_recorded", error=describe_error(err))
                return UnitResult()
        rejection = Rejection(topic, "storage_error", detail, wire.encode(message), received_at)
        self._note_rejection(rejection)
        return await self._store_resilient([rejection])

    async def _database_reachable(self) -> bool:
        try:
            await asyncio.wait_for(ping(self._engine), timeout=5.0)
        except Exception:  # any failure to run SELECT 1 means the database is not there for us
            return False
        return True

    async def _stopped_within(self, seconds: float) -> bool:
        return await wait_for_event(self._stopping, seconds)

    def _database_down(self, err: BaseException) -> None:
        self.last_database_error = describe_error(err)
        self.metrics.database_up.set(0)
        if self.database_ok:  # log the transition, not every retry
            log.error("database_unavailable", error=self.last_database_error, action="holding messages, retrying")
        self.database_ok = False

    def _database_up(self) -> None:
        if not self.database_ok:
            log.info("database_available_again")
        self.database_ok = True
        self.last_database_error = None
        self.metrics.database_up.set(1)

    # ------------------------------------------------------------------ after the commit

    def _note_rejection(self, rejection: Rejection) -> None:
        self.metrics.rejected_messages.labels(reason=rejection.reason).inc()
        admitted, left_out = self._log_limiter.admit(rejection.reason)
        if admitted:
            try:
                topic = wire.parse_topic(rejection.topic)
                sender = {"store_id": topic.store_id, "gateway_id": topic.gateway_id}
            except wire.TopicError:
                sender = {}
            log.warning(
                "message_rejected",
                **sender,
                topic=rejection.topic,
                reason=rejection.reason,
                detail=rejection.detail,
                payload_bytes=len(rejection.payload),
                **({"not_logged_before": left_out} if left_out else {}),
            )

    def _after_commit(self, result: UnitResult) -> None:
        self.metrics.events_stored.inc(result.stored)
        self.metrics.events_duplicate.inc(result.duplicates)
        if result.held_for_order:
            self.metrics.events_held_for_order.inc(result.held_for_order)
            admitted, left_out = self._log_limiter.admit("held_for_order")
            if admitted:
                log.info(
                    "events_held_for_order",
                    events=result.held_for_order,
                    why="stored above a gap of their stream (another worker holds the batch before); applied when "
                    "it is filled",
                    **({"not_logged_before": left_out} if left_out else {}),
                )
        for rejection in result.rejections:
            self._note_rejection(rejection)
        for transition in result.transitions:
            state = "online" if transition.online else "offline"
            self.metrics.status_transitions.labels(state=state).inc()
            log.info(
                "gateway_presence_changed",
                state=state,
                store_id=transition.store_id,
                gateway_id=transition.gateway_id,
                reason=transition.reason,
            )
        for event in result.set_aside:
            self._note_set_aside(event)
        for loss in result.losses:
            self._note_loss(loss)
        for suspects in result.clock_suspects:
            self._note_clock_suspects(suspects)
        for health in result.healths:
            self.metrics.observe_gateway_health(health)
        for ack in result.acks:
            self._publish_ack(ack)

    def _note_set_aside(self, event: SetAside) -> None:
        self.metrics.refused_events.labels(reason=event.reason).inc()
        admitted, left_out = self._log_limiter.admit(f"set_aside:{event.reason}")
        if admitted:
            log.warning(
                "event_set_aside",
                store_id=event.store_id,
                gateway_id=event.gateway_id,
                stream=None if event.stream is None else str(event.stream),
                seq=event.seq,
                event_id=event.event_id,
                kind=event.kind,
                reason=event.reason,
                detail=event.detail,
                **({"not_logged_before": left_out} if left_out else {}),
            )

    def _note_clock_suspects(self, suspects: ClockSuspects) -> None:
        for issue, count in suspects.by_issue.items():
            self.metrics.count_clock_suspects(suspects.store_id, suspects.gateway_id, issue, count)
        admitted, left_out = self._clock_log_limiter.admit(f"{suspects.store_id}/{suspects.gateway_id}")
        if admitted and suspects.device_ts and suspects.sent_at and suspects.received_at:
            log.warning(
                "device_clock_suspect",
                store_id=suspects.store_id,
                gateway_id=suspects.gateway_id,
                events=suspects.count,
                issues=sorted(issue.value for issue in suspects.by_issue),
                device_ts=suspects.device_ts.isoformat(),
                received_at=suspects.received_at.isoformat(),
                # sent_at - received_at: how far ahead the gateway's clock is at least (behind says nothing).
                batch_sent_ahead_s=round((suspects.sent_at - suspects.received_at).total_seconds(), 3),
                why="stored and flagged; lists go by the time the hub received them",
                **({"batches_not_logged_before": left_out} if left_out else {}),
            )

    def _note_loss(self, loss: LossRecord) -> None:
        if loss.ignored:
            log.warning(
                "loss_report_beyond_itself",
                store_id=loss.store_id,
                gateway_id=loss.gateway_id,
                stream=loss.stream,
                ignored=describe(loss.ignored),
                event_id=loss.event_id,
                why="a gateway can only have lost events it recorded before the report",
            )
        if loss.count:
            self.metrics.events_lost.labels(reason=loss.reason).inc(loss.count)
            log.warning(
                "events_lost",
                store_id=loss.store_id,
                gateway_id=loss.gateway_id,
                stream=loss.stream,
                ranges=describe(loss.recorded),
                count=loss.count,
                reason=loss.reason,
                detail=loss.detail,
                event_id=loss.event_id,
            )
        else:  # a repeated report (another loss event of the same seqs), or seqs the hub holds after all
            log.info(
                "loss_already_accounted",
                store_id=loss.store_id,
                gateway_id=loss.gateway_id,
                stream=loss.stream,
                ranges=describe(loss.reported),
                reason=loss.reason,
                event_id=loss.event_id,
            )

    def _publish_ack(self, ack: wire.Ack) -> None:
        topic = wire.topic(ack.store_id, ack.gateway_id, wire.Channel.ACK)
        # QoS 0: an Ack is cumulative, and the agent resends what is unacknowledged after its ack timeout and
        # after every reconnect, so a lost Ack costs a resend the hub absorbs, never an event. QoS 1 bought
        # nothing more and cost a PUBACK each way per Ack, plus paho's inflight scan on every PUBACK, which
        # is quadratic once a unit commits more Acks than its inflight window: a sixth of the hub's CPU.
        try:
            info = self._link.publish(topic, wire.encode(ack), qos=0)
        except (ValueError, RuntimeError, OSError) as err:  # the agent resends and gets the Ack again then
            log.warning("ack_not_sent", topic=topic, error=str(err))
            return
        rc = getattr(info, "rc", 0)
        if rc != TAKEN_RC:
            admitted, left_out = self._log_limiter.admit("ack_not_sent")
            if admitted:
                log.warning(
                    "ack_not_sent",
                    topic=topic,
                    error=f"MQTT client refused it (code {rc}); the gateway resends and is acknowledged then",
                    **({"not_logged_before": left_out} if left_out else {}),
                )
            return
        self.metrics.acks_sent.inc()


def _with_events(item: BatchMessage, events: list[wire.Event], set_aside: tuple[SetAside, ...]) -> BatchMessage:
    """``item`` with only ``events`` (valid, the sender's) and ``set_aside``."""
    batch = item.batch
    # Built without validation: the events are the batch's own, validated; there may be none left.
    smaller = wire.EventBatch.model_construct(
        v=batch.v, store_id=batch.store_id, gateway_id=batch.gateway_id, sent_at=batch.sent_at, events=events
    )
    return BatchMessage(smaller, item.received_at, set_aside)
