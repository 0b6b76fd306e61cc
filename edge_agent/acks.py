"""Acks: the hub's word on what it has stored, and what the agent does about it.

- Acks are cumulative: the outbox deletes every row up to the best ``through_seq`` at once
  (acks waiting together are coalesced, up to :data:`ACK_COALESCE`, into one delete).
- The seqs an ack names as ``gaps`` were lost between broker and hub: they are resent at once
  (:meth:`AckHandler._repair_gaps`), once an ack timeout at most.
- A hub that now holds less than it acknowledged (restored from an older backup) is told which
  events are gone, as ``not_held`` loss records (:meth:`AckHandler._report_not_held`).
- An ack is trusted only as far as this agent's own sending goes (:meth:`AckHandler._refusal`):
  one that is not valid, names another gateway or stream, or claims seqs (``through_seq`` or
  ``gaps``) above the highest seq this agent has published, is refused whole: nothing is
  deleted, it is counted by :class:`RefusedAck` and logged. The broker's ACL should already
  stop a forged ack; this is the agent's own defence if the ACL is ever wrong, since a
  forged ``through_seq`` would otherwise delete events no hub has stored.

The handler also reads the link's other subscription, the hub's commands, and hands each to
:class:`~edge_agent.commands.Commands`, so one consumer empties the link's queue.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Final
from uuid import UUID

import structlog

from edge_agent.outbox import Outbox, OutboxFullError, merge_ranges
from storegate import wire
from storegate.logs import worth_logging

if TYPE_CHECKING:
    from edge_agent.commands import Commands
    from edge_agent.config import AgentConfig
    from edge_agent.recorder import Evictions
    from edge_agent.state import AgentState
    from edge_agent.uplink import Uplink
    from edge_agent.window import SendWindow
    from storegate.clock import Clock
    from storegate.mqtt import Incoming, MqttLink

log = structlog.get_logger(__name__)

# Acks taken off the queue at once: one delete for all of them.
ACK_COALESCE: Final = 100


class RefusedAck(StrEnum):
    """Why an ack was refused; the label of the ``storegate_agent_acks_refused`` metric."""

    INVALID = "invalid"
    OTHER_GATEWAY = "other_gateway"
    OTHER_STREAM = "other_stream"
    # through_seq above the highest seq this agent published. Also the (rare, harmless) fate of a
    # genuine ack for what a previous run of the agent published: the events are resent and acked again.
    BEYOND_PUBLISHED = "beyond_published"
    GAPS_BEYOND_PUBLISHED = "gaps_beyond_published"


# Refusals of an ack that may be the hub's word on what a previous run of this agent published.
_AHEAD_OF_SENDING: Final = frozenset({RefusedAck.BEYOND_PUBLISHED, RefusedAck.GAPS_BEYOND_PUBLISHED})


def _within_outbox(ack: wire.Ack, last_seq: int) -> bool:
    """Whether every seq ``ack`` names is one this outbox has handed out."""
    return ack.through_seq <= last_seq and all(gap.last <= last_seq for gap in ack.gaps)


class AckHandler:
    """Applies the hub's acks to ``outbox`` and ``window`` (:meth:`run`), until cancelled.

    Counts ``state.acked``, and ``state.published``/``state.resent`` for gap resends (published
    through ``uplink``); sets ``state.wake_sender`` when the window opens. After a delete it asks
    ``evictions`` whether the outbox is out of its eviction episode.
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
        uplink: Uplink,
        evictions: Evictions,
        commands: Commands,
    ) -> None:
        self._store_id = config.store_id
        self._gateway_id = config.gateway_id
        self._ack_timeout_s = config.outbox.ack_timeout_s
        self._max_in_flight = config.outbox.max_in_flight
        self._max_batch = config.outbox.max_batch
        self._clock = clock
        self._state = state
        self._outbox = outbox
        self._link = link
        self._window = window
        self._uplink = uplink
        self._evictions = evictions
        self._commands = commands
        self._foreign_stream_logged: UUID | None = None
        self._acked_ts: datetime | None = None  # the hub's time on the ack that last moved acked_seq
        self._gap_resent: dict[int, float] = {}  # seq -> when a gap named it and it was resent

    async def run(self) -> None:
        """Read the link's messages: commands go to their runner, acks are applied, coalesced; until cancelled."""
        link, commands_topic = self._link, self._commands.topic
        async for message in link.messages():
            raws: list[bytes] = []
            incoming: Incoming | None = message
            while incoming is not None:
                if incoming.topic == commands_topic:
                    self._commands.start(link, incoming.payload)
                else:
                    raws.append(incoming.payload)
                incoming = link.get_nowait() if len(raws) < ACK_COALESCE else None
            if not raws:
                continue
            try:
                await self._handle(raws)
            except (sqlite3.Error, OSError, OutboxFullError) as err:
                # The next ack says the same again (acks are cumulative); the agent goes on.
                log.warning("ack_not_applied", error=str(err))

    def _valid(self, raw: bytes) -> wire.Ack | None:
        """The ack in ``raw`` if it may be applied; otherwise None, counted and logged."""
        try:
            ack = wire.decode(wire.Ack, raw)
        except wire.WireError as err:
            count = self._count_refused(RefusedAck.INVALID)
            if worth_logging(count):
                log.warning(
                    "ack_refused",
                    reason=RefusedAck.INVALID.value,
                    error=err.reason,
                    detail=err.detail,
                    refused_so_far=count,
                )
            return None
        refusal = self._refusal(ack)
        if refusal is None:
            return ack
        count = self._count_refused(refusal)
        outbox, window = self._outbox, self._window
        if refusal in _AHEAD_OF_SENDING and _within_outbox(ack, outbox.last_seq):
            # Right after a restart the hub acknowledges what the previous run published, before this
            # run has sent it again. The hub is listening and has what this run sent: stop probing and
            # free the window (deleting nothing), so the resend reaches past what the hub holds and its
            # next ack is believed; else one probe batch, or one window, at a time might never get there
            # (a smaller max_in_flight than the previous run's). A forged ack only makes the agent send.
            window.heard_from_hub()
            window.release(min(ack.through_seq, window.published_through), self._clock.monotonic())
            self._state.wake_sender.set()
        # Every refusal is counted; the 1st, 10th, 100th... of a reason is logged (and each foreign stream
        # once), so whoever floods the ack topic does not flood the gateway's log too.
        new_stream = refusal is RefusedAck.OTHER_STREAM and self._foreign_stream_logged != ack.stream
        if new_stream:
            self._foreign_stream_logged = ack.stream
        if not (new_stream or worth_logging(count)):
            return None
        log.warning(
            "ack_refused",
            reason=refusal.value,
            store_id=ack.store_id,
            gateway_id=ack.gateway_id,
            stream=str(ack.stream),
            ours=str(outbox.stream),
            through_seq=ack.through_seq,
            gaps=[(gap.first, gap.last) for gap in ack.gaps[:10]],
            published_through=window.published_through,
            acked_seq=window.acked_seq,
            outbox_last_seq=outbox.last_seq,
            consequence="nothing deleted",
            refused_so_far=count,
        )
        return None

    def _refusal(self, ack: wire.Ack) -> RefusedAck | None:
        """Why ``ack`` must not be applied, or None when it may be."""
        if (ack.store_id, ack.gateway_id) != (self._store_id, self._gateway_id):
            return RefusedAck.OTHER_GATEWAY
        if ack.stream != self._outbox.stream:
            return RefusedAck.OTHER_STREAM
        # The hub can only hold what this agent sent it: an ack beyond that is forged (or the hub is
        # confused), and trusting any of it could delete events that exist nowhere else.
        published = self._window.published_through
        if ack.through_seq > published:
            return RefusedAck.BEYOND_PUBLISHED
        if any(gap.last > published for gap in ack.gaps):
            return RefusedAck.GAPS_BEYOND_PUBLISHED
        return None

    def _count_refused(self, reason: RefusedAck) -> int:
        """Count one more ack refused for ``reason``; returns how many so far."""
        refused = self._state.acks_refused
        count = refused[reason.value] = refused.get(reason.value, 0) + 1
        return count

    async def _handle(self, raws: list[bytes]) -> None:
        outbox, window, state = self._outbox, self._window, self._state
        acks = [ack for raw in raws if (ack := self._valid(raw)) is not None]
        if not acks:
            return
        if window.heard_from_hub():
            state.wake_sender.set()  # the whole window is open again
        best = max(acks, key=lambda ack: ack.through_seq)
        if best.through_seq > window.acked_seq:
            deleted = await outbox.ack_through(best.through_seq)
            window.acknowledged(best.through_seq, self._clock.monotonic())
            state.acked += deleted
            self._acked_ts = best.ts
            self._evictions.check_over(outbox)
            state.wake_sender.set()
        # The latest ack is the hub's latest word on what it is missing.
        latest = acks[-1]
        if latest.through_seq >= outbox.acked_through:
            await outbox.forget_not_held()
        elif self._acked_ts is None or latest.ts > self._acked_ts:
            # Newer than the ack that took us further: the hub lost what it had acknowledged.
            await self._report_not_held(latest)
        if latest.gaps:
            await self._repair_gaps(latest.gaps)

    async def _report_not_held(self, ack: wire.Ack) -> None:
        outbox = self._outbox
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
            self._state.wake_sender.set()

    async def _repair_gaps(self, gaps: Sequence[wire.SeqRange]) -> None:
        """Resend at once the gap seqs that were lost on the way, and that the outbox still holds.

        A gap may also be events still in flight: the hub holds a later event because it
        went ahead of the backlog. So a gap counts as lost only below a *witness* the backlog
        lane published after it: the seq right after a gap (which the hub holds) when it is
        no event sent ahead. MQTT keeps one connection's messages in order, so what the
        backlog lane published before the witness and the hub lacks is lost. Events sent
        ahead that went missing are repaired when the backlog passes them.
        """
        outbox, window, state = self._outbox, self._window, self._state
        candidates = sorted({gap.last + 1 for gap in gaps if window.acked_seq < gap.last + 1 <= window.next_after})
        if not candidates or not (state.connected and self._link.connected):
            return
        found = await outbox.read_ranges([wire.SeqRange(first=seq, last=seq) for seq in candidates], limit=len(gaps))
        sent_ahead = int(wire.Priority.SALES)
        witness = max(
            (row.seq for row in found if row.priority > sent_ahead or row.seq > window.skip_through), default=None
        )
        if witness is None:
            return
        now = self._clock.monotonic()
        timeout = self._ack_timeout_s
        # Resent ones get an ack timeout to arrive before they are resent again.
        self._gap_resent = {
            seq: at for seq, at in self._gap_resent.items() if seq > window.acked_seq and now - at < timeout
        }
        lost = [
            wire.SeqRange(first=max(gap.first, window.acked_seq + 1), last=min(gap.last, witness - 1))
            for gap in gaps
            if gap.last > window.acked_seq and gap.first < witness
        ]
        room = self._max_in_flight - len(self._gap_resent)
        if not lost or room <= 0:
            return
        rows = [row for row in await outbox.read_ranges(lost, limit=room) if row.seq not in self._gap_resent]
        if not rows:
            return
        max_batch = self._max_batch
        for start in range(0, len(rows), max_batch):
            self._uplink.publish(rows[start : start + max_batch])
        for row in rows:
            self._gap_resent[row.seq] = now
        state.resent += len(rows)
        state.published += len(rows)
        log.info("gap_resent", events=len(rows), first_seq=rows[0].seq, last_seq=rows[-1].seq)
