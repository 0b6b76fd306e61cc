"""The rules engine at run time: feeds each store's observations to its rules and turns signals into alerts.

Rules are pure (:mod:`hub.domain.rules`); their small states live here, per store, in memory. A unit of
work is evaluated against the states as they were at the last commit, its signals are written in the
same transaction as the events that caused them, and only once that transaction has committed are the
new states adopted (:meth:`MonitoringEngine.adopt`). A unit that fails and is retried is therefore
evaluated again from the same states; one lock keeps a tick from interleaving with a unit.

Beside events, the engine observes gateway presence (birth and last will), clock ticks (so grace
periods end when nothing happens), shrink (picks not sold within the window, via
:class:`hub.domain.ledger.ShrinkTracker`) and escalations of unacknowledged alerts. Camera snapshots
are correlated with security alerts: a signal without one takes the store's nearest snapshot within
``snapshot_window_s``; a snapshot arriving after the alert is attached to it then. An alert about a slot
(a shelf sweep) whose camera the planogram names takes that camera's snapshot only, the nearest to the
pick: another camera's view of the store is no evidence of what left that shelf.

One hub process does not persist states: on start they are rebuilt by replaying the recent events
(``warm_up``) with their signals discarded, which restores open doors, pending excursions and recent picks.

N workers on a shared subscription (``shared=True``) keep each store's states in ``rule_states``
(:mod:`hub.alerting.shared_states`): a unit, holding the store's advisory lock, reads the row where another
worker moved its version (:meth:`MonitoringEngine.load_shared`) and writes it back in its transaction
(:meth:`MonitoringEngine.save_shared`); the copy in memory is kept while nobody else changed the store.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import structlog
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.alerting import shared_states
from hub.alerting.alerts_db import SignalEffect, apply_signals, escalate_due
from hub.alerting.models import AlertRow, ExcursionRow
from hub.alerting.rules_db import RulesInForce, load_rules, rules_fingerprint
from hub.db.models import StoredEvent
from hub.domain import ledger as ledger_mod
from hub.domain import rules as rules_mod
from hub.domain.alerts import AlertSignal, Escalation
from hub.domain.excursions import Excursion
from hub.domain.ledger import Movement, ShrinkTracker
from hub.domain.rules import EventObservation, GatewayPresence, Observation, Rule, ShrinkTotal, StoreContext, Tick
from hub.inventory.catalog_view import CatalogSnapshot
from hub.inventory.models import LedgerRow, ShrinkRecord
from hub.snapshots.models import SnapshotRow
from storegate.wire import EventKind

log = structlog.get_logger(__name__)

SNAPSHOT_KINDS: Final = frozenset(
    {EventKind.CAMERA_MOTION, EventKind.CAMERA_SNAPSHOT, EventKind.CAMERA_TAMPER, EventKind.MOTION_DETECTED}
)
# Event kinds no rule looks at: skipped before evaluation, they are the bulk of a busy store's traffic.
_IGNORED_KINDS: Final = frozenset(
    {EventKind.SCAN_SALE, EventKind.SCAN_RECEIVING, EventKind.SCAN_COUNT, EventKind.SHELF_STOCK, EventKind.OUTBOX_LOSS}
)
SNAPSHOTS_KEPT_PER_STORE: Final = 256
# A shrink alert's evidence is looked for at the slots of at most this many of its latest record's picks.
MAX_SHRINK_EVIDENCE_PICKS: Final = 20
SHRINK_TOTAL_WINDOW: Final = timedelta(hours=24)
# A store is draining a backlog while its events keep arriving (within DRAIN_QUIET) but are older than
# DRAIN_LAG: its timers then tick at its newest event's time, not the hub's, or a door opened three hours
# ago would alarm before the event that closed it a minute later has been read.
DRAIN_QUIET: Final = timedelta(seconds=30)
DRAIN_LAG: Final = timedelta(seconds=60)


def watching_camera(catalog: CatalogSnapshot, store_id: str, subject_kind: str, subject_id: str) -> str | None:
    """The camera the planogram names for an alert's slot (subject ``<shelf>/<slot>``), or None: any camera."""
    if subject_kind != "slot":
        return None
    shelf_id, _, slot = subject_id.rpartition("/")
    if not shelf_id or not slot.isdigit():
        return None
    return catalog.camera_of_slot(store_id, shelf_id, int(slot))


@dataclass(frozen=True, slots=True)
class MonitoringSettings:
    """How the engine runs: tick period, shrink window, snapshot correlation, warm-up on start."""

    tick_s: float = 5.0
    shrink_window_s: float = 3600.0
    snapshot_window_s: float = 120.0
    rules_refresh_s: float = 5.0
    warm_up_hours: float = 6.0
    warm_up_max_events: int = 200_000


@dataclass(slots=True)
class UnitEvaluation:
    """A unit's evaluation: the states to adopt after commit, and what to write in the transaction."""

    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    signals: list[AlertSignal] = field(default_factory=list)
    excursions: list[tuple[str, str, Excursion]] = field(default_factory=list)  # (store, rule_id, excursion)
    rejected: list[str] = field(default_factory=list)
    tracker: ShrinkTracker | None = None
    snapshots: list[tuple[str, datetime, str, str | None]] = field(default_factory=list)  # (store, at, ref, camera)
    catalog: CatalogSnapshot | None = None  # the unit's catalog: which camera watches a slot
    effects: list[SignalEffect] = field(default_factory=list)
    escalations: list[Escalation] = field(default_factory=list)
    shrink_records: int = 0
    latest: dict[str, datetime] = field(default_factory=dict)  # store -> newest event time in the unit
    evaluated_at: datetime | None = None
    versions: dict[str, int] = field(default_factory=dict)  # shared mode: store -> version written


class MonitoringEngine:
    """Per-store rule states, evaluated unit by unit under one lock."""

    def __init__(self, settings: MonitoringSettings | None = None, *, shared: bool = False) -> None:
        self.settings = settings or MonitoringSettings()
        # N workers: states are read from and written to rule_states under the stores' locks.
        self.shared = shared
        self._versions: dict[str, int] = {}  # shared mode: store -> version of the row this copy is
        self._lock = asyncio.Lock()
        self._states: dict[str, dict[str, Any]] = {}
        self._rules = RulesInForce(chain=rules_mod.RuleSet(), overrides={}, fingerprint="")
        self._rules_by_store: dict[str, dict[str, Rule]] = {}
        self._rules_checked_at: datetime | None = None
        self._tracker = ShrinkTracker(window_s=self.settings.shrink_window_s)
        self._snapshots: dict[str, deque[tuple[datetime, str, str | None]]] = defaultdict(
            lambda: deque(maxlen=SNAPSHOTS_KEPT_PER_STORE)
        )
        self._latest: dict[str, tuple[datetime, datetime]] = {}  # store -> (newest event time, received at)
        self.signals_total = 0
        self.rejected_total = 0

    # ------------------------------------------------------------------ rules

    @property
    def rules(self) -> RulesInForce:
        """The rules in force (chain and overrides)."""
        return self._rules

    def set_rules(self, rules: RulesInForce) -> None:
        """Use these rules; a rule whose definition changed starts from a fresh state."""
        old = self._rules_by_store
        self._rules = rules
        self._rules_by_store = {}
        for store_id, states in self._states.items():
            new = self.rules_of(store_id)
            for rule_id in list(states):
                if rule_id not in new or old.get(store_id, {}).get(rule_id) != new[rule_id]:
                    del states[rule_id]

    def rules_of(self, store_id: str) -> dict[str, Rule]:
        """The effective rules of one store (cached until the rules change)."""
        rules = self._rules_by_store.get(store_id)
        if rules is None:
            rules = self._rules.for_store(store_id)
            self._rules_by_store[store_id] = rules
        return rules

    def rule_kinds(self, store_id: str) -> dict[str, str]:
        """rule id -> kind, for the alert rows."""
        return {rule_id: rule.kind for rule_id, rule in self.rules_of(store_id).items()}

    def invalidate_rules(self) -> None:
        """Check the rules' fingerprint at the next unit (the rules API changed them)."""
        self._rules_checked_at = None

    async def refresh_rules(self, session: AsyncSession, *, now: datetime, force: bool = False) -> bool:
        """Reload the rules if their fingerprint changed (checked at most every ``rules_refresh_s``)."""
        due = (
            force
            or self._rules_checked_at is None
            or (now - self._rules_checked_at).total_seconds() >= self.settings.rules_refresh_s
        )
        if not due:
            return False
        self._rules_checked_at = now
        fingerprint = await rules_fingerprint(session)
        if not force and fingerprint == self._rules.fingerprint:
            return False
        self.set_rules(await load_rules(session))
        log.info("rules_loaded", rules=len(self._rules.chain.rules), fingerprint=fingerprint)
        return True

    # ------------------------------------------------------------------ units

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[None]:
        """Hold the engine for one unit: evaluate, write, commit, adopt."""
        async with self._lock:
            yield

    def evaluate(
        self,
        catalog: CatalogSnapshot,
        observations: Iterable[Observation],
        movements: Sequence[Movement] = (),
        *,
        now: datetime | None = None,
    ) -> UnitEvaluation:
        """Evaluate observations (sorted by time per store) against copies of the states (pure w.r.t. the engine)."""
        evaluation = UnitEvaluation(evaluated_at=now, catalog=catalog)
        by_store: dict[str, list[Observation]] = defaultdict(list)
        for observation in observations:
            if isinstance(observation, EventObservation):
                if observation.kind in _IGNORED_KINDS:
                    continue
                newest = evaluation.latest.get(observation.store_id)
                if newest is None or observation.at > newest:
                    evaluation.latest[observation.store_id] = observation.at
                ref = observation.payload.get("snapshot_ref") if observation.kind in SNAPSHOT_KINDS else None
                if isinstance(ref, str) and ref:
                    evaluation.snapshots.append((observation.store_id, observation.at, ref, observation.device_id))
            by_store[observation.store_id].append(observation)
        for store_id, items in by_store.items():
            items.sort(key=lambda o: o.at)
            rules = self.rules_of(store_id)
            if not rules:
                continue
            ctx = StoreContext(store_id=store_id, hours=catalog.hours_of(store_id))
            result = rules_mod.evaluate_all(rules, ctx, self._states.get(store_id, {}), items)
            evaluation.signals += result.signals
            evaluation.excursions += [(store_id, _rule_of(rules, e), e) for e in result.excursions]
            evaluation.rejected += result.rejected
            evaluation.states[store_id] = dict(result.states)
        evaluation.tracker = self._tracker.observe_all(movements)
        evaluation.signals = [self._with_snapshot(s, evaluation.snapshots, catalog) for s in evaluation.signals]
        return evaluation

    def _with_snapshot(
        self,
        signal: AlertSignal,
        fresh: Sequence[tuple[str, datetime, str, str | None]],
        catalog: CatalogSnapshot,
    ) -> AlertSignal:
        if signal.action != "raise" or signal.snapshot_ref is not None:
            return signal
        window = timedelta(seconds=self.settings.snapshot_window_s)
        camera = watching_camera(catalog, signal.store_id, signal.subject.kind, signal.subject.id)
        candidates = [(at, ref, cam) for at, ref, cam in self._snapshots.get(signal.store_id, ())]
        candidates += [(at, ref, cam) for store, at, ref, cam in fresh if store == signal.store_id]
        near = [
            (abs(at - signal.at), ref)
            for at, ref, cam in candidates
            if abs(at - signal.at) <= window and (camera is None or cam == camera)
        ]
        if not near:
            return signal
        return rules_mod.with_snapshot(signal, min(near)[1])

    async def write(self, session: AsyncSession, evaluation: UnitEvaluation, *, now: datetime) -> None:
        """Write a unit's signals (alerts, history, notifications), excursions and late snapshots."""
        if evaluation.signals and evaluation.catalog is not None:
            evaluation.signals = [
                await self._with_shrink_evidence(session, s, evaluation.catalog) for s in evaluation.signals
            ]
        if evaluation.signals:
            kinds: dict[str, str] = {}
            for store_id in {s.store_id for s in evaluation.signals}:
                kinds.update(self.rule_kinds(store_id))
            evaluation.effects = await apply_signals(session, evaluation.signals, rule_kinds=kinds, now=now)
        if evaluation.excursions:
            resolved = {
                (e.signal.store_id, e.signal.rule_id, e.signal.subject.id): e.alert_id
                for e in evaluation.effects
                if e.effect == "resolved"
            }
            await session.execute(
                insert(ExcursionRow),
                [
                    {
                        "store_id": store_id,
                        "rule_id": rule_id,
                        "zone": excursion.zone,
                        "quantity": excursion.quantity.value,
                        "direction": excursion.direction,
                        "limit_value": excursion.limit,
                        "started_at": excursion.start,
                        "ended_at": excursion.end,
                        "peak": excursion.peak,
                        "peak_at": excursion.peak_at,
                        "duration_s": excursion.duration.total_seconds() if excursion.duration is not None else 0.0,
                        "readings": len(excursion.evidence),
                        "gaps": excursion.gaps,
                        "alert_id": resolved.get((store_id, rule_id, excursion.zone)),
                        "recorded_at": now,
                    }
                    for store_id, rule_id, excursion in evaluation.excursions
                ],
            )
        await self._attach_late_snapshots(session, evaluation.snapshots, evaluation.catalog)

    async def _with_shrink_evidence(
        self, session: AsyncSession, signal: AlertSignal, catalog: CatalogSnapshot
    ) -> AlertSignal:
        """A shrink alert (subject a SKU) with the still of the camera watching the slot of its latest pick.

        The alert comes long after the pick (the shrink window), so the still near the alert's own time shows
        nothing of it: the still is looked up among those the hub holds, the named camera's nearest to the pick
        within ``snapshot_window_s``. When the planogram names no camera for the slot, the signal is left as it
        was; when it names one and the hub holds no still of it then, the alert carries none.
        """
        if signal.action != "raise" or signal.subject.kind != "sku":
            return signal
        record = (
            await session.execute(
                select(ShrinkRecord.picked_at, ShrinkRecord.event_ids)
                .where(ShrinkRecord.store_id == signal.store_id, ShrinkRecord.sku_id == signal.subject.id)
                .order_by(ShrinkRecord.expired_at.desc(), ShrinkRecord.id.desc())
                .limit(1)
            )
        ).first()
        if record is None or not record.event_ids:
            return signal
        picked_at, event_ids = record.picked_at, [str(e) for e in record.event_ids[:MAX_SHRINK_EVIDENCE_PICKS]]
        places = (
            await session.execute(
                select(LedgerRow.shelf_id, LedgerRow.slot).where(
                    LedgerRow.event_id.in_(event_ids), LedgerRow.kind == ledger_mod.MovementKind.SHELF_PICK
                )
            )
        ).all()
        cameras = sorted(
            {
                camera
                for shelf_id, slot in places
                if shelf_id is not None
                and slot is not None
                and (camera := catalog.camera_of_slot(signal.store_id, shelf_id, slot)) is not None
            }
        )
        if not cameras:
            return signal
        window = timedelta(seconds=self.settings.snapshot_window_s)
        stills = (
            await session.execute(
                select(SnapshotRow.ref, SnapshotRow.taken_at).where(
                    SnapshotRow.store_id == signal.store_id,
                    SnapshotRow.device_id.in_(cameras),
                    SnapshotRow.taken_at >= picked_at - window,
                    SnapshotRow.taken_at <= picked_at + window,
                )
            )
        ).all()
        near = sorted((abs(taken_at - picked_at), ref) for ref, taken_at in stills if taken_at is not None)
        return replace(signal, snapshot_ref=near[0][1] if near else None)

    async def _attach_late_snapshots(
        self,
        session: AsyncSession,
        snapshots: Sequence[tuple[str, datetime, str, str | None]],
        catalog: CatalogSnapshot | None,
    ) -> None:
        """Give each live security alert without a snapshot the first of the unit's snapshots near its opening.

        One query for the alerts waiting for a snapshot, not an UPDATE per snapshot: cameras send far more
        snapshots than there are alerts waiting for one (3,121 UPDATEs for 3,095 snapshots in the benchmark).
        """
        if not snapshots:
            return
        window = timedelta(seconds=self.settings.snapshot_window_s)
        waiting = (
            await session.execute(
                select(
                    AlertRow.alert_id, AlertRow.store_id, AlertRow.opened_at, AlertRow.subject_kind, AlertRow.subject_id
                ).where(
                    AlertRow.store_id.in_(sorted({snapshot[0] for snapshot in snapshots})),
                    AlertRow.category == "security",
                    AlertRow.active_key.is_not(None),
                    AlertRow.snapshot_ref.is_(None),
                )
            )
        ).all()
        for alert_id, store_id, opened_at, subject_kind, subject_id in waiting:
            camera = None if catalog is None else watching_camera(catalog, store_id, subject_kind, subject_id)
            # The nearest to the alert's time (a shelf pick's still comes seconds after the pick), of its camera.
            near = sorted(
                (abs(opened_at - at), r)
                for s, at, r, cam in snapshots
                if s == store_id and abs(opened_at - at) <= window and (camera is None or cam == camera)
            )
            ref = near[0][1] if near else None
            if ref is not None:
                await session.execute(update(AlertRow).where(AlertRow.alert_id == alert_id).values(snapshot_ref=ref))

    def adopt(self, evaluation: UnitEvaluation) -> None:
        """The unit committed: its states become the engine's."""
        self._states.update(evaluation.states)
        self._versions.update(evaluation.versions)
        if evaluation.evaluated_at is not None:
            for store_id, at in evaluation.latest.items():
                held = self._latest.get(store_id)
                self._latest[store_id] = (max(at, held[0]) if held else at, evaluation.evaluated_at)
        if evaluation.tracker is not None:
            self._tracker = evaluation.tracker
        for store_id, at, ref, camera in evaluation.snapshots:
            self._snapshots[store_id].append((at, ref, camera))
        self.signals_total += len(evaluation.signals)
        self.rejected_total += len(evaluation.rejected)
        for reason in evaluation.rejected[:3]:
            log.info("rule_observation_rejected", reason=reason)

    # ------------------------------------------------------------------ ticks

    async def tick(
        self,
        session: AsyncSession,
        catalog: CatalogSnapshot,
        *,
        now: datetime,
        stores: Collection[str] | None = None,
        escalate: bool = True,
    ) -> UnitEvaluation:
        """Advance every store's timers to ``now``, expire shrink picks, escalate overdue alerts (caller commits).

        ``stores``: only these (the shared mode ticks its stores a chunk at a time, each under its locks);
        ``escalate``: escalate overdue alerts too (the shared mode does it once, after the chunks).
        """
        await self.refresh_rules(session, now=now)
        if stores is None:
            stores = set(self._states) | {store for store, _ in self._tracker.waiting}
        times = {store_id: self.store_time(store_id, now) for store_id in stores}
        observations: list[Observation] = [Tick(store_id=store_id, at=times[store_id]) for store_id in sorted(stores)]
        evaluation = self.evaluate(catalog, observations)
        tracker, records = self._expire_shrink(evaluation.tracker or self._tracker, times, now)
        evaluation.tracker = tracker
        if records:
            evaluation.shrink_records = len(records)
            await session.execute(
                insert(ShrinkRecord),
                [
                    {
                        "store_id": r.store_id,
                        "sku_id": r.sku,
                        "quantity": r.quantity,
                        "value": catalog.prices.get(r.sku, Decimal(0)) * r.quantity,
                        "picked_at": r.picked_at,
                        "expired_at": r.expired_at,
                        "event_ids": list(r.event_ids),
                    }
                    for r in records
                ],
            )
            totals = await _shrink_totals(session, {(r.store_id, r.sku) for r in records}, now=now)
            shrink_eval = self._evaluate_on(catalog, evaluation, totals)
            evaluation.signals += shrink_eval
        await self.write(session, evaluation, now=now)
        if escalate:
            evaluation.escalations = await escalate_due(session, now=now)
        return evaluation

    def store_time(self, store_id: str, now: datetime) -> datetime:
        """The time a store's timers tick at: the hub's, or its newest event's while it drains a backlog."""
        held = self._latest.get(store_id)
        if held is None:
            return now
        newest, received = held
        draining = now - received < DRAIN_QUIET and now - newest > DRAIN_LAG
        return newest if draining else now

    @staticmethod
    def _expire_shrink(
        tracker: ShrinkTracker, times: Mapping[str, datetime], now: datetime
    ) -> tuple[ShrinkTracker, list[ledger_mod.ShrinkRecord]]:
        """Expire picks store by store at each store's own time (only the stores of ``times``)."""
        by_time: dict[datetime, dict[tuple[str, str], Any]] = defaultdict(dict)
        waiting: dict[tuple[str, str], Any] = {}
        for key, picks in tracker.waiting.items():
            at = times.get(key[0])
            if at is None:  # a store this tick does not cover (the shared mode's other chunks): left as it is
                waiting[key] = picks
            else:
                by_time[at][key] = picks
        records: list[ledger_mod.ShrinkRecord] = []
        for at, part in by_time.items():
            kept, expired = ShrinkTracker(window_s=tracker.window_s, waiting=part).expire(at)
            waiting.update(kept.waiting)
            records += expired
        return ShrinkTracker(window_s=tracker.window_s, waiting=waiting), records

    def _evaluate_on(
        self, catalog: CatalogSnapshot, evaluation: UnitEvaluation, observations: Sequence[Observation]
    ) -> list[AlertSignal]:
        """Evaluate more observations on top of an evaluation's states (updates them in place)."""
        signals: list[AlertSignal] = []
        for observation in observations:
            store_id = observation.store_id
            rules = self.rules_of(store_id)
            if not rules:
                continue
            ctx = StoreContext(store_id=store_id, hours=catalog.hours_of(store_id))
            states = evaluation.states.get(store_id, self._states.get(store_id, {}))
            result = rules_mod.evaluate(rules, ctx, states, observation)
            evaluation.states[store_id] = dict(result.states)
            signals += result.signals
        return signals

    # ------------------------------------------------------------------ shared mode (N workers)

    async def load_shared(self, session: AsyncSession, store_ids: Collection[str]) -> int:
        """Make this copy of these stores' states the stored one; the caller holds their locks. How many were read.

        A store whose row has the version of this copy is not read again: while one worker gets a store's
        messages in a row, as the broker mostly arranges, it costs one small query per unit.
        """
        if not store_ids:
            return 0
        stored = await shared_states.read_versions(session, store_ids)
        for store_id in store_ids:
            if store_id not in stored and store_id in self._versions:  # the row is gone (a restore): start fresh
                self._install({store_id: shared_states.StoreState()}, {store_id: 0})
        stale = [store_id for store_id, version in stored.items() if self._versions.get(store_id) != version]
        if not stale:
            return 0
        loaded: dict[str, shared_states.StoreState] = {}
        versions: dict[str, int] = {}
        for store_id, version, data in await shared_states.read_states(session, stale):
            try:
                loaded[store_id] = shared_states.decode(data)
            except shared_states.RuleStateDecodeError as err:
                log.error("rule_state_unreadable", store_id=store_id, error=str(err), action="fresh states")
                loaded[store_id] = shared_states.StoreState()
            versions[store_id] = version
        self._install(loaded, versions)
        return len(loaded)

    def _install(self, loaded: Mapping[str, shared_states.StoreState], versions: Mapping[str, int]) -> None:
        """Replace what this copy holds of these stores."""
        waiting = {key: picks for key, picks in self._tracker.waiting.items() if key[0] not in loaded}
        for store_id, state in loaded.items():
            self._states[store_id] = dict(state.rules)
            waiting.update(state.waiting)
            self._snapshots[store_id] = deque(state.snapshots, maxlen=SNAPSHOTS_KEPT_PER_STORE)
            if state.latest is None:
                self._latest.pop(store_id, None)
            else:
                self._latest[store_id] = state.latest
        self._versions.update(versions)
        self._tracker = ShrinkTracker(
            window_s=self._tracker.window_s, waiting=waiting, return_window_s=self._tracker.return_window_s
        )

    async def save_shared(
        self, session: AsyncSession, evaluation: UnitEvaluation, store_ids: Collection[str], *, now: datetime
    ) -> None:
        """Write these stores' states as ``evaluation`` leaves them, one version up (adopted after the commit)."""
        if not store_ids:
            return
        wanted = set(store_ids)
        tracker = evaluation.tracker or self._tracker
        waiting: dict[str, dict[tuple[str, str], Any]] = defaultdict(dict)
        for key, picks in tracker.waiting.items():
            if key[0] in wanted:
                waiting[key[0]][key] = picks
        fresh: dict[str, list[tuple[datetime, str, str | None]]] = defaultdict(list)
        for store_id, at, ref, camera in evaluation.snapshots:
            fresh[store_id].append((at, ref, camera))
        rows: list[tuple[str, int, bytes]] = []
        for store_id in sorted(wanted):
            latest = self._latest.get(store_id)
            newest = evaluation.latest.get(store_id)
            if newest is not None and evaluation.evaluated_at is not None:
                latest = (max(newest, latest[0]) if latest else newest, evaluation.evaluated_at)
            snapshots = [*self._snapshots.get(store_id, ()), *fresh.get(store_id, ())][-SNAPSHOTS_KEPT_PER_STORE:]
            state = shared_states.StoreState(
                rules=dict(evaluation.states.get(store_id, self._states.get(store_id, {}))),
                waiting=waiting.get(store_id, {}),
                snapshots=snapshots,
                latest=latest,
            )
            version = self._versions.get(store_id, 0) + 1
            evaluation.versions[store_id] = version
            rows.append((store_id, version, shared_states.encode(state)))
        await shared_states.write_states(session, rows, now=now)

    # ------------------------------------------------------------------ warm-up

    async def warm_up(self, session: AsyncSession, catalog: CatalogSnapshot, *, now: datetime) -> int:
        """Rebuild states from the recent events, signals discarded (they were acted on before the restart)."""
        await self.refresh_rules(session, now=now, force=True)
        since = now - timedelta(hours=self.settings.warm_up_hours)
        rows = await session.execute(
            select(
                StoredEvent.event_id,
                StoredEvent.store_id,
                StoredEvent.gateway_id,
                StoredEvent.device_id,
                StoredEvent.kind,
                StoredEvent.device_ts,
                StoredEvent.payload,
            )
            .where(StoredEvent.device_ts >= since, StoredEvent.kind.not_in(sorted(_IGNORED_KINDS)))
            .order_by(StoredEvent.device_ts, StoredEvent.id)
            .limit(self.settings.warm_up_max_events)
        )
        observations = [
            EventObservation(
                event_id=event_id,
                store_id=store_id,
                gateway_id=gateway_id,
                device_id=device_id,
                kind=kind,
                at=at,
                payload=payload,
            )
            for event_id, store_id, gateway_id, device_id, kind, at, payload in rows
        ]
        evaluation = self.evaluate(catalog, observations)
        evaluation.signals = []
        self.adopt(evaluation)
        log.info("rules_warmed_up", events=len(observations), stores=len(evaluation.states), since=since.isoformat())
        return len(observations)


def _rule_of(rules: Mapping[str, Rule], excursion: Excursion) -> str:
    """The id of the environment rule that produced an excursion (the first covering its zone and quantity)."""
    for rule_id in sorted(rules):
        rule = rules[rule_id]
        if (
            isinstance(rule, rules_mod.EnvironmentRangeRule)
            and rule.quantity == excursion.quantity
            and rule.matches(excursion.zone)
        ):
            return rule_id
    return "unknown"


async def _shrink_totals(session: AsyncSession, keys: set[tuple[str, str]], *, now: datetime) -> list[ShrinkTotal]:
    """Each (store, SKU)'s shrink over the last 24 hours, as the shrink rule observes it."""
    totals: list[ShrinkTotal] = []
    for store_id, sku in sorted(keys):
        units, value, ids = (
            await session.execute(
                select(
                    func.coalesce(func.sum(ShrinkRecord.quantity), 0),
                    func.coalesce(func.sum(ShrinkRecord.value), 0),
                    func.max(ShrinkRecord.id),
                ).where(
                    ShrinkRecord.store_id == store_id,
                    ShrinkRecord.sku_id == sku,
                    ShrinkRecord.expired_at > now - SHRINK_TOTAL_WINDOW,
                )
            )
        ).one()
        totals.append(
            ShrinkTotal(
                store_id=store_id,
                sku=sku,
                units=int(units),
                value=Decimal(value),
                at=now,
                record_ids=(str(ids),) if ids is not None else (),
            )
        )
    return totals


def observations_of(events: Iterable[Any], transitions: Iterable[Any]) -> list[Observation]:
    """Events (wire.Event) and presence transitions as rule observations."""
    observed: list[Observation] = [
        EventObservation(
            event_id=str(event.event_id),
            store_id=event.store_id,
            gateway_id=event.gateway_id,
            device_id=event.device_id,
            kind=event.kind,
            at=event.ts,
            payload=event.payload,
        )
        for event in events
        if event.kind not in _IGNORED_KINDS
    ]
    observed += [
        GatewayPresence(store_id=t.store_id, gateway_id=t.gateway_id, online=t.online, reason=t.reason, at=t.at)
        for t in transitions
    ]
    return observed
