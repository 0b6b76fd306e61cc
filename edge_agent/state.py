"""What the agent's units share while it runs, in one small object instead of on the agent.

The :class:`~edge_agent.agent.EdgeAgent` makes one :class:`AgentState` and hands it to each unit
that needs it. Beside each field is who writes it; the others only read it. The two events
are how one unit tells another that there is work: any unit sets them, and only the one
that waits on it clears it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from edge_agent.outbox import Outbox
from edge_agent.window import SendWindow


@dataclass(slots=True, eq=False)
class AgentState:
    """The state the recorder, uplink, acks, presence and health share (who writes what: beside each field)."""

    # Set when there may be something to send: a commit, an ack, a connect, a not_held report. The uplink waits on it.
    wake_sender: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when health should report now rather than at its interval. The health reporter waits on it.
    wake_health: asyncio.Event = field(default_factory=asyncio.Event)

    # The agent's run(): the open outbox and the uplink's send window; None until the outbox is open.
    outbox: Outbox | None = None
    window: SendWindow | None = None

    # Presence: connected since the birth went out on this connection; connects so far; since when it is down.
    connected: bool = False
    connects: int = 0
    disconnected_at: float | None = None  # monotonic; None while connected

    # The uplink and the acks' gap repair: events published (resends included), and resends among them.
    published: int = 0
    resent: int = 0
    # The acks: events the hub acknowledged (deleted from the outbox).
    acked: int = 0
    # The acks: acks refused (nothing deleted), by reason: see edge_agent.acks.RefusedAck.
    acks_refused: dict[str, int] = field(default_factory=dict)
