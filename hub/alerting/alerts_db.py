"""Alerts in the database: rows to the domain's :class:`~hub.domain.alerts.Alert` and back.

Every transition goes through the pure lifecycle of :mod:`hub.domain.alerts`; this module only loads an
alert, hands it to the lifecycle, and writes what changed: the alert's row (its current state) and the
new entries of its history (appended, never updated), plus one notification per transition, all in the
caller's transaction. The ``active_key`` column is unique while an alert is open or acknowledged, so two
hub workers can never open two alerts of one (store, rule, subject).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.alerting.models import AlertHistoryRow, AlertRow
from hub.alerting.notices import NotificationEvent
from hub.alerting.notifications import record_notification
from hub.domain import alerts as lifecycle
from hub.domain.alerts import Alert, AlertSignal, AlertStatus, DedupeKey, HistoryEntry, Severity, Subject
from hub.errors import HubError

log = structlog.get_logger(__name__)

# Which rule kinds are security monitoring, which environment; anything else is operations.
CATEGORY_OF_KIND: Final[Mapping[str, str]] = {
    "after_hours_motion": "security",
    "camera_tamper": "security",
    "shelf_sweep": "security",
    "shrink_over_threshold": "security",
    "door_after_hours": "security",
    "device_unplugged": "security",
    "gateway_offline": "security",
    "environment_range": "environment",
    "door_held_open": "environment",
    "printer_paper_out": "operations",
}

_NOTICE_OF_ACTION: Final[Mapping[str, NotificationEvent]] = {
    "opened": "alert.opened",
    "acknowledged": "alert.acknowledged",
    "escalated": "alert.escalated",
    "resolved": "alert.resolved",
}


class AlertNotFoundError(HubError, LookupError):
    """No alert has that id."""


class AlertChangedError(HubError, RuntimeError):
    """The alert changed between reading and writing it (a concurrent transition); the caller retries."""


def category_of(rule_kind: str) -> str:
    """security, environment or operations."""
    return CATEGORY_OF_KIND.get(rule_kind, "operations")


def active_key(key: DedupeKey) -> str:
    """The unique key of a live alert: store, rule and subject."""
    return f"{key.store_id}|{key.rule_id}|{key.subject}"


def _key_of(row: AlertRow) -> DedupeKey:
    subject = Subject(kind=row.subject_kind, id=row.subject_id)  # type: ignore[arg-type]
    return DedupeKey(store_id=row.store_id, rule_id=row.rule_id, subject=subject)


def to_domain(row: AlertRow, history: Sequence[AlertHistoryRow]) -> Alert:
    """The lifecycle's view of a stored alert."""
    return Alert(
        alert_id=row.alert_id,
        key=_key_of(row),
        severity=Severity(row.severity),
        message=row.message,
        status=AlertStatus(row.status),
        opened_at=row.opened_at,
        last_seen_at=row.last_seen_at,
        count=row.count,
        evidence=tuple(row.evidence),
        snapshot_ref=row.snapshot_ref,
        escalate_after_s=tuple(row.escalate_after_s),
        escalation_level=row.escalation_level,
        acknowledged_by=row.acknowledged_by,
        acknowledged_at=row.acknowledged_at,
        resolved_by=row.resolved_by,
        resolved_at=row.resolved_at,
        resolution_note=row.resolution_note,
        history=tuple(
            HistoryEntry(
                at=h.at,
                action=h.action,  # type: ignore[arg-type]
                actor=h.actor,
                status=AlertStatus(h.status),
                note=h.note,
                level=h.level,
            )
            for h in history
        ),
    )


def _row_values(alert: Alert) -> dict[str, object]:
    return {
        "severity": alert.severity.value,
        "status": alert.status.value,
        "message": alert.message,
        "last_seen_at": alert.last_seen_at,
        "count": alert.count,
        "evidence": list(alert.evidence),
        "snapshot_ref": alert.snapshot_ref,
        "escalation_level": alert.escalation_level,
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_at": alert.acknowledged_at,
        "resolved_by": alert.resolved_by,
        "resolved_at": alert.resolved_at,
        "resolution_note": alert.resolution_note,
        "active_key": active_key(alert.key) if alert.active else None,
    }


async def _history(session: AsyncSession, alert_id: str) -> list[AlertHistoryRow]:
    rows = await session.execute(
        select(AlertHistoryRow).where(AlertHistoryRow.alert_id == alert_id).order_by(AlertHistoryRow.id)
    )
    return list(rows.scalars())


async def load(session: AsyncSession, alert_id: str) -> tuple[AlertRow, Alert]:
    """An alert's row and its domain value, history included."""
    row = await session.get(AlertRow, alert_id)
    if row is None:
        raise AlertNotFoundError(f"no alert {alert_id}")
    return row, to_domain(row, await _history(session, alert_id))


async def save(
    session: AsyncSession, row: AlertRow, before: Alert | None, after: Alert, *, now: datetime
) -> list[HistoryEntry]:
    """Write ``after`` over ``row`` and append the history entries it has beyond ``before``; notify each."""
    known = len(before.history) if before is not None else 0
    added = list(after.history[known:])
    stmt = update(AlertRow).where(AlertRow.alert_id == row.alert_id)
    if before is not None:
        # Optimistic: another transaction (a person in the API, another hub worker) may have moved it on.
        stmt = stmt.where(
            AlertRow.status == before.status.value,
            AlertRow.count == before.count,
            AlertRow.escalation_level == before.escalation_level,
        )
    changed = await session.execute(stmt.values(**_row_values(after)))
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        raise AlertChangedError(f"alert {row.alert_id} changed while this transition was made; try again")
    await _append_history(session, after.alert_id, added, now=now)
    for field_name, value in _row_values(after).items():
        setattr(row, field_name, value)
    for entry in added:
        await record_notification(
            session,
            row,
            _NOTICE_OF_ACTION[entry.action],
            now=now,
            level=entry.level,
            actor=entry.actor,
            note=entry.note,
        )
    return added


async def _append_history(
    session: AsyncSession, alert_id: str, entries: Sequence[HistoryEntry], *, now: datetime
) -> None:
    if entries:
        await session.execute(
            insert(AlertHistoryRow),
            [
                {
                    "alert_id": alert_id,
                    "at": entry.at,
                    "action": entry.action,
                    "actor": entry.actor,
                    "status": entry.status.value,
                    "note": entry.note,
                    "level": entry.level,
                    "recorded_at": now,
                }
                for entry in entries
            ],
        )


@dataclass(frozen=True, slots=True)
class SignalEffect:
    """What one signal did to the alerts: opened, repeated, resolved or nothing, and which alert."""

    signal: AlertSignal
    effect: Literal["opened", "repeated", "resolved", "ignored"]
    alert_id: str | None


async def apply_signals(
    session: AsyncSession, signals: Sequence[AlertSignal], *, rule_kinds: Mapping[str, str], now: datetime
) -> list[SignalEffect]:
    """Fold rules' signals into alerts (dedupe by key, auto-resolve on clear) inside the caller's transaction."""
    effects: list[SignalEffect] = []
    for signal in signals:
        found = (
            await session.execute(select(AlertRow).where(AlertRow.active_key == active_key(signal.key)))
        ).scalar_one_or_none()
        before = to_domain(found, await _history(session, found.alert_id)) if found is not None else None
        outcome = lifecycle.apply_signal(before, signal, new_alert_id=str(uuid.uuid4()))
        after = outcome.alert
        if after is None:
            effects.append(SignalEffect(signal, "ignored", None))
            continue
        if outcome.effect == "opened":
            rule_kind = rule_kinds.get(signal.rule_id, "unknown")
            row = AlertRow(
                alert_id=after.alert_id,
                store_id=signal.store_id,
                rule_id=signal.rule_id,
                rule_kind=rule_kind,
                category=category_of(rule_kind),
                subject_kind=signal.subject.kind,
                subject_id=signal.subject.id,
                opened_at=after.opened_at,
                escalate_after_s=list(after.escalate_after_s),
                **_row_values(after),
            )
            session.add(row)
            await session.flush()
            await _append_history(session, after.alert_id, after.history, now=now)
            await record_notification(session, row, "alert.opened", now=now, actor=lifecycle.SYSTEM_ACTOR)
            log.info(
                "alert_opened",
                alert_id=after.alert_id,
                store_id=signal.store_id,
                rule_id=signal.rule_id,
                subject=str(signal.subject),
                severity=signal.severity.value,
                message=signal.message,
            )
        else:
            assert found is not None  # repeated and resolved act on the live alert
            await save(session, found, before, after, now=now)
            if outcome.effect == "resolved":
                log.info("alert_resolved", alert_id=after.alert_id, store_id=signal.store_id, by="system")
        effects.append(SignalEffect(signal, outcome.effect, after.alert_id))
    return effects


def _not_before_history(alert: Alert, at: datetime) -> datetime:
    """A person's action happens now, but never before the alert's last transition.

    Alerts open at the device's time; a gateway whose clock runs ahead would otherwise make its alerts
    impossible to acknowledge for as long as it is ahead.
    """
    last = alert.history[-1].at if alert.history else alert.opened_at
    if at < last:
        log.warning("alert_clock_skew", alert_id=alert.alert_id, now=at.isoformat(), last_transition=last.isoformat())
        return last
    return at


async def acknowledge(session: AsyncSession, alert_id: str, *, by: str, at: datetime, note: str | None) -> AlertRow:
    """A person acknowledges an alert (raises AlertTransitionError when not allowed)."""
    row, before = await load(session, alert_id)
    after = lifecycle.acknowledge(before, by=by, at=_not_before_history(before, at), note=note)
    await save(session, row, before, after, now=at)
    log.info("alert_acknowledged", alert_id=alert_id, store_id=row.store_id, by=by)
    return row


async def resolve(session: AsyncSession, alert_id: str, *, by: str, at: datetime, note: str) -> AlertRow:
    """A person resolves an alert with a note saying what was done."""
    row, before = await load(session, alert_id)
    after = lifecycle.resolve(before, by=by, at=_not_before_history(before, at), note=note)
    await save(session, row, before, after, now=at)
    log.info("alert_resolved", alert_id=alert_id, store_id=row.store_id, by=by)
    return row


async def escalate_due(session: AsyncSession, *, now: datetime) -> list[lifecycle.Escalation]:
    """Escalate every open, unacknowledged alert whose next escalation delay has passed."""
    rows = (await session.execute(select(AlertRow).where(AlertRow.status == AlertStatus.OPEN.value))).scalars().all()
    escalations: list[lifecycle.Escalation] = []
    for row in rows:
        if len(row.escalate_after_s) <= row.escalation_level:
            continue
        before = to_domain(row, await _history(session, row.alert_id))
        check = lifecycle.escalate_due(before, at=now)
        if check.escalations:
            await save(session, row, before, check.alert, now=now)
            escalations += check.escalations
            for escalation in check.escalations:
                log.warning("alert_escalated", alert_id=row.alert_id, store_id=row.store_id, level=escalation.level)
    return escalations
