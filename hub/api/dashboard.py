"""The hub's HTML dashboard, rendered as a plain page: no JavaScript, every value escaped."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any, Final

from hub.api.listings import GatewayView, LossSummary, StoreSummary
from hub.db.models import StoredEvent
from hub.footfall.console import StoreToday, today_section
from hub.ingest.seqs import describe
from storegate.wire import EventKind

REFRESH_S: Final = 5
EVENTS_PER_STORE: Final = 20
PAYLOAD_CHARS: Final = 120
_NONE: Final = "\u2013"  # an en dash stands for "nothing yet" in a table cell

_STYLE: Final = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1b1b1b; background: #fafafa; }
h1 { margin: 0 0 .25rem 0; font-size: 1.5rem; }
h2 { margin: 1.5rem 0 .25rem 0; font-size: 1.2rem; }
h3 { margin: .75rem 0 .25rem 0; font-size: 1rem; color: #444; }
.meta { color: #555; margin: 0 0 .5rem 0; }
.problems { background: #fdecea; border: 1px solid #f5c2c0; padding: .5rem 1rem; }
section { background: #fff; border: 1px solid #ddd; padding: .5rem 1rem 1rem 1rem; margin-bottom: 1rem; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .2rem .6rem .2rem 0; border-bottom: 1px solid #eee; vertical-align: top; }
th { color: #555; font-weight: 600; }
.online { color: #11703b; font-weight: 600; }
.offline, .silent, .revoked { color: #b3261e; font-weight: 600; }
.unknown { color: #777; }
.mono { font-family: ui-monospace, monospace; }
.loss { background: #fff4e5; border: 1px solid #f0c36d; color: #7a3e00; padding: .25rem .6rem; margin: .25rem 0; }
"""

# The page's only inline content. Its hash is what the Content-Security-Policy allows (hub.api.edge), so a style
# or script smuggled into the page by a value that escaped its escaping would not run.
STYLE_SHA256: Final = "sha256-" + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

# Why a reason's events are gone, in the words of the operations room.
_LOSS_CAUSE: Final[dict[str, str]] = {
    "evicted": "outbox full",
    "not_held": "no longer on the gateway",
    "corrupt": "unreadable in the outbox",
}


@dataclass(frozen=True, slots=True)
class StoreBlock:
    """What the page shows of one store."""

    summary: StoreSummary
    gateways: Sequence[GatewayView]
    events: Sequence[StoredEvent]
    losses: Sequence[LossSummary] = ()
    # Visitors and conversion by hour today, beside sales (hub.footfall.console); None: not shown.
    today: StoreToday | None = None


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _environment(payload: dict[str, Any]) -> str:
    text = f"{payload['quantity']} {_number(payload['value'])} {payload['unit']}"
    return f"{text} ({payload['zone']})" if payload.get("zone") else text


def _loss(payload: dict[str, Any]) -> str:
    ranges = describe(((r["first"], r["last"]) for r in payload["ranges"]), limit=3)
    return f"{payload['count']:,} events {payload['reason'].replace('_', ' ')}: seq {ranges}"


def _generic(payload: dict[str, Any]) -> str:
    parts = []
    for key, value in payload.items():
        shown = _number(value) if isinstance(value, int | float | str | bool) or value is None else None
        parts.append(f"{key} {shown}" if shown is not None else f"{key} {json.dumps(value, separators=(',', ':'))}")
    return ", ".join(parts)


# How each kind's payload reads in one line; other kinds list their keys and values.
_COMPACT_OF_KIND: Final[dict[str, Callable[[dict[str, Any]], str]]] = {
    EventKind.ENVIRONMENT_READING: _environment,
    EventKind.OUTBOX_LOSS: _loss,
}


def compact_payload(kind: str, payload: dict[str, Any]) -> str:
    """A payload in a few words, e.g. ``temperature 4.2 Cel`` (unescaped; the caller escapes)."""
    formatter = _COMPACT_OF_KIND.get(kind, _generic)
    try:
        text = formatter(payload)
    except (KeyError, TypeError, ValueError):  # stored by an agent of another version: show it as it is
        text = _generic(payload)
    return text if len(text) <= PAYLOAD_CHARS else text[: PAYLOAD_CHARS - 1] + "…"


def _time(value: datetime | None) -> str:
    return _NONE if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _gateway_rows(gateways: Sequence[GatewayView]) -> str:
    if not gateways:
        return "<p class='meta'>No gateway yet.</p>"
    rows = []
    for view in gateways:
        g = view.gateway
        through = _NONE if view.through_seq is None else str(view.through_seq)
        # A revoked gateway's messages are refused: its last state would mislead.
        state = "revoked" if g.revoked_at is not None else view.connectivity
        rows.append(
            "<tr>"
            f"<td class='mono'>{escape(g.gateway_id)}</td>"
            f"<td class='{escape(state)}'>{escape(state)}</td>"
            f"<td>{escape(_time(g.status_changed_at))}</td>"
            f"<td>{escape(_time(g.last_seen_at))}</td>"
            f"<td>{escape(g.agent_version or _NONE)}</td>"
            f"<td>{escape(', '.join(g.devices) or _NONE)}</td>"
            f"<td>{escape(through)}</td>"
            f"<td>{view.events_lost:,}</td>"
            "</tr>"
        )
    return (
        "<table><thead><tr><th>Gateway</th><th>State</th><th>Since (UTC)</th><th>Last heard (UTC)</th>"
        "<th>Agent</th><th>Devices</th><th>Stored through seq</th><th>Events lost</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _event_time(event: StoredEvent) -> str:
    """The device's time, or the hub's receipt when the device's clock is not believed (hub.ingest.clock)."""
    if event.clock_issue is None:
        return _time(event.device_ts)
    return f"{_time(event.received_at)} received (device clock off: {_time(event.device_ts)})"


def _event_rows(events: Sequence[StoredEvent]) -> str:
    if not events:
        return "<p class='meta'>No events yet.</p>"
    rows = [
        "<tr>"
        f"<td>{escape(_event_time(e))}</td>"
        f"<td class='mono'>{escape(e.gateway_id)}</td>"
        f"<td class='mono'>{escape(e.device_id)}</td>"
        f"<td class='mono'>{escape(e.kind)}</td>"
        f"<td>{escape(compact_payload(e.kind, e.payload))}</td>"
        "</tr>"
        for e in events
    ]
    return (
        "<table><thead><tr><th>Time (UTC)</th><th>Gateway</th><th>Device</th><th>Kind</th><th>Reading</th></tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table>"
    )


def loss_line(losses: Sequence[LossSummary]) -> str:
    """One line for people, e.g. ``data loss: 1,200 events evicted at gw-1 (outbox full, last 12:00:00 UTC)``."""
    parts = [
        f"{loss.count:,} events {loss.reason.replace('_', ' ')} at {loss.gateway_id} "
        f"({_LOSS_CAUSE.get(loss.reason, loss.reason)}, last reported {_time(loss.last_reported_at)} UTC)"
        for loss in losses
    ]
    return "data loss: " + "; ".join(parts)


def _store_section(block: StoreBlock) -> str:
    s = block.summary
    losses = f"<p class='loss'>{escape(loss_line(block.losses))}</p>" if block.losses else ""
    return (
        f"<section id='store-{escape(s.store_id)}'>"
        f"<h2>{escape(s.store_id)}</h2>"
        f"<p class='meta'>{s.online_gateway_count} of {s.gateway_count} gateways online · {s.event_count} events"
        f" · last new event {escape(_time(s.last_event_at))} UTC</p>"
        f"{losses}"
        f"{today_section(block.today) if block.today is not None else ''}"
        f"<h3>Gateways</h3>{_gateway_rows(block.gateways)}"
        f"<h3>Latest events</h3>{_event_rows(block.events)}"
        "</section>"
    )


@dataclass(frozen=True, slots=True)
class SignedInAs:
    """Who sees the page, and the CSRF token its sign-out form sends back (None for an API token)."""

    name: str
    role: str
    csrf_token: str | None


def _account(signed_in: SignedInAs | None) -> str:
    if signed_in is None:
        return ""
    out = ""
    if signed_in.csrf_token is not None:
        out = (
            "<form method='post' action='/logout' style='display:inline'>"
            f"<input type='hidden' name='csrf_token' value='{escape(signed_in.csrf_token)}'>"
            "<button type='submit'>Sign out</button></form>"
        )
    return f"<p class='meta'>Signed in as {escape(signed_in.name)} ({escape(signed_in.role)}) {out}</p>"


def render_dashboard(
    blocks: Sequence[StoreBlock],
    *,
    problems: Sequence[str],
    now: datetime,
    version: str,
    signed_in: SignedInAs | None = None,
) -> str:
    """The whole page: who is signed in, hub problems, then each store with its gateways and latest events."""
    online = sum(b.summary.online_gateway_count for b in blocks)
    total = sum(b.summary.gateway_count for b in blocks)
    problem_box = (
        "<div class='problems'><strong>Hub problems</strong><ul>"
        + "".join(f"<li>{escape(p)}</li>" for p in problems)
        + "</ul></div>"
        if problems
        else ""
    )
    body = "".join(_store_section(b) for b in blocks) or "<p>No store has sent anything yet.</p>"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='{REFRESH_S}'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Storegate hub</title><style>{_STYLE}</style></head><body>"
        "<h1>Storegate hub</h1>"
        f"{_account(signed_in)}"
        f"<p class='meta'>{len(blocks)} stores · {online} of {total} gateways online · "
        f"updated {escape(_time(now))} UTC · version {escape(version)}</p>"
        f"{problem_box}{body}</body></html>"
    )
