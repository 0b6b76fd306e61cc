"""The alert lifecycle as a pure state machine: open -> acknowledged -> resolved, with an append-only history.

Rules emit :class:`AlertSignal` values (raise or clear). Signals of one dedupe key (store, rule,
subject) fold into one alert while it is not resolved: a repeated raise bumps its count and last-seen
time, a clear resolves it automatically. A raise after resolution opens a new alert. A person
acknowledges (who, when) and may resolve by hand with a note. An alert left unacknowledged past an
escalation delay escalates, once per level.

Every value here is frozen; each operation returns a new :class:`Alert` whose history is the old
history plus new entries, so no operation can change a past entry. Illegal transitions raise
:class:`AlertTransitionError` and change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Literal

from hub.errors import HubError

SYSTEM_ACTOR: Final = "system"


class Severity(StrEnum):
    """How urgent an alert is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertStatus(StrEnum):
    """Where an alert is in its lifecycle."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


SubjectKind = Literal["store", "slot", "device", "zone", "gateway", "door", "sku", "camera"]


@dataclass(frozen=True, kw_only=True, order=True)
class Subject:
    """What an alert is about within a store, e.g. ``slot:shelf-1/3`` or ``zone:chiller-1``."""

    kind: SubjectKind
    id: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True, kw_only=True, order=True)
class DedupeKey:
    """Signals with the same key fold into one alert while it is not resolved."""

    store_id: str
    rule_id: str
    subject: Subject


@dataclass(frozen=True, kw_only=True)
class AlertSignal:
    """What a rule says about one subject: the condition holds (raise) or no longer holds (clear)."""

    action: Literal["raise", "clear"]
    store_id: str
    rule_id: str
    subject: Subject
    severity: Severity
    at: datetime
    message: str
    evidence: tuple[str, ...] = ()  # ids of the events (or records) that show it
    snapshot_ref: str | None = None  # security alerts: a camera snapshot, filled by the caller when one exists
    escalate_after_s: tuple[float, ...] = ()  # the rule's escalation delays, from the opening time

    @property
    def key(self) -> DedupeKey:
        """The dedupe key of the alert this signal belongs to."""
        return DedupeKey(store_id=self.store_id, rule_id=self.rule_id, subject=self.subject)


HistoryAction = Literal["opened", "acknowledged", "escalated", "resolved"]


@dataclass(frozen=True, kw_only=True)
class HistoryEntry:
    """One transition of an alert, never changed once written."""

    at: datetime
    action: HistoryAction
    actor: str
    status: AlertStatus  # the status after the transition
    note: str | None = None
    level: int | None = None  # escalations: which level


@dataclass(frozen=True, kw_only=True)
class Alert:
    """One alert: its key, current status and every transition it went through."""

    alert_id: str
    key: DedupeKey
    severity: Severity
    message: str
    status: AlertStatus
    opened_at: datetime
    last_seen_at: datetime
    count: int
    evidence: tuple[str, ...]
    snapshot_ref: str | None
    escalate_after_s: tuple[float, ...]
    escalation_level: int = 0
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    resolution_note: str | None = None
    history: tuple[HistoryEntry, ...] = ()

    @property
    def active(self) -> bool:
        """Whether it still takes signals of its key (open or acknowledged)."""
        return self.status is not AlertStatus.RESOLVED


@dataclass(frozen=True, kw_only=True)
class Escalation:
    """An alert went unacknowledged past the delay of an escalation level."""

    alert_id: str
    key: DedupeKey
    level: int
    at: datetime
    severity: Severity
    message: str


class AlertTransitionError(HubError, ValueError):
    """A transition the lifecycle does not allow (e.g. acknowledging a resolved alert)."""


# Evidence ids kept per alert; a sweep that repeats all night should not grow an alert without bound.
MAX_EVIDENCE: Final = 100


def _append(alert: Alert, entry: HistoryEntry, **changes: object) -> Alert:
    if alert.history and entry.at < alert.history[-1].at:
        raise AlertTransitionError(
            f"alert {alert.alert_id}: {entry.action} at {entry.at.isoformat()} is before its last transition "
            f"at {alert.history[-1].at.isoformat()}"
        )
    return replace(alert, history=(*alert.history, entry), **changes)  # type: ignore[arg-type]


def open_alert(signal: AlertSignal, *, alert_id: str) -> Alert:
    """A new open alert from a raise signal."""
    if signal.action != "raise":
        raise AlertTransitionError(f"a {signal.action} signal cannot open an alert")
    return Alert(
        alert_id=alert_id,
        key=signal.key,
        severity=signal.severity,
        message=signal.message,
        status=AlertStatus.OPEN,
        opened_at=signal.at,
        last_seen_at=signal.at,
        count=1,
        evidence=signal.evidence[:MAX_EVIDENCE],
        snapshot_ref=signal.snapshot_ref,
        escalate_after_s=signal.escalate_after_s,
        history=(HistoryEntry(at=signal.at, action="opened", actor=SYSTEM_ACTOR, status=AlertStatus.OPEN),),
    )


@dataclass(frozen=True, kw_only=True)
class SignalOutcome:
    """What a signal did: the alert it opened, updated or resolved (None if it touched nothing)."""

    alert: Alert | None
    effect: Literal["opened", "repeated", "resolved", "ignored"]


def apply_signal(current: Alert | None, signal: AlertSignal, *, new_alert_id: str) -> SignalOutcome:
    """Fold a signal into the latest alert of its key; ``new_alert_id`` is used only if a new alert opens."""
    if current is not None and current.key != signal.key:
        raise ValueError(f"signal for {signal.key} applied to alert {current.alert_id} of {current.key}")
    live = current if current is not None and current.active else None
    if signal.action == "raise":
        if live is None:
            return SignalOutcome(alert=open_alert(signal, alert_id=new_alert_id), effect="opened")
        # A repeat is not a transition: it updates the counters, not the history.
        repeated = replace(
            live,
            last_seen_at=max(live.last_seen_at, signal.at),
            count=live.count + 1,
            evidence=(live.evidence + signal.evidence)[:MAX_EVIDENCE],
            snapshot_ref=live.snapshot_ref or signal.snapshot_ref,
        )
        return SignalOutcome(alert=repeated, effect="repeated")
    if live is None:
        return SignalOutcome(alert=None, effect="ignored")
    # A store's observations reach the rules through several gateways, so a clear can carry an earlier time
    # than the alert's last transition (raised on another gateway's later events before this one arrived):
    # it resolves at that transition, never before it.
    at = max(signal.at, live.history[-1].at) if live.history else signal.at
    resolved = _resolve(live, by=SYSTEM_ACTOR, at=at, note=f"condition cleared: {signal.message}")
    return SignalOutcome(alert=resolved, effect="resolved")


def acknowledge(alert: Alert, *, by: str, at: datetime, note: str | None = None) -> Alert:
    """Someone has seen the alert and is on it; stops its escalation."""
    if not by.strip():
        raise AlertTransitionError(f"alert {alert.alert_id}: acknowledging needs the name of who does it")
    if alert.status is AlertStatus.RESOLVED:
        raise AlertTransitionError(
            f"alert {alert.alert_id} cannot be acknowledged: it was resolved at "
            f"{alert.resolved_at.isoformat() if alert.resolved_at else '?'} by {alert.resolved_by}"
        )
    if alert.status is AlertStatus.ACKNOWLEDGED:
        raise AlertTransitionError(
            f"alert {alert.alert_id} is already acknowledged by {alert.acknowledged_by} at "
            f"{alert.acknowledged_at.isoformat() if alert.acknowledged_at else '?'}"
        )
    entry = HistoryEntry(at=at, action="acknowledged", actor=by, status=AlertStatus.ACKNOWLEDGED, note=note)
    return _append(alert, entry, status=AlertStatus.ACKNOWLEDGED, acknowledged_by=by, acknowledged_at=at)


def resolve(alert: Alert, *, by: str, at: datetime, note: str) -> Alert:
    """Resolve an alert by hand; the note says what was done."""
    if not by.strip():
        raise AlertTransitionError(f"alert {alert.alert_id}: resolving by hand needs the name of who does it")
    if not note.strip():
        raise AlertTransitionError(f"alert {alert.alert_id}: resolving by hand needs a note saying what was done")
    return _resolve(alert, by=by, at=at, note=note)


def _resolve(alert: Alert, *, by: str, at: datetime, note: str) -> Alert:
    if alert.status is AlertStatus.RESOLVED:
        raise AlertTransitionError(
            f"alert {alert.alert_id} is already resolved (at "
            f"{alert.resolved_at.isoformat() if alert.resolved_at else '?'} by {alert.resolved_by})"
        )
    entry = HistoryEntry(at=at, action="resolved", actor=by, status=AlertStatus.RESOLVED, note=note)
    return _append(alert, entry, status=AlertStatus.RESOLVED, resolved_by=by, resolved_at=at, resolution_note=note)


@dataclass(frozen=True, kw_only=True)
class EscalationCheck:
    """The alert after an escalation check and the escalations that became due (oldest level first)."""

    alert: Alert
    escalations: tuple[Escalation, ...]


def escalate_due(alert: Alert, *, at: datetime) -> EscalationCheck:
    """Escalate an open (unacknowledged) alert through every level whose delay has passed, each level once."""
    if alert.status is not AlertStatus.OPEN:
        return EscalationCheck(alert=alert, escalations=())
    escalations: list[Escalation] = []
    for level, delay_s in enumerate(alert.escalate_after_s, start=1):
        if level <= alert.escalation_level or at - alert.opened_at < timedelta(seconds=delay_s):
            continue
        entry = HistoryEntry(
            at=at,
            action="escalated",
            actor=SYSTEM_ACTOR,
            status=AlertStatus.OPEN,
            level=level,
            note=f"not acknowledged within {delay_s:g} s",
        )
        alert = _append(alert, entry, escalation_level=level)
        escalations.append(
            Escalation(
                alert_id=alert.alert_id,
                key=alert.key,
                level=level,
                at=at,
                severity=alert.severity,
                message=alert.message,
            )
        )
    return EscalationCheck(alert=alert, escalations=tuple(escalations))
