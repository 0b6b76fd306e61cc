"""Security and environment rules as data, evaluated by pure functions into alert signals.

One frozen pydantic model per rule kind holds its parameters; a chain's :class:`RuleSet` maps rule
ids to rules, and a store's overrides change a rule's parameters or disable it (:func:`effective_rules`).

Evaluation is a pure function of the rule, the store's context (its hours), the rule's small state
(passed in, returned) and one observation: an event as plain values, a gateway's presence, a shrink
total, or a clock tick (the timers of grace periods advance on every observation of the store, and
ticks make sure they do when nothing else happens). It returns the new state and :class:`AlertSignal`
values for :mod:`hub.domain.alerts`. Nothing here reads a clock, a database or the network.
"""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from hub.domain.alerts import AlertSignal, Severity, Subject
from hub.domain.excursions import Excursion, ExcursionState, Reading, ZoneRange, feed
from hub.domain.store_hours import StoreHours, open_periods
from hub.errors import HubError
from storegate.wire import (
    INT32_MAX,
    DeviceDetached,
    DoorChange,
    EnvironmentReading,
    EventKind,
    PrinterStatus,
    Quantity,
    ShelfChange,
)

RULE_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
PayloadModel = TypeVar("PayloadModel", bound=BaseModel)

# --------------------------------------------------------------------------- observations


@dataclass(frozen=True, kw_only=True)
class EventObservation:
    """One stored event as plain values: what a rule sees of it."""

    event_id: str
    store_id: str
    device_id: str | None
    kind: str
    at: datetime
    payload: Mapping[str, Any] = field(default_factory=dict)
    gateway_id: str | None = None
    # Payloads validated as a model, by model: several rules read the same reading or shelf change.
    _typed: dict[type[BaseModel], BaseModel] = field(default_factory=dict, init=False, compare=False, repr=False)

    def payload_as(self, model: type[PayloadModel]) -> PayloadModel:
        """The payload validated as ``model`` (raises pydantic's ValidationError), once per observation."""
        typed = self._typed.get(model)
        if typed is None:
            # The model's own validator, as model_validate calls it, without the wrapper: a quarter of the events
            # are read so (issue 19). The payload's decoding validated it already; its model is not kept, as
            # keeping one per event cost the decoding more than it saves here (docs/benchmarks.md).
            typed = self._typed[model] = model.__pydantic_validator__.validate_python(self.payload)
        return typed  # type: ignore[return-value]  # stored under its own model


@dataclass(frozen=True, kw_only=True)
class GatewayPresence:
    """A gateway came online or went offline (its birth message or last will)."""

    store_id: str
    gateway_id: str
    online: bool
    reason: str
    at: datetime


@dataclass(frozen=True, kw_only=True)
class ShrinkTotal:
    """The current shrink of one SKU in a store (units and value), with the shrink records behind it."""

    store_id: str
    sku: str
    units: int
    value: Decimal
    at: datetime
    record_ids: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Tick:
    """The clock moved on: lets grace periods expire when no event arrives."""

    store_id: str
    at: datetime


Observation = EventObservation | GatewayPresence | ShrinkTotal | Tick


@dataclass(frozen=True, kw_only=True)
class StoreContext:
    """What rules need to know about the store: its id and opening hours."""

    store_id: str
    hours: StoreHours


@dataclass(frozen=True, kw_only=True)
class RuleOutcome:
    """The rule's new state, the signals it emits, excursions it closed and readings it refused (with reasons)."""

    state: Any
    signals: tuple[AlertSignal, ...] = ()
    excursions: tuple[Excursion, ...] = ()
    rejected: tuple[str, ...] = ()


# --------------------------------------------------------------------------- grace timers


@dataclass(frozen=True, kw_only=True)
class Pending:
    """A condition that started at ``since`` and alarms if it lasts past the rule's grace."""

    since: datetime
    evidence: tuple[str, ...]
    detail: str


@dataclass(frozen=True, kw_only=True)
class GraceTimers:
    """Conditions per subject: waiting out their grace, or already raised."""

    pending: Mapping[Subject, Pending] = field(default_factory=dict)
    raised: Mapping[Subject, Pending] = field(default_factory=dict)

    def start(self, subject: Subject, pending: Pending) -> GraceTimers:
        """Start a subject's timer, unless it already runs or has raised (the first start counts)."""
        if subject in self.pending or subject in self.raised:
            return self
        return replace(self, pending={**self.pending, subject: pending})

    def stop(self, subject: Subject) -> tuple[GraceTimers, Pending | None]:
        """Stop a subject's timer; returns what had been raised, if it had."""
        pending = {s: p for s, p in self.pending.items() if s != subject}
        raised = {s: p for s, p in self.raised.items() if s != subject}
        return GraceTimers(pending=pending, raised=raised), self.raised.get(subject)

    def expire(self, at: datetime, grace: timedelta) -> tuple[GraceTimers, list[tuple[Subject, Pending]]]:
        """Move every subject whose grace has run out by ``at`` to raised; returns those."""
        due = sorted((s, p) for s, p in self.pending.items() if at - p.since >= grace)
        if not due:
            return self, []
        pending = {s: p for s, p in self.pending.items() if at - p.since < grace}
        return GraceTimers(pending=pending, raised={**self.raised, **dict(due)}), due


# --------------------------------------------------------------------------- rule models


# The longest delay or window a rule may have: a value past it would only overflow a timedelta in the engine.
MAX_RULE_SECONDS: Final = 366 * 86_400.0
# The largest item count a rule compares with: what the hub's INTEGER columns hold.
MAX_RULE_ITEMS: Final = INT32_MAX


class RuleBase(BaseModel):
    """What every rule has: whether it is on, its severity and its escalation delays."""

    # No infinite or NaN threshold or delay: Python's JSON parser takes "Infinity", PostgreSQL's json type does not.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = True
    severity: Severity = Severity.WARNING
    escalate_after_s: tuple[float, ...] = Field(
        default=(), description="unacknowledged this long after opening: escalate, one level per delay"
    )

    @field_validator("escalate_after_s")
    @classmethod
    def _increasing_delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(d <= 0 or d > MAX_RULE_SECONDS for d in value):
            raise ValueError(f"escalation delays must be positive and at most {MAX_RULE_SECONDS:g} s")
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("escalation delays must increase level by level")
        return value

    def initial_state(self) -> Any:
        """The state before the first observation."""
        return None

    def events_read(self) -> frozenset[str] | None:
        """The event kinds this rule reads, or None for all: any other event leaves it as it was.

        Other observations (presence, shrink totals, ticks) always reach the rule. A rule that declares
        kinds must return its state unchanged, with nothing emitted, for an event of any other kind, unless
        :meth:`waits_on_time` says its state has timers that an event's time alone can run out.
        """
        return None

    def waits_on_time(self, state: Any) -> bool:
        """Whether ``state`` holds timers that the time of any observation may run out."""
        return False

    def evaluate(self, *, rule_id: str, ctx: StoreContext, state: Any, observation: Observation) -> RuleOutcome:
        """Feed one observation of ``ctx``'s store; returns the new state and signals."""
        raise NotImplementedError

    def signal(
        self,
        action: Literal["raise", "clear"],
        *,
        rule_id: str,
        ctx: StoreContext,
        subject: Subject,
        at: datetime,
        message: str,
        evidence: tuple[str, ...] = (),
        snapshot_ref: str | None = None,
    ) -> AlertSignal:
        """A signal of this rule, carrying its severity and escalation delays."""
        return AlertSignal(
            action=action,
            store_id=ctx.store_id,
            rule_id=rule_id,
            subject=subject,
            severity=self.severity,
            at=at,
            message=message,
            evidence=evidence,
            snapshot_ref=snapshot_ref,
            escalate_after_s=self.escalate_after_s,
        )


class _CameraPayload(BaseModel):
    """The part of a camera event a rule uses; other fields are the camera's business."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    snapshot_ref: str | None = None


def _snapshot_of(observation: EventObservation) -> str | None:
    return observation.payload_as(_CameraPayload).snapshot_ref


def _device_subject(observation: EventObservation, kind: Literal["device", "camera", "door"]) -> Subject:
    return Subject(kind=kind, id=observation.device_id or "unknown")


def _door_subject(observation: EventObservation, door: DoorChange) -> Subject:
    device = observation.device_id or "unknown"
    return Subject(kind="door", id=f"{device}/{door.zone}" if door.zone else device)


def _closed_around(hours: StoreHours, at: datetime, margin_s: float) -> bool:
    """Closed at ``at`` and for ``margin_s`` either side (staff arrive before opening and leave after closing)."""
    margin = timedelta(seconds=margin_s)
    return not open_periods(hours, at - margin, at + margin + timedelta(microseconds=1))


class AfterHoursMotionRule(RuleBase):
    """Motion seen while the store is closed (by its hours and time zone), outside the staff margin."""

    kind: Literal["after_hours_motion"] = "after_hours_motion"
    severity: Severity = Severity.CRITICAL
    event_kinds: tuple[str, ...] = Field(default=(EventKind.CAMERA_MOTION, EventKind.MOTION_DETECTED), min_length=1)
    staff_margin_s: float = Field(
        default=900.0, ge=0, le=MAX_RULE_SECONDS, description="motion this close to an open period is staff"
    )

    def events_read(self) -> frozenset[str]:
        """The motion kinds."""
        return frozenset(self.event_kinds)

    def evaluate(self, *, rule_id: str, ctx: StoreContext, state: Any, observation: Observation) -> RuleOutcome:
        """Raise on motion while closed; it never clears by itself (a person resolves it)."""
        if not isinstance(observation, EventObservation) or observation.kind not in self.event_kinds:
            return RuleOutcome(state=state)
        if not _closed_around(ctx.hours, observation.at, self.staff_margin_s):
            return RuleOutcome(state=state)
        subject = _device_subject(observation, "camera")
        local = observation.at.astimezone(ctx.hours.zone)
        message = f"motion at {subject.id} at {local:%H:%M} while the store is closed"
        raised = self.signal(
            "raise",
            rule_id=rule_id,
            ctx=ctx,
            subject=subject,
            at=observation.at,
            message=message,
            evidence=(observation.event_id,),
            snapshot_ref=_snapshot_of(observation),
        )
        return RuleOutcome(state=state, signals=(raised,))


class CameraTamperRule(RuleBase):
    """A camera reports it is covered, blinded or moved; clears when it reports its view restored."""

    kind: Literal["camera_tamper"] = "camera_tamper"
    severity: Severity = Severity.CRITICAL
    tamper_kinds: tuple[str, ...] = Field(default=(EventKind.CAMERA_TAMPER,), min_length=1)
    restored_kinds: tuple[str, ...] = (EventKind.CAMERA_RESTORED,)

    def events_read(self) -> frozenset[str]:
        """Tamper and restored kinds."""
        return frozenset(self.tamper_kinds + self.restored_kinds)

    def evaluate(self, *, rule_id: str, ctx: StoreContext, state: Any, observation: Observation) -> RuleOutcome:
        """Raise on a tamper event, clear on a restored one."""
        if not isinstance(observation, EventObservation):
            return RuleOutcome(state=state)
        subject = _device_subject(observation, "camera")
        if observation.kind in self.tamper_kinds:
            action: Literal["raise", "clear"] = "raise"
            message = f"camera {subject.id} reports tampering"
        elif observation.kind in self.restored_kinds:
            action, message = "clear", f"camera {subject.id} reports its view restored"
        else:
            return RuleOutcome(state=state)
        emitted = self.signal(
            action,
            rule_id=rule_id,
            ctx=ctx,
            subject=subject,
            at=observation.at,
            message=message,
            evidence=(observation.event_id,),
            snapshot_ref=_snapshot_of(observation),
        )
        return RuleOutcome(state=state, signals=(emitted,))


@dataclass(frozen=True, kw_only=True)
class _Pick:
    at: datetime
    items: int
    event_id: str


SweepState = Mapping[Subject, tuple[_Pick, ...]]


class ShelfSweepRule(RuleBase):
    """At least ``min_items`` items of one slot removed within ``window_s`` seconds (picks only; puts do not offset)."""

    kind: Literal["shelf_sweep"] = "shelf_sweep"
    severity: Severity = Severity.CRITICAL
    min_items: int = Field(default=6, ge=2, le=MAX_RULE_ITEMS)
    window_s: float = Field(default=30.0, gt=0, le=MAX_RULE_SECONDS)

    def initial_state(self) -> SweepState:
        """No picks seen."""
        return {}

    def events_read(self) -> frozenset[str]:
        """Shelf picks."""
        return frozenset({EventKind.SHELF_PICK})

    def evaluate(self, *, rule_id: str, ctx: StoreContext, state: Any, observation: Observation) -> RuleOutcome:
        """Add a pick to its slot's window; raise (and empty the window) once the window holds ``min_items``."""
        if not isinstance(observation, EventObservation) or observation.kind != EventKind.SHELF_PICK:
            return RuleOutcome(state=state)
        change = observation.payload_as(ShelfChange)
        if change.delta >= 0:
            return RuleOutcome(state=state)
        windows: SweepState = state
        subject = Subject(kind="slot", id=f"{observation.device_id or 'unknown'}/{change.slot}")
        start = observation.at - timedelta(seconds=self.window_s)
        window = tuple(p for p in windows.get(subject, ()) if start < p.at <= observation.at)
        window += (_Pick(at=observation.at, items=-change.delta, event_id=observation.event_id),)
        removed = sum(p.items for p in window)
        if removed < self.min_items:
            return RuleOutcome(state={**windows, subject: window})
        first = min(p.at for p in window)
        seconds = (observation.at - first).total_seconds()
        what = f" of {change.sku}" if change.sku else ""
        raised = self.signal(
            "raise",
            rule_id=rule_id,
            ctx=ctx,
            subject=subject,
            at=observation.at,
            message=f"{removed} items{what} taken from slot {subject.id} within {seconds:g} s",
            evidence=tuple(p.event_id for p in window),
        )
        # The sweep is reported; the next one must be a fresh run of picks, not this one again.
        return RuleOutcome(state={s: w for s, w in windows.items() if s != subject}, signals=(raised,))


class ShrinkRule(RuleBase):
    """A SKU's shrink in a store over a unit or value threshold; clears when it is back under both."""

    kind: Literal["shrink_over_threshold"] = "shrink_over_threshold"
    max_units: int | None = Field(
        default=10, ge=0, le=MAX_RULE_ITEMS, description="more units than this alarms; None: no unit limit"
    )
    max_value: Decimal | None = Field(
        default=Decimal("100"), ge=0, allow_inf_nan=False, description="store currency; None: no limit"
    )

    @model_validator(mode="after")
    def _some_threshold(self) -> ShrinkRule:
        if self.max_units is None and self.max_value is None:
            raise ValueError("a shrink rule needs max_units or max_value")
        return self

    def initial_state(self) -> frozenset[Subject]:
        """No SKU over threshold."""
        return frozenset()

    def events_read(self) -> frozenset[str]:
        """No events: shrink totals only."""
        return frozenset()

    def evaluate(self, *, rule_id: str, ctx: StoreContext, state: Any, observation: Observation) -> RuleOutcome:
        """Raise while a SKU's shrink is over a threshold; clear once when it falls back."""
        if not isinstance(observation, ShrinkTotal):
            return RuleOutcome(state=state)
        over_threshold: frozenset[Subject] = state
        subject = Subject(kind="sku", id=observation.sku)
        over = (self.max_units is not None and observation.units > self.max_units) or (
            self.max_value is not None and observation.value > self.max_value
        )
        totals = f"{observation.units} units worth {observation.value}"
        if over:
            raised = self.signal(
                "raise",
                rule_id=rule_id,
                ctx=ctx,
                subject=subject,
                at=observation.at,
                message=f"shrink of {observation.sku} at {totals}, over the threshold",
                evidence=observation.record_ids,
            )
            return RuleOutcome(state=over_threshold | {subject}, signals=(raised,))
        if subject not in over_threshold:
            return RuleOutcome(state=state)
        cleared = self.signal(
            "clear",
            rule_id=rule_id,
            ctx=ctx,
            subject=subject,
            at=observation.at,
            message=f"shrink of {observation.sku} back to {totals}",
            evidence=observation.record_ids,
        )
        return RuleOutcome(state=over_threshold - {subject}, signals=(cleared,))


class _GraceRule(RuleBase):
    """A rule whose condition alarms only once it has lasted ``grace_s``; subclasses say when it starts and stops."""

    grace_s: float = Field(default=120.0, ge=0, le=MAX_RULE_SECONDS)

    def initial_state(self) -> GraceTimers:
        """No condition running."""
        return GraceTimers()

    def waits_on_time(self, state: Any) -> bool:
        """Timers waiting out their grace run out with any observation's time."""
        timers: GraceTimers = state
        return bool(timers.pending)

    def _start_or_stop(self, observation: Observation) -> tuple[Subject, Pending | None] | None:
        """(subject, Pending) if the observation starts a condition, (subject, None) if it ends one, else None."""
        raise NotImplementedError

    def _raise_message(self, subject: Subject, pending: Pending) -> str:
        raise NotImplementedError

    def _clear_message(self, subject: Subject) -> str:
        raise NotImplementedError

    def evaluate(self, *, rule_id: str, ctx: StoreContext, state: Any, observation: Observation) -> RuleOutcome:
        """Start or stop the subject's timer, then raise every condition whose grace has run out."""
        timers: GraceTimers = state
        signals: list[AlertSignal] = []
        change = self._start_or_stop(observation)
        if change is not None:
            subject, pending = change
            if pending is not None:
                timers = timers.start(subject, pending)
            else:
                timers, was_raised = timers.stop(subject)
                if was_raised is not None:
                    message = self._clear_message(subject)
                    signals.append(
                        self.signal(
                            "clear", rule_id=rule_id, ctx=ctx, subject=subject, at=observation.at, message=message
                        )
                    )
        timers, due = timers.expire(observation.at, timedelta(seconds=self.grace_s))
        for subject, pending in due:
            message = self._raise_message(subject, pending)
            signals.append(
                self.signal(
                    "raise",
                    rule_id=rule_id,
                    ctx=ctx,
                    subject=subject,
                    at=pending.since + timedelta(seconds=self.grace_s),
                    message=message,
                    evidence=pending.evidence,
                )
            )
        return RuleOutcome(state=timers, signals=tuple(signals))


class DeviceUnpluggedRule(_GraceRule):
    """A device unplugged and not back within ``grace_s`` (a quick replug does not alarm); clears when it returns."""

    kind: Literal["device_unplugged"] = "device_unplugged"

    def events_read(self) -> frozenset[str]:
        """Devices attached and detached."""
        return frozenset({EventKind.DEVICE_ATTACHED, EventKind.DEVICE_DETACHED})

    def _start_or_stop(self, observation: Observation) -> tuple[Subject, Pending | None] | None:
        if not isinstance(observation, EventObservation) or observation.device_id is None:
            return None
        subject = Subject(kind="device", id=observation.device_id)
        if observation.kind == EventKind.DEVICE_ATTACHED:
            return subject, None
        if observation.kind != EventKind.DEVICE_DETACHED:
            return None
        detached = observation.payload_as(DeviceDetached)
        if detached.reason != "unplugged":
            return None  # removed from the config or shut down on purpose: not an alarm
        detail = f"at {detached.address}"
        return subject, Pending(since=observation.at, evidence=(observation.event_id,), detail=detail)

    def _raise_message(self, subject: Subject, pending: Pending) -> str:
        return f"device {subject.id} unplugged {pending.detail} and not back within {self.grace_s:g} s"

    def _clear_message(self, subject: Subject) -> str:
        return f"device {subject.id} is attached again"


class GatewayOfflineRule(_GraceRule):
    """A gateway offline (lost or shut down) for longer than ``grace_s``; clears when it is back online."""

    kind: Literal["gateway_offline"] = "gateway_offline"
    severity: Severity = Severity.CRITICAL
    grace_s: float = Field(default=300.0, ge=0, le=MAX_RULE_SECONDS)

    def events_read(self) -> frozenset[str]:
        """No events: gateway presence only."""
        return frozenset()

    def _start_or_stop(self, observation: Observation) -> tuple[Subject, Pending | None] | None:
        if not isinstance(observation, GatewayPresence):
            return None
        subject = Subject(kind="gateway", id=observation.gateway_id)
        if observation.online:
            return subject, None
        return subject, Pending(since=observation.at, evidence=(), detail=observation.reason)

    def _raise_message(self, subject: Subject, pending: Pending) -> str:
        return f"gateway {subject.id} offline ({pending.detail}) for more than {self.grace_s:g} s"

    def _clear_message(self, subject: Subject) -> str:
        return f"gateway {subject.id} is back online"


class DoorHeldOpenRule(_GraceRule):
    """A door open longer than ``grace_s`` (at any hour); clears when it closes."""

    kind: Literal["door_held_open"] = "door_held_open"

    def events_read(self) -> frozenset[str]:
        """Doors opened and closed."""
        return frozenset({EventKind.DOOR_OPENED, EventKind.DOOR_CLOSED})

    def _start_or_stop(self, observation: Observation) -> tuple[Subject, Pending | None] | None:
        if not isinstance(observation, EventObservation) or observation.kind not in (
            EventKind.DOOR_OPENED,
            EventKind.DOOR_CLOSED,
        ):
            return None
        door = observation.payload_as(DoorChange)
        subject = _door_subject(observation, door)
        if not door.open:
            return subject, None
        return subject, Pending(since=observation.at, evidence=(observation.event_id,), detail="")

    def _raise_message(self, subject: Subject, pending: Pending) -> str:
        return f"door {subject.id} held open for more than {self.grace_s:g} s"

    def _clear_message(self, subject: Subject) -> str:
        return f"door {subject.id} closed"


class DoorAfterHoursRule(RuleBase):
    """A door opened while the store is closed, outside the staff margin; a person resolves it."""

    kind: Literal["door_after_hours"] = "door_after_hours"
    severity: Severity = Severity.CRITICAL
    staff_margin_s: float = Field(
        default=900.0, ge=0, le=MAX_RULE_SECONDS, description="a door opened this close to opening hours is staff"
    )

    def events_read(self) -> frozenset[str]:
        """Doors opened."""
        return frozenset({EventKind.DOOR_OPENED})

    def evaluate(self, *, rule_id: str, ctx: StoreContext, state: Any, observation: Observation) -> RuleOutcome:
        """Raise on a door opening while closed; closing it again does not clear (the entry happened)."""
        if not isinstance(observation, EventObservation) or observation.kind != EventKind.DOOR_OPENED:
            return RuleOutcome(state=state)
        door = observation.payload_as(DoorChange)
        if not door.open or not _closed_around(ctx.hours, observation.at, self.staff_margin_s):
            return RuleOutcome(state=state)
        subject = _door_subject(observation, door)
        local = observation.at.astimezone(ctx.hours.zone)
        raised = self.signal(
            "raise",
            rule_id=rule_id,
            ctx=ctx,
            subject=subject,
            at=observation.at,
            message=f"door {subject.id} opened at {local:%H:%M} while the store is closed",
            evidence=(observation.event_id,),
        )
        return RuleOutcome(state=state, signals=(raised,))


class PrinterPaperOutRule(RuleBase):
    """A receipt printer reports it is out of paper (or its cover is open); clears when it reports it can print."""

    kind: Literal["printer_paper_out"] = "printer_paper_out"
    severity: Severity = Severity.WARNING
    cover_open: bool = Field(default=True, description="an open cover raises too (it stops printing just the same)")

    def events_read(self) -> frozenset[str]:
        """Printer status changes."""
        return frozenset({EventKind.PRINTER_STATUS})

    def evaluate(self, *, rule_id: str, ctx: StoreContext, state: Any, observation: Observation) -> RuleOutcome:
        """Raise once when a printer cannot print for want of paper (or a closed cover); clear once it can.

        The state is the printers raised, so a status repeated or a change that keeps the paper out (a cover
        opened as well) emits nothing new, and a printer never raised is never cleared.
        """
        if not isinstance(observation, EventObservation) or observation.kind != EventKind.PRINTER_STATUS:
            return RuleOutcome(state=state)
        raised: frozenset[str] = state or frozenset()
        status = observation.payload_as(PrinterStatus)
        subject = _device_subject(observation, "device")
        problems = [
            *(["out of paper"] if status.paper == "out" else []),
            *(["cover open"] if self.cover_open and status.cover_open else []),
        ]
        if problems and subject.id not in raised:
            action: Literal["raise", "clear"] = "raise"
            message = f"printer {subject.id} cannot print: {' and '.join(problems)}"
            new_state = raised | {subject.id}
        elif not problems and subject.id in raised:
            action, message, new_state = "clear", f"printer {subject.id} can print again", raised - {subject.id}
        else:
            return RuleOutcome(state=state)
        emitted = self.signal(
            action,
            rule_id=rule_id,
            ctx=ctx,
            subject=subject,
            at=observation.at,
            message=message,
            evidence=(observation.event_id,),
        )
        return RuleOutcome(state=new_state, signals=(emitted,))


_UNIT_LABEL: Final = {Quantity.TEMPERATURE: "°C", Quantity.HUMIDITY: "%RH", Quantity.CO2: "ppm", Quantity.LIGHT: "lx"}


class EnvironmentRangeRule(RuleBase):
    """Each matching zone's quantity outside the range for ``alarm_after_s``; clears back inside by ``hysteresis``.

    ``zone`` is a zone name or a glob pattern (``freezer-*``), so one chain rule covers every freezer of
    every store; each matching zone has its own excursion state and its own alert subject.
    """

    kind: Literal["environment_range"] = "environment_range"
    zone: str = Field(min_length=1, max_length=64, description="zone name, or a pattern such as 'freezer-*'")
    quantity: Quantity = Quantity.TEMPERATURE
    low: float | None = Field(default=None, allow_inf_nan=False)
    high: float | None = Field(default=None, allow_inf_nan=False)
    alarm_after_s: float = Field(default=900.0, ge=0, le=MAX_RULE_SECONDS)
    hysteresis: float = Field(default=0.5, ge=0)
    max_gap_s: float = Field(default=600.0, gt=0, le=MAX_RULE_SECONDS)

    @model_validator(mode="after")
    def _valid_range(self) -> EnvironmentRangeRule:
        self.limits_of(self.zone)  # builds the ZoneRange, whose validation names the problem
        return self

    def matches(self, zone: str) -> bool:
        """Whether a zone is covered by this rule (case matters: zones are ids)."""
        return fnmatch.fnmatchcase(zone, self.zone)

    def limits_of(self, zone: str) -> ZoneRange:
        """The range this rule sets for one zone."""
        return ZoneRange(
            zone=zone,
            quantity=self.quantity,
            low=self.low,
            high=self.high,
            alarm_after_s=self.alarm_after_s,
            hysteresis=self.hysteresis,
            max_gap_s=self.max_gap_s,
        )

    def initial_state(self) -> Mapping[str, ExcursionState]:
        """No reading seen in any zone."""
        return {}

    def events_read(self) -> frozenset[str]:
        """Environment readings."""
        return frozenset({EventKind.ENVIRONMENT_READING})

    def evaluate(self, *, rule_id: str, ctx: StoreContext, state: Any, observation: Observation) -> RuleOutcome:
        """Feed a reading of a matching zone and this quantity to that zone's excursion state machine."""
        if not isinstance(observation, EventObservation) or observation.kind != EventKind.ENVIRONMENT_READING:
            return RuleOutcome(state=state)
        reading = observation.payload_as(EnvironmentReading)
        zone = reading.zone
        if zone is None or reading.quantity != self.quantity or not self.matches(zone):
            return RuleOutcome(state=state)
        zones: Mapping[str, ExcursionState] = state
        reading_of = Reading(at=observation.at, value=reading.value, event_id=observation.event_id)
        step = feed(self.limits_of(zone), zones.get(zone, ExcursionState()), reading_of)
        new_state = {**zones, zone: step.state}
        if step.rejected is not None:
            return RuleOutcome(state=new_state, rejected=(f"{observation.event_id}: {step.rejected}",))
        subject = Subject(kind="zone", id=zone)
        unit = _UNIT_LABEL[self.quantity]
        signals: list[AlertSignal] = []
        if step.cleared is not None:
            ended = step.cleared
            duration = ended.duration.total_seconds() if ended.duration is not None else 0.0
            message = (
                f"{zone} {self.quantity.value} back within range after {duration / 60:g} min "
                f"(peak {ended.peak:g} {unit})"
            )
            cleared = self.signal(
                "clear", rule_id=rule_id, ctx=ctx, subject=subject, at=observation.at, message=message
            )
            signals.append(cleared)
        if step.raised is not None:
            started = step.raised
            side = "above" if started.direction == "high" else "below"
            local = started.start.astimezone(ctx.hours.zone)
            message = (
                f"{zone} {self.quantity.value} {side} {started.limit:g} {unit} since {local:%H:%M} "
                f"(now {reading.value:g} {unit}, worst {started.peak:g} {unit})"
            )
            raised = self.signal(
                "raise",
                rule_id=rule_id,
                ctx=ctx,
                subject=subject,
                at=observation.at,
                message=message,
                evidence=started.evidence,
            )
            signals.append(raised)
        closed = (step.cleared,) if step.cleared is not None else ()
        return RuleOutcome(state=new_state, signals=tuple(signals), excursions=closed)


Rule = Annotated[
    AfterHoursMotionRule
    | CameraTamperRule
    | ShelfSweepRule
    | ShrinkRule
    | DeviceUnpluggedRule
    | GatewayOfflineRule
    | DoorAfterHoursRule
    | DoorHeldOpenRule
    | EnvironmentRangeRule
    | PrinterPaperOutRule,
    Field(discriminator="kind"),
]
_RULE: Final[TypeAdapter[Rule]] = TypeAdapter(Rule)

RuleId = Annotated[str, Field(pattern=RULE_ID_PATTERN)]


# --------------------------------------------------------------------------- rule sets and overrides


class RuleSetError(HubError, ValueError):
    """A rule set or a store's overrides are invalid; the message names the rule and the field."""


class RuleSet(BaseModel):
    """A chain's rules by rule id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: dict[RuleId, Rule] = Field(default_factory=dict)


class StoreOverrides(BaseModel):
    """One store's changes to the chain's rules: per rule id, the fields to change (``enabled: false`` disables)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store_id: str = Field(min_length=1)
    rules: dict[str, dict[str, Any]] = Field(default_factory=dict)


def _describe(err: ValidationError, *, rule_id: str | None, skip: int) -> str:
    """'rule <id>, field <name>: <problem>' for each error; ``skip`` drops leading loc parts (container, tag)."""
    problems = []
    for item in err.errors():
        loc = [str(part) for part in item["loc"]]
        rule = rule_id
        if rule is None and len(loc) >= 2:  # ("rules", "<id>", "<kind>", "<field>", ...)
            rule, loc = loc[1], loc[2:]
        # A bad rule id is reported on the key itself, with no kind tag to skip.
        fields = "(rule id)" if loc[:1] == ["[key]"] else ".".join(loc[skip:]) or "(rule)"
        where = f"rule {rule!r}, field {fields!r}" if rule is not None else f"rule set, field {'.'.join(loc)!r}"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


def load_rule_set(data: Mapping[str, Any]) -> RuleSet:
    """Validate a chain's rule set from plain data (JSON, TOML); errors name the rule and field."""
    try:
        return RuleSet.model_validate(data)
    except ValidationError as err:
        raise RuleSetError(_describe(err, rule_id=None, skip=1)) from err


def apply_override(rule_id: str, rule: Rule, changes: Mapping[str, Any]) -> Rule:
    """A rule with some of its fields changed, validated again as a whole."""
    if "kind" in changes and changes["kind"] != rule.kind:
        raise RuleSetError(f"rule {rule_id!r}, field 'kind': a store cannot change a rule's kind ({rule.kind})")
    try:
        return _RULE.validate_python({**rule.model_dump(), **changes})
    except ValidationError as err:
        raise RuleSetError(_describe(err, rule_id=rule_id, skip=1)) from err


def effective_rules(chain: RuleSet, overrides: StoreOverrides | None = None) -> dict[str, Rule]:
    """The rules in force in a store: the chain's, with the store's overrides applied and disabled ones left out."""
    changes = overrides.rules if overrides is not None else {}
    unknown = sorted(set(changes) - set(chain.rules))
    if unknown:
        raise RuleSetError(f"rule {unknown[0]!r}: the store overrides a rule the chain does not have")
    merged = {
        rid: apply_override(rid, rule, changes[rid]) if rid in changes else rule for rid, rule in chain.rules.items()
    }
    return {rid: rule for rid, rule in merged.items() if rule.enabled}


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """All rules' new states and what they emitted for one observation."""

    states: Mapping[str, Any]
    signals: tuple[AlertSignal, ...]
    excursions: tuple[Excursion, ...] = ()
    rejected: tuple[str, ...] = ()


def initial_states(rules: Mapping[str, Rule]) -> dict[str, Any]:
    """Every rule's state before the first observation."""
    return {rid: rule.initial_state() for rid, rule in rules.items()}


def evaluate(
    rules: Mapping[str, Rule], ctx: StoreContext, states: Mapping[str, Any], observation: Observation
) -> Evaluation:
    """Feed one observation of a store to all its rules (in rule id order); states of new rules start fresh."""
    return evaluate_all(rules, ctx, states, (observation,))


def evaluate_all(
    rules: Mapping[str, Rule], ctx: StoreContext, states: Mapping[str, Any], observations: Iterable[Observation]
) -> Evaluation:
    """Feed observations of a store, in order, each to all its rules in rule id order; :func:`evaluate` in turn.

    A rule is not called for an event it does not read (:meth:`RuleBase.events_read`) while it has no timer
    waiting on the clock: most events concern one or two rules of a dozen, and the call would return the
    state as it was.
    """
    order = [(rule_id, rules[rule_id], rules[rule_id].events_read()) for rule_id in sorted(rules)]
    new_states: dict[str, Any] = {
        rule_id: states[rule_id] if rule_id in states else rule.initial_state() for rule_id, rule, _ in order
    }
    signals: list[AlertSignal] = []
    excursions: list[Excursion] = []
    rejected: list[str] = []
    for observation in observations:
        if observation.store_id != ctx.store_id:
            raise ValueError(f"observation of store {observation.store_id!r} fed to the rules of {ctx.store_id!r}")
        kind = observation.kind if isinstance(observation, EventObservation) else None
        for rule_id, rule, reads in order:
            state = new_states[rule_id]
            if kind is not None and reads is not None and kind not in reads and not rule.waits_on_time(state):
                continue
            outcome = rule.evaluate(rule_id=rule_id, ctx=ctx, state=state, observation=observation)
            new_states[rule_id] = outcome.state
            signals += outcome.signals
            excursions += outcome.excursions
            rejected += outcome.rejected
    kept = {**states, **new_states}  # states of rules no longer in force are kept, as evaluate always did
    return Evaluation(states=kept, signals=tuple(signals), excursions=tuple(excursions), rejected=tuple(rejected))


def with_snapshot(signal: AlertSignal, snapshot_ref: str) -> AlertSignal:
    """The signal with a camera snapshot attached (the caller finds one from a nearby camera event)."""
    return replace(signal, snapshot_ref=snapshot_ref)
