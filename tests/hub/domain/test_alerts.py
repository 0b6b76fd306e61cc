"""The alert lifecycle: dedupe, automatic and manual resolution, acknowledgement, escalation, append-only history."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.domain.alerts import (
    Alert,
    AlertSignal,
    AlertStatus,
    AlertTransitionError,
    Severity,
    Subject,
    acknowledge,
    apply_signal,
    escalate_due,
    open_alert,
    resolve,
)

T0 = datetime(2026, 7, 1, 22, 0, tzinfo=UTC)
SLOT = Subject(kind="slot", id="shelf-1/3")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def signal(
    action: Literal["raise", "clear"] = "raise",
    seconds: float = 0,
    *,
    subject: Subject = SLOT,
    evidence: tuple[str, ...] = ("ev-1",),
    escalate_after_s: tuple[float, ...] = (300, 900),
) -> AlertSignal:
    return AlertSignal(
        action=action,
        store_id="store-1",
        rule_id="sweep",
        subject=subject,
        severity=Severity.CRITICAL,
        at=at(seconds),
        message="6 items taken from slot shelf-1/3 within 20 s",
        evidence=evidence,
        escalate_after_s=escalate_after_s,
    )


def opened() -> Alert:
    return open_alert(signal(), alert_id="a-1")


def test_a_raise_opens_an_alert_with_one_history_entry() -> None:
    outcome = apply_signal(None, signal(), new_alert_id="a-1")
    alert = outcome.alert
    assert outcome.effect == "opened"
    assert alert is not None
    assert (alert.alert_id, alert.status, alert.count, alert.opened_at) == ("a-1", AlertStatus.OPEN, 1, T0)
    assert [(h.action, h.actor, h.status) for h in alert.history] == [("opened", "system", AlertStatus.OPEN)]
    assert alert.key == signal().key


def test_a_repeated_raise_updates_the_open_alert_instead_of_opening_another() -> None:
    first = opened()
    outcome = apply_signal(first, signal(seconds=40, evidence=("ev-2",)), new_alert_id="a-2")
    assert outcome.effect == "repeated"
    assert outcome.alert is not None
    assert (outcome.alert.alert_id, outcome.alert.count, outcome.alert.last_seen_at) == ("a-1", 2, at(40))
    assert outcome.alert.opened_at == T0
    assert outcome.alert.evidence == ("ev-1", "ev-2")
    assert outcome.alert.history == first.history, "a repeat is not a transition"


def test_a_repeat_also_folds_into_an_acknowledged_alert() -> None:
    acked = acknowledge(opened(), by="maria", at=at(10))
    outcome = apply_signal(acked, signal(seconds=20), new_alert_id="a-2")
    assert outcome.alert is not None
    assert (outcome.effect, outcome.alert.alert_id, outcome.alert.status) == (
        "repeated",
        "a-1",
        AlertStatus.ACKNOWLEDGED,
    )


def test_a_clear_resolves_automatically() -> None:
    outcome = apply_signal(opened(), signal("clear", seconds=60), new_alert_id="unused")
    alert = outcome.alert
    assert outcome.effect == "resolved"
    assert alert is not None
    assert (alert.status, alert.resolved_by, alert.resolved_at) == (AlertStatus.RESOLVED, "system", at(60))
    assert alert.resolution_note is not None
    assert alert.resolution_note.startswith("condition cleared")
    assert [h.action for h in alert.history] == ["opened", "resolved"]


def test_a_clear_older_than_the_alert_resolves_it_at_its_last_transition() -> None:
    """Events of one store come through several gateways: a clear may be dated before the raise it clears."""
    alert = open_alert(signal(seconds=120), alert_id="a-1")
    outcome = apply_signal(alert, signal("clear", seconds=100), new_alert_id="unused")
    assert outcome.effect == "resolved"
    assert outcome.alert is not None
    assert outcome.alert.resolved_at == at(120)


@pytest.mark.parametrize("current", [None, "resolved"])
def test_a_clear_without_a_live_alert_is_ignored(current: str | None) -> None:
    alert = resolve(opened(), by="maria", at=at(5), note="false alarm") if current else None
    outcome = apply_signal(alert, signal("clear", seconds=60), new_alert_id="unused")
    assert (outcome.effect, outcome.alert) == ("ignored", None)


def test_a_raise_after_resolution_opens_a_new_alert() -> None:
    closed = apply_signal(opened(), signal("clear", seconds=60), new_alert_id="unused").alert
    outcome = apply_signal(closed, signal(seconds=120), new_alert_id="a-2")
    assert outcome.effect == "opened"
    assert outcome.alert is not None
    assert (outcome.alert.alert_id, outcome.alert.count, outcome.alert.opened_at) == ("a-2", 1, at(120))
    assert closed is not None
    assert closed.status is AlertStatus.RESOLVED, "the old alert stays resolved"


def test_a_signal_of_another_key_is_refused() -> None:
    other = signal(subject=Subject(kind="slot", id="shelf-1/4"))
    with pytest.raises(ValueError, match="applied to alert a-1"):
        apply_signal(opened(), other, new_alert_id="a-2")


def test_acknowledge_records_who_and_when() -> None:
    acked = acknowledge(opened(), by="maria", at=at(30), note="on my way")
    assert (acked.status, acked.acknowledged_by, acked.acknowledged_at) == (AlertStatus.ACKNOWLEDGED, "maria", at(30))
    assert acked.history[-1] == dataclasses.replace(
        acked.history[-1], action="acknowledged", actor="maria", note="on my way", at=at(30)
    )


def test_resolve_by_hand_records_the_note() -> None:
    done = resolve(acknowledge(opened(), by="maria", at=at(30)), by="maria", at=at(90), note="customer, paid")
    assert (done.status, done.resolved_by, done.resolution_note) == (AlertStatus.RESOLVED, "maria", "customer, paid")
    assert [h.action for h in done.history] == ["opened", "acknowledged", "resolved"]


def _resolved() -> Alert:
    return resolve(opened(), by="maria", at=at(60), note="done")


@pytest.mark.parametrize(
    ("operation", "fragment"),
    [
        pytest.param(
            lambda: acknowledge(_resolved(), by="ali", at=at(90)),
            "cannot be acknowledged: it was resolved",
            id="ack resolved",
        ),
        pytest.param(
            lambda: acknowledge(acknowledge(opened(), by="ali", at=at(5)), by="bo", at=at(6)),
            "already acknowledged by ali",
            id="ack twice",
        ),
        pytest.param(
            lambda: resolve(_resolved(), by="ali", at=at(90), note="again"), "already resolved", id="resolve twice"
        ),
        pytest.param(lambda: open_alert(signal("clear"), alert_id="x"), "cannot open", id="clear opens nothing"),
        pytest.param(
            lambda: resolve(opened(), by="ali", at=at(5), note="  "), "needs a note", id="resolve without note"
        ),
        pytest.param(lambda: acknowledge(opened(), by="", at=at(5)), "name of who", id="ack by nobody"),
        pytest.param(
            lambda: acknowledge(opened(), by="ali", at=at(-5)), "before its last transition", id="ack in the past"
        ),
    ],
)
def test_illegal_transitions_are_refused(operation: object, fragment: str) -> None:
    with pytest.raises(AlertTransitionError, match=fragment):
        operation()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("checks", "levels"),
    [
        pytest.param([299], [[]], id="not yet"),
        pytest.param([300], [[1]], id="first level at its delay"),
        pytest.param([300, 400], [[1], []], id="each level once"),
        pytest.param([300, 900, 5000], [[1], [2], []], id="second level, then no more levels"),
        pytest.param([1000], [[1, 2]], id="a late check catches up both levels"),
    ],
)
def test_escalation_levels(checks: list[float], levels: list[list[int]]) -> None:
    alert = opened()
    got = []
    for seconds in checks:
        check = escalate_due(alert, at=at(seconds))
        alert = check.alert
        got.append([e.level for e in check.escalations])
    assert got == levels
    assert [h.level for h in alert.history if h.action == "escalated"] == [lvl for batch in levels for lvl in batch]


@pytest.mark.parametrize(
    "handled",
    [
        pytest.param(lambda a: acknowledge(a, by="maria", at=at(100)), id="acknowledged"),
        pytest.param(lambda a: resolve(a, by="maria", at=at(100), note="done"), id="resolved"),
    ],
)
def test_a_handled_alert_does_not_escalate(handled: object) -> None:
    alert = handled(opened())  # type: ignore[operator]
    check = escalate_due(alert, at=at(5000))
    assert check.escalations == ()
    assert check.alert is alert


def test_an_alert_without_escalation_delays_never_escalates() -> None:
    alert = open_alert(signal(escalate_after_s=()), alert_id="a-1")
    assert escalate_due(alert, at=at(10**6)).escalations == ()


def test_history_entries_cannot_be_changed() -> None:
    alert = acknowledge(opened(), by="maria", at=at(30))
    with pytest.raises(dataclasses.FrozenInstanceError):
        alert.history[0].actor = "mallory"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        alert.history = ()  # type: ignore[misc]
    assert isinstance(alert.history, tuple), "a tuple has no append, insert or item assignment"


Operation = tuple[str, int]
OPERATIONS = st.tuples(st.sampled_from(["raise", "clear", "ack", "resolve", "escalate"]), st.integers(0, 600))


@given(st.lists(OPERATIONS, max_size=25))
def test_no_sequence_of_operations_rewrites_history(operations: list[Operation]) -> None:
    """Whatever happens, each alert's history only grows at its end; refused operations change nothing."""
    alert = opened()
    now = 0.0
    for name, step in operations:
        now += step
        before = alert
        snapshot = tuple(dataclasses.astuple(h) for h in before.history)
        try:
            if name in ("raise", "clear"):
                outcome = apply_signal(alert, signal(name, now), new_alert_id=f"a-{now}")  # type: ignore[arg-type]
                after = outcome.alert if outcome.alert is not None else alert
            elif name == "ack":
                after = acknowledge(alert, by="maria", at=at(now))
            elif name == "resolve":
                after = resolve(alert, by="maria", at=at(now), note="checked")
            else:
                after = escalate_due(alert, at=at(now)).alert
        except AlertTransitionError:
            after = alert
        assert tuple(dataclasses.astuple(h) for h in before.history) == snapshot, "the old value is untouched"
        if after.alert_id == before.alert_id:
            assert after.history[: len(before.history)] == before.history
            assert [h.at for h in after.history] == sorted(h.at for h in after.history)
        else:
            assert before.status is AlertStatus.RESOLVED, "a new alert opens only after the old one is resolved"
        alert = after
