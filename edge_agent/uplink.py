"""The uplink: the sender that publishes committed events to the hub in ``EventBatch`` messages.

- Stored JSON is spliced into ``EventBatch`` messages (:func:`encode_batches`), never parsed again.
- A :class:`SendWindow` with two lanes decides what goes next: the backlog oldest-first, and
  security and sales events ahead of it. It rewinds after every (re)connect and after
  ``ack_timeout_s`` without the hub's ``through_seq`` moving. The hub stores idempotently,
  so this is at-least-once.
- A part-filled batch waits for the hub's ack or for more events, at most :data:`HOLD_MAX_S`
  (see :meth:`Uplink._holding`).
- A stored event that fails its checksum goes out as an ``outbox.loss`` record under its seq.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final
from uuid import uuid5

import structlog

from edge_agent.outbox import NewEvent, Outbox, OutboxRow, event_body, event_json, identity_prefix
from edge_agent.window import SendWindow
from storegate import wire
from storegate.tasks import wait_for_event
from storegate.wire import EventKind

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig
    from edge_agent.state import AgentState
    from storegate.clock import Clock
    from storegate.mqtt import MqttLink

log = structlog.get_logger(__name__)

# Events in the one batch that probes whether the hub listens, after a (re)connect or an ack timeout.
PROBE_EVENTS: Final = 50
# A part-filled batch waits at most this long for the hub's ack or more events (see Uplink._holding).
HOLD_MAX_S: Final = 0.05
# Corrupt rows whose loss was logged, at most (each is logged once, not at every resend).
_CORRUPT_LOGGED_MAX: Final = 1000


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


def new_window(*, config: AgentConfig, outbox: Outbox, now: float) -> SendWindow:
    """The send window of an outbox just opened: nothing in flight, the hub's last ack where the outbox has it."""
    return SendWindow(
        acked_seq=outbox.acked_through,
        max_in_flight=config.outbox.max_in_flight,
        ack_timeout_s=config.outbox.ack_timeout_s,
        now=now,
        probe_events=min(config.outbox.max_batch, PROBE_EVENTS),
    )


class Uplink:
    """Publishes what the outbox holds through ``link`` as ``window`` allows (:meth:`run`), until cancelled.

    Waits on ``state.wake_sender``; counts ``state.published`` and ``state.resent``. Publishes
    only while ``state.connected`` (presence) and the link is up.
    """

    def __init__(
        self,
        *,
        config: AgentConfig,
        clock: Clock,
        state: AgentState,
        outbox: Outbox,
        link: MqttLink,
        window: SendWindow,
    ) -> None:
        store, gateway = config.store_id, config.gateway_id
        self._gateway_id = gateway
        self._max_batch = config.outbox.max_batch
        self._clock = clock
        self._state = state
        self._outbox = outbox
        self._link = link
        self._window = window
        self._topic = wire.topic(store, gateway, wire.Channel.EVENTS)
        self._batch_head = f'{{"v":{wire.PROTOCOL_VERSION},"store_id":"{store}","gateway_id":"{gateway}","sent_at":"'
        self._prefix = identity_prefix(store_id=store, gateway_id=gateway, stream=outbox.stream)
        self._hold_until: float | None = None  # a part-filled batch waits until then at most
        self._blocked_by_low = True  # the last backlog read held events less important than sales
        self._last_publish_at = 0.0
        self._corrupt_logged: set[int] = set()

    def reconnected(self) -> None:
        """After a (re)connect: whatever was in flight may be lost with the old connection; send it again."""
        # The hub's acks say what it has.
        self._window.request_rewind()
        self._state.wake_sender.set()

    async def run(self) -> None:
        """The sender: publish, then wait for a wake-up, the ack deadline or the end of a hold; until cancelled."""
        state, window = self._state, self._window
        while True:
            # Cleared before looking at the state, so a wake-up during the look is not lost.
            state.wake_sender.clear()
            if await self._send_once():
                continue
            now = self._clock.monotonic()
            deadlines = [
                deadline
                for deadline in (
                    window.ack_deadline() if state.connected else None,
                    self._hold_until if state.connected else None,
                )
                if deadline is not None
            ]
            timeout = None if not deadlines else max(min(deadlines) - now, 0.0) + 0.001
            await wait_for_event(state.wake_sender, timeout)

    def _holding(self, now: float) -> bool:
        """Whether to let a part-filled batch wait for more events: Nagle's rule, with a cap.

        While a batch is unacknowledged and fewer events than a full batch wait, publish
        nothing until the hub answers or a batch fills (at most HOLD_MAX_S). At a trickle
        with a fast hub nothing waits; under load batches grow to what the hub's pace
        allows, instead of one message, one hub transaction and one ack per reading.
        """
        self._hold_until = None
        window = self._window
        if window.in_flight == 0:
            return False
        if self._outbox.last_seq - window.next_after >= self._max_batch:
            return False
        hold_until = self._last_publish_at + HOLD_MAX_S
        if now >= hold_until:
            return False
        self._hold_until = hold_until
        return True

    async def _send_once(self) -> bool:
        """Publish the next events if connected and the window has room; True when something went out."""
        state, outbox, link, window = self._state, self._outbox, self._link, self._window
        # Both: the link's flag flips first, and presence's connected() (birth) and reconnected() run a moment later.
        if not (state.connected and link.connected):
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
        if window.next_after >= outbox.last_seq or self._holding(now):
            return False
        max_batch = self._max_batch
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
            self.publish(ahead)
            state.resent += window.published_ahead([row.seq for row in ahead], now)
        if backlog:
            self.publish(backlog)
            state.resent += window.published([row.seq for row in backlog], now)
        state.published += len(backlog) + len(ahead)
        self._last_publish_at = now
        return True

    def publish(self, rows: Sequence[OutboxRow]) -> None:
        """Publish these stored events, in order, in as many EventBatch messages as their size needs.

        Counts nothing and moves no window: the caller does (the acks' gap repair uses it too).
        """
        prefix = self._prefix
        events = [event_json(prefix, row.body if row.intact else self._corrupt_body(row.seq)) for row in rows]
        head = (self._batch_head + self._clock.now().isoformat() + '","events":[').encode()
        for payload in encode_batches(events, head=head, max_bytes=wire.MAX_MESSAGE_BYTES):
            # If the connection dropped meanwhile, paho keeps the QoS 1 message for the next
            # connection, and the rewind on connect sends it again anyway: nothing is lost.
            self._link.publish(self._topic, payload, qos=1)

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
        event = NewEvent(
            device_id=self._gateway_id,
            kind=EventKind.OUTBOX_LOSS,
            ts=self._clock.now(),
            payload_json=loss.model_dump_json(),
            # The same id at every resend, so the hub stores the record once.
            event_id=str(uuid5(self._outbox.stream, f"corrupt:{seq}")),
        )
        return event_body(event, seq)
