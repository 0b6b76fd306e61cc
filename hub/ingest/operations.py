"""What the hub does with the events it stores: inventory, restock, footfall, monitoring rules, alerts, commands.

The consumer calls :meth:`HubOperations.apply` inside each unit's transaction with the events that
unit stored for the first time and the presence changes it recorded, and :meth:`HubOperations.committed`
once the transaction has committed. Everything that follows from an event is therefore committed with
it or not at all, and a replayed event (already stored) is never applied twice.

A background task ticks the rules (grace periods, shrink, escalations) every ``tick_s`` seconds.

N workers on a shared subscription (``shared=True``): a unit reads and writes its stores' rule states in
``rule_states`` under their locks (taken by the consumer, :mod:`hub.ingest.shared`), and only the leader ticks,
a chunk of stores per transaction under their locks (``active`` says whether this worker leads now).

A bug in the pure part (placing an event, evaluating a rule) must not cost the events themselves: it
is counted and logged, the inventory events of the unit are recorded as unplaced with the error, and
the events are stored and acknowledged as usual.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from hub.alerting import shared_states
from hub.alerting.alerts_db import AlertChangedError, escalate_due
from hub.alerting.monitoring import MonitoringEngine, MonitoringSettings, UnitEvaluation, observations_of
from hub.db import writegate
from hub.db.engine import session_factory
from hub.db.overlap import while_awaiting
from hub.db.writegate import NO_TURNS, WriteGate
from hub.domain.ledger import Unmatched
from hub.footfall.apply import FootfallOutcome, apply_footfall
from hub.ingest.presence import Transition
from hub.ingest.shared import StoreLocks
from hub.inventory.apply import (
    INVENTORY_KINDS,
    InventoryOutcome,
    Placed,
    RestockSettings,
    apply_placed,
    place,
    record_unplaced,
)
from hub.inventory.catalog_view import CatalogCache, CatalogSnapshot
from hub.metrics import HubMetrics
from storegate import wire
from storegate.tasks import BackgroundTask

log = structlog.get_logger(__name__)

# What a bug in applying events raises (a refused alert transition is a ValueError too), as opposed to the
# database's own errors, which the consumer handles by retrying or holding the unit.
_NOT_THE_DATABASE: Final = (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, AlertChangedError)
# Shared mode: stores ticked per transaction. Each holds its stores' locks to its commit, so a chunk bounds both
# how long a unit of those stores waits for the tick and PostgreSQL's lock table (max_locks_per_transaction).
TICK_CHUNK_STORES: Final = 200


class Notifiable(Protocol):
    """A background sender woken after a commit that gave it work."""

    def notify(self) -> None:
        """There is work."""
        ...


@dataclass(slots=True)
class Prepared:
    """A unit's catalog snapshot, and its events placed in it while they were being inserted."""

    catalog: CatalogSnapshot
    candidates: int = 0
    placed: Placed | None = None

    def place(self, events: Sequence[wire.Event], event_ids: Sequence[str] | None = None) -> None:
        """Place the events sent to the insert (pure work, done while the database inserts them)."""
        self.candidates = len(events)
        self.placed = place(events, self.catalog, event_ids=event_ids)

    def placed_of(self, stored: Sequence[wire.Event]) -> Placed:
        """What the events stored for the first time make (those placed, less any the insert skipped)."""
        if self.placed is None:
            return place(stored, self.catalog)
        if len(stored) == self.candidates:  # stored events are among the candidates: all of them
            return self.placed
        return self.placed.of_events({str(event.event_id) for event in stored})


@dataclass(slots=True)
class OperationsOutcome:
    """What one unit did beyond storing events."""

    inventory: InventoryOutcome = field(default_factory=InventoryOutcome)
    footfall: FootfallOutcome = field(default_factory=FootfallOutcome)
    evaluation: UnitEvaluation | None = None
    failed: bool = False


class HubOperations:
    """Inventory, restock and monitoring of stored events; one per hub process."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        monitoring: MonitoringSettings | None = None,
        restock: RestockSettings | None = None,
        clock: Callable[[], datetime] = wire.utc_now,
        metrics: HubMetrics | None = None,
        write_gate: WriteGate = NO_TURNS,
        shared: bool = False,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self._sessions: async_sessionmaker[AsyncSession] = session_factory(engine)
        self.shared = shared
        # Whether this process ticks now: always for one hub process, while it leads for N workers.
        self._active = active
        # The consumer's units and the ticker take a turn of it before the engine's unit lock (its lock order).
        self.write_gate = write_gate
        self.catalog = CatalogCache()
        self.engine = MonitoringEngine(monitoring, shared=shared)
        self.restock = restock or RestockSettings()
        self._clock = clock
        self.metrics = metrics or HubMetrics()
        self._tick_locks = StoreLocks(metrics=self.metrics, holder="tick")
        self._senders: list[Notifiable] = []
        self._ticker = BackgroundTask(self._run, name="storegate-hub-rules-ticker")
        self.failures = 0
        self.ticks = 0
        self.last_tick_error: str | None = None

    def wake_senders(self) -> None:
        """Something outside a unit (a person in the API) queued notifications or commands."""
        for sender in self._senders:
            sender.notify()

    def add_sender(self, sender: Notifiable) -> None:
        """Wake ``sender`` after every commit that queued commands or notifications."""
        self._senders.append(sender)

    # ------------------------------------------------------------------ units of the consumer

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[None]:
        """Hold the rules engine for one unit of the consumer (evaluate, write, commit, adopt)."""
        async with self.engine.unit():
            yield

    async def prepare(self, session: AsyncSession, *, now: datetime) -> Prepared:
        """What a unit needs before its events are stored: the catalog and the rules in force."""
        catalog = await self.catalog.snapshot(session)
        await self.engine.refresh_rules(session, now=now)
        return Prepared(catalog)

    async def apply(
        self,
        session: AsyncSession,
        events: Sequence[wire.Event],
        transitions: Sequence[Transition],
        *,
        now: datetime,
        prepared: Prepared | None = None,
    ) -> OperationsOutcome:
        """Apply a unit's new events and presence changes inside its transaction.

        ``prepared`` is :meth:`prepare`'s, with the events placed while they were inserted, if they were.
        """
        outcome = OperationsOutcome()
        if not events and not transitions:
            return outcome
        if prepared is None:
            prepared = await self.prepare(session, now=now)
        catalog = prepared.catalog
        stores: set[str] = set()
        if self.shared:  # the consumer holds these stores' locks: their stored states are the ones to go on from
            stores = {event.store_id for event in events} | {t.store_id for t in transitions}
            self.metrics.rule_states_loaded.inc(await self.engine.load_shared(session, stores))
        try:
            placed = prepared.placed_of(events)
            # The rules are pure and need only the movements: they are evaluated while the ledger is written.
            outcome.inventory, evaluation = await while_awaiting(
                apply_placed(session, placed, catalog, now=now, restock=self.restock),
                lambda: self.engine.evaluate(catalog, observations_of(events, transitions), placed.movements, now=now),
            )
        except _NOT_THE_DATABASE as err:
            # Only a bug gets here (the payloads were validated on the way in); keep the events, say so.
            self.failures += 1
            self.metrics.operations_failures.inc()
            outcome.failed = True
            log.exception("operations_apply_failed", events=len(events), error=type(err).__name__)
            await self._record_unapplied(session, events, err, now=now)
            return outcome
        try:
            # Entrance cameras' counts (a few events a minute per store): one upsert when a unit has any.
            outcome.footfall = await apply_footfall(session, events, now=now)
        except _NOT_THE_DATABASE as err:  # a bug, raised before the one statement: the events and inventory stand
            self.failures += 1
            self.metrics.operations_failures.inc()
            outcome.failed = True
            log.exception("footfall_apply_failed", events=len(events), error=type(err).__name__)
        # Most units at store rates have nothing to write: no savepoint for them (two statements fewer a unit).
        if evaluation.signals or evaluation.excursions or evaluation.snapshots:
            try:
                # A savepoint: signals that cannot be written (an alert transition the lifecycle refuses) must not
                # cost the unit its events, which the consumer would then reject and never acknowledge.
                async with session.begin_nested():
                    await self.engine.write(session, evaluation, now=now)
            except _NOT_THE_DATABASE as err:  # a bug or a refused transition; the events and the inventory stand
                # (a database error is not caught: the consumer retries the unit, or holds it through an outage)
                self.failures += 1
                self.metrics.operations_failures.inc()
                outcome.failed = True
                log.exception("operations_write_failed", signals=len(evaluation.signals), error=type(err).__name__)
                return outcome
        if self.shared:
            await self.engine.save_shared(session, evaluation, stores, now=now)
        outcome.evaluation = evaluation
        return outcome

    async def _record_unapplied(
        self, session: AsyncSession, events: Sequence[wire.Event], err: BaseException, *, now: datetime
    ) -> None:
        reason = f"not applied, hub error {type(err).__name__}: {str(err)[:300]}"
        unplaced = [(e, Unmatched(str(e.event_id), reason)) for e in events if e.kind in INVENTORY_KINDS]
        if unplaced:
            await record_unplaced(session, unplaced, now=now)

    def committed(self, outcome: OperationsOutcome) -> None:
        """The unit committed: adopt the rules' states, count what happened, wake the senders."""
        inventory = outcome.inventory
        for kind, count in Counter(movement.kind.value for movement in inventory.movements).items():
            self.metrics.ledger_movements.labels(kind=kind).inc(count)
        self.metrics.unplaced_events.inc(len(inventory.unplaced))
        self.metrics.restock_tasks.labels(action="opened").inc(len(inventory.tasks_opened))
        self.metrics.restock_tasks.labels(action="closed").inc(len(inventory.tasks_closed))
        if outcome.footfall.periods:
            self.metrics.footfall_periods.labels(outcome="counted").inc(outcome.footfall.periods)
        if outcome.footfall.implausible:
            self.metrics.footfall_periods.labels(outcome="implausible_time").inc(outcome.footfall.implausible)
        if outcome.evaluation is not None:
            self.engine.adopt(outcome.evaluation)
            self._count(outcome.evaluation)
        sends = outcome.inventory.commands or (
            outcome.evaluation is not None and (outcome.evaluation.effects or outcome.evaluation.escalations)
        )
        if sends:
            for sender in self._senders:
                sender.notify()

    # ------------------------------------------------------------------ the ticker

    async def warm_up(self) -> None:
        """Load rules and catalog and rebuild rule states from recent events (before consuming)."""
        async with self._sessions() as session:
            catalog = await self.catalog.snapshot(session)
            await self.engine.warm_up(session, catalog, now=self._clock())

    async def tick(self) -> UnitEvaluation:
        """One tick of the rules, in its own transaction (shared mode: a transaction per chunk of stores)."""
        if self.shared:
            return await self._tick_shared()
        async with self.write_gate.turn(writegate.RULES), self.unit():
            async with self._sessions() as session, session.begin():
                catalog = await self.catalog.snapshot(session)
                evaluation = await self.engine.tick(session, catalog, now=self._clock())
            self.engine.adopt(evaluation)
        self._count(evaluation)
        self.ticks += 1
        if evaluation.effects or evaluation.escalations:
            for sender in self._senders:
                sender.notify()
        return evaluation

    async def _tick_shared(self) -> UnitEvaluation:
        """The leader's tick: every store with stored states, a chunk at a time under its locks, then escalations."""
        now = self._clock()
        total = UnitEvaluation(evaluated_at=now)
        async with self._sessions() as session:
            stores = await shared_states.all_stores(session)
        for start in range(0, len(stores), TICK_CHUNK_STORES):
            chunk = stores[start : start + TICK_CHUNK_STORES]
            # The engine is held per chunk, not per tick: this worker's own units go on between chunks.
            async with self.unit():
                async with self._sessions() as session, session.begin():
                    await self._tick_locks(session, chunk)
                    self.metrics.rule_states_loaded.inc(await self.engine.load_shared(session, chunk))
                    catalog = await self.catalog.snapshot(session)
                    evaluation = await self.engine.tick(session, catalog, now=now, stores=chunk, escalate=False)
                    await self.engine.save_shared(session, evaluation, chunk, now=now)
                self.engine.adopt(evaluation)
            total.signals += evaluation.signals
            total.effects += evaluation.effects
            total.rejected += evaluation.rejected
            total.shrink_records += evaluation.shrink_records
        async with self._sessions() as session, session.begin():
            total.escalations = await escalate_due(session, now=now)
        self._count(total)
        self.ticks += 1
        if total.effects or total.escalations:
            for sender in self._senders:
                sender.notify()
        return total

    def _count(self, evaluation: UnitEvaluation) -> None:
        for effect in evaluation.effects:
            self.metrics.alert_signals.labels(effect=effect.effect).inc()
        self.metrics.alert_escalations.inc(len(evaluation.escalations))
        self.metrics.shrink_records.inc(evaluation.shrink_records)
        self.metrics.rule_observations_rejected.inc(len(evaluation.rejected))
        self.metrics.rules_not_in_force.set(len(self.engine.rules.problems()))

    @property
    def ticker_running(self) -> bool:
        """Whether the ticker task is alive."""
        return self._ticker.running

    def start(self) -> None:
        """Start ticking on the running loop."""
        self._ticker.start()

    async def stop(self) -> None:
        """Stop ticking."""
        await self._ticker.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.engine.settings.tick_s)  # a period, not a synchronisation
            if not self._active():  # N workers: another worker leads and ticks
                continue
            try:
                await self.tick()
                self.last_tick_error = None
            except Exception as err:  # the database may be away; the next tick tries again
                self.metrics.rules_tick_failures.inc()
                self.last_tick_error = f"{type(err).__name__}: {str(err)[:200]}"
                log.warning("rules_tick_failed", error=self.last_tick_error)
