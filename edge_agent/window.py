"""The send window: which outbox seqs to publish next, and when to send them again. No I/O.

Two lanes share the window:

- the **backlog** lane publishes the rows after :attr:`SendWindow.cursor`, oldest
  first, so the hub's contiguous ``through_seq`` keeps moving;
- the **ahead** lane publishes security and sales rows beyond the cursor first, so
  they are not stuck behind a backlog of telemetry after an outage. It remembers only
  :attr:`SendWindow.ahead_through` (every high-priority row up to it has been sent),
  so the backlog lane skips them without a per-event structure.

Everything up to :attr:`SendWindow.acked_seq` is stored at the hub and deleted here.
The backlog lane may have up to ``max_in_flight`` events unacknowledged; the ahead lane
up to half of that again, so that a window full of backlog never holds up a security
event and ahead events never starve the backlog (whose progress is what the hub acks).

Both lanes rewind to ``acked_seq`` after every (re)connect and whenever the hub's
``through_seq`` has not moved for ``ack_timeout_s`` while events are in flight.

After a (re)connect the window *probes*: one small batch (``probe_events``) goes out,
and is sent again after 0.5 s, 1 s, 2 s ... (up to ``ack_timeout_s``) until the hub
answers. A broker that restarted without persistence loses whatever is published before
the hub has subscribed again; probing costs that race one small batch and about a
second, not a full window and the whole ack timeout. After an ack timeout the window
probes too (every ``ack_timeout_s``), so a hub that is down gets one small batch per
timeout queued for it at the broker, not the whole window again each time.
"""

from __future__ import annotations

from collections import deque
from typing import Final, Literal

RewindReason = Literal["connected", "ack timeout"]

PROBE_TIMEOUT_S: Final = 0.5
# Probe timeouts after an ack timeout start here, i.e. at ack_timeout_s.
_AFTER_TIMEOUT: Final = 64


class SendWindow:
    """Cursors and acknowledgement state of one outbox stream, driven by the caller's clock."""

    def __init__(
        self,
        *,
        acked_seq: int,
        max_in_flight: int,
        ack_timeout_s: float,
        now: float,
        probe_events: int | None = None,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.ack_timeout_s = ack_timeout_s
        self.probe_events = min(probe_events or max_in_flight, max_in_flight)
        self.probing = False
        self._probe_timeouts = 0
        self.acked_seq = acked_seq
        self.cursor = acked_seq
        self.ahead_through = acked_seq
        # Highest seqs this process published in each lane, to count resends.
        self.cursor_high = acked_seq
        self.ahead_high = acked_seq
        # One entry per published message still unacknowledged: (its highest seq, events, ahead lane).
        self._flights: deque[tuple[int, int, bool]] = deque()
        self._backlog_in_flight = 0
        self._ahead_in_flight = 0
        self._progress_at = now  # restarted by acks, by rewinds, and when an empty window gets an event
        self._waiting_since = now  # restarted by acks and when nothing was outstanding; rewinds leave it
        self._rewind_requested = False
        self._rewind_floor: int | None = None  # a rewind asked for from a seq on: to this, not to acked_seq

    @property
    def next_after(self) -> int:
        """The backlog lane publishes rows with a seq above this."""
        return max(self.cursor, self.acked_seq)

    @property
    def published_through(self) -> int:
        """The highest seq published by this process (or acknowledged): no genuine ack goes beyond it."""
        return max(self.cursor_high, self.ahead_high, self.acked_seq)

    @property
    def skip_through(self) -> int:
        """The backlog lane skips security and sales rows up to this (the ahead lane sent them)."""
        return max(self.ahead_through, self.acked_seq)

    @property
    def in_flight(self) -> int:
        """Events published since the last rewind and not acknowledged yet, both lanes."""
        return self._backlog_in_flight + self._ahead_in_flight

    @property
    def timeout_s(self) -> float:
        """The ack timeout in force: growing from PROBE_TIMEOUT_S while probing, else ``ack_timeout_s``."""
        if self.probing:
            return min(self.ack_timeout_s, PROBE_TIMEOUT_S * 2.0**self._probe_timeouts)
        return self.ack_timeout_s

    def room(self) -> int:
        """How many more backlog events may be published before the window is full."""
        limit = self.probe_events if self.probing else self.max_in_flight
        return max(limit - self._backlog_in_flight, 0)

    def ahead_room(self) -> int:
        """How many more events may be sent ahead of the backlog (none while probing)."""
        return 0 if self.probing else max(self.max_in_flight // 2 - self._ahead_in_flight, 0)

    def request_rewind(self) -> None:
        """Send everything unacknowledged again before anything new, probing first (after a (re)connect)."""
        self._rewind_requested = True
        self._rewind_floor = None
        self.probing = True
        self._probe_timeouts = 0

    def request_resend_after(self, seq: int) -> None:
        """Send the rows above ``seq`` again (the hub asked: a resend from a seq), without probing."""
        if self._rewind_requested and self._rewind_floor is None:
            return  # a full rewind is due anyway
        floor = seq if self._rewind_floor is None else min(self._rewind_floor, seq)
        self._rewind_requested = True
        self._rewind_floor = floor

    def heard_from_hub(self) -> bool:
        """The hub answered (any ack of this stream): it is listening, so stop probing; True if it was."""
        was_probing, self.probing = self.probing, False
        self._probe_timeouts = 0
        return was_probing

    def rewind_if_due(self, now: float) -> RewindReason | None:
        """Rewind both lanes if a rewind was requested or the hub has been silent too long; say why."""
        reason: RewindReason | None = None
        if self._rewind_requested:
            reason = "connected"
        elif self.stalled_for(now) is not None:
            reason = "ack timeout"
            self._probe_timeouts = self._probe_timeouts + 1 if self.probing else _AFTER_TIMEOUT
            self.probing = True
        if reason is not None:
            floor = self._rewind_floor if reason == "connected" else None
            self._rewind_requested = False
            self._rewind_floor = None
            if floor is None or floor <= self.acked_seq:
                self.cursor = self.ahead_through = self.acked_seq
            else:  # a resend from a seq: only the rows above it go again
                self.cursor = min(self.cursor, floor)
                self.ahead_through = min(self.ahead_through, floor)
            self._flights.clear()
            self._backlog_in_flight = self._ahead_in_flight = 0
            self._progress_at = now
        return reason

    def _starting(self, now: float) -> None:
        if self.in_flight == 0:
            # The ack clock starts with the first event of an empty window, not at the last ack.
            self._progress_at = now
        if max(self.cursor_high, self.ahead_high) <= self.acked_seq:
            self._waiting_since = now

    def published(self, seqs: list[int], now: float) -> int:
        """Record that the backlog lane published ``seqs`` (ascending, after the cursor); returns the resends."""
        if not seqs or seqs[-1] <= self.cursor:
            return 0
        self._starting(now)
        self._flights.append((seqs[-1], len(seqs), False))
        self._backlog_in_flight += len(seqs)
        resent = sum(1 for seq in seqs if seq <= self.cursor_high)
        self.cursor = seqs[-1]
        self.cursor_high = max(self.cursor_high, self.cursor)
        return resent

    def published_ahead(self, seqs: list[int], now: float) -> int:
        """Record that the ahead lane published ``seqs`` (ascending, high priority); returns the resends."""
        if not seqs:
            return 0
        self._starting(now)
        self._flights.append((seqs[-1], len(seqs), True))
        self._ahead_in_flight += len(seqs)
        high = max(self.cursor_high, self.ahead_high)
        resent = sum(1 for seq in seqs if seq <= high)
        self.ahead_through = max(self.ahead_through, seqs[-1])
        self.ahead_high = max(self.ahead_high, seqs[-1])
        return resent

    def acknowledged(self, through_seq: int, now: float) -> bool:
        """Record the hub's ``through_seq``; True if it moved forward (stale and duplicate acks do not)."""
        if through_seq <= self.acked_seq:
            return False
        self.acked_seq = through_seq
        if self._flights:
            remaining: deque[tuple[int, int, bool]] = deque()
            for flight in self._flights:
                last, count, ahead = flight
                if last > through_seq:
                    remaining.append(flight)
                elif ahead:
                    self._ahead_in_flight -= count
                else:
                    self._backlog_in_flight -= count
            self._flights = remaining
        self._progress_at = self._waiting_since = now
        return True

    def release(self, through_seq: int, now: float) -> int:
        """Free the window of flights up to ``through_seq`` the hub has evidently received, without acknowledging.

        For an ack that is not believed (it names more than this process has published, as after a
        restart) but shows the hub received what was sent: the window moves on and the resend passes
        what the hub holds, yet nothing counts as stored. Returns the events released.
        """
        released = 0
        remaining: deque[tuple[int, int, bool]] = deque()
        for flight in self._flights:
            last, count, ahead = flight
            if last > through_seq:
                remaining.append(flight)
                continue
            released += count
            if ahead:
                self._ahead_in_flight -= count
            else:
                self._backlog_in_flight -= count
        self._flights = remaining
        if released:
            self._progress_at = now
        return released

    def stalled_for(self, now: float) -> float | None:
        """Seconds the hub has been silent with events in flight, once that reaches the timeout in force."""
        silent = now - self._progress_at
        return silent if self.in_flight > 0 and silent >= self.timeout_s else None

    def hub_silent_for(self, now: float) -> float | None:
        """Seconds since the hub last acknowledged anything while published events wait, resends or not."""
        return now - self._waiting_since if max(self.cursor_high, self.ahead_high) > self.acked_seq else None

    def ack_deadline(self) -> float | None:
        """When the ack timeout fires if nothing is acknowledged before (None with nothing in flight)."""
        return self._progress_at + self.timeout_s if self.in_flight > 0 else None
