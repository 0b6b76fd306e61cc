"""The send window: which outbox seqs to publish next, and when to send them again. No I/O.

The sender publishes the rows after :attr:`SendWindow.next_after`, at most
:meth:`SendWindow.room` of them. Everything up to :attr:`SendWindow.acked_seq`
is stored at the hub and deleted here. Between the two lie the events in flight:
published, not yet acknowledged. The cursor rewinds to ``acked_seq`` after every
(re)connect and whenever the hub's ``through_seq`` has not moved for
``ack_timeout_s`` while events are in flight; what follows is sent again.
"""

from __future__ import annotations

from typing import Literal

RewindReason = Literal["connected", "ack timeout"]


class SendWindow:
    """Cursor and acknowledgement state of one outbox stream, driven by the caller's clock."""

    def __init__(self, *, acked_seq: int, max_in_flight: int, ack_timeout_s: float, now: float) -> None:
        self.max_in_flight = max_in_flight
        self.ack_timeout_s = ack_timeout_s
        self.acked_seq = acked_seq
        self.cursor = acked_seq
        # Highest seq this process published, to count resends.
        self.high_water = acked_seq
        self._progress_at = now  # restarted by acks, by rewinds, and when an empty window gets an event
        self._waiting_since = now  # restarted by acks and when nothing was outstanding; rewinds leave it
        self._rewind_requested = False

    @property
    def next_after(self) -> int:
        """Publish rows with a seq above this."""
        return max(self.cursor, self.acked_seq)

    @property
    def in_flight(self) -> int:
        """Events published since the last rewind and not acknowledged yet."""
        return max(self.cursor - self.acked_seq, 0)

    def room(self) -> int:
        """How many more events may be published before the window is full."""
        return max(self.max_in_flight - self.in_flight, 0)

    def request_rewind(self) -> None:
        """Send everything unacknowledged again before anything new (after a (re)connect)."""
        self._rewind_requested = True

    def rewind_if_due(self, now: float) -> RewindReason | None:
        """Rewind the cursor if a rewind was requested or the hub has been silent too long; say why."""
        reason: RewindReason | None = None
        if self._rewind_requested:
            reason = "connected"
        elif self.stalled_for(now) is not None:
            reason = "ack timeout"
        if reason is not None:
            self._rewind_requested = False
            self.cursor = self.acked_seq
            self._progress_at = now
        return reason

    def published(self, seqs: list[int], now: float) -> int:
        """Record that ``seqs`` (ascending, right after the cursor) went out; returns how many were resends."""
        if not seqs:
            return 0
        if self.in_flight == 0:
            # The ack clock starts with the first event of an empty window, not at the last ack.
            self._progress_at = now
        if self.high_water <= self.acked_seq:
            self._waiting_since = now
        resent = sum(1 for seq in seqs if seq <= self.high_water)
        self.cursor = seqs[-1]
        self.high_water = max(self.high_water, self.cursor)
        return resent

    def acknowledged(self, through_seq: int, now: float) -> bool:
        """Record the hub's ``through_seq``; True if it moved forward (stale and duplicate acks do not)."""
        if through_seq <= self.acked_seq:
            return False
        self.acked_seq = through_seq
        self._progress_at = self._waiting_since = now
        return True

    def stalled_for(self, now: float) -> float | None:
        """Seconds the hub has been silent with events in flight, once that reaches ``ack_timeout_s``."""
        silent = now - self._progress_at
        return silent if self.in_flight > 0 and silent >= self.ack_timeout_s else None

    def hub_silent_for(self, now: float) -> float | None:
        """Seconds since the hub last acknowledged anything while published events wait, resends or not."""
        return now - self._waiting_since if self.high_water > self.acked_seq else None

    def ack_deadline(self) -> float | None:
        """When the ack timeout fires if nothing is acknowledged before (None with nothing in flight)."""
        return self._progress_at + self.ack_timeout_s if self.in_flight > 0 else None
