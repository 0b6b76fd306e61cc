"""Rules: one table of situations and expected signals per rule kind, then rule sets and store overrides."""

from __future__ import annotations

import re
import tomllib
from datetime import datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hub.domain.alerts import AlertSignal, Severity, Subject
from hub.domain.excursions import Excursion
from hub.domain.rules import (
    AfterHoursMotionRule,
    CameraTamperRule,
    DeviceUnpluggedRule,
    DoorAfterHoursRule,
    DoorHeldOpenRule,
    EnvironmentRangeRule,
    EventObservation,
    GatewayOfflineRule,
    GatewayPresence,
    Observation,
    PrinterPaperOutRule,
    Rule,
    RuleSetError,
    ShelfSweepRule,
    ShrinkRule,
    ShrinkTotal,
    StoreContext,
    StoreOverrides,
    Tick,
    effective_rules,
    evaluate,
    evaluate_all,
    initial_states,
    load_rule_set,
    with_snapshot,
)
from hub.domain.store_hours import OpeningInterval, StoreHours, Weekday

BERLIN = ZoneInfo("Europe/Berlin")
STORE = "store-1"
DAY = (OpeningInterval(opens=time(8), closes=time(20)),)
CTX = StoreContext(
    store_id=STORE,
    hours=StoreHours(timezone="Europe/Berlin", weekly={d: DAY for d in Weekday if d is not Weekday.SUN}),
)
DOCS = Path(__file__).resolve().parents[3] / "docs" / "alerts.md"


def local(hhmm: str, day: str = "2026-03-02") -> datetime:
    """A store-local wall time (2026-03-02 is a Monday) as an aware datetime."""
    return datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=BERLIN)


_ids = iter(range(10**9))


def ev(kind: str, when: datetime, device: str = "cam-1", **payload: Any) -> EventObservation:
    return EventObservation(
        event_id=f"ev-{next(_ids)}", store_id=STORE, device_id=device, kind=kind, at=when, payload=payload
    )


def pick(when: datetime, *, slot: int = 3, items: int = 1, device: str = "shelf-1") -> EventObservation:
    return ev("shelf.pick", when, device, slot=slot, sku="4006381333931", delta=-items, count=10, weight_g=500.0)


def door(when: datetime, *, is_open: bool) -> EventObservation:
    return ev("door.opened" if is_open else "door.closed", when, "door-1", zone="back", open=is_open)


def reading(
    when: datetime, value: float, *, zone: str = "chiller-1", quantity: str = "temperature"
) -> EventObservation:
    unit = {"temperature": "Cel", "humidity": "%RH"}[quantity]
    return ev("environment.reading", when, "thermo-1", quantity=quantity, value=value, unit=unit, zone=zone)


def detached(when: datetime, reason: str = "unplugged") -> EventObservation:
    return ev("device.detached", when, "scale-1", reason=reason, address="1-1.2")


def attached(when: datetime) -> EventObservation:
    return ev("device.attached", when, "scale-1", profile="scale", address="1-1.2")


def presence(when: datetime, *, online: bool) -> GatewayPresence:
    return GatewayPresence(
        store_id=STORE, gateway_id="gw-1", online=online, reason="birth" if online else "lost", at=when
    )


def shrink(when: datetime, units: int, value: str) -> ShrinkTotal:
    return ShrinkTotal(
        store_id=STORE, sku="4006381333931", units=units, value=Decimal(value), at=when, record_ids=("s-1",)
    )


def tick(when: datetime) -> Tick:
    return Tick(store_id=STORE, at=when)


def run(rule: Rule, observations: list[Observation]) -> list[AlertSignal]:
    rules = {"r": rule}
    states = initial_states(rules)
    signals: list[AlertSignal] = []
    for observation in observations:
        evaluation = evaluate(rules, CTX, states, observation)
        states = dict(evaluation.states)
        signals += evaluation.signals
    return signals


def summary(signals: list[AlertSignal]) -> list[tuple[str, str, datetime]]:
    return [(s.action, str(s.subject), s.at) for s in signals]


M = local("12:00")  # a Monday noon, the store open
N = local("23:00")  # the same Monday night, closed


def s(seconds: float, base: datetime = M) -> datetime:
    return base + timedelta(seconds=seconds)


RAISE, CLEAR = "raise", "clear"

CASES: list[Any] = [
    # ---------------------------------------------------------------- after-hours motion
    pytest.param(AfterHoursMotionRule(), [ev("camera.motion", N)], [(RAISE, "camera:cam-1", N)], id="motion at night"),
    pytest.param(AfterHoursMotionRule(), [ev("camera.motion", M)], [], id="motion while open"),
    pytest.param(
        AfterHoursMotionRule(), [ev("camera.motion", local("20:10"))], [], id="motion: staff leaving after close"
    ),
    pytest.param(
        AfterHoursMotionRule(), [ev("camera.motion", local("07:50"))], [], id="motion: staff arriving before opening"
    ),
    pytest.param(
        AfterHoursMotionRule(),
        [ev("camera.motion", local("20:20"))],
        [(RAISE, "camera:cam-1", local("20:20"))],
        id="motion past the staff margin",
    ),
    pytest.param(
        AfterHoursMotionRule(staff_margin_s=0),
        [ev("camera.motion", local("20:00"))],
        [(RAISE, "camera:cam-1", local("20:00"))],
        id="motion at closing, no margin",
    ),
    pytest.param(
        AfterHoursMotionRule(),
        [ev("camera.motion", local("12:00", "2026-03-08"))],
        [(RAISE, "camera:cam-1", local("12:00", "2026-03-08"))],
        id="motion on a closed sunday",
    ),
    pytest.param(AfterHoursMotionRule(), [ev("camera.heartbeat", N)], [], id="motion: other camera events ignored"),
    pytest.param(
        AfterHoursMotionRule(event_kinds=("pir.triggered",)),
        [ev("pir.triggered", N, "pir-2")],
        [(RAISE, "camera:pir-2", N)],
        id="motion: configured kinds",
    ),
    # ---------------------------------------------------------------- camera tamper
    pytest.param(
        CameraTamperRule(),
        [ev("camera.tamper", M), ev("camera.restored", s(60))],
        [(RAISE, "camera:cam-1", M), (CLEAR, "camera:cam-1", s(60))],
        id="tamper then restored",
    ),
    pytest.param(CameraTamperRule(), [ev("camera.motion", N)], [], id="tamper: motion is not tamper"),
    # ---------------------------------------------------------------- shelf sweep (6 items within 30 s by default)
    pytest.param(
        ShelfSweepRule(),
        [pick(s(i * 5)) for i in range(6)],
        [(RAISE, "slot:shelf-1/3", s(25))],
        id="sweep: 6 picks in 25 s",
    ),
    pytest.param(ShelfSweepRule(), [pick(s(i * 5)) for i in range(5)], [], id="sweep: 5 picks are shopping"),
    pytest.param(ShelfSweepRule(), [pick(s(i * 12)) for i in range(8)], [], id="sweep: picks spread over 84 s"),
    pytest.param(ShelfSweepRule(), [pick(M, items=6)], [(RAISE, "slot:shelf-1/3", M)], id="sweep: one grab of 6"),
    pytest.param(ShelfSweepRule(), [pick(s(i), slot=3 + i % 2) for i in range(10)], [], id="sweep: counted per slot"),
    pytest.param(
        ShelfSweepRule(), [pick(s(i), device=f"shelf-{i % 2}") for i in range(10)], [], id="sweep: counted per shelf"
    ),
    pytest.param(
        ShelfSweepRule(),
        [pick(s(i)) for i in range(8)],
        [(RAISE, "slot:shelf-1/3", s(5))],
        id="sweep: reported once, window starts over",
    ),
    pytest.param(
        ShelfSweepRule(),
        [pick(s(i)) for i in range(12)],
        [(RAISE, "slot:shelf-1/3", s(5)), (RAISE, "slot:shelf-1/3", s(11))],
        id="sweep: a second run raises again",
    ),
    pytest.param(
        ShelfSweepRule(),
        [ev("shelf.put", s(i), "shelf-1", slot=3, delta=2, count=12, weight_g=600.0) for i in range(6)],
        [],
        id="sweep: puts do not count",
    ),
    pytest.param(
        ShelfSweepRule(min_items=3, window_s=10),
        [pick(s(0)), pick(s(5)), pick(s(9))],
        [(RAISE, "slot:shelf-1/3", s(9))],
        id="sweep: own parameters",
    ),
    # ---------------------------------------------------------------- shrink over threshold (10 units or 100.00)
    pytest.param(ShrinkRule(), [shrink(M, 11, "20")], [(RAISE, "sku:4006381333931", M)], id="shrink: units over"),
    pytest.param(ShrinkRule(), [shrink(M, 10, "100")], [], id="shrink: at the threshold is not over"),
    pytest.param(ShrinkRule(), [shrink(M, 2, "100.01")], [(RAISE, "sku:4006381333931", M)], id="shrink: value over"),
    pytest.param(
        ShrinkRule(),
        [shrink(M, 12, "5"), shrink(s(60), 0, "0"), shrink(s(90), 0, "0")],
        [(RAISE, "sku:4006381333931", M), (CLEAR, "sku:4006381333931", s(60))],
        id="shrink: clears once",
    ),
    pytest.param(ShrinkRule(max_units=None), [shrink(M, 50, "99")], [], id="shrink: unit limit off"),
    # ---------------------------------------------------------------- device unplugged (grace 120 s)
    pytest.param(DeviceUnpluggedRule(), [detached(M), attached(s(60)), tick(s(300))], [], id="unplugged: quick replug"),
    pytest.param(DeviceUnpluggedRule(), [detached(M), tick(s(119))], [], id="unplugged: within grace"),
    pytest.param(
        DeviceUnpluggedRule(),
        [detached(M), tick(s(200)), tick(s(300)), attached(s(400))],
        [(RAISE, "device:scale-1", s(120)), (CLEAR, "device:scale-1", s(400))],
        id="unplugged: past grace, then back",
    ),
    pytest.param(
        DeviceUnpluggedRule(),
        [detached(M), detached(s(100)), tick(s(130))],
        [(RAISE, "device:scale-1", s(120))],
        id="unplugged: the first unplug counts",
    ),
    pytest.param(
        DeviceUnpluggedRule(),
        [detached(M, "shutdown"), detached(s(1), "unconfigured"), tick(s(600))],
        [],
        id="unplugged: deliberate removals",
    ),
    pytest.param(
        DeviceUnpluggedRule(),
        [detached(M), pick(s(150))],
        [(RAISE, "device:scale-1", s(120))],
        id="unplugged: any event advances the clock",
    ),
    # ---------------------------------------------------------------- gateway offline (grace 300 s)
    pytest.param(
        GatewayOfflineRule(),
        [presence(M, online=False), presence(s(100), online=True), tick(s(900))],
        [],
        id="gateway: brief drop",
    ),
    pytest.param(GatewayOfflineRule(), [presence(M, online=False), tick(s(299))], [], id="gateway: within grace"),
    pytest.param(
        GatewayOfflineRule(),
        [presence(M, online=False), tick(s(300)), presence(s(800), online=True)],
        [(RAISE, "gateway:gw-1", s(300)), (CLEAR, "gateway:gw-1", s(800))],
        id="gateway: offline past grace",
    ),
    pytest.param(GatewayOfflineRule(), [presence(M, online=True)], [], id="gateway: online is fine"),
    # ---------------------------------------------------------------- door open after hours
    pytest.param(
        DoorAfterHoursRule(),
        [door(N, is_open=True), door(s(30, N), is_open=False)],
        [(RAISE, "door:door-1/back", N)],
        id="door at night, closing does not clear",
    ),
    pytest.param(DoorAfterHoursRule(), [door(M, is_open=True)], [], id="door during hours"),
    pytest.param(DoorAfterHoursRule(), [door(local("07:50"), is_open=True)], [], id="door: staff arriving"),
    # ---------------------------------------------------------------- door held open (120 s)
    pytest.param(
        DoorHeldOpenRule(),
        [door(M, is_open=True), door(s(60), is_open=False), tick(s(600))],
        [],
        id="held: closed in time",
    ),
    pytest.param(
        DoorHeldOpenRule(),
        [door(M, is_open=True), tick(s(130)), door(s(200), is_open=False)],
        [(RAISE, "door:door-1/back", s(120)), (CLEAR, "door:door-1/back", s(200))],
        id="held open, then closed",
    ),
    pytest.param(DoorHeldOpenRule(grace_s=600), [door(M, is_open=True), tick(s(599))], [], id="held: own grace"),
    # ---------------------------------------------------------------- environment range (chiller 0..5 °C)
    pytest.param(
        EnvironmentRangeRule(zone="chiller-1", low=0, high=5, alarm_after_s=600),
        [reading(s(0), 6), reading(s(300), 7), reading(s(600), 6.5), reading(s(900), 4.8), reading(s(1200), 4.4)],
        [(RAISE, "zone:chiller-1", s(600)), (CLEAR, "zone:chiller-1", s(1200))],
        id="chiller too warm",
    ),
    pytest.param(
        EnvironmentRangeRule(zone="chiller-1", low=0, high=5, alarm_after_s=600),
        [reading(s(0), 6), reading(s(300), 4)],
        [],
        id="chiller: short door opening",
    ),
    pytest.param(
        EnvironmentRangeRule(zone="chiller-1", low=0, high=5, alarm_after_s=0),
        [reading(M, 9, zone="chiller-2"), reading(s(1), 99, quantity="humidity")],
        [],
        id="env: other zone and quantity ignored",
    ),
    pytest.param(
        EnvironmentRangeRule(zone="freezer-1", high=-18, alarm_after_s=300),
        [reading(s(0), -15, zone="freezer-1"), reading(s(300), -14, zone="freezer-1")],
        [(RAISE, "zone:freezer-1", s(300))],
        id="freezer too warm",
    ),
    pytest.param(
        EnvironmentRangeRule(zone="freezer-*", high=-18, alarm_after_s=300),
        [
            reading(s(0), -15, zone="freezer-1"),
            reading(s(100), -14, zone="freezer-2"),
            reading(s(300), -14, zone="freezer-1"),
            reading(s(350), -19, zone="freezer-2"),
            reading(s(400), -9, zone="chiller-1"),
            reading(s(600), -19, zone="freezer-1"),
        ],
        [(RAISE, "zone:freezer-1", s(300)), (CLEAR, "zone:freezer-1", s(600))],
        id="zone pattern: each freezer its own excursion, other zones ignored",
    ),
]


@pytest.mark.parametrize(("rule", "observations", "expected"), CASES)
def test_rule(rule: Rule, observations: list[Observation], expected: list[tuple[str, str, datetime]]) -> None:
    got = run(rule, observations)
    assert summary(got) == [(action, subject, when) for action, subject, when in expected]
    for signal in got:
        assert (signal.store_id, signal.rule_id, signal.severity) == (STORE, "r", rule.severity)
        assert signal.message


def test_a_sweep_signal_carries_every_pick_as_evidence_and_says_what_happened() -> None:
    picks = [pick(s(i * 4)) for i in range(6)]
    (signal,) = run(ShelfSweepRule(), list(picks))
    assert signal.evidence == tuple(p.event_id for p in picks)
    assert signal.message == "6 items of 4006381333931 taken from slot shelf-1/3 within 20 s"


def test_a_motion_signal_carries_the_camera_snapshot_and_local_time() -> None:
    (signal,) = run(AfterHoursMotionRule(), [ev("camera.motion", N, snapshot_ref="snap/cam-1/123.jpg")])
    assert signal.snapshot_ref == "snap/cam-1/123.jpg"
    assert "23:00" in signal.message
    assert with_snapshot(signal, "snap/other.jpg").snapshot_ref == "snap/other.jpg"


def test_an_environment_clear_records_the_excursion() -> None:
    rules: dict[str, Rule] = {"chiller": EnvironmentRangeRule(zone="chiller-1", low=0, high=5, alarm_after_s=60)}
    states = initial_states(rules)
    excursions: list[Excursion] = []
    for observation in [reading(s(0), 7), reading(s(60), 8), reading(s(120), 3)]:
        evaluation = evaluate(rules, CTX, states, observation)
        states, excursions = dict(evaluation.states), excursions + list(evaluation.excursions)
    assert [(e.start, e.end, e.peak) for e in excursions] == [(s(0), s(120), 8.0)]


def test_an_out_of_order_reading_is_reported_as_rejected() -> None:
    rules: dict[str, Rule] = {"chiller": EnvironmentRangeRule(zone="chiller-1", low=0, high=5)}
    states = evaluate(rules, CTX, initial_states(rules), reading(s(60), 3)).states
    late = reading(s(0), 9)
    evaluation = evaluate(rules, CTX, states, late)
    assert evaluation.signals == ()
    assert len(evaluation.rejected) == 1
    assert evaluation.rejected[0].startswith(f"{late.event_id}: reading at")


def test_an_observation_of_another_store_is_refused() -> None:
    with pytest.raises(ValueError, match="store 'store-2'"):
        evaluate({}, CTX, {}, Tick(store_id="store-2", at=M))


def test_evaluation_does_not_change_the_state_passed_in() -> None:
    rules: dict[str, Rule] = {"sweep": ShelfSweepRule()}
    before = initial_states(rules)
    after = evaluate(rules, CTX, before, pick(M)).states
    assert before == {"sweep": {}}
    assert after["sweep"] != {}


# --------------------------------------------------------------------------- rule sets and overrides

CHAIN = load_rule_set(
    {
        "rules": {
            "sweep": {"kind": "shelf_sweep", "min_items": 6, "window_s": 30},
            "night-motion": {"kind": "after_hours_motion", "escalate_after_s": [300, 900]},
            "chiller-1": {"kind": "environment_range", "zone": "chiller-1", "low": 0, "high": 5},
        }
    }
)


def test_a_store_overrides_parameters_and_keeps_the_rest() -> None:
    rules = effective_rules(CHAIN, StoreOverrides(store_id=STORE, rules={"sweep": {"min_items": 10}}))
    sweep = rules["sweep"]
    assert isinstance(sweep, ShelfSweepRule)
    assert (sweep.min_items, sweep.window_s) == (10, 30)
    assert rules["night-motion"] == CHAIN.rules["night-motion"]
    chain_sweep = CHAIN.rules["sweep"]
    assert isinstance(chain_sweep, ShelfSweepRule)
    assert chain_sweep.min_items == 6, "the chain's rule is untouched"


def test_a_store_disables_a_rule() -> None:
    rules = effective_rules(CHAIN, StoreOverrides(store_id=STORE, rules={"night-motion": {"enabled": False}}))
    assert sorted(rules) == ["chiller-1", "sweep"]


def test_without_overrides_the_chain_rules_apply() -> None:
    assert effective_rules(CHAIN) == CHAIN.rules


def test_a_severity_override_reaches_the_signals() -> None:
    rules = effective_rules(CHAIN, StoreOverrides(store_id=STORE, rules={"sweep": {"severity": "warning"}}))
    (signal,) = evaluate(rules, CTX, initial_states(rules), pick(M, items=6)).signals
    assert signal.severity is Severity.WARNING
    assert signal.subject == Subject(kind="slot", id="shelf-1/3")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"sweep": {"min_items": 1}},
            "rule 'sweep', field 'min_items': Input should be greater than or equal to 2",
            id="bad value",
        ),
        pytest.param(
            {"sweep": {"min_itms": 8}},
            "rule 'sweep', field 'min_itms': Extra inputs are not permitted",
            id="unknown field",
        ),
        pytest.param(
            {"sweep": {"kind": "shrink_over_threshold"}}, "rule 'sweep', field 'kind': a store cannot change", id="kind"
        ),
        pytest.param(
            {"sweeps": {"min_items": 8}},
            "rule 'sweeps': the store overrides a rule the chain does not have",
            id="unknown rule",
        ),
        pytest.param(
            {"chiller-1": {"low": 9}},
            "rule 'chiller-1', field '\\(rule\\)': Value error, low 9.0 must be below high 5.0",
            id="cross-field",
        ),
        pytest.param(
            {"night-motion": {"escalate_after_s": [900, 300]}},
            "rule 'night-motion', field 'escalate_after_s': .*increase",
            id="escalation order",
        ),
    ],
)
def test_invalid_overrides_name_the_rule_and_field(changes: dict[str, dict[str, Any]], message: str) -> None:
    with pytest.raises(RuleSetError, match=message):
        effective_rules(CHAIN, StoreOverrides(store_id=STORE, rules=changes))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            {"rules": {"sweep": {"kind": "shelf_sweep", "window_s": 0}}},
            "rule 'sweep', field 'window_s': Input should be greater than 0",
            id="bad value",
        ),
        pytest.param(
            {"rules": {"x": {"kind": "telepathy"}}},
            "rule 'x', field .*does not match any of the expected tags",
            id="unknown kind",
        ),
        pytest.param(
            {"rules": {"Bad Id": {"kind": "shelf_sweep"}}},
            "rule 'Bad Id', field '\\(rule id\\)': String should match pattern",
            id="bad rule id",
        ),
        pytest.param(
            {"rules": {"s": {"kind": "shrink_over_threshold", "max_units": None, "max_value": None}}},
            "rule 's', field '\\(rule\\)': Value error, a shrink rule needs",
            id="no threshold",
        ),
        pytest.param({"rulez": {}}, "rule set, field 'rulez'", id="unknown top-level field"),
    ],
)
def test_invalid_chain_rules_name_the_rule_and_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleSetError, match=message):
        load_rule_set(data)


def test_the_example_rule_set_in_the_docs_is_valid() -> None:
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, f"{DOCS} has no TOML example"
    chain = load_rule_set(tomllib.loads(blocks[0]))
    overrides = StoreOverrides.model_validate(tomllib.loads(blocks[1]))
    rules = effective_rules(chain, overrides)
    assert {type(rule) for rule in chain.rules.values()} == {
        AfterHoursMotionRule,
        CameraTamperRule,
        ShelfSweepRule,
        ShrinkRule,
        DeviceUnpluggedRule,
        GatewayOfflineRule,
        DoorAfterHoursRule,
        DoorHeldOpenRule,
        EnvironmentRangeRule,
        PrinterPaperOutRule,
    }, "the example shows every rule kind"
    assert len(rules) < len(chain.rules), "the example override disables a rule"


def test_defaults_match_the_docs() -> None:
    """The defaults table in docs/alerts.md lists each kind's defaults as the models have them."""
    text = DOCS.read_text(encoding="utf-8")
    for model in (
        ShelfSweepRule,
        GatewayOfflineRule,
        DeviceUnpluggedRule,
        DoorHeldOpenRule,
        AfterHoursMotionRule,
        PrinterPaperOutRule,
    ):
        kind = model.model_fields["kind"].default
        row = next((line for line in text.splitlines() if line.startswith(f"| `{kind}`")), None)
        assert row is not None, f"docs/alerts.md has no row for {kind}"
        for name, info in model.model_fields.items():
            if name in ("kind", "enabled", "escalate_after_s", "event_kinds"):
                continue
            default = info.default.value if isinstance(info.default, Severity) else info.default
            assert f"`{name}` = {default}" in row, f"docs/alerts.md: {kind} should list `{name}` = {default}"


# --------------------------------------------------------------------------- the kind index of evaluate_all

# Every kind of rule, tight enough that random streams raise and clear them: short graces and windows.
EVERY_RULE: dict[str, Rule] = {
    "after-hours": AfterHoursMotionRule(staff_margin_s=0),
    "door-after-hours": DoorAfterHoursRule(staff_margin_s=0),
    "door-held": DoorHeldOpenRule(grace_s=60),
    "freezer": EnvironmentRangeRule(zone="chiller-*", quantity="temperature", high=5, alarm_after_s=60),
    "gateway": GatewayOfflineRule(grace_s=90),
    "humidity": EnvironmentRangeRule(zone="chiller-*", quantity="humidity", high=70, alarm_after_s=0),
    "paper": PrinterPaperOutRule(),
    "sweep": ShelfSweepRule(min_items=3, window_s=40),
    "shrink": ShrinkRule(max_units=2),
    "tamper": CameraTamperRule(),
    "unplugged": DeviceUnpluggedRule(grace_s=30),
}


def _observation(kind: int, at: datetime, value: int) -> Observation:
    makers = (
        lambda: pick(at, items=value % 3 + 1, slot=value % 2 + 1),
        lambda: door(at, is_open=value % 2 == 0),
        lambda: reading(at, float(value % 9)),
        lambda: reading(at, float(50 + value * 3), quantity="humidity"),
        lambda: detached(at),
        lambda: attached(at),
        lambda: presence(at, online=value % 2 == 0),
        lambda: shrink(at, value % 5, f"{value}.00"),
        lambda: tick(at),
        lambda: ev("camera.motion", at, snapshot_ref=f"snap-{value}"),
        lambda: ev("camera.tamper" if value % 2 else "camera.restored", at),
        lambda: ev("scan.sale", at, "till-1", code="4006381333931", quantity=1),
        lambda: ev(
            "printer.status",
            at,
            "printer-1",
            online=value % 2 == 0,
            paper=("ok", "low", "out")[value % 3],
            cover_open=value % 4 == 0,
        ),
    )
    return makers[kind % len(makers)]()


def _every_rule_every_time(states: dict[str, Any], observations: list[Observation]) -> tuple[list[Any], list[Any]]:
    """The rule of evaluate, done plainly: every observation to every rule, in rule id order."""
    signals: list[Any] = []
    excursions: list[Any] = []
    for observation in observations:
        for rule_id in sorted(EVERY_RULE):
            outcome = EVERY_RULE[rule_id].evaluate(
                rule_id=rule_id, ctx=CTX, state=states[rule_id], observation=observation
            )
            states[rule_id] = outcome.state
            signals += outcome.signals
            excursions += outcome.excursions
    return signals, excursions


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 120), st.integers(0, 40)), min_size=1, max_size=60),
    start=st.sampled_from(["07:55", "12:00", "21:30"]),
)
# Raised and cleared while no timer is pending: a door held open, then closed; a device back after its grace.
@example(steps=[(1, 0, 0), (8, 70, 0), (1, 5, 1)], start="12:00")
@example(steps=[(4, 0, 0), (11, 40, 0), (5, 5, 0)], start="12:00")
def test_evaluate_all_skips_only_rules_an_observation_cannot_change(
    steps: list[tuple[int, int, int]], start: str
) -> None:
    at = local(start)
    observations: list[Observation] = []
    for kind, gap_s, value in steps:
        at += timedelta(seconds=gap_s)
        observations.append(_observation(kind, at, value))
    expected_states = initial_states(EVERY_RULE)
    expected_signals, expected_excursions = _every_rule_every_time(expected_states, observations)

    evaluation = evaluate_all(EVERY_RULE, CTX, initial_states(EVERY_RULE), observations)

    assert list(evaluation.signals) == expected_signals
    assert list(evaluation.excursions) == expected_excursions
    assert dict(evaluation.states) == expected_states


def test_an_event_no_rule_reads_is_given_to_a_rule_whose_timer_it_can_run_out() -> None:
    rules: dict[str, Rule] = {"unplugged": DeviceUnpluggedRule(grace_s=30)}
    states = evaluate(rules, CTX, initial_states(rules), detached(M)).states
    (raised,) = evaluate_all(rules, CTX, states, [ev("scan.sale", M + timedelta(seconds=31), "till-1")]).signals
    assert (raised.action, raised.at) == ("raise", M + timedelta(seconds=30))
